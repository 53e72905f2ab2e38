//! The object census: every GC-tracked object of every generation (the frozen one included)
//! plus the objects reachable from them through the references `tp_traverse` visits for the
//! builtin containers, instances, types, functions, modules and cells, and the constants and
//! names of code objects. Each object is counted once, by `type(o).__name__`, with its size as
//! `sys.getsizeof` computes it.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;

use memlens_remote::ProcessMemory;

use crate::dicts::{keys_size, read_dict};
use crate::error::Result;
use crate::gc;
use crate::layouts::Layout;
use crate::objects::type_name;
use crate::process::Interpreter;

/// One type's line of the census.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeCount {
    /// `type(o).__name__` (untrusted).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Objects.
    pub count: u64,
    /// Sum of `sys.getsizeof`.
    pub bytes: u64,
}

/// The census of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Census {
    /// Objects counted.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Per type, most objects first.
    pub types: Vec<TypeCount>,
}

impl Census {
    /// Count of a type name (0 if absent).
    pub fn count_of(&self, name: &str) -> u64 {
        self.types
            .iter()
            .find(|t| t.type_name == name)
            .map_or(0, |t| t.count)
    }
}

/// A fast hasher for object addresses (already well spread in the low bits after mixing).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type AddrSet = HashSet<u64, BuildHasherDefault<AddrHasher>>;
type AddrMap<V> = HashMap<u64, V, BuildHasherDefault<AddrHasher>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Other,
    List,
    Tuple,
    Dict,
    Set,
    Str,
    Int,
    Type,
    Function,
    Module,
    Cell,
    Code,
    /// 3.15 `lazy_import`: holds the code object that declared it.
    LazyImport,
    /// Method, member, getset, wrapper and classmethod descriptors (their type and names).
    Descriptor,
}

#[derive(Debug, Clone)]
struct TypeInfo {
    slot: usize,
    basicsize: u64,
    itemsize: u64,
    flags: u64,
    dictoffset: i64,
    kind: Kind,
    /// The type is a heap type (its instances visit it, their slots and dict).
    heap: bool,
    gc: bool,
    /// Offsets of `T_OBJECT_EX` members of the heap types in the base chain.
    slots: Vec<u64>,
    cached_keys: u64,
}

struct Walker<'a, M> {
    it: &'a Interpreter,
    l: &'a Layout,
    mem: &'a M,
    types: AddrMap<Option<TypeInfo>>,
    names: HashMap<String, usize>,
    out: Vec<TypeCount>,
    seen: AddrSet,
    stack: Vec<u64>,
    unreadable: u64,
}

/// Takes the census. `mem` should be a cache over a paused (or at least quiet) process.
pub fn take<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<Census> {
    it.layout.require_tables("the census")?;
    let l = it.layout;
    let mut w = Walker {
        it,
        l,
        mem,
        types: AddrMap::default(),
        names: HashMap::new(),
        out: Vec::new(),
        seen: AddrSet::default(),
        stack: Vec::new(),
        unreadable: 0,
    };
    let state = gc::state_address(it)?;
    for g in 0..4 {
        let head = gc::list_head(it, state, g);
        let mut roots = Vec::new();
        gc::walk_list(mem, head, l.gc_head_size, |o| roots.push(o))?;
        for o in roots {
            w.push(o);
        }
    }
    if let Ok(modules) = mem.read_u64(it.interp + l.interp_modules) {
        w.push(modules);
    }
    while let Some(obj) = w.stack.pop() {
        if w.visit(obj).is_err() {
            w.unreadable += 1;
        }
    }
    if w.unreadable > 0 {
        log::info!("census: {} objects could not be read", w.unreadable);
    }
    let mut types = w.out;
    types.retain(|t| t.count > 0);
    types.sort_by(|a, b| b.count.cmp(&a.count).then(a.type_name.cmp(&b.type_name)));
    Ok(Census {
        objects: types.iter().map(|t| t.count).sum(),
        bytes: types.iter().map(|t| t.bytes).sum(),
        types,
    })
}

