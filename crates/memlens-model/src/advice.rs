//! Advice with figures (docs/advice.md): what a change to the program would save, computed
//! from this process's ledger, Python view and census tallies. Every item is an estimate and
//! says how it was made; only material savings are advised ([`material`]).
//!
//! Pure arithmetic over model types: `memlens-cpython` fills the census tallies, the snapshot
//! command gathers the inputs, `memlens-report` draws the result.

use serde::{Deserialize, Serialize};

use crate::category::Category;
use crate::census::{ClassDicts, ScalarList, Tallies};
use crate::ledger::ProcessLedger;
use crate::packages::{Package, PackageKind};
use crate::units::SizeStyle;

/// The smallest saving advised, in bytes (1 MiB) ...
pub const MIN_SAVING: u64 = 1 << 20;
/// ... and as a share of the process's PSS, in percent (1%).
pub const MIN_PERCENT: u64 = 1;

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advice {
    /// The kind, a stable id (docs/advice.md): `slots`, `scalar-list`, `duplicate-values`,
    /// `fragmentation`, `cow-freeze`, `malloc-arenas`, `package-import`, `thread-stacks`.
    pub id: String,
    /// What it is about: a class name, a type, `threads`, `pymalloc` (untrusted where it
    /// names a class).
    pub subject: String,
    /// The process.
    pub pid: u32,
    /// The estimated saving.
    pub saving_bytes: u64,
    /// Always true: the saving is an estimate, made as `method` says.
    pub estimated: bool,
    /// How the saving was estimated.
    pub method: String,
    /// The advice, worded (sizes in binary units).
    pub text: String,
    /// `text` with exact byte counts for its sizes (`--bytes`); not in the JSON, whose `text`
    /// keeps binary units.
    #[serde(skip)]
    pub text_bytes: String,
}

/// What a process's advice is computed from: the census tallies exist only when a census was
/// taken (`snapshot --advice`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// The census's tallies.
    pub census: Option<&'a Tallies>,
    /// The glibc arenas other than the main one, when their heaps were walked
    /// (`snapshot --advice`).
    pub arenas: Option<&'a crate::arenas::MallocArenas>,
    /// Each thread's resident cost, when read (`snapshot --advice`).
    pub threads: Option<&'a crate::thread_costs::ThreadCosts>,
}

/// Whether a saving is worth advising for a process of `pss` bytes: at least [`MIN_SAVING`]
/// and at least [`MIN_PERCENT`] of its PSS.
pub fn material(saving: u64, pss: u64) -> bool {
    saving >= MIN_SAVING && saving.saturating_mul(100) >= pss.saturating_mul(MIN_PERCENT)
}

/// The advice for one process, largest saving first (ties by id and subject).
pub fn advise(p: &ProcessLedger, inputs: &Inputs<'_>) -> Vec<Advice> {
    both_styles(|sz| {
        let mut out = Vec::new();
        without_census(&Figures::of(p), sz, &mut out);
        if let Some(t) = inputs.census {
            slots(p.pid, &t.classes, sz, &mut out);
            scalar_lists(p.pid, &t.scalar_lists, sz, &mut out);
            duplicates(p.pid, t, sz, &mut out);
            package_import(p.pid, &t.packages, sz, &mut out);
        }
        if let Some(a) = inputs.arenas {
            crate::arenas::advise(p.pid, a, sz, &mut out);
        }
        if let Some(t) = inputs.threads {
            let classes = inputs.census.map(|c| c.classes.as_slice());
            crate::thread_costs::advise(p.pid, t, classes, sz, &mut out);
        }
        ranked(out, p.totals.pss)
    })
}

/// The advice computable without a census (`fragmentation`, `cow-freeze`) from a process's
/// [`Figures`]: what a recording's stored ledger and Python view give (`memlens report`),
/// largest saving first.
pub fn advise_figures(f: &Figures) -> Vec<Advice> {
    both_styles(|sz| {
        let mut out = Vec::new();
        without_census(f, sz, &mut out);
        ranked(out, f.pss)
    })
}

/// The advice worded in binary units, each item's `text_bytes` from the same advice worded
/// with exact byte counts (the same inputs give the same items in the same order).
fn both_styles(advice: impl Fn(SizeStyle) -> Vec<Advice>) -> Vec<Advice> {
    let mut binary = advice(SizeStyle::Binary);
    for (a, b) in binary.iter_mut().zip(advice(SizeStyle::Bytes)) {
        a.text_bytes = b.text;
    }
    binary
}

