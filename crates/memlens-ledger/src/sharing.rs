//! Copy-on-write sharing of a tree's forked workers (DESIGN §6), from `/proc/PID/pagemap`.
//!
//! For each process whose parent was read in the same snapshot, each resident page of a
//! mapping with resident or swapped pages is compared with the parent's page at the same
//! address, where the parent maps that address from the same origin (both anonymous with the
//! same name and sharing, or the same file at the same offset):
//! - the same physical frame: **shared with the parent**;
//! - another frame: **copied** (written since the fork, so the kernel gave it a copy);
//! - the parent maps no such address, or has no page there: **own**;
//! - the process's page is in swap, or the parent's is: counted apart, not classified.
//!
//! The tree's **exclusive** total counts resident frames whose every mapping is in the tree: a
//! page the kernel marks mapped once (pagemap bit 56) is; any other frame is counted across the
//! tree's pagemaps and compared with `/proc/kpagecount` (root only).
//!
//! Frame numbers read as 0 without `CAP_SYS_ADMIN`: then nothing is measured, and the shapes
//! say so (`measured: false`). The processes run while they are read: pages copied between the
//! read of a child's chunk and its parent's show as copied or shared as they were at each read.
//!
//! Memory is bounded: pagemap is read [`CHUNK_PAGES`] entries at a time (the child's and the
//! parent's: 2 x 128 KiB), nothing is kept per page of a process, and the exclusive total keeps
//! one 16-byte entry per distinct frame that is not exclusive to one mapping, at most
//! [`MAX_SHARED_FRAMES`] (128 MiB; past that the total is not measured, and says so).

use memlens_model::sharing::{Exclusive, Sharing, SharingFigures, SharingRow};
use memlens_procfs::maps::MapEntry;
use memlens_procfs::pagemap::{Entry, KpageCount, Pagemap};
use memlens_procfs::Process;

use crate::category::Category;
use crate::distribution::DistributionResolver;
use crate::process::{category_ranges, CategoryRange, ProcessParts};
use crate::tree::TreeLedger;

/// Pagemap entries read at once (64 MiB of address space, a 128 KiB buffer).
pub const CHUNK_PAGES: u64 = 1 << 14;
/// Distinct frames not exclusive to one mapping that the exclusive total keeps (16 bytes each).
pub const MAX_SHARED_FRAMES: usize = 8 << 20;
/// Most frames of `/proc/kpagecount` read at once.
const KPAGECOUNT_BLOCK: u64 = 512;
/// Frames apart that still join one read of `/proc/kpagecount`.
const KPAGECOUNT_GAP: u64 = 16;

/// Index ranges of `frames` (sorted, distinct) read together from `/proc/kpagecount`: frames
/// at most [`KPAGECOUNT_GAP`] apart, spanning at most [`KPAGECOUNT_BLOCK`] frames.
fn frame_runs(frames: &[(u64, u32)]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=frames.len() {
        let split = frames.get(i).is_none_or(|&(f, _)| {
            f - frames[i - 1].0 > KPAGECOUNT_GAP || f - frames[start].0 >= KPAGECOUNT_BLOCK
        });
        if split {
            runs.push(start..i);
            start = i;
        }
    }
    runs
}

const HIDDEN: &str = "page frame numbers read as 0: the kernel shows them only with CAP_SYS_ADMIN, so sharing cannot be measured";

/// One process to compare with its parent: its pid, its parent's (0: none) and its pymalloc
/// arenas (`[start, end)`, from a Python view; empty otherwise).
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// Process id.
    pub pid: u32,
    /// Parent process id; the parent is compared only when it is among the subjects too.
    pub ppid: u32,
    /// pymalloc arena ranges, so their pages count as python-heap.
    pub arenas: Vec<(u64, u64)>,
}

/// What [`measure_subjects`] found: one entry per subject (`None` where its parent is not a
/// subject), and the subjects' exclusive total.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Each subject's sharing with its parent, in the order of the subjects.
    pub sharing: Vec<Option<Sharing>>,
    /// Resident bytes mapped by the subjects only.
    pub exclusive: Exclusive,
}

