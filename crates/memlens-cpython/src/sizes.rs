//! `sys.getsizeof` of an object, computed from outside the process the way the interpreter
//! computes it: the type's own `__sizeof__` (bytearray's allocation, a list's `allocated`
//! slots, a dict's key table and values, a str's UTF-8 cache, a deque's blocks, an array's
//! buffer, a BytesIO's unshared buffer, a code object's extras, a frame's or generator's slots,
//! a type's cached keys, numpy's owned data ...), plus the GC header and the managed-dict
//! pre-header `getsizeof` adds. Every offset and constant comes from the generated layout
//! tables ([`crate::layouts`]).
//!
//! Usage from a census: build one [`Sizer`] per interpreter, call [`Sizer::type_facts`] once
//! per type (cache the result by type address), then [`Sizer::getsizeof`] per object.
//!
//! Types whose `__sizeof__` memlens does not model (a Python class defining `__sizeof__`,
//! `decimal.Decimal`, `_io.BufferedReader`, `_pickle.Pickler`, `_struct.Struct` ...) are
//! sized by the generic formula and marked inexact ([`ObjectSize::exact`]).

use memlens_remote::ProcessMemory;

use crate::dicts::read_dict;
use crate::error::{Error, Result};
use crate::layouts::{self, Layout, NumpyLayout};
use crate::numpy;
use crate::objects::read_str;
use crate::process::Interpreter;

/// How a type's `__sizeof__` is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SizeKind {
    /// `object.__sizeof__`: `tp_basicsize + ob_size * tp_itemsize` (tuple, bytes, float,
    /// module, function, instances ...).
    Generic,
    /// `bytearray`: its allocation.
    ByteArray,
    /// `str`: compact or legacy data, UTF-8 cache (and wstr before 3.12).
    Str,
    /// `int` and `bool`: digits.
    Int,
    /// `list`: `allocated` slots.
    List,
    /// `dict` (and 3.15's `frozendict`): key table when not shared, values of split tables.
    Dict,
    /// `collections.OrderedDict`: the dict plus its fast-node table and linked list.
    OrderedDict,
    /// `set` and `frozenset`: a table outside the object once resized.
    Set,
    /// `code`: co_extra (all), opcache and cell2arg (before 3.11).
    Code,
    /// `frame` objects: their slots.
    Frame,
    /// Generators, coroutines and async generators (3.11+): their frame's slots.
    Generator,
    /// `type` and metatypes: heap types with their cached keys.
    Type,
    /// `array.array`: `allocated` items of its typecode's size.
    Array,
    /// `io.BytesIO`: its buffer when not shared.
    BytesIO,
    /// `collections.deque`: its blocks.
    Deque,
    /// `numpy.ndarray`: dimensions, strides and owned data.
    NdArray,
    /// A `__sizeof__` memlens does not model: the generic formula, marked inexact.
    Unmodelled,
}

/// What sizing an instance of a type needs, read once per type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeFacts {
    /// How `__sizeof__` is computed.
    pub kind: SizeKind,
    /// `tp_basicsize`.
    pub basicsize: u64,
    /// `tp_itemsize`.
    pub itemsize: u64,
    /// `tp_flags`.
    pub flags: u64,
    /// What `getsizeof` adds before the object: the GC header for GC types, and (3.11+) the
    /// managed dict/weakref pre-header.
    pub presize: u64,
}

/// A data buffer outside the object, attributed to it (numpy arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataBuffer {
    /// `nbytes` of the array.
    pub bytes: u64,
    /// The array owns it (`OWNDATA`); otherwise it is a view of another object's buffer.
    pub owned: bool,
}

/// The size of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectSize {
    /// What `sys.getsizeof` returns (for a numpy array that owns its data, numpy's
    /// `__sizeof__` includes the data).
    pub size: u64,
    /// `false` for types memlens does not model ([`SizeKind::Unmodelled`]).
    pub exact: bool,
    /// numpy arrays: the data buffer, owned or viewed.
    pub buffer: Option<DataBuffer>,
}

/// Longest MRO followed.
const MAX_MRO: usize = 256;
/// Longest method table read.
const MAX_METHODS: u64 = 4096;
/// Counts above this are not believed (corrupt or changing memory).
const MAX_COUNT: i64 = 1 << 40;

/// Builtin types recognised by address, by their exported symbol.
const BY_SYMBOL: [(&str, SizeKind); 15] = [
    ("PyByteArray_Type", SizeKind::ByteArray),
    ("PyUnicode_Type", SizeKind::Str),
    ("PyLong_Type", SizeKind::Int),
    ("PyList_Type", SizeKind::List),
    ("PyDict_Type", SizeKind::Dict),
    ("PyFrozenDict_Type", SizeKind::Dict),
    ("PyODict_Type", SizeKind::OrderedDict),
    ("PySet_Type", SizeKind::Set),
    ("PyFrozenSet_Type", SizeKind::Set),
    ("PyCode_Type", SizeKind::Code),
    ("PyFrame_Type", SizeKind::Frame),
    ("PyType_Type", SizeKind::Type),
    ("PyGen_Type", SizeKind::Generator),
    ("PyCoro_Type", SizeKind::Generator),
    ("PyAsyncGen_Type", SizeKind::Generator),
];

