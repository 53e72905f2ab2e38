//! Which module or file the Python objects belong to: the raw material of "memory per
//! Python package" (issue 7 item 4) and of the `package-import` advice (issue 12).
//!
//! The objects are charged by the package-memory walk (`reach.rs`). Objects of four kinds
//! carry a name and are charged, with their `sys.getsizeof`, to it:
//! - a code object to its `co_filename` (a path, or `<frozen os>`, `<string>` ...);
//! - a function to its `__module__` (`func_module`, set from `__globals__['__name__']`);
//! - a class (a heap type; static types live in a binary, not in the heap) to the
//!   `__module__` of its `__dict__`;
//! - a module to its `__dict__['__name__']`, with its `__dict__`'s size added to its own
//!   (when the walk had not reached that dict before).
//!
//! Every other object is charged (`held`) to the name of the named object the walk reached
//! it from. A name that is not an exact `str` is "unnamed". The names of `sys.modules` and the
//! `__file__` of each are read too, so that the caller (the ledger) can map a module name to
//! the file it came from and a file to its distribution. Nothing is kept per object: one slot
//! per distinct name (at most [`MAX_ORIGINS`], the rest pooled as "overflow"), and a cache
//! from a name's address to its slot; everything is charged to the census's memory budget.
//! Every read goes through the census's cache, so the attribution is exactly as consistent as
//! the census.

use std::collections::HashMap;
use std::rc::Rc;

use serde::Serialize;

use memlens_remote::bitmap::AddrMap;
use memlens_remote::{MemoryBudget, ProcessMemory};

use super::{object_level, Kind, TypeInfo, Walker};
use crate::dicts;
use crate::error::Result;
use crate::objects::{read_str, MAX_NAME};

/// Distinct module names and files kept apart; objects naming more go to `overflow`.
pub const MAX_ORIGINS: usize = 1 << 16;
/// Entries of the address-to-slot cache before it is emptied (it is only a cache).
const MAX_CACHED: usize = 1 << 20;
/// Longest path decoded (`co_filename`, `__file__`).
const MAX_PATH: usize = 4096;
/// Entries of `sys.modules` read at most.
const MAX_MODULES: usize = 1 << 20;
/// Budget charged per cached address (the map's entry and its share of empty slots).
const CACHE_ENTRY: u64 = 32;
/// Budget charged per slot, beyond its text.
const SLOT: u64 = 128;

pub use memlens_model::python::{ObjectKinds, Tally};

/// What an attributed object names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Origin {
    /// A module name (`__module__`, `__name__`; untrusted).
    Module(String),
    /// A file (`co_filename`; untrusted).
    File(String),
    /// The name is not an exact `str` (None, missing, another object) or could not be read.
    Unnamed,
}

/// The census's objects by the module name or file they name, with `sys.modules`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModuleObjects {
    /// Per origin, in no particular order.
    pub origins: Vec<(Origin, ObjectKinds)>,
    /// Objects whose origin came after [`MAX_ORIGINS`] others (their names are not kept).
    pub overflow: ObjectKinds,
    /// `sys.modules`: each module name (an exact `str`) with its `__dict__['__file__']` when
    /// that is an exact `str`. Entries that are not modules are left out.
    pub sys_modules: Vec<(String, Option<String>)>,
    /// Objects whose name could not be read (charged to [`Origin::Unnamed`]).
    pub unreadable_names: u64,
    /// Objects the package-memory walk reached but could not read (in no package).
    pub unreadable_objects: u64,
}

impl ModuleObjects {
    /// Bytes of every attributed object.
    pub fn bytes(&self) -> u64 {
        self.origins
            .iter()
            .map(|(_, k)| k.bytes())
            .fold(self.overflow.bytes(), u64::saturating_add)
    }
}

/// Interned key strings found so far (`__module__`, `__name__`, `__file__`): a key at the
/// same address is that name without reading it again.
#[derive(Default)]
struct KnownKeys {
    found: [u64; 3],
}