/// Measures the sharing of every process of `t` with its parent (when the parent is in `t`)
/// and the tree's exclusive total, and attaches them. Each process's mappings are read again
/// (`smaps`, thread stack pointers) to sort pages into the ledger's categories; pymalloc arenas
/// come from the Python view already attached (`python.pymalloc.arena_ranges`).
pub fn measure(t: &mut TreeLedger) {
    let subjects: Vec<Subject> = t
        .processes
        .iter()
        .map(|p| Subject {
            pid: p.pid,
            ppid: p.ppid,
            arenas: p
                .python
                .as_ref()
                .and_then(|py| py.pymalloc.as_ref())
                .map(|pm| pm.arena_ranges.clone())
                .unwrap_or_default(),
        })
        .collect();
    let m = measure_subjects(t.root, &subjects);
    for (p, s) in t.processes.iter_mut().zip(m.sharing) {
        p.sharing = s;
    }
    t.exclusive = Some(m.exclusive);
}

/// Says, for every process of `t` with a parent in `t` and for the tree's exclusive total,
/// that sharing was not measured and why (`--no-sharing`): never an absent field that reads
/// like zero.
pub fn not_measured(t: &mut TreeLedger, reason: &str) {
    let pids: Vec<u32> = t.processes.iter().map(|p| p.pid).collect();
    for p in &mut t.processes {
        if p.ppid != 0 && p.ppid != p.pid && pids.contains(&p.ppid) {
            p.sharing = Some(unmeasured(p.ppid, reason.into()));
        }
    }
    t.exclusive = Some(Exclusive::not_measured(reason.into()));
}

/// Measures each subject's sharing with its parent (when the parent is a subject too) and
/// the subjects' exclusive total. `root` is the process whose root directory resolves the
/// distributions of file mappings.
pub fn measure_subjects(root: u32, subjects: &[Subject]) -> Measured {
    measure_subjects_on(root, subjects, true)
}

/// [`measure_subjects`], reading the mappings on every core (`parallel`) or on this thread
/// only (the recorder: its budget is charged in this thread's CPU time).
pub fn measure_subjects_on(root: u32, subjects: &[Subject], parallel: bool) -> Measured {
    let page = memlens_procfs::page_size();
    let zero = zero_frames();
    let mut resolver = DistributionResolver::new(format!("/proc/{root}/root"));
    let read_parts = |p: &Subject| {
        Process::new(p.pid)
            .and_then(|proc| ProcessParts::read(&proc))
            .map_err(|e| log::info!("sharing: pid {} not read again: {e}", p.pid))
            .ok()
    };
    // The mappings on every core; their categories on this thread (one resolver).
    let parts = if parallel {
        crate::parallel::map(subjects, read_parts)
    } else {
        subjects.iter().map(read_parts).collect()
    };
    let read: Vec<Option<(ProcessParts, Vec<CategoryRange>)>> = subjects
        .iter()
        .zip(parts)
        .map(|(p, parts)| {
            let parts = parts?;
            let ranges = category_ranges(&parts, &p.arenas, &mut resolver);
            Some((parts, ranges))
        })
        .collect();
    let mut frames = FrameTally::default();
    let mut sharing = vec![None; subjects.len()];
    for i in 0..subjects.len() {
        let ppid = subjects[i].ppid;
        let parent = subjects
            .iter()
            .position(|p| p.pid == ppid && ppid != 0 && ppid != subjects[i].pid);
        let Some((parts, ranges)) = &read[i] else {
            frames.unread_processes += 1;
            if parent.is_some() {
                sharing[i] = Some(unmeasured(
                    ppid,
                    "the process's mappings could not be read again".into(),
                ));
            }
            continue;
        };
        let parent_parts = parent.and_then(|j| read[j].as_ref().map(|(p, _)| p));
        let result = compare(parts, ranges, parent_parts, page, &zero, &mut frames);
        if parent.is_some() {
            sharing[i] = Some(match result {
                Err(reason) => unmeasured(ppid, reason),
                Ok(_) if parent_parts.is_none() => {
                    unmeasured(ppid, "the parent's mappings could not be read again".into())
                }
                Ok(figures) => Sharing {
                    parent: ppid,
                    measured: true,
                    reason: None,
                    figures: Some(figures),
                },
            });
        }
    }
    Measured {
        sharing,
        exclusive: frames.finish(page),
    }
}

