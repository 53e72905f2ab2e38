//! `census --referrers TYPE`: who holds the instances of a type. A breadth-first walk from
//! the roots (the globals of every module in `sys.modules`, then the locals of every frame
//! of every thread, [`super::locals`]) along the references of containers, instances,
//! classes, functions and cells, so that the first time the walk reaches an object, it
//! reaches it along a shortest chain from a root. Each instance of the type is counted on
//! the path of its chain (the types of the objects on it and the references between them,
//! positions grouped: `list[*]`), with its `sys.getsizeof`.
//!
//! The walk keeps no record per object beyond one bit (the census's visited bitmap): the
//! path an object was reached along travels with it in the queue as the id of an interned
//! path (parent path, type, reference), so a path shared by a million instances is stored
//! once. The bitmap, the queue, the paths, the labels and the per-path counts are all charged
//! to the memory budget; passing it fails the walk (`Error::Remote(MemoryCap)`).
//!
//! What is not followed: modules (their globals are roots), code objects, the type of an
//! instance (classes are reached as globals), a function's globals, bound methods,
//! generators and coroutines (their frames), objects of C types other than the builtin
//! containers (a static type's instance dict excepted), weak references.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use memlens_model::referrers::{Chain, Referrers, Root, Step, MAX_DEPTH};
use memlens_remote::{AddressBits, CachedMemory, MemoryBudget, ProcessMemory};

use super::{word, Kind, TypeInfo, Walker, MAX_ADDR, PIECE};
use crate::dicts::{self, Managed};
use crate::error::{Error, Result};
use crate::objects::{read_str, type_name, MAX_NAME};
use crate::process::Interpreter;

/// Dicts with at most this many entries show their `str` keys (`dict['key']`); larger ones
/// group every position as `dict[*]` (a dict of a million keys is one path, not a million).
pub const MAX_KEYED_DICT: u64 = 64;
/// Characters of a key or attribute name kept in a label.
const MAX_LABEL: usize = 60;
/// No path id.
const NONE: u32 = u32::MAX;

/// One interned path: the path of the object it was reached from, that object's type and
/// the reference taken; or a root.
#[derive(Debug, Clone, Copy)]
struct Node {
    parent: u32,
    type_label: u32,
    via: u32,
    root: u32,
    depth: u16,
    /// The node that stands for "deeper than MAX_DEPTH" under its parent.
    cut: bool,
}

/// Bytes charged per entry of a hash map (key, value, control byte, load factor) or vector.
fn map_entry<K, V>() -> u64 {
    ((std::mem::size_of::<(K, V)>() + 1) * 8 / 7 + 1) as u64
}

struct Search<'a, 'w, M> {
    w: &'w mut Walker<'a, M>,
    budget: Rc<MemoryBudget>,
    /// Type name asked for, and `module.qualname` when the query has a dot.
    query: String,
    /// Per type index: whether it matches the query (`None`: not checked yet).
    matches: Vec<Option<bool>>,
    type_known: bool,
    seen: AddressBits,
    queue: VecDeque<(u64, u32)>,
    queue_charged: usize,
    nodes: Vec<Node>,
    node_index: HashMap<(u32, u32, u32), u32>,
    labels: Vec<String>,
    label_index: HashMap<String, u32>,
    roots: Vec<Root>,
    found: HashMap<u32, (u64, u64)>,
    /// `__slots__` member names by type, read once per type.
    slots: HashMap<u64, Rc<Vec<(u64, String)>>>,
    charged: u64,
    reached: u64,
}

/// Charges `bytes`, counting them in `charged` (released at the end of the search).
fn charge(budget: &MemoryBudget, charged: &mut u64, bytes: u64, what: &'static str) -> Result<()> {
    budget.charge(bytes, what)?;
    *charged += bytes;
    Ok(())
}

/// Reserves room for one more entry of `map`, charged: doubles its capacity when full.
fn room<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    budget: &MemoryBudget,
    charged: &mut u64,
    what: &'static str,
) -> Result<()> {
    if map.len() < map.capacity() {
        return Ok(());
    }
    let more = map.capacity().max(16);
    charge(budget, charged, more as u64 * map_entry::<K, V>(), what)?;
    map.reserve(more);
    Ok(())
}