/// The attribution's state during a walk.
pub(super) struct Attribution {
    by_addr: AddrMap<u32>,
    slots: Vec<(Origin, ObjectKinds)>,
    by_text: HashMap<Origin, u32>,
    overflow: ObjectKinds,
    unnamed: Option<u32>,
    keys: KnownKeys,
    unreadable_names: u64,
    sys_modules: Vec<(String, Option<String>)>,
    /// The modules of `sys.modules` (with their dicts) in its order (import order),
    /// `__main__` last: the roots of the package-memory walk.
    pub(super) roots: Vec<(u64, u64)>,
    budget: Rc<MemoryBudget>,
    charged: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Module = 0,
    Name = 1,
    File = 2,
}

impl Key {
    fn text(self) -> &'static str {
        match self {
            Key::Module => "__module__",
            Key::Name => "__name__",
            Key::File => "__file__",
        }
    }
}

impl Attribution {
    pub(super) fn new(budget: Rc<MemoryBudget>) -> Attribution {
        Attribution {
            by_addr: AddrMap::default(),
            slots: Vec::new(),
            by_text: HashMap::new(),
            overflow: ObjectKinds::default(),
            unnamed: None,
            keys: KnownKeys::default(),
            unreadable_names: 0,
            sys_modules: Vec::new(),
            roots: Vec::new(),
            budget,
            charged: 0,
        }
    }

    pub(super) fn charge(&mut self, bytes: u64) -> Result<()> {
        self.budget
            .charge(bytes, "attributing objects to packages")?;
        self.charged += bytes;
        Ok(())
    }

    pub(super) fn finish(mut self, unreadable_objects: u64) -> ModuleObjects {
        let mut origins = std::mem::take(&mut self.slots);
        origins.retain(|(_, k)| k.count() > 0);
        ModuleObjects {
            origins,
            overflow: self.overflow,
            sys_modules: std::mem::take(&mut self.sys_modules),
            unreadable_names: self.unreadable_names,
            unreadable_objects,
        }
    }

    /// The tallies of `owner` (a slot, or [`OVERFLOW`]).
    pub(super) fn kinds(&mut self, owner: u32) -> &mut ObjectKinds {
        match self.slots.get_mut(owner as usize) {
            Some(s) => &mut s.1,
            None => &mut self.overflow,
        }
    }
}

impl Drop for Attribution {
    fn drop(&mut self) {
        self.budget.release(self.charged);
    }
}

/// The owner of what was reached from objects whose name went past [`MAX_ORIGINS`].
pub(super) const OVERFLOW: u32 = u32::MAX - 1;
/// No owner: what is reached is not charged.
pub(super) const NOBODY: u32 = u32::MAX;

/// A named object: its kind, its owner (a slot or [`OVERFLOW`]) and, for a module, its dict.
pub(super) struct Named {
    pub(super) which: Which,
    pub(super) owner: u32,
    pub(super) dict: u64,
}

/// Which tally of [`ObjectKinds`] an object goes to.
#[derive(Clone, Copy)]
pub(super) enum Which {
    Code,
    Function,
    Class,
    Module,
}

