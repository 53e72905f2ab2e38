//! Copy-on-write sharing of forked workers (DESIGN §6): per process, the bytes still shared
//! with its parent, copied since the fork and its own, per ledger category; per tree, the
//! bytes that only the tree maps ("freed if the whole tree exits").
//!
//! Figures come from `/proc/PID/pagemap` page frame numbers (and `/proc/kpagecount` for the
//! tree's exclusive total), read by `memlens-ledger::sharing`. Where the kernel hides frame
//! numbers (without `CAP_SYS_ADMIN` they read as 0) nothing can be measured: the shapes then
//! carry `measured: false` and a reason, and no figures, never zeros.

use serde::Serialize;

use crate::category::Category;
use crate::tree::{Finding, TreeLedger};

/// One process's sharing with its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sharing {
    /// The parent it is compared with (read in the same snapshot).
    pub parent: u32,
    /// Whether the figures were measured; when false, `reason` says why and no figures follow.
    pub measured: bool,
    /// Why nothing was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The figures, when measured.
    #[serde(flatten)]
    pub figures: Option<SharingFigures>,
}

/// Bytes of a process's resident pages by their relation to the parent's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SharingFigures {
    /// Pages the parent maps at the same address with the same physical page.
    pub shared_with_parent: u64,
    /// Pages at an address the parent maps too (a mapping of the same origin), with a page of
    /// its own: a copy made since the fork (or a page the parent replaced).
    pub copied: u64,
    /// Pages at addresses the parent does not map (or maps from another origin, or maps
    /// without a page there).
    pub own: u64,
    /// The process's pages in swap: not classified.
    pub swapped: u64,
    /// Resident pages at addresses where the parent's page is in swap: not classified.
    pub parent_swapped: u64,
    /// Resident pages that map the kernel's shared zero page (read, never written): every
    /// process maps that page, nothing was inherited, so they are in no other figure.
    pub zero_page: u64,
    /// Reads of `pagemap` (chunks) that failed; their pages are in no figure.
    pub failed_reads: u64,
    /// The same figures per ledger category, largest shared first.
    pub by_category: Vec<SharingRow>,
}

/// One category's sharing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharingRow {
    /// The category.
    pub category: Category,
    /// Shared with the parent.
    pub shared_with_parent: u64,
    /// Copied from the parent.
    pub copied: u64,
    /// Its own.
    pub own: u64,
}

impl SharingFigures {
    /// The row of a category, if any page fell in it.
    pub fn row(&self, c: Category) -> Option<&SharingRow> {
        self.by_category.iter().find(|r| r.category == c)
    }
}

/// The tree's resident bytes mapped by its processes only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exclusive {
    /// Whether the total was measured; when false, `reason` says why and no figures follow.
    pub measured: bool,
    /// Why nothing was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Resident bytes whose every mapping is in the tree: what exiting the whole tree frees
    /// (page-cache pages among them stay cached as clean cache). Swap is not in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Reads (pagemap chunks, kpagecount blocks) that failed; their pages are in no figure.
    pub failed_reads: u64,
}

impl Sharing {
    /// Sharing with `parent` that was not measured, and why.
    pub fn not_measured(parent: u32, reason: String) -> Sharing {
        Sharing {
            parent,
            measured: false,
            reason: Some(reason),
            figures: None,
        }
    }
}

impl Exclusive {
    /// An exclusive total that was not measured, and why.
    pub fn not_measured(reason: String) -> Exclusive {
        Exclusive {
            measured: false,
            reason: Some(reason),
            bytes: None,
            failed_reads: 0,
        }
    }
}

/// Share of a part in a whole, in percent, rounded.
fn pct(part: u64, whole: u64) -> u64 {
    (part.saturating_mul(100) + whole / 2)
        .checked_div(whole)
        .unwrap_or(0)
}

/// Smallest python-heap copy worth a finding.
const FINDING_MIN_COPIED: u64 = 1 << 20;