/// Reserves room for one more item of `v`, charged.
fn room_vec<T>(
    v: &mut Vec<T>,
    budget: &MemoryBudget,
    charged: &mut u64,
    what: &'static str,
) -> Result<()> {
    if v.len() < v.capacity() {
        return Ok(());
    }
    let more = v.capacity().max(16);
    charge(
        budget,
        charged,
        (more * std::mem::size_of::<T>()) as u64,
        what,
    )?;
    v.reserve_exact(more);
    Ok(())
}

/// Finds the chains to the instances of `query` (`__name__`, or `module.qualname`) through
/// `mem`, with the memory of `budget`. `roots_locals` are the frame locals found by
/// [`super::locals::frame_locals`]. Keeps the `top` chains with the most bytes (0: all).
pub fn search<M: ProcessMemory>(
    it: &Interpreter,
    mem: &CachedMemory<M>,
    budget: Rc<MemoryBudget>,
    query: &str,
    top: usize,
) -> Result<Referrers> {
    it.layout.require_tables("--referrers")?;
    let mut w = Walker::new(it, mem, budget.clone());
    let mut s = Search {
        w: &mut w,
        budget: budget.clone(),
        query: query.to_string(),
        matches: Vec::new(),
        type_known: false,
        seen: AddressBits::new(4, budget.clone()),
        queue: VecDeque::new(),
        queue_charged: 0,
        nodes: Vec::new(),
        node_index: HashMap::new(),
        labels: Vec::new(),
        label_index: HashMap::new(),
        roots: Vec::new(),
        found: HashMap::new(),
        slots: HashMap::new(),
        charged: 0,
        reached: 0,
    };
    let r = s.run(top);
    let queue = (s.queue_charged * std::mem::size_of::<(u64, u32)>()) as u64;
    budget.release(s.charged + queue);
    r
}