fn unmeasured(parent: u32, reason: String) -> Sharing {
    Sharing {
        parent,
        measured: false,
        reason: Some(reason),
        figures: None,
    }
}

/// Whether two mappings at the same address hold the same origin (what a fork copies).
fn same_origin(c: &MapEntry, p: &MapEntry) -> bool {
    if c.is_shared() != p.is_shared() || c.path != p.path {
        return false;
    }
    if c.inode == 0 && p.inode == 0 && c.dev_major == p.dev_major && c.dev_minor == p.dev_minor {
        return true; // anonymous, [heap], [stack], ...: same name
    }
    c.inode == p.inode
        && c.dev_major == p.dev_major
        && c.dev_minor == p.dev_minor
        && c.offset.wrapping_sub(c.start) == p.offset.wrapping_sub(p.start)
}

/// What a child's page is, against the parent's entry at its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Shared,
    Copied,
    Own,
    Swapped,
    ParentSwapped,
    /// Present without a frame number: the kernel hides them.
    Hidden,
    /// The kernel's shared zero page (read, never written): counted apart.
    Zero,
    /// Not in memory: not counted.
    Absent,
}

/// Classifies one page. `parent` is `None` where the parent maps no same-origin mapping.
fn relate(child: Entry, parent: Option<Entry>, zero: &ZeroFrames) -> Relation {
    if child.swapped() {
        return Relation::Swapped;
    }
    if !child.present() {
        return Relation::Absent;
    }
    let Some(frame) = child.frame() else {
        return Relation::Hidden;
    };
    if zero.contains(frame) {
        return Relation::Zero; // every process "shares" it; nothing was inherited
    }
    let Some(p) = parent else {
        return Relation::Own;
    };
    if p.swapped() {
        return Relation::ParentSwapped;
    }
    if !p.present() {
        return Relation::Own;
    }
    match p.frame() {
        Some(f) if f == frame => Relation::Shared,
        Some(_) => Relation::Copied,
        None => Relation::Hidden,
    }
}

