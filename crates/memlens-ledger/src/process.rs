//! The ledger of one process: every mapping of `smaps` sorted into exactly one category.

use std::collections::BTreeMap;

use memlens_procfs::smaps::{Counters, Mapping};
use memlens_procfs::{Process, Result};

use memlens_cpython::binary::{self, Found};
use memlens_procfs::maps::{file_name, is_shared_object};

use crate::category::{by_name, Category};
use crate::distribution::DistributionResolver;

pub use memlens_model::ledger::{
    Amounts, HeapSplit, Item, ProcessLedger, PythonInfo, Row, ThreadStacks,
};

/// The amounts of a set of page counters (`smaps` and `smaps_rollup`): [`Amounts::of`].
pub trait AmountsOf {
    /// The amounts of a set of page counters.
    fn of(c: &Counters) -> Self;
}

impl AmountsOf for Amounts {
    fn of(c: &Counters) -> Self {
        Amounts {
            rss: c.rss,
            pss: c.pss,
            uss: c.uss(),
            swap: c.swap,
        }
    }
}

/// What the Python view adds to a process's ledger ([`ProcessLedger`] is a plain shape of
/// `memlens-model`; these fill it from `memlens-cpython`'s readings).
pub trait PythonViewExt {
    /// Adds the interpreter's own view (read by `memlens-cpython`): the exact version, GC,
    /// pymalloc and modules, and pymalloc's used/free split on the `python-heap` row. Build the
    /// ledger with [`Hints`] from the same view so that the row holds the arenas.
    fn attach_python_view(&mut self, view: memlens_cpython::PythonView);

    /// Adds the census's code objects, functions, classes and modules by package
    /// ([`crate::packages`]), each beside its item of the `extensions` row. Totals and rows are
    /// unchanged: these bytes are already in the heap rows. Needs the Python view attached.
    fn attach_packages(
        &mut self,
        census: &memlens_cpython::Census,
        by_module: &memlens_cpython::census::ModuleObjects,
        dists: &mut crate::distribution::DistributionResolver,
    );
}

impl PythonViewExt for ProcessLedger {
    fn attach_python_view(&mut self, view: memlens_cpython::PythonView) {
        if let (Some(p), Some(row)) = (
            &view.pymalloc,
            self.ledger
                .iter_mut()
                .find(|r| r.category == Category::PythonHeap),
        ) {
            row.pymalloc = Some(HeapSplit {
                used_bytes: p.used_bytes,
                free_bytes: p.free_bytes,
            });
        }
        let info = self.python.get_or_insert_with(|| PythonInfo {
            version: None,
            binary: String::new(),
            build: "unknown",
            gc: None,
            pymalloc: None,
            modules: None,
            inexact: false,
            packages: None,
        });
        info.version = Some(view.version);
        info.gc = view.gc;
        info.pymalloc = view.pymalloc;
        info.modules = view.modules;
        info.inexact = view.inexact;
    }

    fn attach_packages(
        &mut self,
        census: &memlens_cpython::Census,
        by_module: &memlens_cpython::census::ModuleObjects,
        dists: &mut crate::distribution::DistributionResolver,
    ) {
        let root = std::path::PathBuf::from(format!("/proc/{}/root", self.pid));
        let packages = crate::packages::attribute(by_module, self, dists, &root);
        if let Some(info) = self.python.as_mut() {
            info.packages = Some(crate::packages::PythonPackages {
                note: crate::packages::NOTE,
                object_bytes: packages
                    .iter()
                    .fold(0u64, |a, p| a.saturating_add(p.object_bytes)),
                method: census.consistency.method,
                pause_us: census.consistency.pause_us,
                unreadable_objects: census
                    .unreadable
                    .objects
                    .saturating_add(by_module.unreadable_objects),
                unreadable_names: by_module.unreadable_names,
                packages,
                types: census.types.clone(),
            });
        }
    }
}

/// Address ranges learnt from the interpreter, classified ahead of the name rules.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// pymalloc arenas `[start, end)`.
    pub python_arenas: Vec<(u64, u64)>,
}

/// Everything read from `/proc` that the ledger is computed from (kept apart from the reading so
/// the sorting is testable on captured files).
#[derive(Debug, Clone)]
pub struct ProcessParts {
    /// Process id.
    pub pid: u32,
    /// Parent.
    pub ppid: u32,
    /// comm.
    pub name: Vec<u8>,
    /// NUL-separated command line.
    pub cmdline: Vec<u8>,
    /// `exe` link target.
    pub exe: Vec<u8>,
    /// Threads.
    pub threads: u32,
    /// VmHWM.
    pub vm_hwm: u64,
    /// `smaps`.
    pub mappings: Vec<Mapping>,
    /// Each thread's stack pointer, `None` when it was running.
    pub stack_pointers: Vec<Option<u64>>,
}