impl<'a, M: ProcessMemory> Search<'a, '_, M> {
    fn mem(&self) -> &'a CachedMemory<M> {
        self.w.mem
    }

    fn run(&mut self, top: usize) -> Result<Referrers> {
        let it = self.w.it;
        let l = self.w.l;
        let modules = self
            .mem()
            .read_u64(it.interp.wrapping_add(l.interp_modules))?;
        self.module_roots(modules)?;
        let (locals, frames_unread) = super::locals::frame_locals(it, self.mem())?;
        for (root, value) in locals {
            self.add_root(root, value)?;
        }
        let roots = self.roots.len() as u64;
        while let Some((obj, path)) = self.queue.pop_front() {
            self.reached += 1;
            if let Err(e) = self.expand(obj, path) {
                self.w.lost(e, obj)?;
            }
        }
        let mut chains: Vec<Chain> = Vec::with_capacity(self.found.len());
        let (mut instances, mut bytes) = (0u64, 0u64);
        for (&path, &(n, b)) in &self.found {
            instances += n;
            bytes = bytes.saturating_add(b);
            chains.push(self.chain(path, n, b));
        }
        chains.sort_by(|a, b| {
            (b.bytes, b.instances)
                .cmp(&(a.bytes, a.instances))
                .then_with(|| a.render("").cmp(&b.render("")))
        });
        let total = chains.len() as u64;
        if top > 0 {
            chains.truncate(top);
        }
        Ok(Referrers {
            type_name: self.query.clone(),
            type_known: self.type_known,
            chains,
            chains_total: total,
            instances,
            bytes,
            objects_reached: self.reached,
            roots,
            unreadable: self.w.unreadable,
            frames_unread,
            method: memlens_model::referrers::Method::Nonblocking,
            pause_us: 0,
        })
    }

    /// The globals of every module in `sys.modules`, in its order. Module dicts are marked
    /// seen: they are never walked as dicts (their entries are the roots).
    fn module_roots(&mut self, modules: u64) -> Result<()> {
        let l = self.w.l;
        let mem = self.mem();
        if modules == 0 {
            return Ok(());
        }
        let entries = dicts::read_dict(mem, l, modules)?.items;
        let mut globals = Vec::new();
        for (k, m) in entries {
            let Ok(name) = read_str(mem, l, k, MAX_NAME) else {
                continue;
            };
            let dict = match self.module_dict(m) {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e) => {
                    self.w.lost(e, m)?;
                    continue;
                }
            };
            self.seen.insert(dict)?;
            self.seen.insert(m)?;
            globals.push((name, dict));
        }
        for (module, dict) in globals {
            let items = match dicts::read_dict(mem, l, dict) {
                Ok(d) => d.items,
                Err(e) => {
                    self.w.lost(e, dict)?;
                    continue;
                }
            };
            for (k, v) in items {
                let Ok(name) = read_str(mem, l, k, MAX_NAME) else {
                    continue;
                };
                if name == "__builtins__" {
                    continue; // the builtins module's dict: a root of its own
                }
                let root = Root::Global {
                    module: module.clone(),
                    name,
                };
                self.add_root(root, v)?;
            }
        }
        Ok(())
    }

    /// The dict of the module object at `m` (`None`: not a module, or no dict).
    fn module_dict(&mut self, m: u64) -> Result<Option<u64>> {
        let l = self.w.l;
        let ty = self.mem().read_u64(m.wrapping_add(l.object_type))?;
        let ti = self.w.type_index(ty)?;
        match self.w.infos.get(ti as usize) {
            Some(t) if t.kind == Kind::Module => {}
            _ => return Ok(None),
        }
        let d = self.mem().read_u64(m.wrapping_add(l.module_dict))?;
        Ok((d != 0 && d < MAX_ADDR).then_some(d))
    }

    fn add_root(&mut self, root: Root, value: u64) -> Result<()> {
        if value == 0 || value % 8 != 0 || value >= MAX_ADDR || !self.seen.insert(value)? {
            return Ok(());
        }
        room_vec(
            &mut self.roots,
            &self.budget,
            &mut self.charged,
            "roots of the referrer walk",
        )?;
        let bytes = match &root {
            Root::Global { module, name } => module.len() + name.len(),
            Root::Local { function, name, .. } => function.len() + name.len(),
        };
        charge(
            &self.budget,
            &mut self.charged,
            bytes as u64,
            "roots of the referrer walk",
        )?;
        self.roots.push(root);
        room_vec(
            &mut self.nodes,
            &self.budget,
            &mut self.charged,
            "paths of the referrer walk",
        )?;
        self.nodes.push(Node {
            parent: NONE,
            type_label: NONE,
            via: NONE,
            root: (self.roots.len() - 1) as u32,
            depth: 0,
            cut: false,
        });
        let id = (self.nodes.len() - 1) as u32;
        self.enqueue(value, id)
    }

    fn enqueue(&mut self, obj: u64, path: u32) -> Result<()> {
        self.queue.push_back((obj, path));
        let cap = self.queue.capacity();
        if cap > self.queue_charged {
            let size = std::mem::size_of::<(u64, u32)>();
            self.budget.charge(
                ((cap - self.queue_charged) * size) as u64,
                "the queue of the referrer walk",
            )?;
            self.queue_charged = cap;
        }
        Ok(())
    }

    fn label(&mut self, s: String) -> Result<u32> {
        if let Some(i) = self.label_index.get(&s) {
            return Ok(*i);
        }
        room(
            &mut self.label_index,
            &self.budget,
            &mut self.charged,
            "labels of the referrer walk",
        )?;
        room_vec(
            &mut self.labels,
            &self.budget,
            &mut self.charged,
            "labels of the referrer walk",
        )?;
        charge(
            &self.budget,
            &mut self.charged,
            2 * s.len() as u64,
            "labels of the referrer walk",
        )?;
        let i = self.labels.len() as u32;
        self.labels.push(s.clone());
        self.label_index.insert(s, i);
        Ok(i)
    }

    /// The path of an object reached from one on `parent` (of type `type_label`) by `via`.
    fn child_path(&mut self, parent: u32, type_label: u32, via: u32) -> Result<u32> {
        let p = self.nodes[parent as usize];
        if p.cut {
            return Ok(parent);
        }
        let cut = usize::from(p.depth) >= MAX_DEPTH;
        let key = if cut {
            (parent, NONE, NONE)
        } else {
            (parent, type_label, via)
        };
        if let Some(i) = self.node_index.get(&key) {
            return Ok(*i);
        }
        room(
            &mut self.node_index,
            &self.budget,
            &mut self.charged,
            "paths of the referrer walk",
        )?;
        room_vec(
            &mut self.nodes,
            &self.budget,
            &mut self.charged,
            "paths of the referrer walk",
        )?;
        self.nodes.push(Node {
            parent,
            type_label: key.1,
            via: key.2,
            root: p.root,
            depth: p.depth + 1,
            cut,
        });
        let id = (self.nodes.len() - 1) as u32;
        self.node_index.insert(key, id);
        Ok(id)
    }

    /// Queues `child`, reached from an object on `path` of type `type_label` by `via`.
    fn reach(&mut self, child: u64, path: u32, type_label: u32, via: u32) -> Result<()> {
        if child == 0 || child % 8 != 0 || child >= MAX_ADDR || self.seen.contains(child) {
            return Ok(());
        }
        self.seen.insert(child)?;
        let p = self.child_path(path, type_label, via)?;
        self.enqueue(child, p)
    }

    /// Whether the type at index `ti` (at `ty`) is the one asked for.
    fn matches(&mut self, ti: u32, ty: u64, t: &TypeInfo) -> Result<bool> {
        let i = ti as usize;
        if self.matches.len() <= i {
            self.matches.resize(i + 1, None);
        }
        if let Some(m) = self.matches[i] {
            return Ok(m);
        }
        let name = &self.w.out[t.slot].type_name;
        let m = if !self.query.contains('.') {
            *name == self.query
        } else {
            let q = self.query.clone();
            self.qualified(ty, t.heap).is_ok_and(|full| full == q)
        };
        self.type_known |= m;
        self.matches[i] = Some(m);
        Ok(m)
    }

    /// `module.qualname` of the type at `ty`: `__module__` of its dict and `ht_qualname`
    /// (which follows `ht_name` and `ht_slots` in every supported version) for a heap type,
    /// `tp_name` for a static one.
    fn qualified(&self, ty: u64, heap: bool) -> Result<String> {
        let l = self.w.l;
        let mem = self.mem();
        if !heap {
            let p = mem.read_u64(ty.wrapping_add(l.type_name))?;
            let raw = mem.read_cstr(p, MAX_NAME)?;
            let s = String::from_utf8_lossy(&raw).into_owned();
            return Ok(if s.contains('.') {
                s
            } else {
                format!("builtins.{s}")
            });
        }
        let q = mem.read_u64(ty.wrapping_add(l.heaptype_name + 16))?;
        let qualname = read_str(mem, l, q, MAX_NAME)?;
        let dict = mem.read_u64(ty.wrapping_add(l.type_dict))?;
        let module = crate::attrs::dict_get(mem, l, dict, "__module__")?
            .and_then(|m| read_str(mem, l, m, MAX_NAME).ok())
            .unwrap_or_default();
        Ok(format!("{module}.{qualname}"))
    }

    /// Counts `obj` when it is an instance, and queues what it references.
    fn expand(&mut self, obj: u64, path: u32) -> Result<()> {
        let l = self.w.l;
        let mem = self.mem();
        let ty = mem.read_u64(obj.wrapping_add(l.object_type))?;
        let ti = self.w.type_index(ty)?;
        let Some(&t) = self.w.infos.get(ti as usize) else {
            return Err(Error::Decode {
                addr: ty,
                what: "a type object".into(),
            });
        };
        if self.matches(ti, ty, &t)? {
            let size = self.w.sizer.getsizeof(mem, &t.facts, obj, &[])?;
            room(
                &mut self.found,
                &self.budget,
                &mut self.charged,
                "chains of the referrer walk",
            )?;
            let e = self.found.entry(path).or_default();
            e.0 += 1;
            e.1 = e.1.saturating_add(size.size);
        }
        let type_label = if t.kind == Kind::Type {
            let name = type_name(mem, l, obj)?;
            let known = if self.query.contains('.') {
                let heap = mem.read_u64(obj.wrapping_add(l.type_flags))? & l.tpflags_heaptype != 0;
                self.qualified(obj, heap).is_ok_and(|q| q == self.query)
            } else {
                name == self.query
            };
            self.type_known |= known;
            self.label(format!("class {}", clip(&name)))?
        } else {
            let name = self.w.out[t.slot].type_name.clone();
            self.label(clip(&name))?
        };
        let managed = l.tpflags_managed_dict.is_some_and(|f| t.flags & f != 0);
        let uses_size = t.itemsize != 0
            || matches!(t.kind, Kind::List | Kind::Tuple | Kind::Int)
            || (t.heap && t.dictoffset < 0 && !managed);
        let ob_size = if uses_size {
            mem.read_i64(obj.wrapping_add(l.var_size))?
        } else {
            0
        };
        let any = self.label("[*]".into())?;
        match t.kind {
            Kind::List => {
                let items = mem.read_u64(obj.wrapping_add(l.list_item))?;
                if ob_size > 0 && items != 0 && items < MAX_ADDR {
                    self.words(items, ob_size as u64, path, type_label, any)?;
                }
            }
            Kind::Tuple if ob_size > 0 => {
                self.words(
                    obj.wrapping_add(l.tuple_item),
                    ob_size as u64,
                    path,
                    type_label,
                    any,
                )?;
            }
            Kind::Dict => self.dict(obj, path, type_label, DictAs::Dict)?,
            Kind::Set => {
                let table = mem.read_u64(obj.wrapping_add(l.set_table))?;
                let mask = mem.read_i64(obj.wrapping_add(l.set_mask))?;
                if table != 0 && table < MAX_ADDR && (0..1 << 40).contains(&mask) {
                    let n = mask as u64 + 1;
                    let stride = l.set_entry_size;
                    self.within(table, n * stride)?;
                    let mut at = 0;
                    while at < n {
                        let k = (n - at).min(PIECE);
                        let raw = mem.read_vec(table + at * stride, (k * stride) as usize)?;
                        for e in raw.chunks_exact(stride as usize) {
                            let key = word(e, l.set_entry_key);
                            if key != 0 && word(e, 8) as i64 != -1 {
                                self.reach(key, path, type_label, any)?;
                            }
                        }
                        at += k;
                    }
                }
            }
            Kind::Type => {
                let heap = mem.read_u64(obj.wrapping_add(l.type_flags))? & l.tpflags_heaptype != 0;
                if heap {
                    let d = mem.read_u64(obj.wrapping_add(l.type_dict))?;
                    if d != 0 && self.seen.insert(d)? {
                        self.dict(d, path, type_label, DictAs::Attributes)?;
                    }
                }
            }
            Kind::Function => {
                let fields = [
                    (l.func_defaults, ".__defaults__"),
                    (l.func_kwdefaults, ".__kwdefaults__"),
                    (l.func_closure, ".__closure__"),
                    (l.func_dict, ".__dict__"),
                ];
                for (off, name) in fields {
                    let p = mem.read_u64(obj.wrapping_add(off))?;
                    let via = self.label(name.into())?;
                    self.reach(p, path, type_label, via)?;
                }
            }
            Kind::Cell => {
                let p = mem.read_u64(obj.wrapping_add(l.cell_ref))?;
                let via = self.label(".cell_contents".into())?;
                self.reach(p, path, type_label, via)?;
            }
            Kind::Other if t.facts.kind == crate::sizes::SizeKind::Deque => {
                // a deque's length is its ob_size, read here (its type has no item size)
                let n = mem.read_i64(obj.wrapping_add(l.var_size))?;
                self.deque(obj, n, path, type_label, any)?;
            }
            _ => {}
        }
        if t.heap && t.kind != Kind::Type {
            self.instance(obj, &t, ob_size, managed, path, type_label)?;
        } else if !t.heap && t.dictoffset > 0 && !matches!(t.kind, Kind::Type | Kind::Module) {
            let d = mem.read_u64(obj + t.dictoffset as u64)?;
            if d != 0 && d < MAX_ADDR && self.seen.insert(d)? {
                self.dict(d, path, type_label, DictAs::Attributes)?;
            }
        }
        Ok(())
    }

    /// The attributes of an instance of a heap type: `__slots__` members, then its dict or
    /// inline values, each as `.name` (the dict is no step of its own).
    fn instance(
        &mut self,
        obj: u64,
        t: &TypeInfo,
        ob_size: i64,
        managed: bool,
        path: u32,
        type_label: u32,
    ) -> Result<()> {
        let l = self.w.l;
        let mem = self.mem();
        let ty = mem.read_u64(obj.wrapping_add(l.object_type))?;
        if t.members.1 > t.members.0 {
            let names = match self.slots.get(&ty) {
                Some(n) => n.clone(),
                None => {
                    let n = Rc::new(self.slot_names(ty)?);
                    room(
                        &mut self.slots,
                        &self.budget,
                        &mut self.charged,
                        "slot names of the referrer walk",
                    )?;
                    let bytes: usize = n.iter().map(|(_, s)| s.len() + 32).sum();
                    charge(
                        &self.budget,
                        &mut self.charged,
                        bytes as u64,
                        "slot names of the referrer walk",
                    )?;
                    self.slots.insert(ty, n.clone());
                    n
                }
            };
            for i in t.members.0..t.members.1 {
                let off = self.w.member_offsets[i];
                let name = names
                    .iter()
                    .find(|(o, _)| *o == off)
                    .map_or_else(|| format!(".<slot at {off}>"), |(_, n)| format!(".{n}"));
                let p = mem.read_u64(obj + off)?;
                let via = self.label(name)?;
                self.reach(p, path, type_label, via)?;
            }
        }
        if managed {
            let basicsize = || Ok(t.basicsize);
            match dicts::managed(mem, l, obj, t.flags, basicsize)? {
                Managed::None => {}
                Managed::Dict(d) => {
                    if self.seen.insert(d)? {
                        self.dict(d, path, type_label, DictAs::Attributes)?;
                    }
                }
                Managed::Values(v) => {
                    if t.cached_keys != 0 {
                        let keys = crate::attrs::split_keys(mem, l, t.cached_keys)?;
                        let vals = mem.read_vec(v, keys.len() * 8)?;
                        for (i, k) in keys.iter().enumerate() {
                            let value = word(&vals, i as u64 * 8);
                            if value == 0 {
                                continue;
                            }
                            let name = read_str(mem, l, *k, MAX_LABEL).unwrap_or_default();
                            let via = self.label(format!(".{name}"))?;
                            self.reach(value, path, type_label, via)?;
                        }
                    }
                }
            }
            return Ok(());
        }
        let dict_at = match t.dictoffset {
            0 => return Ok(()),
            off if off > 0 => obj + off as u64,
            off => {
                let n = ob_size.unsigned_abs();
                let size = (t.basicsize.saturating_add(n.saturating_mul(t.itemsize)) + 7) & !7;
                obj.wrapping_add(size).wrapping_add(off as u64)
            }
        };
        let d = mem.read_u64(dict_at)?;
        if d != 0 && d < MAX_ADDR && self.seen.insert(d)? {
            self.dict(d, path, type_label, DictAs::Attributes)?;
        }
        Ok(())
    }

    /// `(offset, name)` of the `__slots__` members of the heap type at `ty` and its heap bases.
    fn slot_names(&self, ty: u64) -> Result<Vec<(u64, String)>> {
        let l = self.w.l;
        let mem = self.mem();
        let mut out = Vec::new();
        let mut base = ty;
        for _ in 0..64 {
            if base == 0 || base >= MAX_ADDR {
                break;
            }
            if mem.read_u64(base + l.type_flags)? & l.tpflags_heaptype == 0 {
                break;
            }
            let n = mem.read_i64(base + l.var_size)?;
            let members = mem.read_u64(base + l.type_members)?;
            if n > 0 && n < 4096 && members != 0 && members < MAX_ADDR {
                let raw = mem.read_vec(members, (n as u64 * l.member_size) as usize)?;
                for m in raw.chunks_exact(l.member_size as usize) {
                    if word(m, l.member_type) & 0xffff_ffff != l.member_t_object_ex {
                        continue;
                    }
                    let name_at = word(m, 0);
                    let name = if name_at != 0 && name_at < MAX_ADDR {
                        let raw = mem.read_cstr(name_at, MAX_LABEL)?;
                        String::from_utf8_lossy(&raw).into_owned()
                    } else {
                        String::new()
                    };
                    out.push((word(m, l.member_offset), name));
                }
            }
            base = mem.read_u64(base + l.type_base)?;
        }
        Ok(out)
    }

    /// Queues the values (and keys that are not `str`) of the dict at `d`.
    fn dict(&mut self, d: u64, path: u32, type_label: u32, as_: DictAs) -> Result<()> {
        let l = self.w.l;
        let mem = self.mem();
        let table = dicts::table(mem, l, d)?;
        if table.entries == 0 {
            return Ok(());
        }
        self.within(table.entries_at, table.entries * table.entry_size)?;
        let keyed = as_ == DictAs::Attributes || table.entries <= MAX_KEYED_DICT;
        let any = self.label("[*]".into())?;
        let key_via = self.label("{key}".into())?;
        let str_type = self.w.it.types.str;
        let mut at = 0;
        while at < table.entries {
            let n = (table.entries - at).min(PIECE);
            let raw = mem.read_vec(
                table.entries_at + at * table.entry_size,
                (n * table.entry_size) as usize,
            )?;
            let vals = match table.split_values {
                Some(v) => Some(mem.read_vec(v + at * 8, (n * 8) as usize)?),
                None => None,
            };
            for (i, e) in raw.chunks_exact(table.entry_size as usize).enumerate() {
                let k = word(e, table.key_at);
                let v = match &vals {
                    Some(vals) => word(vals, i as u64 * 8),
                    None => word(e, table.value_at),
                };
                if k == 0 || v == 0 || k >= MAX_ADDR {
                    continue;
                }
                let is_str = mem.read_u64(k.wrapping_add(l.object_type)).ok() == Some(str_type);
                let via = if is_str && keyed {
                    let key = read_str(mem, l, k, MAX_LABEL).unwrap_or_default();
                    match as_ {
                        DictAs::Attributes => self.label(format!(".{key}"))?,
                        DictAs::Dict => self.label(format!("[{}]", py_repr(&key)))?,
                    }
                } else {
                    any
                };
                self.reach(v, path, type_label, via)?;
                if !is_str {
                    self.reach(k, path, type_label, key_via)?;
                }
            }
            at += n;
        }
        Ok(())
    }

    /// Queues `n` object pointers at `at` (list and tuple items), read in pieces.
    fn words(&mut self, at: u64, n: u64, path: u32, type_label: u32, via: u32) -> Result<()> {
        let len = n.checked_mul(8).ok_or(Error::Decode {
            addr: at,
            what: "an item count".into(),
        })?;
        self.within(at, len)?;
        let mut done = 0;
        while done < n {
            let k = (n - done).min(PIECE);
            let raw = self.mem().read_vec(at + done * 8, (k * 8) as usize)?;
            for c in raw.chunks_exact(8) {
                self.reach(word(c, 0), path, type_label, via)?;
            }
            done += k;
        }
        Ok(())
    }

    /// Queues the items of a `collections.deque` (see the census's `deque_items`).
    fn deque(&mut self, obj: u64, n: i64, path: u32, type_label: u32, via: u32) -> Result<()> {
        let l = self.w.l;
        let mem = self.mem();
        let bad = |what: &str| Error::Decode {
            addr: obj,
            what: what.into(),
        };
        if !(0..1 << 40).contains(&n) {
            return Err(bad("a deque length"));
        }
        let blocklen = l.deque_blocklen;
        if n == 0 || blocklen == 0 {
            return Ok(());
        }
        let mut block = mem.read_u64(obj + l.deque_leftblock)?;
        let mut index = mem.read_i64(obj.wrapping_add(l.deque_leftindex))?;
        if !(0..blocklen as i64).contains(&index) {
            return Err(bad("a deque index"));
        }
        let mut left = n as u64;
        while left > 0 {
            if block == 0 || block >= MAX_ADDR {
                return Err(bad("a deque's chain of blocks"));
            }
            let take = (blocklen - index as u64).min(left);
            self.words(
                block.wrapping_add(l.deque_block_data + index as u64 * 8),
                take,
                path,
                type_label,
                via,
            )?;
            left -= take;
            index = 0;
            if left > 0 {
                block = mem.read_u64(block + l.deque_block_rightlink)?;
            }
        }
        Ok(())
    }

    /// Fails (the object is unreadable) unless `[at, at + len)` lies in one readable mapping.
    fn within(&self, at: u64, len: u64) -> Result<()> {
        if self.mem().contains_range(at, len) {
            return Ok(());
        }
        Err(Error::Remote(memlens_remote::Error::Unreadable {
            addr: at,
            len: usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30),
        }))
    }

    /// The chain of the instances counted on `path`.
    fn chain(&self, path: u32, instances: u64, bytes: u64) -> Chain {
        let mut steps = Vec::new();
        let mut truncated = false;
        let mut at = path;
        let mut root = 0;
        while at != NONE {
            let n = self.nodes[at as usize];
            root = n.root;
            if n.cut {
                truncated = true;
            } else if n.parent != NONE {
                steps.push(Step {
                    type_name: self.labels[n.type_label as usize].clone(),
                    via: self.labels[n.via as usize].clone(),
                });
            }
            at = n.parent;
        }
        steps.reverse();
        Chain {
            root: self.roots[root as usize].clone(),
            path: steps,
            truncated,
            instances,
            bytes,
        }
    }
}