fn without_census(f: &Figures, sz: SizeStyle, out: &mut Vec<Advice>) {
    fragmentation(f, sz, out);
    cow_freeze(f, sz, out);
}

/// Only material advice, largest saving first (ties by id and subject).
fn ranked(mut out: Vec<Advice>, pss: u64) -> Vec<Advice> {
    out.retain(|a| material(a.saving_bytes, pss));
    out.sort_by(|a, b| {
        b.saving_bytes
            .cmp(&a.saving_bytes)
            .then(a.id.cmp(&b.id))
            .then(a.subject.cmp(&b.subject))
    });
    out
}

/// The figures of one process that the advice without a census reads: filled from a ledger
/// ([`Figures::of`]) or from a stored `snapshot --json` process ([`StoredProcess`]) and, where
/// it lacks them, a recording's Python view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// The process.
    pub pid: u32,
    /// Its PSS (materiality).
    pub pss: u64,
    /// The RSS of its `python-heap` row.
    pub python_heap_rss: u64,
    /// pymalloc's arenas, when the interpreter was read.
    pub pymalloc: Option<PymallocFigures>,
    /// `gc.get_freeze_count()`, when the collector was read.
    pub gc_frozen: Option<u64>,
    /// The `python-heap` pages' sharing with the parent, when measured.
    pub python_heap_sharing: Option<HeapSharing>,
}

/// pymalloc's arenas (as [`crate::python::Pymalloc`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PymallocFigures {
    /// Arenas allocated.
    pub arenas: u64,
    /// Bytes per arena.
    pub arena_size: u64,
    /// Bytes in allocated blocks.
    pub used_bytes: u64,
    /// Arena bytes not in allocated blocks.
    pub free_bytes: u64,
}

impl PymallocFigures {
    /// The free arena bytes that are resident, with `python_heap_rss` the RSS of the
    /// `python-heap` row: at most that RSS less the bytes in allocated blocks.
    pub fn resident_free(&self, python_heap_rss: u64) -> u64 {
        python_heap_rss
            .saturating_sub(self.used_bytes)
            .min(self.free_bytes)
    }

    /// What `fragmentation` would save (whether advised or not: see docs/advice.md): the
    /// resident free bytes less the slack a compact heap keeps too (an arena and a pool per
    /// size class: 1.5 arenas). Exposed so that a recording's report can compare the heap as
    /// two readings of the Python view found it.
    pub fn fragmentation_saving(&self, python_heap_rss: u64) -> u64 {
        let slack = self.arena_size.saturating_mul(3) / 2;
        self.resident_free(python_heap_rss).saturating_sub(slack)
    }
}

/// The `python-heap` row of a worker's measured sharing with its parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapSharing {
    /// The parent.
    pub parent: u32,
    /// Pages still shared with it.
    pub shared_with_parent: u64,
    /// Pages copied since the fork.
    pub copied: u64,
}

impl Figures {
    /// A ledger's figures.
    pub fn of(p: &ProcessLedger) -> Figures {
        let py = p.python.as_ref();
        Figures {
            pid: p.pid,
            pss: p.totals.pss,
            python_heap_rss: p.row(Category::PythonHeap).map_or(0, |r| r.amounts.rss),
            pymalloc: py
                .and_then(|py| py.pymalloc.as_ref())
                .map(|pm| PymallocFigures {
                    arenas: pm.arenas,
                    arena_size: pm.arena_size,
                    used_bytes: pm.used_bytes,
                    free_bytes: pm.free_bytes,
                }),
            gc_frozen: py.and_then(|py| py.gc.as_ref()).map(|gc| gc.frozen),
            python_heap_sharing: p.sharing.as_ref().and_then(|s| {
                let f = s.figures.as_ref().filter(|_| s.measured)?;
                let row = f.row(Category::PythonHeap)?;
                Some(HeapSharing {
                    parent: s.parent,
                    shared_with_parent: row.shared_with_parent,
                    copied: row.copied,
                })
            }),
        }
    }
}