/// Findings about copy-on-write: a worker whose python-heap is mostly copied from its parent,
/// with what the Python view says about `gc.freeze()`.
pub fn findings(t: &TreeLedger) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in &t.processes {
        let Some(f) = p.sharing.as_ref().and_then(|s| s.figures.as_ref()) else {
            continue;
        };
        let Some(row) = f.row(Category::PythonHeap) else {
            continue;
        };
        let inherited = row.shared_with_parent + row.copied;
        if row.copied < FINDING_MIN_COPIED || row.copied * 2 < inherited {
            continue;
        }
        let frozen = p
            .python
            .as_ref()
            .and_then(|py| py.gc.as_ref())
            .map(|gc| gc.frozen);
        out.push(Finding::CopiedPythonHeap {
            pid: p.pid,
            parent: p.sharing.as_ref().map_or(0, |s| s.parent),
            copied: row.copied,
            percent: pct(row.copied, inherited),
            frozen,
            // Fewer frozen objects than one per 64 bytes inherited: the heap was not frozen (an
            // interpreter freezes a few hundred of its own objects at start on some versions).
            not_frozen: frozen.is_some_and(|n| n.saturating_mul(64) < inherited),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Amounts, ProcessLedger, PythonInfo, ThreadStacks};
    use crate::python::GcState;

    fn worker(copied: u64, shared: u64, frozen: Option<u64>) -> ProcessLedger {
        ProcessLedger {
            pid: 11,
            ppid: 10,
            name: "python3".into(),
            cmdline: String::new(),
            python: frozen.map(|n| PythonInfo {
                version: None,
                binary: String::new(),
                build: "shared",
                gc: Some(GcState {
                    generations: Vec::new(),
                    frozen: n,
                    collecting: false,
                }),
                pymalloc: None,
                modules: None,
                inexact: false,
                packages: None,
            }),
            threads: 1,
            vm_hwm: 0,
            totals: Amounts::default(),
            size: 0,
            ledger: Vec::new(),
            thread_stacks: ThreadStacks::default(),
            sharing: Some(Sharing {
                parent: 10,
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
                    ..SharingFigures::default()
                }),
            }),
        }
    }

    fn tree(p: ProcessLedger) -> TreeLedger {
        crate::tree::assemble(10, vec![p], None)
    }

    #[test]
    fn mostly_copied_heap_names_gc_freeze() {
        let words = |f: &[Finding]| -> Vec<String> {
            f.iter()
                .map(|f| f.words(crate::units::SizeStyle::Binary))
                .collect()
        };
        let f = findings(&tree(worker(80 << 20, 20 << 20, Some(0))));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            matches!(
                f[0],
                Finding::CopiedPythonHeap {
                    copied,
                    percent: 80,
                    frozen: Some(0),
                    not_frozen: true,
                    ..
                } if copied == 80 << 20
            ),
            "{f:?}"
        );
        let w = words(&f);
        assert!(
            w[0].contains("(80%)") && w[0].contains("gc.freeze() before fork"),
            "{w:?}"
        );
        let f = findings(&tree(worker(80 << 20, 20 << 20, Some(2_000_000))));
        assert!(words(&f)[0].contains("are frozen (gc.freeze())"), "{f:?}");
        let f = findings(&tree(worker(80 << 20, 20 << 20, None)));
        assert!(words(&f)[0].contains("no Python view"), "{f:?}");
    }

    #[test]
    fn mostly_shared_or_small_heaps_say_nothing() {
        assert!(findings(&tree(worker(20 << 20, 80 << 20, Some(0)))).is_empty());
        assert!(findings(&tree(worker(512 << 10, 0, Some(0)))).is_empty());
        let mut p = worker(80 << 20, 0, Some(0));
        p.sharing = Some(Sharing {
            parent: 10,
            measured: false,
            reason: Some("hidden".into()),
            figures: None,
        });
        assert!(
            findings(&tree(p)).is_empty(),
            "nothing measured, nothing said"
        );
    }
}