/// Each thread's id and stack pointer (`None`: runnable; id 0: unreadable).
pub type StackPointers = Vec<(u32, Option<u64>)>;

/// Re-reads of `task/TID/syscall` for threads found runnable (1 ms apart: at most 5 ms more
/// for a process with a busy thread).
const RUNNING_REREADS: usize = 5;

impl ProcessParts {
    /// Reads a live process. Threads that exit during the read are skipped.
    pub fn read(proc: &Process) -> Result<Self> {
        Self::read_with(proc, None)
    }

    /// [`read`](Self::read), with the threads' stack pointers already read by
    /// [`thread_stack_pointers`] (before anything could stop and wake the threads: a Python
    /// view's pause leaves every thread runnable for a while after it resumes, and a runnable
    /// thread shows no registers). Threads `early` left unlocated are asked again.
    pub fn read_with(proc: &Process, early: Option<StackPointers>) -> Result<Self> {
        let status = proc.status()?;
        // A zombie has exited: its memory is gone, whatever its parent does about reaping it.
        if status.has_exited() {
            return Err(memlens_procfs::Error::ProcessGone { pid: proc.pid() });
        }
        if status.is_kernel_thread() {
            return Err(memlens_procfs::Error::KernelThread { pid: proc.pid() });
        }
        let mappings = proc.smaps()?;
        let threads = match early {
            Some(t) => t,
            None => thread_stack_pointers(proc)?,
        };
        let threads = reread_running(proc, threads);
        let stack_pointers = threads.into_iter().map(|(_, sp)| sp).collect();
        Ok(ProcessParts {
            pid: proc.pid(),
            ppid: status.ppid,
            name: status.name,
            cmdline: proc.cmdline().unwrap_or_default(),
            exe: proc.exe().unwrap_or_default(),
            threads: status.threads,
            vm_hwm: status.vm_hwm,
            mappings,
            stack_pointers,
        })
    }
}

/// Each thread's id and stack pointer (`None`: runnable, or unreadable with id 0), from
/// `task/TID/syscall`, one read per thread. Threads that exit meanwhile are skipped.
pub fn thread_stack_pointers(proc: &Process) -> Result<StackPointers> {
    let mut threads = Vec::new();
    for tid in proc.threads()? {
        match proc.task_syscall(tid) {
            Ok(s) => threads.push((tid, s.stack_pointer())),
            Err(memlens_procfs::Error::ProcessGone { .. }) => {}
            Err(e) => {
                log::debug!("pid {}: no syscall for thread {tid}: {e}", proc.pid());
                threads.push((0, None));
            }
        }
    }
    Ok(threads)
}

/// A thread that is runnable shows no registers: one woken for a moment (a signal, the
/// scheduler) usually sleeps again within a few milliseconds; asks again a few times before
/// leaving its stack unlocated.
fn reread_running(proc: &Process, mut threads: StackPointers) -> StackPointers {
    for _ in 0..RUNNING_REREADS {
        if threads.iter().all(|(tid, sp)| sp.is_some() || *tid == 0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        for (tid, sp) in threads.iter_mut().filter(|(t, sp)| sp.is_none() && *t != 0) {
            if let Ok(s) = proc.task_syscall(*tid) {
                *sp = s.stack_pointer();
            }
        }
    }
    threads
}

/// Finds the Python of a process from its executable and mapped files (the one answer of
/// [`memlens_cpython::binary::find`]), as the ledger shows it.
pub fn detect_python<'a>(
    exe: &[u8],
    mapped: impl IntoIterator<Item = &'a [u8]>,
) -> Option<PythonInfo> {
    let Found::Python(f) = binary::find(exe, mapped) else {
        return None;
    };
    let path = f.path.strip_suffix(b" (deleted)").unwrap_or(&f.path);
    Some(PythonInfo {
        version: f.name_version.map(|v| v.to_string()),
        binary: String::from_utf8_lossy(path).into_owned(),
        build: if f.shared { "shared" } else { "static" },
        gc: None,
        pymalloc: None,
        modules: None,
        inexact: false,
        packages: None,
    })
}

#[derive(Default)]
struct Acc {
    amounts: Amounts,
    size: u64,
    mappings: u64,
    items: BTreeMap<String, Item>,
}

