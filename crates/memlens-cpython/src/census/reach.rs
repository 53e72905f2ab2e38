//! The package-memory walk: what each package's import holds, each object charged once.
//!
//! A walk of its own after the census (same cache, so verified by the same pause), with a
//! fresh visited bitmap. Roots: the modules of `sys.modules` in its order, which is import
//! order (a module is inserted before its body runs), `__main__` last (a program's globals
//! hold what it imported from packages). From each root the walk follows, depth first, every
//! reference the census follows (tracked objects too, which the census leaves to their
//! generation lists), plus the rest of a code object's fields (variable names, bytecode before
//! 3.11, line and exception tables). A module of `sys.modules`, or its dict, reached from
//! another root is not entered: it is walked in its turn (a module is charged with its dict).
//!
//! Ownership: a code object, function, class or module is charged to its own name
//! (`packages.rs`); any other object to the named object the walk reached it from. Each
//! object is charged once, to the first owner that reaches it: an object shared by several
//! packages (an interned name, a value one module imported from another) goes to the module
//! imported first, never to one imported later. Objects every interpreter creates whatever it
//! imports are charged to nobody: small ints (-5..256) and bools, `None`, `Ellipsis`,
//! `NotImplemented`, empty tuples and bytes, strs of at most one character.
//!
//! Then the named objects the collector tracks that no module reached (closures held only by
//! frames, classes held only by their instances...) are walked from, each with its own name.
//!
//! The current owner travels on the work stack: entering a named object of another owner
//! pushes [`Work::Owner`] with the previous one below its references, so that it comes back
//! when they are done. Memory: the bitmap (one bit per 16 bytes) and the stack, charged to the
//! census's budget.

use std::rc::Rc;

use memlens_remote::{CachedMemory, MemoryBudget, ProcessMemory};

use super::packages::{Attribution, ModuleObjects, Which, NOBODY};
use super::{Kind, TypeInfo, Walker, Work, MAX_ADDR};
use crate::dicts;
use crate::error::{Error, Result};
use crate::gc;
use crate::process::Interpreter;

/// The walk's state beyond the census walker's.
pub(super) struct Reach {
    /// Who what is reached now is charged to: a slot, `OVERFLOW` or `NOBODY`.
    pub(super) owner: u32,
    /// The module being walked from, and its dict.
    root: (u64, u64),
    /// Every root, sorted (a module reached from another root is left to its turn).
    roots: Vec<u64>,
    /// Their dicts, sorted (likewise).
    dicts: Vec<u64>,
}

/// Charges the objects of the process to the module names and files of the named objects
/// that reach them (see the module documentation), through `mem` with the memory of `budget`.
/// `modules` is `sys.modules`, `state` the collector's state (`gc::state_address`).
pub(super) fn by_package<M: ProcessMemory>(
    it: &Interpreter,
    mem: &CachedMemory<M>,
    budget: Rc<MemoryBudget>,
    modules: u64,
    state: u64,
    max_nodes: u64,
) -> Result<ModuleObjects> {
    let mut w = Walker::new(it, mem, budget.clone());
    w.attribution = Some(Attribution::new(budget.clone()));
    w.read_sys_modules(modules)?;
    let order = match w.attribution.as_mut() {
        Some(a) => std::mem::take(&mut a.roots),
        None => Vec::new(),
    };
    let mut roots: Vec<u64> = order.iter().map(|r| r.0).collect();
    roots.sort_unstable();
    let mut dicts: Vec<u64> = order.iter().map(|r| r.1).collect();
    dicts.sort_unstable();
    let held = ((roots.capacity() + dicts.capacity()) * 8) as u64;
    budget.charge(held, "the package-memory walk's roots")?;
    w.reach = Some(Reach {
        owner: NOBODY,
        root: (0, 0),
        roots,
        dicts,
    });
    let walked = w.reach_all(&order, state, max_nodes);
    budget.release(held);
    walked?;
    let lost = w.unreadable.objects;
    let a = w.attribution.take();
    Ok(a.map(|a| a.finish(lost)).unwrap_or_default())
}

/// What an allocation of `n` bytes takes: pymalloc's 16-byte blocks up to 512 bytes; above,
/// a malloc chunk (a word of header, 16-byte steps), or pages for what malloc maps on its own
/// (128 KiB and more).
fn allocated(n: u64) -> u64 {
    if n <= 512 {
        n.div_ceil(16) * 16
    } else if n < 128 << 10 {
        (n + 8).div_ceil(16) * 16
    } else {
        (n + 16).div_ceil(4096) * 4096
    }
}