/// A process of a `snapshot --json` document (or a ledger a recording stored, which has the
/// same shape), as far as [`Figures`] reads it: every other key is ignored, and a key a
/// recording does not store (the Python view's `pymalloc` and `gc`, `sharing`) reads as absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StoredProcess {
    /// PID.
    pub pid: u32,
    /// Totals.
    pub totals: StoredTotals,
    /// Ledger rows.
    pub ledger: Vec<StoredRow>,
    /// The Python view.
    pub python: Option<StoredPython>,
    /// Copy-on-write sharing with the parent.
    pub sharing: Option<StoredSharing>,
}

/// `totals` as far as read.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct StoredTotals {
    /// PSS.
    pub pss: u64,
}

/// A ledger row as far as read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StoredRow {
    /// Category name.
    pub category: String,
    /// RSS.
    pub rss: u64,
    /// Its items.
    pub items: Vec<StoredItem>,
}

/// A row's item as far as read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StoredItem {
    /// Its name (`pymalloc arenas` for the arenas).
    pub name: String,
    /// Virtual size.
    pub size: u64,
}

/// `python` as far as read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StoredPython {
    /// pymalloc's arenas.
    pub pymalloc: Option<PymallocFigures>,
    /// The collector.
    pub gc: Option<StoredGc>,
}

/// `python.gc` as far as read.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct StoredGc {
    /// Frozen objects.
    pub frozen: u64,
}

/// `sharing` as far as read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StoredSharing {
    /// The parent.
    pub parent: u32,
    /// Whether measured.
    pub measured: bool,
    /// Per category.
    pub by_category: Vec<StoredSharingRow>,
}

/// A category of `sharing.by_category` as far as read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StoredSharingRow {
    /// Category name.
    pub category: String,
    /// Shared with the parent.
    pub shared_with_parent: u64,
    /// Copied.
    pub copied: u64,
}

impl StoredProcess {
    /// The `python-heap` row, if any.
    pub fn python_heap(&self) -> Option<&StoredRow> {
        self.ledger
            .iter()
            .find(|r| r.category == Category::PythonHeap.name())
    }

    /// The virtual size of the `pymalloc arenas` item of the `python-heap` row (what the
    /// ledger found of the arenas when it was read), if any.
    pub fn arena_bytes(&self) -> Option<u64> {
        self.python_heap()?
            .items
            .iter()
            .find(|i| i.name == "pymalloc arenas")
            .map(|i| i.size)
    }

    /// Its figures.
    pub fn figures(&self) -> Figures {
        let py = self.python.as_ref();
        Figures {
            pid: self.pid,
            pss: self.totals.pss,
            python_heap_rss: self.python_heap().map_or(0, |r| r.rss),
            pymalloc: py.and_then(|p| p.pymalloc),
            gc_frozen: py.and_then(|p| p.gc).map(|g| g.frozen),
            python_heap_sharing: self.sharing.as_ref().filter(|s| s.measured).and_then(|s| {
                let row = s
                    .by_category
                    .iter()
                    .find(|r| r.category == Category::PythonHeap.name())?;
                Some(HeapSharing {
                    parent: s.parent,
                    shared_with_parent: row.shared_with_parent,
                    copied: row.copied,
                })
            }),
        }
    }
}

pub(crate) fn item(
    pid: u32,
    id: &str,
    subject: &str,
    saving: u64,
    method: &str,
    text: String,
) -> Advice {
    Advice {
        id: id.into(),
        subject: subject.into(),
        pid,
        saving_bytes: saving,
        estimated: true,
        method: method.into(),
        text,
        text_bytes: String::new(),
    }
}

/// `slots`: classes whose instances carry a dict (or managed/inline values).
fn slots(pid: u32, classes: &[ClassDicts], sz: SizeStyle, out: &mut Vec<Advice>) {
    const METHOD: &str = "per instance: sys.getsizeof of the instance and its dict (or the size \
of its 3.11+ values array), each rounded as pymalloc allocates it, minus a __slots__ instance \
of the same attributes (GC header, the instance without its dict and weakref words, 8 bytes \
per attribute); summed over the instances the census found";
    for c in classes {
        let saving = c.bytes.saturating_sub(c.slotted_bytes);
        if saving == 0 || c.instances == 0 {
            continue;
        }
        let per = c.attributes as f64 / c.instances as f64;
        let text = format!(
            "{} instances of class {} keep their attributes in a per-instance dict ({} now); \
             declaring __slots__ for their {:.1} attributes on average would take {} \
             instead: about {} less{}",
            c.instances,
            c.type_name,
            sz.size(c.bytes),
            per,
            sz.size(c.slotted_bytes),
            sz.size(saving),
            if c.unread > 0 {
                format!(
                    " ({} instances whose dict could not be read left out)",
                    c.unread
                )
            } else {
                String::new()
            }
        );
        out.push(item(pid, "slots", &c.type_name, saving, METHOD, text));
    }
}