impl Acc {
    fn add(&mut self, item: &str, amounts: Amounts, size: u64) {
        self.amounts.add(&amounts);
        self.size += size;
        self.mappings += 1;
        let it = self.items.entry(item.to_string()).or_insert_with(|| Item {
            name: item.to_string(),
            amounts: Amounts::default(),
            size: 0,
            mappings: 0,
        });
        it.amounts.add(&amounts);
        it.size += size;
        it.mappings += 1;
    }
}

/// Splits counters in proportion to a share of the mapping's size (an estimate used where one
/// kernel mapping holds memory of two categories, e.g. pymalloc arenas merged with other
/// anonymous memory). The parts add up exactly to the whole.
fn split(c: &Counters, part: u64, whole: u64) -> (Counters, Counters) {
    let f = |v: u64| -> (u64, u64) {
        if whole == 0 {
            return (0, v);
        }
        let a = ((u128::from(v) * u128::from(part)) / u128::from(whole)) as u64;
        (a, v - a)
    };
    let mut a = Counters::default();
    let mut b = Counters::default();
    macro_rules! s {
        ($($field:ident),*) => {$( let (x, y) = f(c.$field); a.$field = x; b.$field = y; )*};
    }
    s!(
        size,
        rss,
        pss,
        shared_clean,
        shared_dirty,
        private_clean,
        private_dirty,
        anonymous,
        anon_huge_pages,
        swap,
        swap_pss,
        locked
    );
    (a, b)
}

/// Sorts the mappings of a process into the ledger.
pub fn build(
    parts: &ProcessParts,
    hints: &Hints,
    resolver: &mut DistributionResolver,
) -> ProcessLedger {
    let exe_path = parts
        .exe
        .strip_suffix(b" (deleted)")
        .unwrap_or(&parts.exe)
        .to_vec();
    let python = detect_python(
        &parts.exe,
        parts.mappings.iter().map(|m| m.entry.path.as_slice()),
    );
    let libpython: Option<&[u8]> = python
        .as_ref()
        .filter(|p| p.build == "shared")
        .map(|p| p.binary.as_bytes());
    let stacks = find_stacks(&parts.mappings, &parts.stack_pointers);
    let mut accs: BTreeMap<Category, Acc> = BTreeMap::new();
    let mut totals = Counters::default();
    for (i, m) in parts.mappings.iter().enumerate() {
        totals.add(&m.counters);
        let mut counters = m.counters;
        let e = &m.entry;
        // pymalloc arenas: the part of an anonymous mapping that overlaps them.
        if e.is_anonymous() && !hints.python_arenas.is_empty() {
            let overlap: u64 = hints
                .python_arenas
                .iter()
                .map(|&(s, end)| end.min(e.end).saturating_sub(s.max(e.start)))
                .sum();
            if overlap > 0 {
                let (arena, rest) = split(&counters, overlap.min(e.size()), e.size());
                accs.entry(Category::PythonHeap).or_default().add(
                    "pymalloc arenas",
                    Amounts::of(&arena),
                    arena.size,
                );
                if overlap >= e.size() {
                    continue;
                }
                counters = rest;
            }
        }
        let (cat, item) = classify(
            m,
            i,
            &stacks,
            &exe_path,
            libpython,
            python.is_some(),
            resolver,
        );
        accs.entry(cat)
            .or_default()
            .add(&item, Amounts::of(&counters), counters.size);
    }
    let mut ledger: Vec<Row> = accs
        .into_iter()
        .map(|(category, acc)| {
            let mut items: Vec<Item> = acc.items.into_values().collect();
            items.sort_by(|a, b| b.amounts.pss.cmp(&a.amounts.pss).then(a.name.cmp(&b.name)));
            Row {
                category,
                amounts: acc.amounts,
                size: acc.size,
                mappings: acc.mappings,
                items,
                pymalloc: None,
            }
        })
        .collect();
    ledger.sort_by(|a, b| {
        b.amounts
            .pss
            .cmp(&a.amounts.pss)
            .then(a.category.cmp(&b.category))
    });
    let mut thread_stacks = ThreadStacks {
        unlocated: stacks.unlocated,
        ..ThreadStacks::default()
    };
    let mut stack_mappings = 0;
    for (i, m) in parts.mappings.iter().enumerate() {
        match stacks.role.get(&i) {
            Some(StackRole::Stack) => {
                stack_mappings += 1;
                thread_stacks.reserved += m.entry.size();
                thread_stacks.resident += m.counters.rss;
            }
            Some(StackRole::Guard) => thread_stacks.reserved += m.entry.size(),
            None => {}
        }
    }
    // threads located, or without stack pointers to go by, the stack mappings found
    thread_stacks.count = if parts.stack_pointers.is_empty() {
        stack_mappings
    } else {
        stacks.located
    };
    ProcessLedger {
        pid: parts.pid,
        ppid: parts.ppid,
        name: String::from_utf8_lossy(&parts.name).into_owned(),
        cmdline: cmdline_string(&parts.cmdline),
        python,
        threads: parts.threads,
        vm_hwm: parts.vm_hwm,
        size: totals.size,
        totals: Amounts::of(&totals),
        ledger,
        thread_stacks,
        sharing: None,
    }
}

