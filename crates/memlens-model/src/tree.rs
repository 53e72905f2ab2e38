//! The ledger of a process tree: sums of PSS (the honest total), USS and RSS, the cgroup view,
//! and one-line findings, computed from the processes' ledgers.

use serde::Serialize;

use crate::category::Category;
use crate::cgroup::CgroupMemory;
use crate::ledger::{Amounts, ProcessLedger};
use crate::units::format_bytes;

/// The ledger of one process or a tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TreeLedger {
    /// The process the snapshot was asked for.
    pub root: u32,
    /// Sums over the processes. `pss` is the honest total; `rss` double-counts shared pages.
    pub totals: Amounts,
    /// How much the RSS sum overstates the memory in use (`rss - pss`).
    pub rss_overcount: u64,
    /// Every process, parents before children.
    pub processes: Vec<ProcessLedger>,
    /// The memory cgroup of the root process.
    pub cgroup: Option<CgroupMemory>,
    /// Descendants that could not be read (permission denied, kernel threads), left out of
    /// the totals.
    pub skipped: Vec<Skipped>,
    /// Plain-language findings, most important first.
    pub findings: Vec<String>,
    /// Resident bytes only the tree maps (`snapshot --tree`; see `crate::sharing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<crate::sharing::Exclusive>,
}

/// A process left out of a tree ledger, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Process id.
    pub pid: u32,
    /// Why it was left out.
    pub reason: String,
    /// The kernel refused the read (another user's process, without the privilege to read
    /// it): its memory exists but cannot be accounted, unlike a kernel thread or an exit.
    #[serde(skip)]
    pub permission_denied: bool,
}

impl TreeLedger {
    /// Writes the findings again, after something was added to the processes (the Python
    /// view, for instance).
    pub fn refresh_findings(&mut self) {
        self.findings = findings(self);
    }
}

/// Sums processes into a tree ledger and writes its findings.
pub fn assemble(
    root: u32,
    processes: Vec<ProcessLedger>,
    cgroup: Option<CgroupMemory>,
) -> TreeLedger {
    let mut totals = Amounts::default();
    for p in &processes {
        totals.add(&p.totals);
    }
    let mut t = TreeLedger {
        root,
        totals,
        rss_overcount: totals.rss.saturating_sub(totals.pss),
        processes,
        cgroup,
        skipped: Vec::new(),
        findings: Vec::new(),
        exclusive: None,
    };
    t.findings = findings(&t);
    t
}

/// Adds the amounts of every process's rows per category.
pub fn by_category(processes: &[ProcessLedger]) -> Vec<(Category, Amounts)> {
    let mut out: Vec<(Category, Amounts)> = Vec::new();
    for p in processes {
        for r in &p.ledger {
            match out.iter_mut().find(|(c, _)| *c == r.category) {
                Some((_, a)) => a.add(&r.amounts),
                None => out.push((r.category, r.amounts)),
            }
        }
    }
    out.sort_by_key(|(_, a)| std::cmp::Reverse(a.pss));
    out
}

fn pct(part: u64, whole: u64) -> u64 {
    (part * 100 + whole / 2).checked_div(whole).unwrap_or(0)
}