/// `scalar-list`: large lists and tuples whose items are all floats or all ints.
fn scalar_lists(pid: u32, lists: &[ScalarList], sz: SizeStyle, out: &mut Vec<Advice>) {
    const METHOD: &str = "per list: the item objects that only the list references (reference \
count 1), each rounded as pymalloc allocates it, plus the pointer array, minus 8 bytes per item \
in an array.array or numpy array; items referenced elsewhere are not counted as saved";
    for l in lists {
        let array = l.items.saturating_mul(8);
        let saving = l
            .owned_bytes
            .saturating_add(l.pointer_bytes)
            .saturating_sub(array);
        let (kind, code) = if l.float {
            ("float", "'d'")
        } else {
            ("int", "'q'")
        };
        let text = format!(
            "a {} of {} {}s takes {} in item objects and pointers; array.array({code}) or a \
             numpy array would hold them in {}: about {} less",
            l.container,
            l.items,
            kind,
            sz.size(l.owned_bytes.saturating_add(l.pointer_bytes)),
            sz.size(array),
            sz.size(saving),
        );
        let subject = format!("{} of {} {kind}s", l.container, l.items);
        out.push(item(pid, "scalar-list", &subject, saving, METHOD, text));
    }
}

/// `duplicate-values`: equal str or bytes values held more than once, one item per type.
fn duplicates(pid: u32, t: &Tallies, sz: SizeStyle, out: &mut Vec<Advice>) {
    const METHOD: &str = "per value: (copies - 1) x its sys.getsizeof rounded as pymalloc \
allocates it, summed over the values of the type whose copies have equal length and contents \
(compared); the census tracks a bounded number of distinct values, so the copies found are a \
lower bound";
    for total in &t.duplicate_totals {
        let name = total.type_name;
        let largest: Vec<String> = t
            .duplicates
            .iter()
            .filter(|v| v.type_name == name)
            .take(3)
            .map(|v| format!("{} x{} ({} bytes each)", v.preview, v.copies, v.size))
            .collect();
        let text = format!(
            "{} distinct {name} values are held in {} equal objects; keeping one object per \
             value ({}) would save about {}. Largest: {}",
            total.values,
            total.copies,
            if name == "str" {
                "sys.intern, or a dict of canonical values"
            } else {
                "a dict of canonical values"
            },
            sz.size(total.saving),
            largest.join(", "),
        );
        let subject = format!("{name} values");
        out.push(item(
            pid,
            "duplicate-values",
            &subject,
            total.saving,
            METHOD,
            text,
        ));
    }
}

/// `package-import`: installed distributions whose import holds the most memory.
fn package_import(pid: u32, packages: &[Package], sz: SizeStyle, out: &mut Vec<Advice>) {
    const METHOD: &str = "the package's modules, classes, functions and code objects and every \
object they hold that no module imported before it holds (a walk from sys.modules in import \
order, __main__ last; each object charged once), each sys.getsizeof rounded as pymalloc or \
malloc allocates it, plus the private pages (USS) of its extension modules; memory its C code \
allocates, freed memory the import left in the heaps, and shared libraries it loads from \
outside its folder are not seen";
    for p in packages {
        if p.kind != PackageKind::Distribution {
            continue; // the standard library, the program, unknown origins: no one import
        }
        let objects = p.by_kind.allocated;
        let ext = p.extension.map_or(0, |e| e.amounts.uss);
        let saving = objects.saturating_add(ext);
        let k = &p.by_kind;
        let so = if ext > 0 {
            format!(
                " and {} of its extension modules' private pages",
                sz.size(ext)
            )
        } else {
            String::new()
        };
        let text = format!(
            "the package {} holds {} in {} Python objects ({} code objects, {} functions,              {} classes, {} modules, {} objects they hold; as allocated){so}: importing it              lazily, inside the functions that use it, or not at all would save about {}              while it is not imported",
            p.name,
            sz.size(objects),
            p.objects,
            k.code.count,
            k.functions.count,
            k.classes.count,
            k.modules.count,
            k.held.count,
            sz.size(saving),
        );
        out.push(item(pid, "package-import", &p.name, saving, METHOD, text));
    }
}