/// Compares a process's pages with its parent's (when read), and counts its frames for the
/// exclusive total. Err when frame numbers are hidden or pagemap cannot be opened.
fn compare(
    parts: &ProcessParts,
    ranges: &[CategoryRange],
    parent: Option<&ProcessParts>,
    page: u64,
    zero: &ZeroFrames,
    frames: &mut FrameTally,
) -> Result<SharingFigures, String> {
    let child_map = Pagemap::open(parts.pid).map_err(|e| {
        frames.unread_processes += 1;
        format!("pagemap unreadable: {e}")
    })?;
    let mut parent_error = None;
    let parent_map = parent.and_then(|p| match Pagemap::open(p.pid) {
        Ok(m) => Some((m, p)),
        Err(e) => {
            parent_error = Some(format!("the parent's pagemap is unreadable: {e}"));
            None
        }
    });
    let mut figures = SharingFigures::default();
    let mut hidden = 0u64;
    let mut reads = 0u64;
    let mut tally = ReadTally::default();
    for r in ranges {
        let m = &parts.mappings[r.mapping];
        if m.counters.rss == 0 && m.counters.swap == 0 {
            continue; // nothing resident or swapped: a reservation is not read page by page
        }
        let mut counts = [0u64; 8];
        let mut at = r.start / page;
        let end = r.end / page;
        while at < end {
            let n = (end - at).min(CHUNK_PAGES);
            reads += 1;
            let Ok(child) = child_map.read(at, n as usize) else {
                figures.failed_reads += 1;
                frames.failed_chunks += 1;
                at += n;
                continue;
            };
            let theirs = match &parent_map {
                Some((pm, pp)) => parent_entries(pm, pp, &m.entry, (at, n), page, &mut tally),
                None => vec![None; n as usize],
            };
            for (k, e) in child.iter().enumerate() {
                let rel = relate(*e, theirs.get(k).copied().flatten(), zero);
                counts[rel as usize] += 1;
                if let Some(f) = e.frame().filter(|_| rel != Relation::Zero) {
                    frames.add(f, e.exclusive(), page);
                }
            }
            at += n;
        }
        hidden += counts[Relation::Hidden as usize];
        figures.zero_page += counts[Relation::Zero as usize] * page;
        figures.swapped += counts[Relation::Swapped as usize] * page;
        figures.parent_swapped += counts[Relation::ParentSwapped as usize] * page;
        let (s, c, o) = (
            counts[Relation::Shared as usize] * page,
            counts[Relation::Copied as usize] * page,
            counts[Relation::Own as usize] * page,
        );
        figures.shared_with_parent += s;
        figures.copied += c;
        figures.own += o;
        add_row(&mut figures.by_category, r.category, s, c, o);
    }
    if hidden > 0 {
        frames.hidden = true;
        return Err(HIDDEN.into());
    }
    if let Some(e) = parent_error {
        return Err(e);
    }
    // A few failed reads are shown beside the figures; more than a tenth are no answer. The
    // parent's reads count on both sides: its failures are this comparison's failures.
    let own = ReadTally {
        reads,
        failed: figures.failed_reads,
    };
    let (failed, reads, too_many) = judge_reads(&own, &tally);
    figures.failed_reads = failed;
    if too_many {
        return Err(format!("{failed} of {reads} pagemap reads failed"));
    }
    figures
        .by_category
        .retain(|r| r.shared_with_parent + r.copied + r.own > 0);
    figures.by_category.sort_by(|a, b| {
        b.shared_with_parent
            .cmp(&a.shared_with_parent)
            .then(b.copied.cmp(&a.copied))
            .then(a.category.cmp(&b.category))
    });
    Ok(figures)
}

fn add_row(rows: &mut Vec<SharingRow>, category: Category, s: u64, c: u64, o: u64) {
    let row = match rows.iter_mut().position(|r| r.category == category) {
        Some(i) => &mut rows[i],
        None => {
            rows.push(SharingRow {
                category,
                shared_with_parent: 0,
                copied: 0,
                own: 0,
            });
            let last = rows.len() - 1;
            &mut rows[last]
        }
    };
    row.shared_with_parent += s;
    row.copied += c;
    row.own += o;
}

/// The parent's entries for pages `[at, at + n)` of a child's mapping `child`: `None` where
/// the parent maps no same-origin mapping.
fn parent_entries(
    map: &Pagemap,
    parent: &ProcessParts,
    child: &MapEntry,
    (at, n): (u64, u64),
    page: u64,
    tally: &mut ReadTally,
) -> Vec<Option<Entry>> {
    let mut out = vec![None; n as usize];
    let (lo, hi) = (at * page, (at + n) * page);
    let first = parent.mappings.partition_point(|m| m.entry.end <= lo);
    for m in parent.mappings[first..]
        .iter()
        .take_while(|m| m.entry.start < hi)
    {
        if !same_origin(child, &m.entry) {
            continue;
        }
        let (s, e) = (m.entry.start.max(lo) / page, m.entry.end.min(hi) / page);
        if s >= e {
            continue;
        }
        tally.reads += 1;
        match map.read(s, (e - s) as usize) {
            Ok(entries) => {
                for (k, en) in entries.into_iter().enumerate() {
                    if let Some(slot) = out.get_mut((s - at) as usize + k) {
                        *slot = Some(en);
                    }
                }
            }
            Err(_) => tally.failed += 1,
        }
    }
    out
}