/// A piece of a process's address space and the ledger category [`build`] sorts it into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryRange {
    /// First address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Index of its mapping in [`ProcessParts::mappings`].
    pub mapping: usize,
    /// Its category.
    pub category: Category,
}

/// The category of every part of a process's address space, as [`build`] sorts it, in address
/// order. The parts of an anonymous mapping inside pymalloc arenas (`arenas`, `[start, end)`)
/// are `python-heap`, split off by address (where [`build`] can only split the mapping's
/// counters in proportion).
pub fn category_ranges(
    parts: &ProcessParts,
    arenas: &[(u64, u64)],
    resolver: &mut DistributionResolver,
) -> Vec<CategoryRange> {
    let exe_path = parts.exe.strip_suffix(b" (deleted)").unwrap_or(&parts.exe);
    let python = detect_python(
        &parts.exe,
        parts.mappings.iter().map(|m| m.entry.path.as_slice()),
    );
    let libpython: Option<&[u8]> = python
        .as_ref()
        .filter(|p| p.build == "shared")
        .map(|p| p.binary.as_bytes());
    let stacks = find_stacks(&parts.mappings, &parts.stack_pointers);
    let mut sorted: Vec<(u64, u64)> = arenas.iter().copied().filter(|(s, e)| s < e).collect();
    sorted.sort_unstable();
    let mut out = Vec::new();
    for (i, m) in parts.mappings.iter().enumerate() {
        let e = &m.entry;
        let (cat, _) = classify(
            m,
            i,
            &stacks,
            exe_path,
            libpython,
            python.is_some(),
            resolver,
        );
        let mut at = e.start;
        if e.is_anonymous() {
            for &(s, end) in sorted
                .iter()
                .filter(|(s, end)| *end > e.start && *s < e.end)
            {
                let (s, end) = (s.max(e.start), end.min(e.end));
                if s > at {
                    out.push(CategoryRange {
                        start: at,
                        end: s,
                        mapping: i,
                        category: cat,
                    });
                }
                if end > s.max(at) {
                    out.push(CategoryRange {
                        start: s.max(at),
                        end,
                        mapping: i,
                        category: Category::PythonHeap,
                    });
                }
                at = at.max(end);
            }
        }
        if at < e.end {
            out.push(CategoryRange {
                start: at,
                end: e.end,
                mapping: i,
                category: cat,
            });
        }
    }
    out
}

