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
/// Frames of `/proc/kpagecount` read at once.
const KPAGECOUNT_BLOCK: u64 = 512;

const HIDDEN: &str = "page frame numbers read as 0: the kernel shows them only with CAP_SYS_ADMIN, so sharing cannot be measured";

/// Measures the sharing of every process of `t` with its parent (when the parent is in `t`)
/// and the tree's exclusive total, and attaches them. Each process's mappings are read again
/// (`smaps`, thread stack pointers) to sort pages into the ledger's categories; pymalloc arenas
/// come from the Python view already attached (`python.pymalloc.arena_ranges`).
pub fn measure(t: &mut TreeLedger) {
    let page = memlens_procfs::page_size();
    let mut resolver = DistributionResolver::new(format!("/proc/{}/root", t.root));
    // The mappings on every core; their categories on this thread (one resolver).
    let parts = crate::parallel::map(&t.processes, |p| {
        Process::new(p.pid)
            .and_then(|proc| ProcessParts::read(&proc))
            .map_err(|e| log::info!("sharing: pid {} not read again: {e}", p.pid))
            .ok()
    });
    let read: Vec<Option<(ProcessParts, Vec<CategoryRange>)>> = t
        .processes
        .iter()
        .zip(parts)
        .map(|(p, parts)| {
            let parts = parts?;
            let arenas = p
                .python
                .as_ref()
                .and_then(|py| py.pymalloc.as_ref())
                .map(|pm| pm.arena_ranges.clone())
                .unwrap_or_default();
            let ranges = category_ranges(&parts, &arenas, &mut resolver);
            Some((parts, ranges))
        })
        .collect();
    let mut frames = FrameTally::default();
    for i in 0..t.processes.len() {
        let ppid = t.processes[i].ppid;
        let parent = t.processes.iter().position(|p| p.pid == ppid && ppid != 0);
        let Some((parts, ranges)) = &read[i] else {
            frames.unread_processes += 1;
            if let Some(j) = parent {
                t.processes[i].sharing = Some(unmeasured(
                    t.processes[j].pid,
                    "the process's mappings could not be read again".into(),
                ));
            }
            continue;
        };
        let parent_parts = parent.and_then(|j| read[j].as_ref().map(|(p, _)| p));
        let result = compare(parts, ranges, parent_parts, page, &mut frames);
        if let Some(j) = parent {
            let ppid = t.processes[j].pid;
            t.processes[i].sharing = Some(match result {
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
    t.exclusive = Some(frames.finish(page));
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
    /// Not in memory: not counted.
    Absent,
}

/// Classifies one page. `parent` is `None` where the parent maps no same-origin mapping.
fn relate(child: Entry, parent: Option<Entry>) -> Relation {
    if child.swapped() {
        return Relation::Swapped;
    }
    if !child.present() {
        return Relation::Absent;
    }
    let Some(frame) = child.frame() else {
        return Relation::Hidden;
    };
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
    for r in ranges {
        let m = &parts.mappings[r.mapping];
        if m.counters.rss == 0 && m.counters.swap == 0 {
            continue; // nothing resident or swapped: a reservation is not read page by page
        }
        let mut counts = [0u64; 7];
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
                Some((pm, pp)) => {
                    parent_entries(pm, pp, &m.entry, at, n, page, &mut figures.failed_reads)
                }
                None => vec![None; n as usize],
            };
            for (k, e) in child.iter().enumerate() {
                let rel = relate(*e, theirs.get(k).copied().flatten());
                counts[rel as usize] += 1;
                if let Some(f) = e.frame() {
                    frames.add(f, e.exclusive(), page);
                }
            }
            at += n;
        }
        hidden += counts[Relation::Hidden as usize];
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
    // A few failed reads are shown beside the figures; more than a tenth are no answer.
    if figures.failed_reads * 10 > reads {
        return Err(format!(
            "{} of {reads} pagemap reads failed",
            figures.failed_reads
        ));
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
    at: u64,
    n: u64,
    page: u64,
    failed: &mut u64,
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
        match map.read(s, (e - s) as usize) {
            Ok(entries) => {
                for (k, en) in entries.into_iter().enumerate() {
                    if let Some(slot) = out.get_mut((s - at) as usize + k) {
                        *slot = Some(en);
                    }
                }
            }
            Err(_) => *failed += 1,
        }
    }
    out
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
        let mut block: Option<(u64, Vec<u64>)> = None;
        for &(f, seen) in &self.seen {
            let start = f - f % KPAGECOUNT_BLOCK;
            if block.as_ref().is_none_or(|(s, _)| *s != start) {
                match counts.read(start, KPAGECOUNT_BLOCK as usize) {
                    Ok(v) => block = Some((start, v)),
                    Err(_) => {
                        failed += 1;
                        block = Some((start, Vec::new()));
                    }
                }
            }
            let Some(&mapped) = block
                .as_ref()
                .and_then(|(_, v)| v.get((f - start) as usize))
            else {
                continue;
            };
            if mapped > 0 && mapped <= u64::from(seen) {
                bytes += page;
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
    fn relations() {
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