/// The parent's pagemap reads of one comparison: attempted and failed.
#[derive(Debug, Default)]
struct ReadTally {
    reads: u64,
    failed: u64,
}

/// The failed reads of a comparison, all its reads, and whether more than a tenth failed (the
/// figures are then no answer): the process's reads and its parent's count alike, on both
/// sides of the ratio.
fn judge_reads(own: &ReadTally, parent: &ReadTally) -> (u64, u64, bool) {
    let failed = own.failed + parent.failed;
    let reads = own.reads + parent.reads;
    (failed, reads, failed * 10 > reads)
}

/// The frames of the kernel's shared zero page (and of the huge zero page, 512 frames), which
/// a private anonymous page maps after a read and before any write. Every process maps them:
/// a page there was not inherited from the parent, so it is neither shared nor copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZeroFrames {
    small: Option<u64>,
    huge: Option<u64>,
}

impl ZeroFrames {
    /// Whether `frame` is a zero page's.
    pub fn contains(&self, frame: u64) -> bool {
        self.small == Some(frame) || self.huge.is_some_and(|b| frame >= b && frame - b < 512)
    }

    /// Learns the zero frames from entries of pages that were read and never written, in an
    /// anonymous private mapping (`vpns[k]` is the virtual page number of `entries[k]`): a
    /// frame seen at two addresses is the zero page; consecutive frames that keep the same
    /// offset to their 2 MiB-aligned virtual page are the huge zero page.
    fn learn(vpns: &[u64], entries: &[Entry]) -> ZeroFrames {
        let mut z = ZeroFrames::default();
        let frames: Vec<(u64, u64)> = vpns
            .iter()
            .zip(entries)
            .filter_map(|(&v, e)| e.frame().map(|f| (v, f)))
            .collect();
        for w in frames.windows(2) {
            let ((va, fa), (vb, fb)) = (w[0], w[1]);
            if fa == fb {
                z.small = Some(fa);
            } else if vb == va + 1 && fb == fa + 1 && vb % 512 != 0 {
                z.huge = fa.checked_sub(va % 512).or(z.huge);
            }
        }
        z
    }
}

/// The zero frames of this host, learned once from memlens's own memory: a fresh zeroed
/// allocation larger than glibc's largest mmap threshold (so mapped anew, not written by the
/// allocator) is read page by page and its pagemap read. Nothing is learned where frame
/// numbers are hidden (then nothing is compared either).
pub fn zero_frames() -> ZeroFrames {
    static ZERO: std::sync::OnceLock<ZeroFrames> = std::sync::OnceLock::new();
    *ZERO.get_or_init(|| {
        let page = memlens_procfs::page_size() as usize;
        let region = vec![0u8; 33 << 20];
        let region = std::hint::black_box(region);
        // 4 MiB read (never written): at least one whole aligned 2 MiB part and the edges.
        let pages = (4 << 20) / page;
        let mut sum = 0u64;
        for k in 0..pages {
            sum = sum.wrapping_add(u64::from(region[k * page]));
        }
        std::hint::black_box(sum);
        let first = region.as_ptr() as u64 / page as u64;
        let z = Pagemap::open(std::process::id())
            .and_then(|m| m.read(first, pages))
            .map(|entries| {
                let vpns: Vec<u64> = (0..entries.len() as u64).map(|k| first + k).collect();
                ZeroFrames::learn(&vpns, &entries)
            })
            .unwrap_or_default();
        drop(region);
        log::debug!("sharing: zero frames {z:?}");
        z
    })
}

/// Frames seen across the tree, for the exclusive total.
#[derive(Default)]
struct FrameTally {
    /// Bytes of pages mapped once (exclusive bit).
    once: u64,
    /// Other frames: (frame, mappings seen in the tree), sorted, distinct.
    seen: Vec<(u64, u32)>,
    pending: Vec<u64>,
    overflow: bool,
    hidden: bool,
    unread_processes: u64,
    /// Pagemap chunks that could not be read: their frames are in no count.
    failed_chunks: u64,
}