/// Extension types recognised by `tp_name` (their type objects are static in some versions,
/// heap types from a spec in others, and not exported).
const BY_NAME: [(&[u8], SizeKind); 4] = [
    (b"collections.deque", SizeKind::Deque),
    (b"array.array", SizeKind::Array),
    (b"_io.BytesIO", SizeKind::BytesIO),
    (b"numpy.ndarray", SizeKind::NdArray),
];

/// What sizing objects of one interpreter needs.
#[derive(Debug, Clone)]
pub struct Sizer {
    l: &'static Layout,
    known: Vec<(u64, SizeKind)>,
    object_type: u64,
    type_type: u64,
    numpy: Option<&'static NumpyLayout>,
}

fn bad(what: impl Into<String>) -> Error {
    Error::Invalid {
        pid: 0,
        why: what.into(),
    }
}

fn count(v: i64, what: &str) -> Result<u64> {
    if (0..MAX_COUNT).contains(&v) {
        Ok(v as u64)
    } else {
        Err(bad(format!("{what} {v} out of range")))
    }
}

/// An object being sized: fields from `head` (bytes already read at its address) when they
/// lie inside it, from memory otherwise.
struct Obj<'a, M> {
    mem: &'a M,
    at: u64,
    head: &'a [u8],
}

impl<M: ProcessMemory> Obj<'_, M> {
    fn bytes<const N: usize>(&self, off: u64) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        let start = off as usize;
        match self.head.get(start..start + N) {
            Some(s) => b.copy_from_slice(s),
            None => self.mem.read(self.at + off, &mut b)?,
        }
        Ok(b)
    }
    fn u64(&self, off: u64) -> Result<u64> {
        Ok(u64::from_ne_bytes(self.bytes(off)?))
    }
    fn i64(&self, off: u64) -> Result<i64> {
        Ok(i64::from_ne_bytes(self.bytes(off)?))
    }
    fn u32(&self, off: u64) -> Result<u32> {
        Ok(u32::from_ne_bytes(self.bytes(off)?))
    }
    fn u8(&self, off: u64) -> Result<u8> {
        Ok(self.bytes::<1>(off)?[0])
    }
    /// A C integer field of `size` bytes (4 or 8), sign-extended.
    fn int(&self, off: u64, size: u64) -> Result<i64> {
        match size {
            4 => Ok(i64::from(i32::from_ne_bytes(self.bytes(off)?))),
            8 => self.i64(off),
            1 => Ok(i64::from(self.u8(off)? as i8)),
            _ => Err(bad(format!("a {size}-byte integer field"))),
        }
    }
}

fn need(v: Option<u64>, what: &str) -> Result<u64> {
    v.ok_or_else(|| bad(format!("no {what} in this version's layout")))
}

impl Sizer {
    /// The sizer of an attached interpreter: its builtin types by symbol, numpy's layout if
    /// numpy is loaded (detected from the mappings).
    pub fn new(it: &Interpreter) -> Sizer {
        let numpy = numpy::detect(it.pid).and_then(|v| layouts::numpy_for_major(v.major));
        Sizer::from_parts(it.layout, |n| it.symbol(n), numpy)
    }

    /// A sizer from its parts: `symbol` gives the address of an exported symbol.
    pub fn from_parts(
        l: &'static Layout,
        symbol: impl Fn(&str) -> Option<u64>,
        numpy: Option<&'static NumpyLayout>,
    ) -> Sizer {
        let known = BY_SYMBOL
            .iter()
            // generators embed their frame from 3.11 (`gi_iframe`); before, the generic size
            .filter(|(_, k)| *k != SizeKind::Generator || l.gen_iframe.is_some())
            .filter_map(|(name, k)| symbol(name).filter(|a| *a != 0).map(|a| (a, *k)))
            .collect();
        Sizer {
            l,
            known,
            object_type: symbol("PyBaseObject_Type").unwrap_or(0),
            type_type: symbol("PyType_Type").unwrap_or(0),
            numpy,
        }
    }