impl<M: ProcessMemory> Walker<'_, M> {
    /// Reads `sys.modules` (names and `__file__`) for the attribution, before the walk.
    pub(super) fn read_sys_modules(&mut self, dict: u64) -> Result<()> {
        let Some(mut a) = self.attribution.take() else {
            return Ok(());
        };
        let r = self.sys_modules_into(&mut a, dict);
        self.attribution = Some(a);
        r
    }

    fn sys_modules_into(&mut self, a: &mut Attribution, dict: u64) -> Result<()> {
        if dict == 0 {
            return Ok(());
        }
        let contents = match dicts::read_dict(self.mem, self.l, dict) {
            Ok(c) => c,
            Err(e) if object_level(&e) => {
                log::debug!("census: sys.modules unreadable for the attribution: {e}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut main = None;
        for (k, v) in contents.items.into_iter().take(MAX_MODULES) {
            let entry = (|| -> Result<Option<(String, Option<String>, u64)>> {
                let Some(name) = self.exact_str(k, MAX_NAME)? else {
                    return Ok(None);
                };
                if !self.is_module(v)? {
                    return Ok(None);
                }
                let md = self.mem.read_u64(v.wrapping_add(self.l.module_dict))?;
                let file = match self.dict_value(a, md, Key::File)? {
                    Some(f) => self.exact_str(f, MAX_PATH)?,
                    None => None,
                };
                Ok(Some((name, file, md)))
            })();
            match entry {
                Ok(Some((name, file, md))) => {
                    let cost = (name.len() + file.as_ref().map_or(0, String::len)) as u64 + 96;
                    a.charge(cost)?;
                    if name == "__main__" {
                        main = Some((v, md));
                    } else {
                        a.roots.push((v, md));
                    }
                    a.sys_modules.push((name, file));
                }
                Ok(None) => {}
                Err(e) if object_level(&e) => {
                    log::debug!("census: a sys.modules entry unreadable: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        a.roots.extend(main);
        Ok(())
    }

    fn is_module(&mut self, obj: u64) -> Result<bool> {
        if obj == 0 || obj % 8 != 0 || obj >= super::MAX_ADDR {
            return Ok(false);
        }
        let ty = self.mem.read_u64(obj.wrapping_add(self.l.object_type))?;
        let i = self.type_index(ty)?;
        Ok(self
            .infos
            .get(i as usize)
            .is_some_and(|t| t.kind == Kind::Module))
    }

    /// The text of an exact `str` at `addr`; `None` for anything else.
    fn exact_str(&self, addr: u64, max: usize) -> Result<Option<String>> {
        if addr == 0 || addr % 8 != 0 || addr >= super::MAX_ADDR {
            return Ok(None);
        }
        if self.mem.read_u64(addr.wrapping_add(self.l.object_type))? != self.it.types.str {
            return Ok(None);
        }
        read_str(self.mem, self.l, addr, max).map(Some)
    }

    /// The value of `key` in the dict at `dict` (entries scanned in order; `__name__`,
    /// `__module__` and `__file__` come early in module and class dicts).
    fn dict_value(&mut self, a: &mut Attribution, dict: u64, key: Key) -> Result<Option<u64>> {
        if dict == 0 || dict % 8 != 0 || dict >= super::MAX_ADDR {
            return Ok(None);
        }
        let t = dicts::table(self.mem, self.l, dict)?;
        if !self
            .mem
            .contains_range(t.entries_at, t.entries * t.entry_size)
        {
            return Err(self.bad(dict, "a dict's entries"));
        }
        for i in 0..t.entries {
            let e = t.entries_at + i * t.entry_size;
            let k = self.mem.read_u64(e + t.key_at)?;
            if k == 0 {
                continue;
            }
            let found = self.keys_known(a, k, key)?;
            if !found {
                continue;
            }
            let v = match t.split_values {
                Some(values) => self.mem.read_u64(values + i * 8)?,
                None => self.mem.read_u64(e + t.value_at)?,
            };
            if v != 0 {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Whether the key at `k` is `key`'s text (an exact `str`), remembering its address.
    fn keys_known(&self, a: &mut Attribution, k: u64, key: Key) -> Result<bool> {
        let known = a.keys.found[key as usize];
        if known == k {
            return Ok(true);
        }
        if a.keys.found.contains(&k) {
            return Ok(false); // another of the three names
        }
        let want = key.text();
        let is = self
            .exact_str(k, want.len() + 1)
            .or_else(|e| if object_level(&e) { Ok(None) } else { Err(e) })?
            .is_some_and(|s| s == want);
        if is && known == 0 {
            a.keys.found[key as usize] = k;
        }
        Ok(is)
    }

    /// Whether `obj` (of type info `t`) is a code object, function, class (heap type) or
    /// module, which carry a name.
    pub(super) fn is_named(&self, obj: u64, t: &TypeInfo) -> Result<bool> {
        Ok(match t.kind {
            Kind::Code | Kind::Function | Kind::Module => true,
            Kind::Type => {
                self.mem.read_u64(obj.wrapping_add(self.l.type_flags))? & self.l.tpflags_heaptype
                    != 0
            }
            _ => false,
        })
    }

    /// The kind and owner of `obj`, a named object ([`Self::is_named`]); a name that cannot be
    /// read is counted and charged to [`Origin::Unnamed`].
    pub(super) fn named(&mut self, a: &mut Attribution, obj: u64, t: &TypeInfo) -> Result<Named> {
        let l = self.l;
        let which = match t.kind {
            Kind::Code => Which::Code,
            Kind::Function => Which::Function,
            Kind::Type => Which::Class,
            _ => Which::Module,
        };
        let r = (|| -> Result<(Option<(u64, bool)>, u64)> {
            Ok(match t.kind {
                Kind::Code => {
                    let f = self.mem.read_u64(obj.wrapping_add(l.code_filename))?;
                    (Some((f, true)), 0)
                }
                Kind::Function => {
                    let m = self.mem.read_u64(obj.wrapping_add(l.func_module))?;
                    (Some((m, false)), 0)
                }
                Kind::Type => {
                    let d = self.mem.read_u64(obj.wrapping_add(l.type_dict))?;
                    let m = self.dict_value(a, d, Key::Module)?;
                    (m.map(|m| (m, false)), 0)
                }
                _ => {
                    let d = self.mem.read_u64(obj.wrapping_add(l.module_dict))?;
                    let n = self.dict_value(a, d, Key::Name)?;
                    (n.map(|n| (n, false)), d)
                }
            })
        })();
        let (name, dict) = match r {
            Ok(v) => v,
            Err(e) if object_level(&e) => {
                log::debug!("census: the name of object {obj:#x} is unreadable: {e}");
                a.unreadable_names += 1;
                (None, 0)
            }
            Err(e) => return Err(e),
        };
        let slot = match name {
            Some((addr, file)) => self.slot_of(a, addr, file)?,
            None => unnamed_slot(a)?,
        };
        Ok(Named {
            which,
            owner: slot.unwrap_or(OVERFLOW),
            dict,
        })
    }

    /// `sys.getsizeof` of the dict at `d` (a module's `__dict__`), 0 for none.
    pub(super) fn dict_size(&mut self, d: u64) -> Result<u64> {
        if d == 0 {
            return Ok(0);
        }
        let ty = self.mem.read_u64(d.wrapping_add(self.l.object_type))?;
        let i = self.type_index(ty)?;
        let Some(facts) = self.infos.get(i as usize).map(|t| t.facts) else {
            return Err(self.bad(ty, "a module dict's type"));
        };
        Ok(self.sizer.getsizeof(self.mem, &facts, d, &[])?.size)
    }

    /// The slot of the name at `addr` (`file`: a path), `None` for the overflow.
    fn slot_of(&self, a: &mut Attribution, addr: u64, file: bool) -> Result<Option<u32>> {
        if let Some(&s) = a.by_addr.get(&addr) {
            return Ok(Some(s));
        }
        let text = self
            .exact_str(addr, if file { MAX_PATH } else { MAX_NAME })
            .or_else(|e| {
                if object_level(&e) {
                    a.unreadable_names += 1;
                    Ok(None)
                } else {
                    Err(e)
                }
            })?;
        let Some(text) = text else {
            return unnamed_slot(a);
        };
        let origin = if file {
            Origin::File(text)
        } else {
            Origin::Module(text)
        };
        let slot = match a.by_text.get(&origin) {
            Some(&s) => Some(s),
            None => new_slot(a, origin)?,
        };
        if let Some(s) = slot {
            if a.by_addr.len() >= MAX_CACHED {
                a.by_addr = AddrMap::default();
                let cached = MAX_CACHED as u64 * CACHE_ENTRY;
                a.budget.release(cached);
                a.charged = a.charged.saturating_sub(cached);
            }
            a.charge(CACHE_ENTRY)?;
            a.by_addr.insert(addr, s);
        }
        Ok(slot)
    }
}

fn unnamed_slot(a: &mut Attribution) -> Result<Option<u32>> {
    if let Some(s) = a.unnamed {
        return Ok(Some(s));
    }
    let s = new_slot(a, Origin::Unnamed)?;
    a.unnamed = s;
    Ok(s)
}

fn new_slot(a: &mut Attribution, origin: Origin) -> Result<Option<u32>> {
    if a.slots.len() >= MAX_ORIGINS {
        return Ok(None);
    }
    let text = match &origin {
        Origin::Module(s) | Origin::File(s) => s.len() as u64,
        Origin::Unnamed => 0,
    };
    a.charge(SLOT + 2 * text)?;
    let s = a.slots.len() as u32;
    a.by_text.insert(origin.clone(), s);
    a.slots.push((origin, ObjectKinds::default()));
    Ok(Some(s))
}
