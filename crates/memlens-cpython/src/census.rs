//! The object census: every GC-tracked object of every generation (the frozen one included)
//! plus the objects reachable from them through the references `tp_traverse` visits for the
//! builtin containers, instances, types, functions, modules and cells, and the constants and
//! names of code objects. Each object is counted once, by `type(o).__name__`, with its size as
//! `sys.getsizeof` computes it.
//!
//! The walk keeps no record per object. Tracked objects are visited once each, from their
//! generation list; a reference to a tracked object is not followed (its list brings it). The
//! untracked objects reached from them (str, int, float, bytes, untracked tuples and dicts)
//! are marked in a bitmap of one bit per 16 bytes. Containers are read in pieces from a work
//! stack, so a list of millions of items costs a few kilobytes of stack. Every length read
//! from the target is bounded by the readable mapping it lies in; every read that fails is
//! counted, with the object it belonged to, in [`Unreadable`].

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;

use memlens_remote::bitmap::AddrMap;
use memlens_remote::{AddressBits, CachedMemory, MemoryBudget, ProcessMemory};

use crate::dicts::{self, keys_size};
use crate::error::{Error, Result};
use crate::gc;
use crate::layouts::Layout;
use crate::objects::type_name;
use crate::process::Interpreter;

mod consistent;
pub use consistent::{read, CensusRead, CENSUS_CACHE, CENSUS_MEMORY_CAP};

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

/// Objects the census reached but could not read (their memory unreadable, or data that does
/// not decode); they are in no type's count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// Objects.
    pub objects: u64,
    /// Bytes of the target's memory that failed to read.
    pub bytes: u64,
}

/// How the census was made consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Walked while the target ran, then proved unchanged in a short pause: exact as of the
    /// pause.
    Verified,
    /// Walked entirely while the target was stopped (its heap kept changing): exact.
    Paused,
    /// Walked without stopping the target: figures may be inexact.
    Nonblocking,
}

/// How the census was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Consistency {
    /// What made it consistent.
    pub method: Method,
    /// Walks of the running target (each verified or not).
    pub attempts: u32,
    /// Microseconds the target was stopped, all pauses together (0 in nonblocking mode).
    pub pause_us: u64,
    /// Pages re-read and compared in the pause (method `verified`).
    pub pages_verified: u64,
    /// Pauses that found a garbage collection running, each followed by a wait for its end.
    pub collections_waited: u32,
}

impl Default for Consistency {
    fn default() -> Self {
        Consistency {
            method: Method::Nonblocking,
            attempts: 0,
            pause_us: 0,
            pages_verified: 0,
            collections_waited: 0,
        }
    }
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
    /// Objects reached that could not be read.
    pub unreadable: Unreadable,
    /// How the census was read.
    pub consistency: Consistency,
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

/// The census fails when more than 1 object in this many could not be read (0.1%).
pub const MAX_UNREADABLE_PER: u64 = 1000;

impl Census {
    /// Fails with [`Error::Incomplete`] when more than 0.1% of the objects reached could not
    /// be read.
    pub fn check_complete(&self, pid: u32) -> Result<()> {
        let reached = self.objects + self.unreadable.objects;
        if self.unreadable.objects * MAX_UNREADABLE_PER > reached {
            return Err(Error::Incomplete {
                pid,
                unreadable: self.unreadable.objects,
                reached,
                bytes: self.unreadable.bytes,
                limit: "0.1%",
            });
        }
        Ok(())
    }
}

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
}

#[derive(Debug, Clone, Copy)]
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
    /// `T_OBJECT_EX` member offsets of the heap types in the base chain: a range of
    /// `Walker::member_offsets`.
    members: (usize, usize),
    cached_keys: u64,
}

/// Pending references: object pointers in the target, read in pieces.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// One object.
    Object(u64),
    /// `left` pointers from `at` (list and tuple items, split dict values).
    Words { at: u64, left: u64 },
    /// `left` entries of `stride` bytes from `at`; the key at `key`, the value at `value`
    /// (or in the split values array at `values`, when not 0). `set` entries skip dummies.
    Entries {
        at: u64,
        left: u64,
        stride: u64,
        key: u64,
        value: u64,
        values: u64,
        set: bool,
    },
}