impl FrameTally {
    fn add(&mut self, frame: u64, exclusive: bool, page: u64) {
        if exclusive {
            self.once += page;
            return;
        }
        if self.overflow {
            return;
        }
        self.pending.push(frame);
        if self.pending.len() >= 1 << 20 {
            self.merge();
        }
    }

    /// Merges the pending frames into the sorted distinct list.
    fn merge(&mut self) {
        self.pending.sort_unstable();
        let mut merged: Vec<(u64, u32)> =
            Vec::with_capacity(self.seen.len() + self.pending.len() / 2);
        let mut old = std::mem::take(&mut self.seen).into_iter().peekable();
        let mut new = std::mem::take(&mut self.pending).into_iter().peekable();
        loop {
            let next = match (old.peek(), new.peek()) {
                (Some(o), Some(n)) if o.0 <= *n => old.next(),
                (_, Some(_)) => new.next().map(|f| (f, 1)),
                (Some(_), None) => old.next(),
                (None, None) => break,
            };
            let Some((f, c)) = next else { break };
            match merged.last_mut() {
                Some((lf, lc)) if *lf == f => *lc = lc.saturating_add(c),
                _ => merged.push((f, c)),
            }
        }
        self.seen = merged;
        if self.seen.len() > MAX_SHARED_FRAMES {
            self.overflow = true;
            self.seen = Vec::new();
        }
    }

    fn finish(mut self, page: u64) -> Exclusive {
        let no = |reason: String, failed| Exclusive {
            measured: false,
            reason: Some(reason),
            bytes: None,
            failed_reads: failed,
        };
        if self.hidden {
            return no(HIDDEN.into(), 0);
        }
        if self.unread_processes > 0 {
            return no(
                format!(
                    "{} processes of the tree could not be read page by page",
                    self.unread_processes
                ),
                self.unread_processes,
            );
        }
        self.merge();
        if self.overflow {
            return no(
                format!("more than {MAX_SHARED_FRAMES} distinct shared pages (the memory bound)"),
                0,
            );
        }
        let counts = match KpageCount::open() {
            Ok(k) => k,
            Err(e) if self.seen.is_empty() => {
                log::debug!("/proc/kpagecount: {e} (not needed: no shared page)");
                return self.total(0, 0);
            }
            Err(e) => return no(format!("/proc/kpagecount unreadable ({e}): pages shared with processes outside the tree cannot be told apart"), 0),
        };
        let (mut bytes, mut failed) = (0u64, 0u64);
        // Frames are sorted: read runs of nearby frames at once, not a block per frame (the
        // kernel looks up every frame a read covers, so sparse frames cost a block each).
        for run in frame_runs(&self.seen) {
            let (first, last) = (self.seen[run.start].0, self.seen[run.end - 1].0);
            let Ok(v) = counts.read(first, (last - first + 1) as usize) else {
                failed += 1;
                continue;
            };
            for &(f, seen) in &self.seen[run] {
                let Some(&mapped) = v.get((f - first) as usize) else {
                    continue;
                };
                if mapped > 0 && mapped <= u64::from(seen) {
                    bytes += page;
                }
            }
        }
        self.total(bytes, failed)
    }