impl<M: ProcessMemory> Walker<'_, M> {
    fn reach_all(&mut self, order: &[(u64, u64)], state: u64, max_nodes: u64) -> Result<()> {
        for &root in order {
            if let Some(r) = self.reach.as_mut() {
                r.root = root;
                r.owner = NOBODY;
            }
            self.push_work(Work::Object(root.0))?;
            self.drain()?;
        }
        if let Some(r) = self.reach.as_mut() {
            r.root = (0, 0);
        }
        // named objects that no module reached
        let mem = self.mem;
        let (pid, head_size) = (self.it.pid, self.l.gc_head_size);
        for g in 0..4 {
            let head = gc::list_head(self.it, state, g);
            gc::walk_list(mem, pid, head, head_size, max_nodes, |o| {
                if o >= MAX_ADDR || self.visited.contains(o) {
                    return Ok(());
                }
                let named = (|| -> Result<bool> {
                    let ty = self.mem.read_u64(o.wrapping_add(self.l.object_type))?;
                    let ti = self.type_index(ty)?;
                    match self.infos.get(ti as usize).copied() {
                        Some(t) => self.is_named(o, &t),
                        None => Ok(false),
                    }
                })();
                match named {
                    Ok(true) => {
                        if let Some(r) = self.reach.as_mut() {
                            r.owner = NOBODY;
                        }
                        self.push_work(Work::Object(o))?;
                        self.drain()
                    }
                    Ok(false) => Ok(()),
                    Err(e) => {
                        self.visited.insert(o)?;
                        self.lost(e, o)
                    }
                }
            })?;
        }
        Ok(())
    }

    /// Visits `obj` for the package-memory walk: charges it, then queues its references.
    pub(super) fn reach_object(&mut self, obj: u64) -> Result<()> {
        if obj >= MAX_ADDR || self.visited.contains(obj) {
            return Ok(());
        }
        let l = self.l;
        let ty = self.mem.read_u64(obj.wrapping_add(l.object_type))?;
        let ti = self.type_index(ty)?;
        let Some(&t) = self.infos.get(ti as usize) else {
            return Err(Error::Decode {
                addr: ty,
                what: "a type object".into(),
            });
        };
        if let Some(r) = self.reach.as_ref() {
            let later = match t.kind {
                Kind::Module => obj != r.root.0 && r.roots.binary_search(&obj).is_ok(),
                Kind::Dict => obj != r.root.1 && r.dicts.binary_search(&obj).is_ok(),
                _ => false,
            };
            if later {
                return Ok(()); // a module of sys.modules or its dict: walked in its turn
            }
        }
        self.visited.insert(obj)?;
        let managed = l.tpflags_managed_dict.is_some_and(|f| t.flags & f != 0);
        let uses_size = t.itemsize != 0
            || matches!(t.kind, Kind::List | Kind::Tuple | Kind::Int)
            || (t.heap && t.dictoffset < 0 && !managed);
        let ob_size = if uses_size {
            self.mem.read_i64(obj.wrapping_add(l.var_size))?
        } else {
            0
        };
        if self.everyones(obj, &t, ob_size)? {
            return Ok(());
        }
        let dict = match t.kind {
            Kind::Dict => Some(dicts::table(self.mem, l, obj)?),
            _ => None,
        };
        let size = self.sizer.getsizeof(self.mem, &t.facts, obj, &[])?.size;
        let module_dict = self.charge_reached(obj, &t, size)?;
        self.references(obj, ty, &t, ob_size, dict)?;
        if let Some(d) = module_dict {
            // charged with its module: its contents now
            let dty = self.mem.read_u64(d.wrapping_add(l.object_type))?;
            let dti = self.type_index(dty)?;
            if let Some(&dt) = self.infos.get(dti as usize) {
                if dt.kind == Kind::Dict {
                    let table = dicts::table(self.mem, l, d)?;
                    self.references(d, dty, &dt, 0, Some(table))?;
                }
            }
        }
        if t.kind == Kind::Code {
            self.code_rest(obj)?;
        }
        Ok(())
    }

    /// Charges `obj` (`size` bytes) to its owner; a named object of another owner becomes
    /// the owner of what it references. Returns a module's dict when it was charged with it
    /// (marked visited: its contents are for the caller to queue).
    fn charge_reached(&mut self, obj: u64, t: &TypeInfo, size: u64) -> Result<Option<u64>> {
        let Some(mut a) = self.attribution.take() else {
            return Ok(None);
        };
        let r = self.charge_to(&mut a, obj, t, size);
        self.attribution = Some(a);
        r
    }

    fn charge_to(
        &mut self,
        a: &mut Attribution,
        obj: u64,
        t: &TypeInfo,
        size: u64,
    ) -> Result<Option<u64>> {
        let current = self.reach.as_ref().map_or(NOBODY, |r| r.owner);
        if !self.is_named(obj, t)? {
            if current != NOBODY {
                let k = a.kinds(current);
                k.held.add(size);
                k.allocated = k.allocated.saturating_add(allocated(size));
            }
            return Ok(None);
        }
        let n = self.named(a, obj, t)?;
        let mut bytes = size;
        let mut alloc = allocated(size);
        let mut module_dict = None;
        if n.dict != 0 && n.dict < MAX_ADDR && n.dict % 8 == 0 && !self.visited.contains(n.dict) {
            let d = self.dict_size(n.dict)?;
            self.visited.insert(n.dict)?;
            bytes = bytes.saturating_add(d);
            alloc = alloc.saturating_add(allocated(d));
            module_dict = Some(n.dict);
        }
        let k = a.kinds(n.owner);
        match n.which {
            Which::Code => k.code.add(bytes),
            Which::Function => k.functions.add(bytes),
            Which::Class => k.classes.add(bytes),
            Which::Module => k.modules.add(bytes),
        }
        k.allocated = k.allocated.saturating_add(alloc);
        if n.owner != current {
            self.push_work(Work::Owner(current))?;
            if let Some(r) = self.reach.as_mut() {
                r.owner = n.owner;
            }
        }
        Ok(module_dict)
    }

    /// Whether `obj` is one of the objects every interpreter has whatever it imports (charged
    /// to nobody): a small int or bool, `None`, `Ellipsis`, `NotImplemented`, an empty tuple or
    /// bytes, a str of at most one character.
    fn everyones(&mut self, obj: u64, t: &TypeInfo, ob_size: i64) -> Result<bool> {
        let l = self.l;
        Ok(match t.kind {
            Kind::Int => self.small_int(obj, ob_size)?,
            Kind::Str => self.mem.read_i64(obj.wrapping_add(l.str_length))? <= 1,
            Kind::Tuple => ob_size == 0,
            Kind::Other if !t.heap => {
                let name = self.out[t.slot].type_name.as_str();
                match name {
                    "NoneType" | "ellipsis" | "NotImplementedType" => true,
                    "bytes" => self.mem.read_i64(obj.wrapping_add(l.var_size))? == 0,
                    _ => false,
                }
            }
            _ => false,
        })
    }

    /// Whether the int at `obj` is one of the interpreter's small ints (-5..256).
    fn small_int(&self, obj: u64, ob_size: i64) -> Result<bool> {
        let l = self.l;
        let (negative, ndigits) = match l.long_tag {
            // 3.12+: lv_tag = ndigits << 3 | sign (0 positive, 1 zero, 2 negative)
            Some(at) => {
                let tag = self.mem.read_u64(obj + at)?;
                (tag & 3 == 2, tag >> 3)
            }
            None => (ob_size < 0, ob_size.unsigned_abs()),
        };
        if ndigits == 0 {
            return Ok(true);
        }
        if ndigits > 1 {
            return Ok(false);
        }
        // little-endian digits: the low 16 bits hold any small int's digit
        let digit = match l.long_digit_size {
            2 => u64::from(self.mem.read_u32(obj + l.long_digits)? & 0xffff),
            _ => u64::from(self.mem.read_u32(obj + l.long_digits)?),
        };
        Ok(if negative { digit <= 5 } else { digit <= 256 })
    }

    /// The fields of a code object the census does not follow: variable names, bytecode
    /// (before 3.11), line and exception tables.
    fn code_rest(&mut self, obj: u64) -> Result<()> {
        let l = self.l;
        let fields = [
            Some(l.code_linetable),
            l.code_code,
            l.code_varnames,
            l.code_cellvars,
            l.code_freevars,
            l.code_exceptiontable,
            l.code_localsplusnames,
            l.code_localspluskinds,
        ];
        for off in fields.into_iter().flatten() {
            let p = self.mem.read_u64(obj + off)?;
            self.push(p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::allocated;

    #[test]
    fn allocations_round_as_pymalloc_and_malloc_do() {
        assert_eq!(allocated(1), 16);
        assert_eq!(allocated(56), 64);
        assert_eq!(allocated(512), 512);
        assert_eq!(allocated(513), 528);
        assert_eq!(allocated(1000), 1008);
        assert_eq!(allocated(200_000), 200_704);
    }
}
