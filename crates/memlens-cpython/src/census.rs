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

use memlens_remote::bitmap::AddrMap;
use memlens_remote::{AddressBits, CachedMemory, MemoryBudget, ProcessMemory};

use crate::dicts::{self, Managed};
use crate::error::{Error, Result};
use crate::gc;
use crate::layouts::Layout;
use crate::process::Interpreter;
use crate::sizes::{SizeKind, Sizer, TypeFacts};

mod classes;
mod consistent;
mod locals;
mod packages;
mod reach;
pub mod referrers;
mod result;
mod types;
mod values;
pub use consistent::{read, read_with, CensusRead, CENSUS_CACHE, CENSUS_MEMORY_CAP};
pub use packages::{ModuleObjects, ObjectKinds, Origin, Tally, MAX_ORIGINS};
pub use result::{Census, Consistency, Method, TypeCount, Unreadable, MAX_UNREADABLE_PER};

/// What a census walk gathers beyond the census itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// The bytes of code objects, functions, classes and modules by the module name or file
    /// they carry, and of the objects they hold ([`ModuleObjects`]): the package-memory walk
    /// (`reach.rs`), after the census, through the same cache.
    pub by_module: bool,
    /// The tallies advice is computed from (`Census::tallies`): instances with dicts per
    /// class, large lists of floats or ints, duplicated str and bytes values. They read more
    /// of the target (each str's contents, each large list's items).
    pub advice: bool,
}