    fn total(&self, bytes: u64, failed: u64) -> Exclusive {
        Exclusive {
            measured: true,
            reason: None,
            bytes: Some(self.once + bytes),
            failed_reads: failed + self.failed_chunks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;

    #[test]
    fn kpagecount_reads_join_nearby_frames_only() {
        let f = |v: &[u64]| v.iter().map(|&x| (x, 1)).collect::<Vec<_>>();
        assert_eq!(frame_runs(&f(&[])), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(
            frame_runs(&f(&[5, 6, 20, 100, 5000])),
            vec![0..3, 3..4, 4..5]
        );
        let dense: Vec<u64> = (0..1100).collect();
        assert_eq!(frame_runs(&f(&dense)), vec![0..512, 512..1024, 1024..1100]);
    }

    #[test]
    fn parent_reads_count_in_the_ratio() {
        // 20 reads, 2 failed (the parent's): a tenth, shown beside the figures, not an error
        let own = ReadTally {
            reads: 10,
            failed: 0,
        };
        let parent = ReadTally {
            reads: 10,
            failed: 2,
        };
        assert_eq!(judge_reads(&own, &parent), (2, 20, false));
        let parent = ReadTally {
            reads: 10,
            failed: 3,
        };
        assert_eq!(judge_reads(&own, &parent), (3, 20, true));
    }

    #[test]
    fn zero_page_is_neither_shared_nor_copied() {
        let z = ZeroFrames {
            small: Some(77),
            huge: Some(1024),
        };
        let p = |f: u64| Entry(PRESENT | f);
        assert_eq!(relate(p(77), Some(p(77)), &z), Relation::Zero);
        assert_eq!(
            relate(p(1024 + 511), Some(p(1024 + 511)), &z),
            Relation::Zero
        );
        assert_eq!(
            relate(p(1024 + 512), Some(p(1024 + 512)), &z),
            Relation::Shared
        );
        assert_eq!(relate(p(77), Some(p(5)), &z), Relation::Zero);
    }

    #[test]
    fn learns_zero_frames() {
        let e = |f: u64| Entry(PRESENT | f);
        // small zero page at frame 9 on both edges, huge zero page from frame 4096
        let vpns = [510, 511, 512, 513, 514, 1024, 1025];
        let entries = [e(9), e(9), e(4096), e(4097), e(4098), e(9), e(9)];
        let z = ZeroFrames::learn(&vpns, &entries);
        assert_eq!(z.small, Some(9));
        assert_eq!(z.huge, Some(4096));
        // frames hidden: nothing learned
        let z = ZeroFrames::learn(&vpns, &[Entry(PRESENT); 7]);
        assert_eq!(z, ZeroFrames::default());
    }

    #[test]
    fn relations() {
        let z = ZeroFrames::default();
        let relate = |c, p| relate(c, p, &z);
        let p = |f: u64| Entry(PRESENT | f);
        assert_eq!(relate(p(5), Some(p(5))), Relation::Shared);
        assert_eq!(relate(p(5), Some(p(6))), Relation::Copied);
        assert_eq!(relate(p(5), None), Relation::Own);
        assert_eq!(relate(p(5), Some(Entry(0))), Relation::Own);
        assert_eq!(relate(p(5), Some(Entry(SWAPPED))), Relation::ParentSwapped);
        assert_eq!(relate(Entry(SWAPPED), Some(p(5))), Relation::Swapped);
        assert_eq!(relate(Entry(0), Some(p(5))), Relation::Absent);
        // frame numbers hidden (no CAP_SYS_ADMIN): never read as shared or copied
        assert_eq!(
            relate(Entry(PRESENT), Some(Entry(PRESENT))),
            Relation::Hidden
        );
        assert_eq!(relate(p(5), Some(Entry(PRESENT))), Relation::Hidden);
    }

    #[test]
    fn tally_merges_counts_per_frame() {
        let mut t = FrameTally::default();
        t.add(7, false, 4096);
        t.add(3, false, 4096);
        t.add(9, true, 4096);
        t.merge();
        t.add(7, false, 4096);
        t.merge();
        assert_eq!(t.seen, vec![(3, 1), (7, 2)]);
        assert_eq!(t.once, 4096);
    }

    #[test]
    fn hidden_frames_are_not_a_total() {
        let t = FrameTally {
            hidden: true,
            ..FrameTally::default()
        };
        let e = t.finish(4096);
        assert!(!e.measured && e.bytes.is_none());
    }
}