/// How a dict's entries are labelled: `['key']` for a dict, `.key` for the attributes of an
/// instance or class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DictAs {
    Dict,
    Attributes,
}

/// At most [`MAX_LABEL`] characters of `s`.
fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_LABEL) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// `'key'` as Python's `repr` writes a simple `str` (quotes and backslashes escaped; control
/// characters are escaped again when printed).
fn py_repr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in clip(s).chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Reads the chains to the instances of `query` in the process of `it`, with at most `cap`
/// bytes of memlens's own memory. With `stop`, the target is stopped for the whole walk (the
/// chains are exact as of the pause; the pause lasts as long as the walk); without, it runs
/// and the result says `nonblocking` (inexact: objects may move between containers as they
/// are read).
pub fn read(
    it: &Interpreter,
    mem: &memlens_remote::vm::RemoteMemory,
    stop: Option<&dyn Fn() -> Result<memlens_remote::Pause>>,
    cap: u64,
    query: &str,
    top: usize,
) -> Result<Referrers> {
    let budget = Rc::new(MemoryBudget::new(cap));
    let regions =
        memlens_remote::cache::merge_regions(memlens_remote::vm::readable_regions(it.pid)?);
    let pause = match stop {
        Some(stop) => Some(stop()?),
        None => None,
    };
    let copies = super::CENSUS_CACHE.min(cap / 2);
    let cache = CachedMemory::new(mem, regions, copies, budget.clone()).refresh_from(it.pid);
    let found = search(it, &cache, budget.clone(), query, top);
    drop(cache);
    let paused = pause.map(|p| memlens_model::clock::reported(p.resume()));
    let mut r = found?;
    // as the census: more than 0.1% of the objects reached unread is no answer
    let reached = r.objects_reached.max(1);
    if r.unreadable.objects * super::MAX_UNREADABLE_PER > reached {
        return Err(Error::Incomplete {
            pid: it.pid,
            unreadable: r.unreadable.objects,
            reached,
            bytes: r.unreadable.bytes,
            limit: "0.1%",
        });
    }
    if let Some(d) = paused {
        r.method = memlens_model::referrers::Method::Paused;
        r.pause_us = d.as_micros() as u64;
    }
    log::debug!(
        "referrers of {}: {} objects reached, memlens's own memory peaked at {} KiB",
        it.pid,
        r.objects_reached,
        budget.peak() >> 10
    );
    Ok(r)
}