/// No user-space address reaches this (x86_64 and aarch64, 5-level page tables included): a
/// pointer read from the target at or above it is garbage, and rejecting it keeps every
/// `pointer + offset` computed from the target's data free of overflow.
pub const MAX_ADDR: u64 = 1 << 57;

/// A pointer read from the target, checked before any arithmetic on it.
fn addr(v: u64, what: &'static str) -> Result<u64> {
    if v < MAX_ADDR {
        Ok(v)
    } else {
        Err(Error::Decode {
            addr: v,
            what: what.into(),
        })
    }
}

/// A size or offset read from a type object, checked to be plausible (under 4 GiB).
fn small(v: u64, what: &'static str) -> Result<u64> {
    if v < 1 << 32 {
        Ok(v)
    } else {
        Err(Error::Decode {
            addr: v,
            what: what.into(),
        })
    }
}

/// Entries of the direct-mapped cache of types.
const TYPE_CACHE: usize = 64;
/// The index of an unreadable type.
const NO_TYPE: u32 = u32::MAX;

/// Items read from the target per piece of a container.
const PIECE: u64 = 512;
/// Chunks of the cache, as a shift.
const CHUNK_SHIFT: u32 = memlens_remote::cache::CHUNK.trailing_zeros();

struct Walker<'a, M> {
    it: &'a Interpreter,
    l: &'a Layout,
    mem: &'a CachedMemory<M>,
    /// Types read so far; `types` maps a type's address to its index in `infos` (`NO_TYPE`
    /// for an unreadable one), with a small direct-mapped cache in front.
    types: AddrMap<u32>,
    infos: Vec<TypeInfo>,
    type_cache: [(u64, u32); TYPE_CACHE],
    member_offsets: Vec<u64>,
    names: HashMap<String, usize>,
    out: Vec<TypeCount>,
    visited: AddressBits,
    stack: Vec<Work>,
    stack_charged: usize,
    /// Objects whose chunk was not copied when they were found, by chunk: visited when the
    /// walk copies that chunk anyway, or at the end in address order, so that each chunk is
    /// copied about once however the references jump across the heap.
    pending: AddrMap<Vec<u64>>,
    pending_charged: u64,
    last_root_chunk: u64,
    budget: Rc<MemoryBudget>,
    unreadable: Unreadable,
    scratch: Vec<u8>,
}

/// Takes the census through `mem` (a cache over the target, with or without a page log).
/// `readable` is the size of the target's readable memory (it bounds the GC lists); `hold`
/// stops the walk that long after its first object (`MEMLENS_TEST_HOLD_WALK_MS`, for tests).
pub fn take<M: ProcessMemory>(
    it: &Interpreter,
    mem: &CachedMemory<M>,
    budget: Rc<MemoryBudget>,
    readable: u64,
    hold: Duration,
) -> Result<Census> {
    let l = it.layout;
    let mut w = Walker {
        it,
        l,
        mem,
        types: AddrMap::default(),
        infos: Vec::new(),
        type_cache: [(u64::MAX, NO_TYPE); TYPE_CACHE],
        member_offsets: Vec::new(),
        names: HashMap::new(),
        out: Vec::new(),
        visited: AddressBits::new(4, budget.clone()),
        stack: Vec::new(),
        stack_charged: 0,
        pending: AddrMap::default(),
        pending_charged: 0,
        last_root_chunk: u64::MAX,
        budget,
        unreadable: Unreadable::default(),
        scratch: Vec::new(),
    };
    let state = gc::state_address(it)?;
    let max_nodes = gc::max_list_len(readable);
    let mut held = hold.is_zero();
    for g in 0..4 {
        let head = gc::list_head(it, state, g);
        gc::walk_list(mem, it.pid, head, l.gc_head_size, max_nodes, |o| {
            w.root(o)?;
            w.drain()?;
            if !held {
                held = true;
                log::info!("census: holding the walk for {hold:?} (MEMLENS_TEST_HOLD_WALK_MS)");
                std::thread::sleep(hold);
            }
            Ok(())
        })?;
    }
    let modules = mem.read_u64(it.interp + l.interp_modules)?;
    w.push(modules)?;
    w.drain()?;
    // what is left, chunk by chunk in address order (visiting may set more aside)
    while !w.pending.is_empty() {
        let mut chunks: Vec<u64> = w.pending.keys().copied().collect();
        chunks.sort_unstable();
        for c in chunks {
            if let Some(objs) = w.pending.remove(&c) {
                w.visit_pending(objs)?;
            }
        }
    }
    if w.unreadable.objects > 0 {
        log::info!(
            "census: {} objects could not be read ({} bytes of reads failed)",
            w.unreadable.objects,
            w.unreadable.bytes
        );
    }
    let mut types = std::mem::take(&mut w.out);
    types.retain(|t| t.count > 0);
    types.sort_by(|a, b| b.count.cmp(&a.count).then(a.type_name.cmp(&b.type_name)));
    Ok(Census {
        objects: types.iter().map(|t| t.count).sum(),
        bytes: types.iter().map(|t| t.bytes).sum(),
        types,
        unreadable: w.unreadable,
        consistency: Consistency::default(),
    })
}