/// `fragmentation`: pymalloc arenas mostly free (live objects pin them, so the memory freed
/// inside them stays in RSS).
fn fragmentation(f: &Figures, sz: SizeStyle, out: &mut Vec<Advice>) {
    const METHOD: &str = "pymalloc's free bytes in its arenas (free blocks, empty pools, \
headers), at most the python-heap row's RSS less the bytes in allocated blocks: the resident \
memory a heap holding the same live objects compactly would not take, less the slack a compact \
heap keeps too (an arena and a pool per size class: 1.5 arenas); advised when at least half of \
the arena bytes are free";
    let Some(pm) = f.pymalloc.as_ref() else {
        return;
    };
    if pm.free_bytes < pm.used_bytes {
        return; // not mostly free
    }
    let resident_free = pm.resident_free(f.python_heap_rss);
    let saving = pm.fragmentation_saving(f.python_heap_rss);
    let text = format!(
        "pymalloc's {} arenas hold {} of live objects and {} free ({} of it resident): \
         memory the program freed that stays in RSS because a few live objects pin each arena. \
         Allocating long-lived objects before short-lived bulk ones, processing in smaller \
         batches, or running the bulk work in a worker process that exits would return about \
         {}",
        pm.arenas,
        sz.size(pm.used_bytes),
        sz.size(pm.free_bytes),
        sz.size(resident_free),
        sz.size(saving),
    );
    out.push(item(
        f.pid,
        "fragmentation",
        "pymalloc arenas",
        saving,
        METHOD,
        text,
    ));
}