impl From<bool> for Extras {
    /// `by_module` alone.
    fn from(by_module: bool) -> Extras {
        Extras {
            by_module,
            advice: false,
        }
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
    /// 3.15 `lazy_import`: holds the code object that declared it.
    LazyImport,
    /// Method, member, getset, wrapper and classmethod descriptors (their type and names).
    Descriptor,
}

#[derive(Debug, Clone, Copy)]
struct TypeInfo {
    slot: usize,
    /// What `sys.getsizeof` of an instance needs (`sizes::Sizer`).
    facts: TypeFacts,
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
    /// Instances are `slots` candidates: the bytes of their dict and weakref words
    /// (`classes.rs`).
    slots_drop: Option<u64>,
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
    /// The package-memory walk (`reach.rs`): what follows was reached from another owner;
    /// go back to it.
    Owner(u32),
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
    sizer: Sizer,
    /// Code objects, functions, classes and modules by the name they carry (`None`: not
    /// asked for).
    attribution: Option<packages::Attribution>,
    /// Tallies for advice (`Extras::advice`).
    advice: bool,
    /// Instances with an instance dict, per class (`classes.rs`).
    classes: classes::Classes,
    /// Large scalar lists and duplicated values (`values.rs`).
    values: values::Values,
    /// The package-memory walk (`reach.rs`) instead of the census: every reference is
    /// followed (tracked objects too), depth first, without setting objects aside by chunk.
    reach: Option<reach::Reach>,
}

impl<'a, M: ProcessMemory> Walker<'a, M> {
    /// A walker with nothing read yet, its memory charged to `budget`; no attribution by
    /// module, no tallies for advice.
    fn new(it: &'a Interpreter, mem: &'a CachedMemory<M>, budget: Rc<MemoryBudget>) -> Self {
        Walker {
            it,
            l: it.layout,
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
            unreadable: Unreadable::default(),
            scratch: Vec::new(),
            sizer: Sizer::new(it),
            attribution: None,
            advice: false,
            classes: classes::Classes::default(),
            values: values::Values::default(),
            reach: None,
            budget,
        }
    }
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
    take_with(it, mem, budget, readable, hold, false).map(|(c, _)| c)
}

/// [`take`], and with `extras` the bytes of code objects, functions, classes and modules
/// by the module name or file they carry (see [`ModuleObjects`]) and the tallies for advice,
/// read in the same walk.
pub fn take_with<M: ProcessMemory>(
    it: &Interpreter,
    mem: &CachedMemory<M>,
    budget: Rc<MemoryBudget>,
    readable: u64,
    hold: Duration,
    extras: impl Into<Extras>,
) -> Result<(Census, Option<ModuleObjects>)> {
    let extras = extras.into();
    let by_module = extras.by_module;
    it.layout.require_tables("the census")?;
    let l = it.layout;
    let mut w = Walker::new(it, mem, budget.clone());
    w.advice = extras.advice;
    let modules = mem.read_u64(it.interp.wrapping_add(l.interp_modules))?;
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
    let classes = std::mem::take(&mut w.classes).finish(&w.out);
    let values = std::mem::take(&mut w.values);
    w.budget.release(values.charged);
    let (scalar_lists, duplicates, duplicate_totals) = values.finish();
    let mut types = std::mem::take(&mut w.out);
    types.retain(|t| t.count > 0);
    types.sort_by(|a, b| b.count.cmp(&a.count).then(a.type_name.cmp(&b.type_name)));
    let unreadable = std::mem::take(&mut w.unreadable);
    drop(w); // its bitmap and stacks: the package-memory walk has its own
    let by_module = if by_module {
        Some(reach::by_package(
            it, mem, budget, modules, state, max_nodes,
        )?)
    } else {
        None
    };
    let census = Census {
        objects: types.iter().map(|t| t.count).sum(),
        bytes: types.iter().fold(0u64, |a, t| a.saturating_add(t.bytes)),
        types,
        unreadable,
        consistency: Consistency::default(),
        tallies: memlens_model::census::Tallies {
            classes,
            scalar_lists,
            duplicates,
            duplicate_totals,
            packages: Vec::new(),
        },
    };
    Ok((census, by_module))
}

impl<M> Drop for Walker<'_, M> {
    fn drop(&mut self) {
        let stack = (self.stack_charged * std::mem::size_of::<Work>()) as u64;
        self.budget
            .release(stack + self.pending_charged + self.values.charged);
    }
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
            | Error::Remote(memlens_remote::Error::TooLong { .. })
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
        if self.reach.is_none() && !self.mem.is_resident(obj) && self.defer(obj) {
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
                Work::Object(obj) if self.reach.is_some() => {
                    if let Err(e) = self.reach_object(obj) {
                        self.visited.insert(obj)?;
                        self.lost(e, obj)?;
                    }
                }
                Work::Owner(o) => {
                    if let Some(r) = self.reach.as_mut() {
                        r.owner = o;
                    }
                }
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

    /// Counts `obj` and queues what it references. With `untracked_only`, an object that is
    /// tracked by the collector is left alone (its generation list brings it).
    fn visit(&mut self, obj: u64, untracked_only: bool) -> Result<()> {
        let l = self.l;
        let ty = self.mem.read_u64(obj.wrapping_add(l.object_type))?;
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
                self.mem.read_u64(obj.wrapping_add(l.type_flags))? & l.tpflags_heaptype != 0
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
            self.mem.read_i64(obj.wrapping_add(l.var_size))?
        } else {
            0
        };
        let dict = match t.kind {
            Kind::Dict => Some(dicts::table(self.mem, l, obj)?),
            _ => None,
        };
        let size = self.sizer.getsizeof(self.mem, &t.facts, obj, &[])?;
        self.references(obj, ty, &t, ob_size, dict)?;
        let e = &mut self.out[t.slot];
        e.count += 1;
        e.bytes = e.bytes.saturating_add(size.size);
        if !size.exact {
            e.estimated += 1;
        }
        match size.buffer {
            Some(b) if b.owned => e.data_owned = e.data_owned.saturating_add(b.bytes),
            Some(b) => e.data_viewed = e.data_viewed.saturating_add(b.bytes),
            None => {}
        }
        if self.advice {
            self.tally(obj, ty, &t, ob_size, size.size)?;
        }
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
                let items = addr(
                    self.mem.read_u64(obj.wrapping_add(l.list_item))?,
                    "list items",
                )?;
                if ob_size > 0 && items != 0 {
                    self.words(items, ob_size as u64)?;
                } else if ob_size < 0 {
                    return Err(self.bad(obj, "a list length"));
                }
            }
            Kind::Tuple => {
                if ob_size > 0 {
                    self.words(obj.wrapping_add(l.tuple_item), ob_size as u64)?;
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
                let table = addr(
                    self.mem.read_u64(obj.wrapping_add(l.set_table))?,
                    "a set table",
                )?;
                let mask = self.mem.read_i64(obj.wrapping_add(l.set_mask))?;
                if !(0..1 << 40).contains(&mask) {
                    return Err(self.bad(obj, "a set size"));
                }
                if table != 0 {
                    let n = mask as u64 + 1;
                    self.within(table, n * l.set_entry_size, obj)?;
                    self.push_work(Work::Entries {
                        at: table,
                        left: n,
                        stride: l.set_entry_size,
                        key: l.set_entry_key,
                        value: 0,
                        values: 0,
                        set: true,
                    })?;
                }
            }
            Kind::Type | Kind::Function | Kind::Module | Kind::Cell | Kind::Code => {
                if !self.fields(obj, t)? {
                    return Ok(()); // a static type: nothing of its own to follow
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
                    self.push(p)?;
                }
            }
            Kind::Descriptor => {
                for off in [l.descr_type, l.descr_name, l.descr_qualname] {
                    let p = self.mem.read_u64(obj + off)?;
                    self.push(p)?;
                }
            }
            Kind::Str | Kind::Int | Kind::Other => {
                if t.facts.kind == SizeKind::Deque {
                    self.deque_items(obj)?;
                }
            }
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

    /// Queues the items of a `collections.deque`: a chain of blocks of `BLOCKLEN` slots from
    /// `leftblock`, the first item at `leftindex`. `dequeobject` is `PyObject_VAR_HEAD`, then
    /// `leftblock`, `rightblock`, `leftindex` (every CPython), and `block` is `leftlink`,
    /// `data[BLOCKLEN]`, `rightlink`: both offsets follow from the generated `leftindex` and
    /// block size.
    fn deque_items(&mut self, obj: u64) -> Result<()> {
        let l = self.l;
        let n = self.mem.read_i64(obj.wrapping_add(l.var_size))?;
        if !(0..1 << 40).contains(&n) {
            return Err(self.bad(obj, "a deque length"));
        }
        let blocklen = l.deque_blocklen;
        if n == 0 || blocklen == 0 {
            return Ok(());
        }
        let (leftblock, rightlink) = (l.deque_leftblock, l.deque_block_rightlink);
        let mut block = addr(self.mem.read_u64(obj + leftblock)?, "a deque block")?;
        let mut index = self.mem.read_i64(obj.wrapping_add(l.deque_leftindex))?;
        if !(0..blocklen as i64).contains(&index) {
            return Err(self.bad(obj, "a deque index"));
        }
        let mut left = n as u64;
        while left > 0 {
            if block == 0 {
                return Err(self.bad(obj, "a deque's chain of blocks"));
            }
            let take = (blocklen - index as u64).min(left);
            self.words(
                block.wrapping_add(l.deque_block_data + index as u64 * 8),
                take,
            )?;
            left -= take;
            index = 0;
            if left > 0 {
                block = addr(self.mem.read_u64(block + rightlink)?, "a deque block")?;
            }
        }
        Ok(())
    }

    /// The references held in fixed fields: of heap types, functions, modules, cells, and code
    /// objects (constants and names). `false` for a static type (nothing of its own).
    fn fields(&mut self, obj: u64, t: &TypeInfo) -> Result<bool> {
        let l = self.l;
        let offsets: Vec<u64> = match t.kind {
            Kind::Type => {
                if !t.heap
                    && self.mem.read_u64(obj.wrapping_add(l.type_flags))? & l.tpflags_heaptype == 0
                {
                    return Ok(false);
                }
                let mut v = vec![
                    l.type_dict,
                    l.type_cache,
                    l.type_mro,
                    l.type_bases,
                    l.type_base,
                ];
                v.extend(l.heaptype_module);
                v
            }
            Kind::Function => [
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
            ]
            .into_iter()
            .flatten()
            .collect(),
            Kind::Module => vec![l.module_dict],
            Kind::Cell => vec![l.cell_ref],
            Kind::Code => {
                let mut v = vec![l.code_consts, l.code_names, l.code_filename, l.code_name];
                v.extend(l.code_qualname);
                v
            }
            _ => Vec::new(),
        };
        for off in offsets {
            let p = self.mem.read_u64(obj + off)?;
            self.push(p)?;
        }
        Ok(true)
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
            let n = s
                .mem
                .read_i64(t.cached_keys.wrapping_add(l.dictkeys_nentries))?;
            Ok(n.clamp(0, 1 << 16) as u64)
        };
        let basicsize = || Ok(t.basicsize);
        match dicts::managed(self.mem, l, obj, t.flags, basicsize)? {
            Managed::None => {}
            Managed::Dict(d) => self.push(d)?,
            Managed::Values(v) => {
                let n = nvalues(self)?;
                self.words(v, n)?;
            }
        }
        Ok(())
    }
}