fn word(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    match b.get(at..at + 8) {
        Some(s) => u64::from_ne_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
        None => 0,
    }
}

/// Whether an error concerns one object (counted as unreadable) rather than the whole walk
/// (the process gone, permission, memlens's memory cap, an I/O error).
fn object_level(e: &Error) -> bool {
    matches!(
        e,
        Error::Decode { .. }
            | Error::Invalid { .. }
            | Error::Remote(memlens_remote::Error::Unreadable { .. })
    )
}

impl<M: ProcessMemory> Walker<'_, M> {
    /// Counts an object whose reads failed, or fails the walk for errors that are not about
    /// one object.
    fn lost(&mut self, e: Error, obj: u64) -> Result<()> {
        if !object_level(&e) {
            return Err(e);
        }
        if let Error::Remote(memlens_remote::Error::Unreadable { len, .. }) = e {
            self.unreadable.bytes += len as u64;
        }
        self.unreadable.objects += 1;
        log::trace!("census: object {obj:#x} lost: {e}");
        Ok(())
    }

    fn push(&mut self, obj: u64) -> Result<()> {
        if obj == 0 || obj % 8 != 0 || obj >= MAX_ADDR || self.visited.contains(obj) {
            return Ok(());
        }
        if !self.mem.is_resident(obj) && self.defer(obj) {
            return Ok(());
        }
        self.push_work(Work::Object(obj))
    }

    /// Sets `obj` aside until its chunk is copied; `false` when memlens's memory cap leaves no
    /// room (the object is then visited at once).
    fn defer(&mut self, obj: u64) -> bool {
        let bucket = self.pending.entry(obj >> CHUNK_SHIFT).or_default();
        let before = bucket.capacity();
        if bucket.len() == before {
            let grow = (before.max(4)) as u64 * 8 + if before == 0 { 64 } else { 0 };
            if self
                .budget
                .charge(grow, "grouping references by chunk")
                .is_err()
            {
                return false;
            }
            self.pending_charged += grow;
            bucket.reserve_exact(before.max(4));
        }
        bucket.push(obj);
        true
    }

    /// Visits objects set aside for one chunk.
    fn visit_pending(&mut self, objs: Vec<u64>) -> Result<()> {
        let bytes = objs.capacity() as u64 * 8 + 64;
        for (i, o) in objs.iter().enumerate() {
            if let Some(ahead) = objs.get(i + 8) {
                self.mem.is_resident(*ahead); // starts loading it: the CPU waits less later
            }
            self.push_work(Work::Object(*o))?;
            self.drain()?;
        }
        drop(objs);
        self.budget.release(bytes.min(self.pending_charged));
        self.pending_charged = self.pending_charged.saturating_sub(bytes);
        Ok(())
    }

    fn push_work(&mut self, w: Work) -> Result<()> {
        self.stack.push(w);
        let cap = self.stack.capacity();
        if cap > self.stack_charged {
            let size = std::mem::size_of::<Work>();
            self.budget.charge(
                ((cap - self.stack_charged) * size) as u64,
                "following references",
            )?;
            self.stack_charged = cap;
        }
        Ok(())
    }

    /// A tracked object from a generation list; then what was set aside for its chunk.
    fn root(&mut self, obj: u64) -> Result<()> {
        if obj >= MAX_ADDR || !self.visited.insert(obj)? {
            return Ok(()); // listed twice: only a list read while it changed does that
        }
        let r = self.visit(obj, false);
        r.or_else(|e| self.lost(e, obj))?;
        let chunk = obj >> CHUNK_SHIFT;
        if chunk != self.last_root_chunk {
            self.last_root_chunk = chunk;
            if let Some(objs) = self.pending.remove(&chunk) {
                self.drain()?;
                self.visit_pending(objs)?;
            }
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<()> {
        while let Some(w) = self.stack.pop() {
            match w {
                Work::Object(obj) => {
                    if !self.visited.contains(obj) {
                        if let Err(e) = self.visit(obj, true) {
                            // counted once: other references to it are not followed
                            self.visited.insert(obj)?;
                            self.lost(e, obj)?;
                        }
                    }
                }
                Work::Words { at, left } => {
                    let n = left.min(PIECE);
                    if left > n {
                        self.push_work(Work::Words {
                            at: at + n * 8,
                            left: left - n,
                        })?;
                    }
                    let mut buf = std::mem::take(&mut self.scratch);
                    buf.resize((n * 8) as usize, 0);
                    match self.mem.read(at, &mut buf) {
                        Ok(()) => {
                            for c in buf.chunks_exact(8) {
                                self.push(word(c, 0))?;
                            }
                        }
                        Err(e) => self.lost(e.into(), at)?,
                    }
                    self.scratch = buf;
                }
                Work::Entries {
                    at,
                    left,
                    stride,
                    key,
                    value,
                    values,
                    set,
                } => {
                    let n = left.min(PIECE);
                    if left > n {
                        self.push_work(Work::Entries {
                            at: at + n * stride,
                            left: left - n,
                            stride,
                            key,
                            value,
                            values: if values != 0 { values + n * 8 } else { 0 },
                            set,
                        })?;
                    }
                    self.entries(at, n, stride, key, value, values, set)?;
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn entries(
        &mut self,
        at: u64,
        n: u64,
        stride: u64,
        key: u64,
        value: u64,
        values: u64,
        set: bool,
    ) -> Result<()> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize((n * stride) as usize, 0);
        let mut vals = Vec::new();
        let read = self.mem.read(at, &mut buf).and_then(|()| {
            if values != 0 {
                vals.resize((n * 8) as usize, 0);
                self.mem.read(values, &mut vals)
            } else {
                Ok(())
            }
        });
        let r = match read {
            Ok(()) => (|| {
                for (i, e) in buf.chunks_exact(stride as usize).enumerate() {
                    let k = word(e, key);
                    if set {
                        // {key, hash}: a dummy (deleted) entry has hash -1
                        if k != 0 && word(e, 8) as i64 != -1 {
                            self.push(k)?;
                        }
                        continue;
                    }
                    let v = if values != 0 {
                        word(&vals, i as u64 * 8)
                    } else {
                        word(e, value)
                    };
                    if k != 0 && v != 0 {
                        self.push(v)?;
                        // keys too, str keys included: gc.get_referents leaves out the keys
                        // of str-keyed dicts (they cannot form cycles), but they are memory
                        self.push(k)?;
                    }
                }
                Ok(())
            })(),
            Err(e) => self.lost(e.into(), at),
        };
        self.scratch = buf;
        r
    }

    /// The index in `infos` of the type at `ty` (read once), `NO_TYPE` when unreadable.
    #[inline]
    fn type_index(&mut self, ty: u64) -> Result<u32> {
        let slot = ((ty >> 4) as usize) % TYPE_CACHE;
        if self.type_cache[slot].0 == ty {
            return Ok(self.type_cache[slot].1);
        }
        let i = self.type_index_slow(ty)?;
        self.type_cache[slot] = (ty, i);
        Ok(i)
    }

    fn type_index_slow(&mut self, ty: u64) -> Result<u32> {
        if ty >= MAX_ADDR || ty % 8 != 0 {
            return Ok(NO_TYPE);
        }
        if let Some(i) = self.types.get(&ty) {
            return Ok(*i);
        }
        let i = match self.read_type(ty) {
            Ok(t) if self.infos.len() < NO_TYPE as usize => {
                self.infos.push(t);
                (self.infos.len() - 1) as u32
            }
            Ok(_) => NO_TYPE,
            Err(e) if object_level(&e) => NO_TYPE,
            Err(e) => return Err(e),
        };
        self.types.insert(ty, i);
        Ok(i)
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
                base = addr(self.mem.read_u64(base + l.type_base)?, "a base type")?;
            }
        }
        let first = self.member_offsets.len();
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
                let members = addr(self.mem.read_u64(base + l.type_members)?, "a member table")?;
                if n > 0 && n < 4096 && members != 0 {
                    let raw = self
                        .mem
                        .read_vec(members, (n as u64 * l.member_size) as usize)?;
                    for m in raw.chunks_exact(l.member_size as usize) {
                        let mtype = word(m, l.member_type) & 0xffff_ffff;
                        if mtype == l.member_t_object_ex {
                            let off = small(word(m, l.member_offset), "a member offset")?;
                            self.member_offsets.push(off);
                        }
                    }
                }
                base = addr(self.mem.read_u64(base + l.type_base)?, "a base type")?;
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
        let dictoffset = word(&raw, l.type_dictoffset) as i64;
        small(dictoffset.unsigned_abs(), "a dict offset")?;
        Ok(TypeInfo {
            slot,
            basicsize: small(word(&raw, l.type_basicsize), "a basic size")?,
            itemsize: small(word(&raw, l.type_itemsize), "an item size")?,
            flags,
            dictoffset,
            kind,
            heap,
            gc: flags & l.tpflags_have_gc != 0,
            members: (first, self.member_offsets.len()),
            cached_keys: if heap {
                addr(
                    self.mem.read_u64(ty + l.heaptype_cached_keys)?,
                    "cached keys",
                )?
            } else {
                0
            },
        })
    }

    /// Counts `obj` and queues what it references. With `untracked_only`, an object that is
    /// tracked by the collector is left alone (its generation list brings it).
    fn visit(&mut self, obj: u64, untracked_only: bool) -> Result<()> {
        let l = self.l;
        let ty = self.mem.read_u64(obj + l.object_type)?;
        let ti = self.type_index(ty)?;
        let Some(&t) = self.infos.get(ti as usize) else {
            return Err(Error::Decode {
                addr: ty,
                what: "a type object".into(),
            });
        };
        if untracked_only {
            // tp_is_gc: a type object is a GC object only when it is a heap type
            let is_gc = if t.kind == Kind::Type {
                self.mem.read_u64(obj + l.type_flags)? & l.tpflags_heaptype != 0
            } else {
                t.gc
            };
            if is_gc && self.mem.read_u64(obj.wrapping_sub(l.gc_head_size))? != 0 {
                return Ok(()); // tracked: its generation list brings it
            }
            self.visited.insert(obj)?;
        }
        if log::log_enabled!(log::Level::Trace) {
            log::trace!("census object {obj:#x} {}", self.out[t.slot].type_name);
        }
        let managed = l.tpflags_managed_dict.is_some_and(|f| t.flags & f != 0);
        let uses_size = t.itemsize != 0
            || matches!(t.kind, Kind::List | Kind::Tuple | Kind::Int)
            || (t.heap && t.dictoffset < 0 && !managed);
        let ob_size = if uses_size {
            self.mem.read_i64(obj + l.var_size)?
        } else {
            0
        };
        let dict = match t.kind {
            Kind::Dict => Some(dicts::table(self.mem, l, obj)?),
            _ => None,
        };
        let size = self.shallow_size(obj, &t, ob_size, dict.as_ref())?;
        self.references(obj, ty, &t, ob_size, dict)?;
        let e = &mut self.out[t.slot];
        e.count += 1;
        e.bytes += size;
        Ok(())
    }

    /// Queues the references of `obj`, each container's contents bounded by the readable
    /// mapping it lies in.
    fn references(
        &mut self,
        obj: u64,
        ty: u64,
        t: &TypeInfo,
        ob_size: i64,
        dict: Option<dicts::DictTable>,
    ) -> Result<()> {
        let l = self.l;
        match t.kind {
            Kind::List => {
                let items = addr(self.mem.read_u64(obj + l.list_item)?, "list items")?;
                if ob_size > 0 && items != 0 {
                    self.words(items, ob_size as u64)?;
                } else if ob_size < 0 {
                    return Err(self.bad(obj, "a list length"));
                }
            }
            Kind::Tuple => {
                if ob_size > 0 {
                    self.words(obj + l.tuple_item, ob_size as u64)?;
                } else if ob_size < 0 {
                    return Err(self.bad(obj, "a tuple length"));
                }
            }
            Kind::Dict => {
                let Some(d) = dict else { return Ok(()) };
                if d.entries > 0 {
                    self.within(d.entries_at, d.entries * d.entry_size, obj)?;
                    if let Some(v) = d.split_values {
                        self.within(v, d.entries * 8, obj)?;
                    }
                    self.push_work(Work::Entries {
                        at: d.entries_at,
                        left: d.entries,
                        stride: d.entry_size,
                        key: d.key_at,
                        value: d.value_at,
                        values: d.split_values.unwrap_or(0),
                        set: false,
                    })?;
                }
            }
            Kind::Set => {
                let table = addr(self.mem.read_u64(obj + l.set_table)?, "a set table")?;
                let mask = self.mem.read_i64(obj + l.set_mask)?;
                if !(0..1 << 40).contains(&mask) {
                    return Err(self.bad(obj, "a set size"));
                }
                if table != 0 {
                    let n = mask as u64 + 1;
                    self.within(table, n * 16, obj)?;
                    self.push_work(Work::Entries {
                        at: table,
                        left: n,
                        stride: 16,
                        key: 0,
                        value: 0,
                        values: 0,
                        set: true,
                    })?;
                }
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
                        self.push(p)?;
                    }
                    if let Some(m) = l.heaptype_module {
                        let p = self.mem.read_u64(obj + m)?;
                        self.push(p)?;
                    }
                } else {
                    // a static type: nothing of its own to follow
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
                    self.push(p)?;
                }
            }
            Kind::Module => {
                let p = self.mem.read_u64(obj + l.module_dict)?;
                self.push(p)?;
            }
            Kind::Cell => {
                let p = self.mem.read_u64(obj + l.cell_ref)?;
                self.push(p)?;
            }
            Kind::Code => {
                let mut fields = vec![l.code_consts, l.code_names, l.code_filename, l.code_name];
                fields.extend(l.code_qualname);
                for off in fields {
                    let p = self.mem.read_u64(obj + off)?;
                    self.push(p)?;
                }
            }
            Kind::Str | Kind::Int | Kind::Other => {}
        }
        if t.heap {
            self.visit_instance(obj, ty, t, ob_size)?;
        } else if t.dictoffset > 0 && !matches!(t.kind, Kind::Type | Kind::Module) {
            // static types with an instance dict (functools.partial, classmethod ...) visit it
            let d = self.mem.read_u64(obj + t.dictoffset as u64)?;
            self.push(d)?;
        }
        Ok(())
    }

    fn bad(&self, obj: u64, what: &str) -> Error {
        Error::Decode {
            addr: obj,
            what: what.into(),
        }
    }

    /// Fails (the object is unreadable) unless `[at, at + len)` lies in one readable mapping.
    fn within(&self, at: u64, len: u64, obj: u64) -> Result<()> {
        if self.mem.contains_range(at, len) {
            return Ok(());
        }
        Err(Error::Remote(memlens_remote::Error::Unreadable {
            addr: at,
            len: usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30),
        }))
        .map_err(|e| {
            log::debug!("census: object {obj:#x}: {e}");
            e
        })
    }

    /// Queues `n` object pointers at `at`, bounded by the mapping they lie in.
    fn words(&mut self, at: u64, n: u64) -> Result<()> {
        let len = n
            .checked_mul(8)
            .ok_or_else(|| self.bad(at, "an item count"))?;
        self.within(at, len, at)?;
        self.push_work(Work::Words { at, left: n })
    }

    /// `sys.getsizeof(obj)`: the type's formula plus the pre-header (GC head, managed dict).
    /// The per-kind formulas live here, in one place, to be replaced by the exact sizes of each
    /// type's `__sizeof__`.
    fn shallow_size(
        &self,
        obj: u64,
        t: &TypeInfo,
        ob_size: i64,
        dict: Option<&dicts::DictTable>,
    ) -> Result<u64> {
        let l = self.l;
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
                let allocated = self.mem.read_i64(obj + l.list_allocated)?;
                size = t.basicsize + (allocated.max(0) as u64).saturating_mul(8);
            }
            Kind::Dict => {
                size = t.basicsize + dict.map_or(0, |d| d.extra_size);
            }
            Kind::Set => {
                let table = self.mem.read_u64(obj + l.set_table)?;
                let mask = self.mem.read_i64(obj + l.set_mask)?;
                if (0..1 << 32).contains(&mask) && table != 0 && table != obj + l.set_smalltable {
                    size = t.basicsize + (mask as u64 + 1) * 16;
                }
            }
            Kind::Str => size = self.str_size(obj)?,
            Kind::Int => {
                let digits = match l.long_tag {
                    Some(tag) => (self.mem.read_u64(obj + tag)? >> 3).max(1),
                    None if minor >= 11 => ob_size.unsigned_abs().max(1),
                    None => ob_size.unsigned_abs(),
                };
                size = l.long_digits + digits.saturating_mul(l.long_digit_size);
            }
            Kind::Type => {
                if t.heap || self.mem.read_u64(obj + l.type_flags)? & l.tpflags_heaptype != 0 {
                    let keys = addr(
                        self.mem.read_u64(obj + l.heaptype_cached_keys)?,
                        "cached keys",
                    )?;
                    size = l.heaptype_size
                        + if keys != 0 {
                            keys_size(self.mem, l, keys).unwrap_or(0)
                        } else {
                            0
                        };
                } else {
                    // a static type: not a GC object for getsizeof
                    return Ok(l.type_size);
                }
            }
            _ => {}
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
        Ok(size + pre)
    }

    /// What `subtype_traverse` visits: the (heap) type, `__slots__` members, the instance
    /// dict or its inline/managed values.
    fn visit_instance(&mut self, obj: u64, ty: u64, t: &TypeInfo, ob_size: i64) -> Result<()> {
        let l = self.l;
        self.push(ty)?;
        for i in t.members.0..t.members.1 {
            let off = self.member_offsets[i];
            match self.mem.read_u64(obj + off) {
                Ok(p) => self.push(p)?,
                Err(e) => self.lost(e.into(), obj)?,
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
                let size = (t.basicsize.saturating_add(n.saturating_mul(t.itemsize)) + 7) & !7;
                obj.wrapping_add(size).wrapping_add(off as u64)
            }
        };
        let d = self.mem.read_u64(dict_at)?;
        self.push(d)
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
                let values = addr(self.mem.read_u64(obj.wrapping_sub(32))?, "dict values")?;
                if dict != 0 {
                    self.push(dict)?;
                } else if values != 0 {
                    let n = nvalues(self)?;
                    self.words(values + values_off, n)?;
                }
            }
            12 => {
                let dorv = addr(self.mem.read_u64(obj.wrapping_sub(24))?, "dict values")?;
                // PyDictOrValues: a values pointer is stored minus one (odd), a dict as is
                if dorv & 1 != 0 {
                    let n = nvalues(self)?;
                    self.words(dorv + 1 + values_off, n)?;
                } else {
                    self.push(dorv)?;
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
                        return self.words(values + values_off, n);
                    }
                }
                let dict = self.mem.read_u64(obj.wrapping_sub(before))?;
                self.push(dict)?;
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
        let len = small(
            self.mem.read_i64(obj + l.str_length)?.max(0) as u64,
            "a str length",
        )?;
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
                size += small(self.mem.read_u64(obj + l.str_utf8_length)?, "a utf8 length")? + 1;
            }
        }
        if let (Some(w), Some(wl)) = (l.str_wstr, l.str_wstr_length) {
            let wstr = self.mem.read_u64(obj + w)?;
            if wstr != 0 && wstr != data {
                let wlen = if ascii {
                    len
                } else {
                    small(self.mem.read_u64(obj + wl)?, "a wstr length")?
                };
                size += (wlen + 1) * 4;
            }
        }
        Ok(size)
    }
}