fn findings(t: &TreeLedger) -> Vec<String> {
    let mut f = Vec::new();
    let n = t.processes.len();
    if n > 1 && t.rss_overcount > 0 {
        f.push(format!(
            "summing RSS would report {}; {} of it is pages shared between the {n} processes, counted once here (PSS total {})",
            format_bytes(t.totals.rss),
            format_bytes(t.rss_overcount),
            format_bytes(t.totals.pss)
        ));
        f.push(format!(
            "{} is unique to single processes (USS): what exiting them one by one would free",
            format_bytes(t.totals.uss)
        ));
    }
    let cats = by_category(&t.processes);
    if let Some((c, a)) = cats.first() {
        if t.totals.pss > 0 {
            f.push(format!(
                "{} is the largest part: {} PSS, {}% of the total",
                c.name(),
                format_bytes(a.pss),
                pct(a.pss, t.totals.pss)
            ));
        }
    }
    let threads: u64 = t.processes.iter().map(|p| u64::from(p.threads)).sum();
    let (reserved, resident): (u64, u64) = t.processes.iter().fold((0, 0), |(a, b), p| {
        (a + p.thread_stacks.reserved, b + p.thread_stacks.resident)
    });
    if threads > n as u64 {
        f.push(format!(
            "{threads} threads reserve {} of stack address space; {} of it is resident",
            format_bytes(reserved),
            format_bytes(resident)
        ));
    }
    let ext: Vec<(String, u64)> = {
        let mut m: Vec<(String, u64)> = Vec::new();
        for p in &t.processes {
            if let Some(r) = p.row(Category::Extensions) {
                for it in &r.items {
                    match m.iter_mut().find(|(n, _)| *n == it.name) {
                        Some((_, v)) => *v += it.amounts.pss,
                        None => m.push((it.name.clone(), it.amounts.pss)),
                    }
                }
            }
        }
        m.sort_by_key(|(_, v)| std::cmp::Reverse(*v));
        m
    };
    if let Some((name, pss)) = ext.first() {
        if *pss >= 1 << 20 {
            f.push(format!(
                "the largest extension package is {name}: {} PSS of code and data",
                format_bytes(*pss)
            ));
        }
    }
    let (arena_used, arena_free) = t
        .processes
        .iter()
        .filter_map(|p| p.row(Category::PythonHeap)?.pymalloc)
        .fold((0u64, 0u64), |(u, f), s| {
            (u + s.used_bytes, f + s.free_bytes)
        });
    if arena_free >= 1 << 20 && arena_free * 4 >= arena_used + arena_free {
        f.push(format!(
            "pymalloc's arenas hold {} of free space ({}% of them): memory Python freed but keeps, \
             which is why RSS does not fall after objects are deleted",
            format_bytes(arena_free),
            pct(arena_free, arena_used + arena_free)
        ));
    }
    if t.totals.swap > 0 {
        f.push(format!(
            "{} is swapped out (not in RSS)",
            format_bytes(t.totals.swap)
        ));
    }
    if let Some(cg) = &t.cgroup {
        match (cg.limit, cg.headroom()) {
            (Some(limit), Some(head)) => f.push(format!(
                "the memory cgroup is charged {} of its {} limit ({} headroom); the OOM killer acts on this, not on RSS",
                format_bytes(cg.usage),
                format_bytes(limit),
                format_bytes(head)
            )),
            _ => f.push(format!(
                "the memory cgroup is charged {} (page cache and kernel memory included) and has no limit",
                format_bytes(cg.usage)
            )),
        }
        if let Some(k) = cg.oom_kills.filter(|k| *k > 0) {
            f.push(format!(
                "the OOM killer has already killed {k} process(es) in this cgroup"
            ));
        }
    }
    f.extend(crate::sharing::findings(t));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{HeapSplit, Row, ThreadStacks};

    fn process(pid: u32, heap: Option<HeapSplit>, pss: u64) -> ProcessLedger {
        let amounts = Amounts {
            rss: pss * 3,
            pss,
            uss: pss / 2,
            swap: 0,
        };
        ProcessLedger {
            pid,
            ppid: 1,
            name: "python3".into(),
            cmdline: "python3 app.py".into(),
            python: None,
            threads: 1,
            vm_hwm: pss * 3,
            totals: amounts,
            size: pss * 4,
            ledger: vec![Row {
                category: Category::PythonHeap,
                amounts,
                size: pss * 4,
                mappings: 1,
                items: Vec::new(),
                pymalloc: heap,
            }],
            thread_stacks: ThreadStacks::default(),
            sharing: None,
        }
    }

    #[test]
    fn findings_name_sharing_and_pymalloc_free_space() {
        let split = HeapSplit {
            used_bytes: 30 << 20,
            free_bytes: 20 << 20,
        };
        let t = assemble(
            1,
            vec![
                process(10, Some(split), 50 << 20),
                process(11, None, 10 << 20),
            ],
            None,
        );
        assert_eq!(t.totals.pss, 60 << 20);
        assert_eq!(t.rss_overcount, 120 << 20);
        assert!(
            t.findings[0].starts_with("summing RSS would report 180 MiB; 120 MiB of it"),
            "{:?}",
            t.findings
        );
        assert!(t
            .findings
            .iter()
            .any(|f| f.contains("pymalloc's arenas hold 20.0 MiB of free space (40%")));
        // A well-packed heap says nothing about free space.
        let packed = HeapSplit {
            used_bytes: 30 << 20,
            free_bytes: 1 << 20,
        };
        let t = assemble(1, vec![process(10, Some(packed), 50 << 20)], None);
        assert!(!t.findings.iter().any(|f| f.contains("pymalloc")));
        assert!(
            !t.findings.iter().any(|f| f.contains("summing RSS")),
            "one process: no sharing finding"
        );
    }
}