fn word(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    match b.get(at..at + 8) {
        Some(s) => u64::from_ne_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
        None => 0,
    }
}

impl<M: ProcessMemory> Walker<'_, M> {
    fn push(&mut self, obj: u64) {
        if obj != 0 && obj % 8 == 0 && self.seen.insert(obj) {
            self.stack.push(obj);
        }
    }

    fn push_array(&mut self, at: u64, n: u64) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let raw = self.mem.read_vec(at, (n * 8) as usize)?;
        for c in raw.chunks_exact(8) {
            self.push(word(c, 0));
        }
        Ok(())
    }

    fn type_info(&mut self, ty: u64) -> Option<TypeInfo> {
        if let Some(t) = self.types.get(&ty) {
            return t.clone();
        }
        let info = self.read_type(ty).ok();
        self.types.insert(ty, info.clone());
        info
    }

    fn read_type(&mut self, ty: u64) -> Result<TypeInfo> {
        let l = self.l;
        let raw = self.mem.read_vec(ty, l.type_size as usize)?;
        let flags = word(&raw, l.type_flags);
        let heap = flags & l.tpflags_heaptype != 0;
        let name = type_name(self.mem, l, ty)?;
        let t = self.it.types;
        let mut kind = if ty == t.list || flags & l.tpflags_list_subclass != 0 {
            Kind::List
        } else if flags & l.tpflags_tuple_subclass != 0 {
            Kind::Tuple
        } else if flags & l.tpflags_dict_subclass != 0 {
            Kind::Dict
        } else if ty == t.str {
            Kind::Str
        } else if flags & l.tpflags_long_subclass != 0 {
            Kind::Int
        } else if flags & l.tpflags_type_subclass != 0 {
            Kind::Type
        } else if ty == t.function {
            Kind::Function
        } else if ty == t.cell {
            Kind::Cell
        } else if ty == t.code {
            Kind::Code
        } else if ty != 0 && self.it.symbol("PyLazyImport_Type") == Some(ty) {
            Kind::LazyImport
        } else if [
            "PyMethodDescr_Type",
            "PyClassMethodDescr_Type",
            "PyMemberDescr_Type",
            "PyGetSetDescr_Type",
            "PyWrapperDescr_Type",
        ]
        .iter()
        .any(|n| ty != 0 && self.it.symbol(n) == Some(ty))
        {
            Kind::Descriptor
        } else {
            Kind::Other
        };
        if kind == Kind::Other {
            // sets and modules, subclasses included: look along tp_base
            let mut base = ty;
            for _ in 0..64 {
                if base == 0 {
                    break;
                }
                if base == t.set || base == t.frozenset {
                    kind = Kind::Set;
                    break;
                }
                if base == t.module {
                    kind = Kind::Module;
                    break;
                }
                base = self.mem.read_u64(base + l.type_base)?;
            }
        }
        let mut slots = Vec::new();
        if heap {
            let mut base = ty;
            for _ in 0..64 {
                if base == 0 {
                    break;
                }
                let bflags = self.mem.read_u64(base + l.type_flags)?;
                if bflags & l.tpflags_heaptype == 0 {
                    break;
                }
                let n = self.mem.read_i64(base + l.var_size)?;
                let members = self.mem.read_u64(base + l.type_members)?;
                if n > 0 && n < 4096 && members != 0 {
                    let raw = self
                        .mem
                        .read_vec(members, (n as u64 * l.member_size) as usize)?;
                    for m in raw.chunks_exact(l.member_size as usize) {
                        let mtype = word(m, l.member_type) & 0xffff_ffff;
                        if mtype == l.member_t_object_ex {
                            slots.push(word(m, l.member_offset));
                        }
                    }
                }
                base = self.mem.read_u64(base + l.type_base)?;
            }
        }
        let slot = match self.names.get(&name) {
            Some(i) => *i,
            None => {
                self.out.push(TypeCount {
                    type_name: name.clone(),
                    count: 0,
                    bytes: 0,
                });
                self.names.insert(name, self.out.len() - 1);
                self.out.len() - 1
            }
        };
        Ok(TypeInfo {
            slot,
            basicsize: word(&raw, l.type_basicsize),
            itemsize: word(&raw, l.type_itemsize),
            flags,
            dictoffset: word(&raw, l.type_dictoffset) as i64,
            kind,
            heap,
            gc: flags & l.tpflags_have_gc != 0,
            slots,
            cached_keys: if heap {
                self.mem.read_u64(ty + l.heaptype_cached_keys)?
            } else {
                0
            },
        })
    }

    fn visit(&mut self, obj: u64) -> Result<()> {
        let l = self.l;
        let mut head = [0u8; 24];
        self.mem.read(obj, &mut head)?;
        let ty = word(&head, l.object_type);
        let ob_size = word(&head, l.var_size) as i64;
        let Some(t) = self.type_info(ty) else {
            return Err(crate::error::Error::Invalid {
                pid: 0,
                why: "unreadable type".into(),
            });
        };
        if log::log_enabled!(log::Level::Trace) {
            log::trace!("census object {obj:#x} {}", self.out[t.slot].type_name);
        }
        let mut size = t.basicsize;
        // Some variable-size types (generators, frames) keep no item count in ob_size and
        // define their own __sizeof__; an implausible count is ignored.
        let items = ob_size.unsigned_abs();
        if t.itemsize != 0 && items < 1 << 28 {
            size += items * t.itemsize;
        }
        let minor = self.it.version.minor;
        match t.kind {
            Kind::List => {
                let items = self.mem.read_u64(obj + l.list_item)?;
                let allocated = self.mem.read_i64(obj + l.list_allocated)?;
                size = t.basicsize + allocated.max(0) as u64 * 8;
                if (0..1 << 32).contains(&ob_size) && items != 0 {
                    self.push_array(items, ob_size as u64)?;
                }
            }
            Kind::Tuple => {
                if (0..1 << 32).contains(&ob_size) {
                    self.push_array(obj + l.tuple_item, ob_size as u64)?;
                }
            }
            Kind::Dict => {
                let d = read_dict(self.mem, l, obj)?;
                size = t.basicsize + d.extra_size;
                // Keys too, str keys included: gc.get_referents leaves out the keys of
                // str-keyed dicts (they cannot form cycles), but they are memory all the same.
                for (k, v) in d.items {
                    self.push(v);
                    self.push(k);
                }
            }
            Kind::Set => {
                let table = self.mem.read_u64(obj + l.set_table)?;
                let mask = self.mem.read_i64(obj + l.set_mask)?;
                if (0..1 << 32).contains(&mask) && table != 0 {
                    let n = mask as u64 + 1;
                    if table != obj + l.set_smalltable {
                        size = t.basicsize + n * 16;
                    }
                    let raw = self.mem.read_vec(table, (n * 16) as usize)?;
                    for e in raw.chunks_exact(16) {
                        let (key, hash) = (word(e, 0), word(e, 8) as i64);
                        if key != 0 && hash != -1 {
                            self.push(key);
                        }
                    }
                }
            }
            Kind::Str => size = self.str_size(obj)?,
            Kind::Int => {
                let digits = match l.long_tag {
                    Some(tag) => (self.mem.read_u64(obj + tag)? >> 3).max(1),
                    None if minor >= 11 => ob_size.unsigned_abs().max(1),
                    None => ob_size.unsigned_abs(),
                };
                size = l.long_digits + digits * l.long_digit_size;
            }
            Kind::Type => {
                if t.heap || self.mem.read_u64(obj + l.type_flags)? & l.tpflags_heaptype != 0 {
                    for off in [
                        l.type_dict,
                        l.type_cache,
                        l.type_mro,
                        l.type_bases,
                        l.type_base,
                    ] {
                        let p = self.mem.read_u64(obj + off)?;
                        self.push(p);
                    }
                    if let Some(m) = l.heaptype_module {
                        let p = self.mem.read_u64(obj + m)?;
                        self.push(p);
                    }
                    let keys = self.mem.read_u64(obj + l.heaptype_cached_keys)?;
                    size = l.heaptype_size
                        + if keys != 0 {
                            keys_size(self.mem, l, keys).unwrap_or(0)
                        } else {
                            0
                        };
                } else {
                    // a static type: not a GC object for getsizeof
                    size = l.type_size;
                    self.count(&t, size);
                    return Ok(());
                }
            }
            Kind::Function => {
                let fields = [
                    Some(l.func_code),
                    Some(l.func_globals),
                    l.func_builtins,
                    Some(l.func_module),
                    Some(l.func_defaults),
                    Some(l.func_kwdefaults),
                    Some(l.func_doc),
                    Some(l.func_name),
                    Some(l.func_dict),
                    Some(l.func_closure),
                    Some(l.func_annotations),
                    Some(l.func_qualname),
                    l.func_typeparams,
                ];
                for off in fields.into_iter().flatten() {
                    let p = self.mem.read_u64(obj + off)?;
                    self.push(p);
                }
            }
            Kind::Module => {
                let p = self.mem.read_u64(obj + l.module_dict)?;
                self.push(p);
            }
            Kind::Cell => {
                let p = self.mem.read_u64(obj + l.cell_ref)?;
                self.push(p);
            }
            Kind::Code => {
                let mut fields = vec![l.code_consts, l.code_names, l.code_filename, l.code_name];
                fields.extend(l.code_qualname);
                for off in fields {
                    let p = self.mem.read_u64(obj + off)?;
                    self.push(p);
                }
            }
            Kind::LazyImport => {
                let fields = [
                    l.lazy_import_builtins,
                    l.lazy_import_from,
                    l.lazy_import_attr,
                    l.lazy_import_code,
                ];
                for off in fields.into_iter().flatten() {
                    let p = self.mem.read_u64(obj + off)?;
                    self.push(p);
                }
            }
            Kind::Descriptor => {
                for off in [l.descr_type, l.descr_name, l.descr_qualname] {
                    let p = self.mem.read_u64(obj + off)?;
                    self.push(p);
                }
            }
            Kind::Other => {}
        }
        if t.heap {
            self.visit_instance(obj, ty, &t, ob_size)?;
        } else if t.dictoffset > 0 && !matches!(t.kind, Kind::Type | Kind::Module) {
            // static types with an instance dict (functools.partial, classmethod ...) visit it
            let d = self.mem.read_u64(obj + t.dictoffset as u64)?;
            self.push(d);
        }
        let mut pre = 0;
        if t.gc {
            pre += l.gc_head_size;
        }
        if let Some(md) = l.tpflags_managed_dict {
            let mut mask = md;
            if let Some(mw) = l.tpflags_managed_weakref {
                mask |= mw;
            }
            if t.flags & mask != 0 {
                pre += 16;
            }
        }
        self.count(&t, size + pre);
        Ok(())
    }

    fn count(&mut self, t: &TypeInfo, size: u64) {
        let e = &mut self.out[t.slot];
        e.count += 1;
        e.bytes += size;
    }

    /// What `subtype_traverse` visits: the (heap) type, `__slots__` members, the instance
    /// dict or its inline/managed values.
    fn visit_instance(&mut self, obj: u64, ty: u64, t: &TypeInfo, ob_size: i64) -> Result<()> {
        let l = self.l;
        self.push(ty);
        for off in t.slots.clone() {
            if let Ok(p) = self.mem.read_u64(obj + off) {
                self.push(p);
            }
        }
        let managed = l.tpflags_managed_dict.is_some_and(|f| t.flags & f != 0);
        if managed {
            return self.visit_managed(obj, t);
        }
        if t.kind == Kind::Type || t.kind == Kind::Module {
            return Ok(()); // their dicts were visited as type/module fields
        }
        let dict_at = match t.dictoffset {
            0 => return Ok(()),
            off if off > 0 => obj + off as u64,
            off => {
                // negative: counted from the end of a variable-size object
                let n = ob_size.unsigned_abs();
                let size = (t.basicsize + n * t.itemsize + 7) & !7;
                obj.wrapping_add(size).wrapping_add(off as u64)
            }
        };
        let d = self.mem.read_u64(dict_at)?;
        self.push(d);
        Ok(())
    }

    fn visit_managed(&mut self, obj: u64, t: &TypeInfo) -> Result<()> {
        let l = self.l;
        let nvalues = |s: &Self| -> Result<u64> {
            if t.cached_keys == 0 {
                return Ok(0);
            }
            let n = s.mem.read_i64(t.cached_keys + l.dictkeys_nentries)?;
            Ok(n.clamp(0, 1 << 16) as u64)
        };
        let values_off = l.dictvalues_values.unwrap_or(0);
        match self.it.version.minor {
            11 => {
                let dict = self.mem.read_u64(obj.wrapping_sub(24))?;
                let values = self.mem.read_u64(obj.wrapping_sub(32))?;
                if dict != 0 {
                    self.push(dict);
                } else if values != 0 {
                    let n = nvalues(self)?;
                    self.push_array(values + values_off, n)?;
                }
            }
            12 => {
                let dorv = self.mem.read_u64(obj.wrapping_sub(24))?;
                // PyDictOrValues: a values pointer is stored minus one (odd), a dict as is
                if dorv & 1 != 0 {
                    let n = nvalues(self)?;
                    self.push_array(dorv + 1 + values_off, n)?;
                } else {
                    self.push(dorv);
                }
            }
            _ => {
                let before = l.managed_dict_before.unwrap_or(24);
                let inline = l.tpflags_inline_values.is_some_and(|f| t.flags & f != 0);
                if inline {
                    let values = obj + t.basicsize;
                    // PyDictValues: capacity, size, embedded, valid (u8 each)
                    if self.mem.read_u8(values + 3)? != 0 {
                        let n = nvalues(self)?;
                        return self.push_array(values + values_off, n);
                    }
                }
                let dict = self.mem.read_u64(obj.wrapping_sub(before))?;
                self.push(dict);
            }
        }
        Ok(())
    }

    fn str_size(&self, obj: u64) -> Result<u64> {
        let l = self.l;
        let state = self.mem.read_u32(obj + l.str_state)?;
        let kind = u64::from((state >> 2) & 7);
        let compact = (state >> 5) & 1 == 1;
        let ascii = (state >> 6) & 1 == 1;
        let len = self.mem.read_i64(obj + l.str_length)?.max(0) as u64;
        if !compact {
            return Ok(l.str_compact_size);
        }
        let (mut size, data) = if ascii {
            (l.str_ascii_size + len + 1, obj + l.str_ascii_size)
        } else {
            (
                l.str_compact_size + (len + 1) * kind,
                obj + l.str_compact_size,
            )
        };
        if !ascii {
            let utf8 = self.mem.read_u64(obj + l.str_utf8)?;
            if utf8 != 0 && utf8 != data {
                size += self.mem.read_u64(obj + l.str_utf8_length)? + 1;
            }
        }
        if let (Some(w), Some(wl)) = (l.str_wstr, l.str_wstr_length) {
            let wstr = self.mem.read_u64(obj + w)?;
            if wstr != 0 && wstr != data {
                let wlen = if ascii {
                    len
                } else {
                    self.mem.read_u64(obj + wl)?
                };
                size += (wlen + 1) * 4;
            }
        }
        Ok(size)
    }
}