/// `cow-freeze`: a forked Python worker whose inherited python-heap pages were copied since
/// the fork (a GC pass writes to the header of every object it tracks): `gc.freeze()` in the
/// parent before forking keeps the GC off the inherited objects.
fn cow_freeze(f: &Figures, sz: SizeStyle, out: &mut Vec<Advice>) {
    const METHOD: &str = "the python-heap pages of this worker at addresses its parent maps, \
with a page of their own since the fork (copied on write), from the physical page numbers of \
both (pagemap): what gc.freeze() before the fork would keep shared if the GC made the copies; \
copies the program's own writes made (refcounts, changed objects) would stay, so this is an \
upper bound";
    // The GC's frozen count must be known (a Python view) and small: a heap already frozen
    // (at least one frozen object per 64 bytes inherited, the rule of the `copied_python_heap`
    // finding) was copied by something else.
    let Some(frozen) = f.gc_frozen else {
        return;
    };
    let Some(row) = f.python_heap_sharing else {
        return;
    };
    let inherited = row.shared_with_parent.saturating_add(row.copied);
    if frozen.saturating_mul(64) >= inherited {
        return; // frozen already
    }
    let saving = row.copied;
    let text = format!(
        "this worker (forked from pid {}) holds {} of copies of python-heap pages it inherited \
         from its parent ({} still shared): a garbage collection writes to the header of every \
         object it tracks, which copies each inherited page holding one. Calling gc.freeze() in \
         the parent just before forking would keep about {} shared, less what the worker's own \
         writes copy",
        row.parent,
        sz.size(row.copied),
        sz.size(row.shared_with_parent),
        sz.size(saving),
    );
    let subject = format!("python heap inherited from pid {}", row.parent);
    out.push(item(f.pid, "cow-freeze", &subject, saving, METHOD, text));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::census::ClassDicts;
    use crate::ledger::{Amounts, ThreadStacks};

    fn process(pss: u64) -> ProcessLedger {
        ProcessLedger {
            pid: 7,
            ppid: 1,
            name: "python".into(),
            cmdline: "python x.py".into(),
            python: None,
            threads: 1,
            vm_hwm: pss,
            totals: Amounts {
                rss: pss,
                pss,
                uss: pss,
                swap: 0,
            },
            size: pss,
            ledger: Vec::new(),
            thread_stacks: ThreadStacks::default(),
            sharing: None,
        }
    }

    fn class(name: &str, instances: u64, bytes: u64, slotted: u64) -> ClassDicts {
        ClassDicts {
            type_name: name.into(),
            instances,
            bytes,
            slotted_bytes: slotted,
            attributes: instances * 3,
            dicts: 0,
            unread: 0,
        }
    }

    fn worker(copied: u64, shared: u64, frozen: Option<u64>) -> ProcessLedger {
        use crate::category::Category;
        use crate::ledger::PythonInfo;
        use crate::python::GcState;
        use crate::sharing::{Sharing, SharingFigures, SharingRow};
        let mut p = process(copied + shared);
        p.python = Some(PythonInfo {
            version: None,
            binary: String::new(),
            build: "shared",
            gc: frozen.map(|n| GcState {
                generations: Vec::new(),
                frozen: n,
                collecting: false,
            }),
            pymalloc: None,
            modules: None,
            inexact: false,
            packages: None,
        });
        p.sharing = Some(Sharing {
            parent: 6,
            measured: true,
            reason: None,
            figures: Some(SharingFigures {
                shared_with_parent: shared,
                copied,
                by_category: vec![SharingRow {
                    category: Category::PythonHeap,
                    shared_with_parent: shared,
                    copied,
                    own: 0,
                }],
                ..Default::default()
            }),
        });
        p
    }

    #[test]
    fn cow_freeze_only_for_an_unfrozen_copied_heap() {
        let a = advise(&worker(20 << 20, 20 << 20, Some(100)), &Inputs::default());
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].id, "cow-freeze");
        assert_eq!(a[0].saving_bytes, 20 << 20);
        assert!(a[0].subject.contains("pid 6"));
        // frozen already: one frozen object per 64 bytes inherited
        assert!(advise(
            &worker(20 << 20, 20 << 20, Some(1 << 20)),
            &Inputs::default()
        )
        .is_empty());
        // no GC view: whether it was frozen is unknown
        assert!(advise(&worker(20 << 20, 20 << 20, None), &Inputs::default()).is_empty());
        // not material
        assert!(advise(&worker(512 << 10, 20 << 20, Some(100)), &Inputs::default()).is_empty());
        // not measured
        let mut p = worker(20 << 20, 20 << 20, Some(100));
        p.sharing = Some(crate::sharing::Sharing::not_measured(
            6,
            "no pagemap".into(),
        ));
        assert!(advise(&p, &Inputs::default()).is_empty());
    }

    #[test]
    fn each_item_is_worded_in_binary_units_and_in_exact_bytes() {
        let a = advise(&worker(20 << 20, 20 << 20, Some(100)), &Inputs::default());
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].text.contains("20.0 MiB"), "{}", a[0].text);
        assert!(a[0].text_bytes.contains("20971520"), "{}", a[0].text_bytes);
        assert!(!a[0].text_bytes.contains("iB"), "{}", a[0].text_bytes);
    }

    #[test]
    fn a_stored_process_reads_back_the_figures_of_its_ledger() {
        use crate::ledger::Row;
        use crate::python::Pymalloc;
        let mut p = worker(20 << 20, 20 << 20, Some(100));
        p.ledger.push(Row {
            category: Category::PythonHeap,
            amounts: Amounts {
                rss: 30 << 20,
                pss: 30 << 20,
                uss: 30 << 20,
                swap: 0,
            },
            size: 32 << 20,
            mappings: 1,
            items: Vec::new(),
            pymalloc: None,
        });
        if let Some(py) = p.python.as_mut() {
            py.pymalloc = Some(Pymalloc {
                arenas: 32,
                pools: 100,
                used_bytes: 4 << 20,
                free_bytes: 28 << 20,
                arena_size: 1 << 20,
                arena_ranges: Vec::new(),
            });
        }
        let json = serde_json::to_value(&p).unwrap();
        let stored = StoredProcess::deserialize(&json).unwrap();
        let f = stored.figures();
        assert_eq!(f, Figures::of(&p));
        assert_eq!(f.python_heap_rss, 30 << 20);
        assert_eq!(f.gc_frozen, Some(100));
        assert_eq!(f.pymalloc.map(|m| m.arenas), Some(32));
        assert_eq!(f.python_heap_sharing.map(|s| s.copied), Some(20 << 20));
        assert_eq!(advise_figures(&f), advise(&p, &Inputs::default()));
        // a recording's ledger carries no Python view nor sharing: nothing to advise from
        let bare = StoredProcess::deserialize(&serde_json::json!({"pid": 3, "totals": {"pss": 9}}))
            .unwrap()
            .figures();
        assert_eq!(
            (bare.pid, bare.pss, bare.pymalloc, bare.gc_frozen),
            (3, 9, None, None)
        );
        assert!(advise_figures(&bare).is_empty());
    }

    #[test]
    fn package_import_only_for_material_distributions() {
        use crate::packages::{ExtensionModules, Package, PackageKind};
        use crate::python::{ObjectKinds, Tally};
        let package = |name: &str, kind, allocated: u64, so_uss: Option<u64>| Package {
            name: name.into(),
            kind,
            object_bytes: allocated - allocated / 8,
            objects: 1000,
            by_kind: ObjectKinds {
                held: Tally {
                    count: 1000,
                    bytes: allocated - allocated / 8,
                },
                allocated,
                ..Default::default()
            },
            extension: so_uss.map(|uss| ExtensionModules {
                amounts: Amounts {
                    rss: uss * 2,
                    pss: uss,
                    uss,
                    swap: 0,
                },
                size: uss * 4,
                mappings: 3,
            }),
        };
        let tallies = Tallies {
            packages: vec![
                package("heavy", PackageKind::Distribution, 8 << 20, None),
                package("native", PackageKind::Distribution, 1 << 20, Some(3 << 20)),
                package("tiny", PackageKind::Distribution, 512 << 10, None),
                package("stdlib", PackageKind::Stdlib, 30 << 20, None),
                package("(program)", PackageKind::Program, 30 << 20, None),
                package("(unknown)", PackageKind::Unknown, 30 << 20, None),
            ],
            ..Default::default()
        };
        let a = advise(
            &process(100 << 20),
            &Inputs {
                census: Some(&tallies),
                arenas: None,
                threads: None,
            },
        );
        let got: Vec<(&str, &str, u64)> = a
            .iter()
            .map(|a| (a.id.as_str(), a.subject.as_str(), a.saving_bytes))
            .collect();
        // objects as allocated plus the extension modules' private pages; the standard
        // library, the program and unknown origins are no import to defer; under 1 MiB: none
        assert_eq!(
            got,
            vec![
                ("package-import", "heavy", 8 << 20),
                ("package-import", "native", 4 << 20),
            ]
        );
        assert!(a[1].text.contains("extension modules"), "{}", a[1].text);
        assert!(a[0].text.contains("lazily"), "{}", a[0].text);
        // under 1% of a large process: none
        let big = advise(
            &process(2000 << 20),
            &Inputs {
                census: Some(&tallies),
                arenas: None,
                threads: None,
            },
        );
        assert!(big.is_empty(), "{big:?}");
    }

    #[test]
    fn materiality_needs_a_mebibyte_and_a_percent() {
        assert!(material(1 << 20, 100 << 20));
        assert!(!material((1 << 20) - 1, 10 << 20));
        assert!(!material(2 << 20, 300 << 20)); // under 1%
        assert!(material(3 << 20, 300 << 20));
    }

    #[test]
    fn slots_advice_is_ranked_and_only_material() {
        let tallies = Tallies {
            classes: vec![
                class("Small", 10, 1_000, 500),
                class("Big", 100_000, 10 << 20, 4 << 20),
                class("Bigger", 200_000, 20 << 20, 8 << 20),
                class("Slotted", 100_000, 4 << 20, 4 << 20),
            ],
            ..Default::default()
        };
        let p = process(100 << 20);
        let a = advise(
            &p,
            &Inputs {
                census: Some(&tallies),
                ..Default::default()
            },
        );
        let got: Vec<(&str, u64)> = a
            .iter()
            .map(|a| (a.subject.as_str(), a.saving_bytes))
            .collect();
        assert_eq!(got, vec![("Bigger", 12 << 20), ("Big", 6 << 20)]);
        assert!(a
            .iter()
            .all(|a| a.id == "slots" && a.estimated && a.pid == 7));
        // without the census, no object-level advice
        assert!(advise(&p, &Inputs::default()).is_empty());
    }
}