/// Joins a NUL-separated command line with spaces.
pub fn cmdline_string(raw: &[u8]) -> String {
    let joined: Vec<u8> = raw
        .iter()
        .map(|b| if *b == 0 { b' ' } else { *b })
        .collect();
    String::from_utf8_lossy(&joined).into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StackRole {
    Stack,
    Guard,
}

struct Stacks {
    role: BTreeMap<usize, StackRole>,
    unlocated: u64,
    /// Threads whose stack was found: several can share one mapping (glibc 2.42+ makes guard
    /// pages with MADV_GUARD_INSTALL, so neighbouring thread stacks merge into one mapping).
    located: u64,
}

/// Finds stack mappings: `[stack]`, each mapping that holds a thread's stack pointer, and for
/// threads caught running, anonymous `rw-p` mappings with a guard page right below (the shape
/// glibc gives thread stacks; malloc arenas have their reserve above instead).
fn find_stacks(mappings: &[Mapping], sps: &[Option<u64>]) -> Stacks {
    let mut role = BTreeMap::new();
    let main = mappings.iter().position(|m| m.entry.path == b"[stack]");
    let mark = |role: &mut BTreeMap<usize, StackRole>, i: usize| {
        role.insert(i, StackRole::Stack);
        if i > 0 {
            let g = &mappings[i - 1].entry;
            if g.end == mappings[i].entry.start
                && g.is_inaccessible()
                && g.is_anonymous()
                && g.size() <= 1 << 20
            {
                role.insert(i - 1, StackRole::Guard);
            }
        }
    };
    if let Some(i) = main {
        mark(&mut role, i);
    }
    let mut unlocated_threads = 0u64;
    let mut located = 0u64;
    for sp in sps {
        match sp {
            Some(sp) => {
                if let Some(i) = mappings.iter().position(|m| m.entry.contains(*sp)) {
                    located += 1;
                    if role.get(&i) != Some(&StackRole::Stack) {
                        mark(&mut role, i);
                    }
                } else {
                    unlocated_threads += 1;
                }
            }
            None => unlocated_threads += 1,
        }
    }
    // Threads caught on a CPU: look for the glibc stack shape among unclaimed mappings.
    let mut remaining = unlocated_threads;
    if remaining > 0 {
        for i in 1..mappings.len() {
            if remaining == 0 {
                break;
            }
            let (g, m) = (&mappings[i - 1].entry, &mappings[i].entry);
            let shaped = m.is_anonymous()
                && &m.perms == b"rw-p"
                && g.is_anonymous()
                && g.is_inaccessible()
                && g.end == m.start
                && g.size() <= 1 << 16
                && m.size() <= 1 << 30
                && !role.contains_key(&i);
            if shaped {
                mark(&mut role, i);
                remaining -= 1;
                located += 1;
            }
        }
    }
    Stacks {
        role,
        unlocated: remaining,
        located,
    }
}

fn classify(
    m: &Mapping,
    index: usize,
    stacks: &Stacks,
    exe: &[u8],
    libpython: Option<&[u8]>,
    is_python: bool,
    resolver: &mut DistributionResolver,
) -> (Category, String) {
    let e = &m.entry;
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match stacks.role.get(&index) {
        Some(StackRole::Stack) if e.path == b"[stack]" => {
            return (Category::ThreadStacks, "main thread".into())
        }
        Some(StackRole::Stack) => return (Category::ThreadStacks, "threads".into()),
        Some(StackRole::Guard) => return (Category::ThreadStacks, "guard pages".into()),
        None => {}
    }
    if let Some((cat, item)) = by_name(e) {
        return (cat, lossy(&item));
    }
    let path = e.path_without_deleted();
    if path.is_empty() || e.is_anonymous() {
        if e.is_shared() {
            return (Category::SharedMemory, "shared anonymous".into());
        }
        return (
            Category::NativeHeap,
            "anonymous mmap (malloc arenas, large allocations)".into(),
        );
    }
    if path.starts_with(b"[") {
        return (Category::Other, lossy(path));
    }
    let name = file_name(path);
    if (is_python && path == exe) || libpython == Some(path) {
        return (Category::Interpreter, lossy(name));
    }
    if path == exe {
        return (Category::Other, format!("program: {}", lossy(name)));
    }
    if is_shared_object(name) {
        if let Some(dist) = resolver.item_for(path) {
            return (Category::Extensions, dist);
        }
        return (Category::SystemLibraries, lossy(name));
    }
    if e.is_shared() && path.starts_with(b"/dev/") {
        return (Category::SharedMemory, lossy(path));
    }
    if path.starts_with(b"/") {
        return (Category::MappedFiles, lossy(path));
    }
    (Category::Other, lossy(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_adds_up() {
        let c = Counters {
            size: 10 << 20,
            rss: 999_999,
            pss: 777,
            private_dirty: 12345,
            ..Counters::default()
        };
        let (a, b) = split(&c, 3 << 20, 10 << 20);
        assert_eq!(a.rss + b.rss, c.rss);
        assert_eq!(a.pss + b.pss, c.pss);
        assert_eq!(a.size, 3 << 20);
    }

    /// glibc 2.42+ guards thread stacks with MADV_GUARD_INSTALL instead of PROT_NONE
    /// mappings, so neighbouring stacks merge into one mapping: each thread is still a stack.
    #[test]
    fn merged_thread_stacks_count_per_thread() {
        let smaps = b"7ffd0000-7ffd1000 rw-p 00000000 00:00 0                          [stack]\n\
Size:                  4 kB\nRss:                   4 kB\n\
7f0000000000-7f0001002000 rw-p 00000000 00:00 0 \n\
Size:              16392 kB\nRss:                  16 kB\n";
        let mappings = memlens_procfs::smaps::parse(smaps).expect("smaps");
        let sps = [
            Some(0x7ffd_0800),
            Some(0x7f00_0000_1000),
            Some(0x7f00_0090_0000),
        ];
        let stacks = find_stacks(&mappings, &sps);
        assert_eq!(stacks.located, 3);
        assert_eq!(stacks.unlocated, 0);
        assert_eq!(stacks.role.len(), 2, "two mappings hold the three stacks");
    }
}