    /// The layout it reads with.
    pub fn layout(&self) -> &'static Layout {
        self.l
    }

    /// numpy's layout when numpy is loaded and memlens has its table.
    pub fn numpy(&self) -> Option<&'static NumpyLayout> {
        self.numpy
    }

    /// Reads what sizing instances of the type at `ty` needs. Cache it per type.
    pub fn type_facts<M: ProcessMemory>(&self, mem: &M, ty: u64) -> Result<TypeFacts> {
        self.l.require_tables("object sizes")?;
        let l = self.l;
        let t = Obj {
            mem,
            at: ty,
            head: &mem.read_vec(ty, l.type_size as usize)?,
        };
        let flags = t.u64(l.type_flags)?;
        let basicsize = count(t.i64(l.type_basicsize)?, "tp_basicsize")?;
        let itemsize = count(t.i64(l.type_itemsize)?, "tp_itemsize")?;
        let mut presize = 0;
        if flags & l.tpflags_have_gc != 0 {
            presize += l.gc_head_size;
        }
        // 3.11 adds the managed-dict pre-header, 3.12+ also the managed-weakref one (a flag
        // the tables have from 3.12 only)
        let preheader =
            l.tpflags_managed_dict.unwrap_or(0) | l.tpflags_managed_weakref.unwrap_or(0);
        if flags & preheader != 0 {
            presize += 2 * l.pointer_size;
        }
        Ok(TypeFacts {
            kind: self.classify(mem, ty, &t)?,
            basicsize,
            itemsize,
            flags,
            presize,
        })
    }

    /// Which `__sizeof__` the type's instances get: the first type along its MRO that memlens
    /// knows or that defines `__sizeof__` itself.
    fn classify<M: ProcessMemory>(&self, mem: &M, ty: u64, t: &Obj<'_, M>) -> Result<SizeKind> {
        let l = self.l;
        let mro = t.u64(l.type_mro)?;
        let mut chain = Vec::new();
        if mro != 0 {
            let n = count(mem.read_i64(mro.wrapping_add(l.var_size))?, "MRO length")?;
            let raw = mem.read_vec(
                mro.wrapping_add(l.tuple_item),
                (n.min(MAX_MRO as u64) * 8) as usize,
            )?;
            chain.extend(
                raw.chunks_exact(8)
                    .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]))),
            );
        } else {
            // not ready yet, or a static type without a stored MRO: the base chain
            let mut base = ty;
            while base != 0 && chain.len() < MAX_MRO {
                chain.push(base);
                base = mem.read_u64(base.wrapping_add(l.type_base))?;
            }
        }
        for base in chain {
            if base == 0 || base == self.object_type {
                break;
            }
            if let Some((_, k)) = self.known.iter().find(|(a, _)| *a == base) {
                return Ok(*k);
            }
            if let Some(k) = self.by_name(mem, base)? {
                return Ok(k);
            }
            if self.defines_sizeof(mem, base)? {
                return Ok(SizeKind::Unmodelled);
            }
        }
        Ok(SizeKind::Generic)
    }

    /// An extension type recognised by name, when its instances have the layout the table
    /// describes (else it is not the type memlens knows: unmodelled).
    fn by_name<M: ProcessMemory>(&self, mem: &M, ty: u64) -> Result<Option<SizeKind>> {
        let l = self.l;
        let name = mem.read_cstr(mem.read_u64(ty.wrapping_add(l.type_name))?, 64)?;
        let Some((_, kind)) = BY_NAME.iter().find(|(n, _)| *n == name.as_slice()) else {
            return Ok(None);
        };
        let basicsize = mem.read_u64(ty.wrapping_add(l.type_basicsize))?;
        let expected = match kind {
            SizeKind::Deque => Some(l.deque_size),
            SizeKind::Array => Some(l.array_size),
            SizeKind::BytesIO => Some(l.bytesio_size),
            SizeKind::NdArray => self.numpy.map(|n| n.ndarray_fields_size),
            _ => None,
        };
        Ok(Some(if expected == Some(basicsize) {
            *kind
        } else {
            SizeKind::Unmodelled
        }))
    }

    /// Whether the type itself (not a base) defines `__sizeof__`: in its C method table, or
    /// (heap types) in its dict.
    fn defines_sizeof<M: ProcessMemory>(&self, mem: &M, ty: u64) -> Result<bool> {
        let l = self.l;
        let methods = mem.read_u64(ty.wrapping_add(l.type_methods))?;
        if methods != 0 {
            for i in 0..MAX_METHODS {
                let name =
                    mem.read_u64(methods.wrapping_add(i * l.method_def_size + l.method_def_name))?;
                if name == 0 {
                    break;
                }
                if mem.read_cstr(name, 16)? == b"__sizeof__" {
                    return Ok(true);
                }
            }
        }
        let flags = mem.read_u64(ty.wrapping_add(l.type_flags))?;
        let dict = mem.read_u64(ty.wrapping_add(l.type_dict))?;
        if flags & l.tpflags_heaptype != 0 && dict != 0 {
            for (key, _) in read_dict(mem, l, dict)?.items {
                if read_str(mem, l, key, 11).is_ok_and(|k| k == "__sizeof__") {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// `sys.getsizeof` of the object at `obj`, whose type has `facts`. `head` holds bytes
    /// already read at `obj` (any length, may be empty): fields inside it are not read again.
    pub fn getsizeof<M: ProcessMemory>(
        &self,
        mem: &M,
        facts: &TypeFacts,
        obj: u64,
        head: &[u8],
    ) -> Result<ObjectSize> {
        let o = Obj { mem, at: obj, head };
        let mut buffer = None;
        let mut presize = facts.presize;
        let size = match facts.kind {
            SizeKind::Generic | SizeKind::Unmodelled => self.generic(&o, facts)?,
            SizeKind::ByteArray => self.bytearray(&o, facts)?,
            SizeKind::Str => self.str_size(&o)?,
            SizeKind::Int => self.int(&o)?,
            SizeKind::List => {
                let allocated = count(o.i64(self.l.list_allocated)?, "list allocation")?;
                facts.basicsize + allocated * self.l.pointer_size
            }
            SizeKind::Dict => self.dict(&o, facts)?,
            SizeKind::OrderedDict => self.ordered_dict(&o, facts)?,
            SizeKind::Set => self.set(&o, facts)?,
            SizeKind::Code => self.code(&o, facts)?,
            SizeKind::Frame => self.frame(&o)?,
            SizeKind::Generator => self.generator(&o)?,
            SizeKind::Type => {
                let (size, pre) = self.type_object(&o, facts)?;
                presize = pre;
                size
            }
            SizeKind::Array => self.array(&o, facts)?,
            SizeKind::BytesIO => self.bytesio(&o, facts)?,
            SizeKind::Deque => self.deque(&o, facts)?,
            SizeKind::NdArray => {
                let (size, b) = self.ndarray(&o, facts)?;
                buffer = Some(b);
                size
            }
        };
        Ok(ObjectSize {
            size: size + presize,
            exact: facts.kind != SizeKind::Unmodelled,
            buffer,
        })
    }

    /// `object.__sizeof__`.
    fn generic<M: ProcessMemory>(&self, o: &Obj<'_, M>, facts: &TypeFacts) -> Result<u64> {
        if facts.itemsize == 0 {
            return Ok(facts.basicsize);
        }
        let n = count(o.i64(self.l.var_size)?, "ob_size")?;
        Ok(facts.basicsize + n * facts.itemsize)
    }

    fn bytearray<M: ProcessMemory>(&self, o: &Obj<'_, M>, facts: &TypeFacts) -> Result<u64> {
        let alloc = count(o.i64(self.l.bytearray_alloc)?, "bytearray allocation")?;
        Ok(match self.l.bytes_object_size {
            // 3.15: the buffer is a bytes object, counted with its header
            Some(header) if self.l.bytearray_bytes_object.is_some() => {
                facts.basicsize + if alloc > 0 { header + alloc } else { 0 }
            }
            _ => facts.basicsize + alloc,
        })
    }

    fn str_size<M: ProcessMemory>(&self, o: &Obj<'_, M>) -> Result<u64> {
        let l = self.l;
        let state = u64::from(o.u32(l.str_state)?);
        let mask = l.str_kind_mask;
        let kind = (state & mask) >> mask.trailing_zeros();
        let compact = state & l.str_compact_bit != 0;
        let ascii = state & l.str_ascii_bit != 0;
        let ready = l.str_ready_bit.is_none_or(|b| state & b != 0);
        let len = count(o.i64(l.str_length)?, "str length")?;
        let (mut size, data) = if compact && ascii {
            (
                l.str_ascii_size + len + 1,
                o.at.wrapping_add(l.str_ascii_size),
            )
        } else if compact {
            (
                l.str_compact_size + (len + 1) * kind,
                o.at.wrapping_add(l.str_compact_size),
            )
        } else {
            // two blocks (str subclasses, legacy strings): the object and its data
            let data = o.u64(l.str_data)?;
            let chars = if data != 0 { (len + 1) * kind } else { 0 };
            (l.str_unicode_size + chars, data)
        };
        if !(compact && ascii) {
            let utf8 = o.u64(l.str_utf8)?;
            if utf8 != 0 && utf8 != data {
                size += count(o.i64(l.str_utf8_length)?, "utf8 length")? + 1;
            }
        }
        if let (Some(wstr_at), Some(wlen_at), Some(wchar)) =
            (l.str_wstr, l.str_wstr_length, l.wchar_size)
        {
            // before 3.12: the wchar_t copy, when it is not the data itself
            let wstr = o.u64(wstr_at)?;
            if wstr != 0 && (!ready || wstr != data) {
                let wlen = if compact && ascii {
                    len
                } else {
                    count(o.i64(wlen_at)?, "wstr length")?
                };
                size += (wlen + 1) * wchar;
            }
        }
        Ok(size)
    }

    fn int<M: ProcessMemory>(&self, o: &Obj<'_, M>) -> Result<u64> {
        let l = self.l;
        let digits = match (l.long_tag, l.long_non_size_bits) {
            (Some(tag), Some(bits)) => (o.u64(tag)? >> bits).max(1),
            _ => {
                // at least one digit from 3.11 (the table's long_sizeof_min_digits)
                let n = o.i64(l.var_size)?.unsigned_abs();
                n.max(l.long_sizeof_min_digits.unwrap_or(0))
            }
        };
        if digits > 1 << 40 {
            return Err(bad("int digit count out of range"));
        }
        Ok(l.long_digits + digits * l.long_digit_size)
    }

    fn dict<M: ProcessMemory>(&self, o: &Obj<'_, M>, facts: &TypeFacts) -> Result<u64> {
        let l = self.l;
        let keys = o.u64(l.dict_keys)?;
        let values = o.u64(l.dict_values)?;
        if keys == 0 {
            return Err(bad(format!("dict at {:#x} has no keys", o.at)));
        }
        let k = Obj {
            mem: o.mem,
            at: keys,
            head: &[],
        };
        let mut size = facts.basicsize;
        if values != 0 {
            let slots = if let Some(size_at) = l.dictkeys_size_field {
                // 3.8-3.10: USABLE_FRACTION(dk_size)
                usable_fraction(count(k.i64(size_at)?, "dict size")?)
            } else {
                let n = count(k.i64(l.dictkeys_nentries)?, "dict entries")?;
                n + count(k.i64(l.dictkeys_usable)?, "dict usable")?
            };
            size += slots * l.pointer_size;
        }
        if k.i64(l.dictkeys_refcnt)? == 1 {
            size += self.keys_size(&k)?;
        }
        Ok(size)
    }

    /// `_PyDict_KeysSize`.
    fn keys_size<M: ProcessMemory>(&self, k: &Obj<'_, M>) -> Result<u64> {
        let l = self.l;
        if let Some(size_at) = l.dictkeys_size_field {
            let n = count(k.i64(size_at)?, "dict size")?;
            let ix = match n {
                0..=0xff => 1,
                0x100..=0xffff => 2,
                0x1_0000..=0xffff_ffff => 4,
                _ => 8,
            };
            let entry = l.dictkeys_entry_size;
            return Ok(l.dictkeys_size + ix * n + entry * usable_fraction(n));
        }
        let log2 = u64::from(k.u8(need(l.dictkeys_log2_size, "dk_log2_size")?)?);
        let log2_ix = u64::from(k.u8(need(l.dictkeys_log2_index_bytes, "dk_log2_index_bytes")?)?);
        if log2 > 40 || log2_ix > 43 {
            return Err(bad(format!("dict keys at {:#x} out of range", k.at)));
        }
        let kind = u64::from(k.u8(need(l.dictkeys_kind, "dk_kind")?)?);
        let entry = if Some(kind) == l.dict_kind_general {
            l.dictkeys_entry_size
        } else {
            need(l.dictkeys_unicode_entry_size, "unicode dict entry size")?
        };
        Ok(l.dictkeys_size + (1 << log2_ix) + usable_fraction(1 << log2) * entry)
    }

    fn ordered_dict<M: ProcessMemory>(&self, o: &Obj<'_, M>, facts: &TypeFacts) -> Result<u64> {
        let l = self.l;
        let mut size = self.dict(o, facts)?;
        let fast = count(o.i64(l.odict_fast_nodes_size)?, "OrderedDict fast nodes")?;
        size += fast * l.pointer_size;
        if o.u64(l.odict_first)? != 0 {
            let used = count(o.i64(l.dict_used)?, "dict used")?;
            size += used * l.odict_node_size;
        }
        Ok(size)
    }

    fn set<M: ProcessMemory>(&self, o: &Obj<'_, M>, facts: &TypeFacts) -> Result<u64> {
        let l = self.l;
        let table = o.u64(l.set_table)?;
        if table == o.at.wrapping_add(l.set_smalltable) {
            return Ok(facts.basicsize);
        }
        let mask = count(o.i64(l.set_mask)?, "set mask")?;
        Ok(facts.basicsize + (mask + 1) * l.set_entry_size)
    }

    fn code<M: ProcessMemory>(&self, o: &Obj<'_, M>, facts: &TypeFacts) -> Result<u64> {
        let l = self.l;
        let ptr = l.pointer_size;
        let mut size = if l.code_code_adaptive.is_some() {
            // 3.11+ code objects hold their bytecode inline (co_code_adaptive), so
            // __sizeof__ is _PyObject_VAR_SIZE: rounded up to a pointer
            let raw = self.generic(o, facts)?;
            raw.div_ceil(ptr) * ptr
        } else {
            facts.basicsize
        };
        if let (Some(cell2arg), Some(cellvars)) = (l.code_cell2arg, l.code_cellvars) {
            let cells = o.u64(cellvars)?;
            if o.u64(cell2arg)? != 0 && cells != 0 {
                let n = count(o.mem.read_i64(cells.wrapping_add(l.var_size))?, "cellvars")?;
                size += n * ptr; // Py_ssize_t per cell
            }
        }
        let extra = o.u64(l.code_extra)?;
        if extra != 0 {
            let e = Obj {
                mem: o.mem,
                at: extra,
                head: &[],
            };
            let n = count(e.i64(l.code_extra_ce_size)?, "co_extra size")?;
            let header = l.code_extra_size;
            size += header + n.saturating_sub(1) * ptr;
        }
        if let (Some(cache), Some(cache_n), Some(n_size), Some(entry), Some(code_at)) = (
            l.code_opcache,
            l.code_opcache_size,
            l.code_opcache_size_size,
            l.opcache_entry_size,
            l.code_code,
        ) {
            // 3.8-3.10: the LOAD_GLOBAL cache, once the code ran often enough
            if o.u64(cache)? != 0 {
                let bytecode = o.u64(code_at)?;
                let code_len = count(
                    o.mem.read_i64(bytecode.wrapping_add(l.var_size))?,
                    "co_code size",
                )?;
                // co_opcache_map: one byte per code unit
                let map = code_len / l.code_unit_size;
                let n = o.int(cache_n, n_size)? as u64 & 0xff;
                size += map + n * entry;
            }
        }
        Ok(size)
    }

    /// The code object at the frame-executable field `at` (a tagged `_PyStackRef` from 3.14).
    fn executable<M: ProcessMemory>(&self, o: &Obj<'_, M>, at: u64) -> Result<u64> {
        Ok(o.u64(at)? & !self.l.stackref_tag_bits.unwrap_or(0))
    }

    /// Slots of a frame running `code`: `co_nlocalsplus + co_stacksize` (3.11), then
    /// `co_framesize - FRAME_SPECIALS_SIZE`.
    fn frame_slots<M: ProcessMemory>(&self, mem: &M, code: u64) -> Result<u64> {
        let l = self.l;
        let c = Obj {
            mem,
            at: code,
            head: &[],
        };
        if let (Some(framesize), Some(specials)) = (l.code_framesize, l.frame_specials_size) {
            let n = i64::from(c.int(framesize, 4)? as i32);
            return count(n - specials as i64, "frame slots");
        }
        let nlocalsplus = c.int(need(l.code_nlocalsplus, "co_nlocalsplus")?, 4)?;
        let stacksize = c.int(l.code_stacksize, 4)?;
        count(nlocalsplus + stacksize, "frame slots")
    }

    fn frame<M: ProcessMemory>(&self, o: &Obj<'_, M>) -> Result<u64> {
        let l = self.l;
        let ptr = l.pointer_size;
        if let (Some(f_frame), Some(data)) = (l.frameobject_frame, l.frameobject_frame_data) {
            // 3.11+: the frame data's size for its code, wherever the data lives (on the
            // thread's stack while it runs, in the frame object once it finished)
            let iframe = o.u64(f_frame)?;
            let code = self.executable(
                &Obj {
                    mem: o.mem,
                    at: iframe,
                    head: &[],
                },
                need(l.iframe_code, "f_executable")?,
            )?;
            let localsplus = need(l.iframe_localsplus, "localsplus")?;
            return Ok(data + localsplus + self.frame_slots(o.mem, code)? * ptr);
        }
        let code = o.u64(need(l.frame_code, "f_code")?)?;
        let c = Obj {
            mem: o.mem,
            at: code,
            head: &[],
        };
        let tuple_len = |at: Option<u64>| -> Result<i64> {
            let t = c.u64(need(at, "code tuple")?)?;
            if t == 0 {
                return Ok(0);
            }
            Ok(o.mem.read_i64(t.wrapping_add(l.var_size))?)
        };
        let extras = c.int(l.code_stacksize, 4)?
            + c.int(need(l.code_nlocals, "co_nlocals")?, 4)?
            + tuple_len(l.code_cellvars)?
            + tuple_len(l.code_freevars)?;
        Ok(l.frameobject_size + count(extras - 1, "frame slots")? * ptr)
    }

    fn generator<M: ProcessMemory>(&self, o: &Obj<'_, M>) -> Result<u64> {
        let l = self.l;
        let iframe = need(l.gen_iframe, "gi_iframe")?;
        let code = match l.gen_code {
            Some(at) => o.u64(at)?,
            None => self.executable(o, iframe + need(l.iframe_code, "f_executable")?)?,
        };
        let slots = self.frame_slots(o.mem, code)?;
        Ok(iframe + need(l.iframe_localsplus, "localsplus")? + slots * l.pointer_size)
    }

    /// `type.__sizeof__`, and the pre-header `getsizeof` adds for this type object: up to
    /// 3.10 the GC header of heap types only (`type_is_gc`); 3.11 and 3.12 the metatype's
    /// pre-header for every type; from 3.13 none for static types of metatype `type`.
    fn type_object<M: ProcessMemory>(
        &self,
        o: &Obj<'_, M>,
        facts: &TypeFacts,
    ) -> Result<(u64, u64)> {
        let l = self.l;
        let heap = o.u64(l.type_flags)? & l.tpflags_heaptype != 0;
        if !heap {
            let meta = o.u64(l.object_type)?;
            // the table's static_type_preheader: none (before 3.11), always (1), unless the
            // metatype is `type` (2)
            let pre = match l.static_type_preheader {
                Some(1) => facts.presize,
                Some(2) if meta != self.type_type => facts.presize,
                _ => 0,
            };
            return Ok((l.type_size, pre));
        }
        let mut size = l.heaptype_size;
        let keys = o.u64(l.heaptype_cached_keys)?;
        if keys != 0 {
            size += self.keys_size(&Obj {
                mem: o.mem,
                at: keys,
                head: &[],
            })?;
        }
        Ok((size, facts.presize))
    }

    fn array<M: ProcessMemory>(&self, o: &Obj<'_, M>, facts: &TypeFacts) -> Result<u64> {
        let l = self.l;
        let allocated = count(o.i64(l.array_allocated)?, "array allocation")?;
        let descr = o.u64(l.array_descr)?;
        let d = Obj {
            mem: o.mem,
            at: descr,
            head: &[],
        };
        let itemsize = d.int(l.arraydescr_itemsize, l.arraydescr_itemsize_size)?;
        Ok(facts.basicsize + allocated * count(itemsize, "array itemsize")?)
    }

    fn bytesio<M: ProcessMemory>(&self, o: &Obj<'_, M>, facts: &TypeFacts) -> Result<u64> {
        let l = self.l;
        let buf = o.u64(l.bytesio_buf)?;
        if buf == 0 {
            return Ok(facts.basicsize);
        }
        let b = Obj {
            mem: o.mem,
            at: buf,
            head: &[],
        };
        // SHARED_BUF: another reference to the buffer (getvalue(), the initial value ...);
        // 3.14's ob_refcnt is 32 bits, unsigned
        let refcnt = match l.object_refcnt_size {
            4 => i64::from(b.u32(l.object_refcnt)?),
            _ => b.i64(l.object_refcnt)?,
        };
        if refcnt > 1 {
            return Ok(facts.basicsize);
        }
        // sys.getsizeof of the bytes buffer: its type's generic size (bytes is not GC)
        let ty = b.u64(l.object_type)?;
        let t = Obj {
            mem: o.mem,
            at: ty,
            head: &[],
        };
        let bytes_facts = TypeFacts {
            kind: SizeKind::Generic,
            basicsize: count(t.i64(l.type_basicsize)?, "bytes basicsize")?,
            itemsize: count(t.i64(l.type_itemsize)?, "bytes itemsize")?,
            flags: 0,
            presize: 0,
        };
        Ok(facts.basicsize + self.generic(&b, &bytes_facts)?)
    }

    fn deque<M: ProcessMemory>(&self, o: &Obj<'_, M>, facts: &TypeFacts) -> Result<u64> {
        let l = self.l;
        let left = count(o.i64(l.deque_leftindex)?, "deque index")?;
        let len = count(o.i64(l.var_size)?, "deque length")?;
        let blocklen = l.deque_blocklen;
        if blocklen == 0 {
            return Err(bad("deque BLOCKLEN of 0"));
        }
        let blocks = (left + len).div_ceil(blocklen);
        Ok(facts.basicsize + blocks * l.deque_block_size)
    }

    fn ndarray<M: ProcessMemory>(
        &self,
        o: &Obj<'_, M>,
        facts: &TypeFacts,
    ) -> Result<(u64, DataBuffer)> {
        let n = self
            .numpy
            .ok_or_else(|| bad("numpy array without numpy's layout"))?;
        let nd = count(o.int(n.ndarray_nd, 4)?, "ndarray ndim")?;
        if nd > n.npy_maxdims {
            return Err(bad(format!("ndarray with {nd} dimensions")));
        }
        let flags = o.int(n.ndarray_flags, 4)? as u64;
        let descr = o.u64(n.ndarray_descr)?;
        let elsize = Obj {
            mem: o.mem,
            at: descr,
            head: &[],
        }
        .int(n.descr_elsize, n.descr_elsize_size)?;
        let mut nbytes = count(elsize, "dtype itemsize")?;
        if nd > 0 {
            let dims = o.mem.read_vec(
                o.u64(n.ndarray_dimensions)?,
                (nd * n.npy_intp_size) as usize,
            )?;
            for d in dims.chunks_exact(n.npy_intp_size as usize) {
                let d = i64::from_ne_bytes(d.try_into().unwrap_or([0; 8]));
                nbytes = nbytes
                    .checked_mul(count(d, "ndarray dimension")?)
                    .filter(|v| *v < 1 << 50)
                    .ok_or_else(|| bad("ndarray size out of range"))?;
            }
        }
        let owned = flags & n.npy_owndata != 0;
        let mut size = facts.basicsize + nd * n.npy_intp_size * 2;
        if owned {
            size += nbytes;
        }
        Ok((
            size,
            DataBuffer {
                bytes: nbytes,
                owned,
            },
        ))
    }
}

/// `USABLE_FRACTION(n)` of dictobject.c.
fn usable_fraction(n: u64) -> u64 {
    (n << 1) / 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use memlens_remote::SliceMemory;

    const TYPE_TYPE: u64 = 0x1000;
    const OBJECT: u64 = 0x2000;
    const BYTEARRAY: u64 = 0x3000;
    const CUSTOM: u64 = 0x4000;
    const MRO: u64 = 0x5000;
    const METHODS: u64 = 0x6000;
    const NAMES: u64 = 0x7000;
    const INSTANCE: u64 = 0x8000;

    fn put(b: &mut [u8], at: u64, v: u64) {
        b[at as usize..at as usize + 8].copy_from_slice(&v.to_ne_bytes());
    }

    /// A 3.12 address space with `object`, `bytearray`, and a C type deriving from bytearray
    /// that defines its own `__sizeof__`.
    fn space(l: &Layout) -> SliceMemory {
        let mut mem = SliceMemory::new();
        let ty = |basicsize: u64, flags: u64, mro: u64, methods: u64| {
            let mut t = vec![0u8; l.type_size as usize];
            put(&mut t, l.object_type, TYPE_TYPE);
            put(&mut t, l.type_basicsize, basicsize);
            put(&mut t, l.type_flags, flags);
            put(&mut t, l.type_mro, mro);
            put(&mut t, l.type_methods, methods);
            put(&mut t, l.type_name, NAMES);
            t
        };
        mem.map(OBJECT, ty(16, 0, 0, 0));
        mem.map(BYTEARRAY, ty(56, 0, 0, 0));
        mem.map(CUSTOM, ty(64, 0, MRO, METHODS));
        let mut mro = vec![0u8; 64];
        put(&mut mro, l.var_size, 3);
        put(&mut mro, l.tuple_item, CUSTOM);
        put(&mut mro, l.tuple_item + 8, BYTEARRAY);
        put(&mut mro, l.tuple_item + 16, OBJECT);
        mem.map(MRO, mro);
        let mut methods = vec![0u8; 3 * l.method_def_size as usize];
        put(&mut methods, l.method_def_name, NAMES + 16);
        mem.map(METHODS, methods);
        let mut names = b"custom.Thing\0\0\0\0__sizeof__\0".to_vec();
        names.resize(128, 0);
        mem.map(NAMES, names);
        let mut obj = vec![0u8; 64];
        put(&mut obj, l.object_type, BYTEARRAY);
        put(&mut obj, l.bytearray_alloc, 8 << 20);
        mem.map(INSTANCE, obj);
        mem
    }

    fn sizer(l: &'static Layout) -> Sizer {
        Sizer::from_parts(
            l,
            |n| match n {
                "PyByteArray_Type" => Some(BYTEARRAY),
                "PyBaseObject_Type" => Some(OBJECT),
                "PyType_Type" => Some(TYPE_TYPE),
                _ => None,
            },
            None,
        )
    }

    #[test]
    fn a_bytearray_counts_its_allocation() {
        let l = layouts::for_version(12).expect("3.12");
        let mem = space(l);
        let s = sizer(l);
        let facts = s.type_facts(&mem, BYTEARRAY).expect("facts");
        assert_eq!(facts.kind, SizeKind::ByteArray);
        let size = s.getsizeof(&mem, &facts, INSTANCE, &[]).expect("size");
        assert_eq!(size.size, 56 + (8 << 20));
        assert!(size.exact);
        // the same from bytes already read
        let head = mem.read_vec(INSTANCE, 64).expect("head");
        assert_eq!(s.getsizeof(&mem, &facts, INSTANCE, &head).ok(), Some(size));
    }

    #[test]
    fn an_own_sizeof_before_a_known_base_is_unmodelled() {
        let l = layouts::for_version(12).expect("3.12");
        let mem = space(l);
        let facts = sizer(l).type_facts(&mem, CUSTOM).expect("facts");
        assert_eq!(facts.kind, SizeKind::Unmodelled);
        let size = sizer(l)
            .getsizeof(&mem, &facts, INSTANCE, &[])
            .expect("size");
        assert!(!size.exact);
    }

    #[test]
    fn implausible_counts_are_errors_not_sizes() {
        let l = layouts::for_version(12).expect("3.12");
        let mut mem = space(l);
        let mut obj = vec![0u8; 64];
        put(&mut obj, l.object_type, BYTEARRAY);
        put(&mut obj, l.bytearray_alloc, u64::MAX);
        mem.map(0x9000, obj);
        let s = sizer(l);
        let facts = s.type_facts(&mem, BYTEARRAY).expect("facts");
        assert!(s.getsizeof(&mem, &facts, 0x9000, &[]).is_err());
    }
}
