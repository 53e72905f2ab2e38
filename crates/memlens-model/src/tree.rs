//! The ledger of a process tree: sums of PSS (the honest total), USS and RSS, the cgroup view,
//! and findings (as data, worded by [`Finding::words`]), computed from the processes' ledgers.

use serde::{Deserialize, Serialize};

use crate::category::Category;
use crate::cgroup::CgroupMemory;
use crate::ledger::{Amounts, ProcessLedger};
use crate::units::SizeStyle;

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
    /// Findings, most important first, as data: `findings` (worded in binary units) and
    /// `finding_figures` (kind and figures) in JSON.
    #[serde(flatten, serialize_with = "findings_json::serialize")]
    pub findings: Vec<Finding>,
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

/// A finding: what it is (`kind` in JSON, a stable snake_case id) and its figures (bytes,
/// percentages, counts), computed from the ledger. Renderers word it ([`Finding::words`]) in
/// their [`SizeStyle`]; `findings` in JSON is its wording in binary units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// Summing the processes' RSS counts shared pages once per process.
    SharedPages {
        /// Processes in the tree.
        processes: u64,
        /// The RSS sum.
        rss: u64,
        /// What it overstates (`rss - pss`).
        shared: u64,
        /// The PSS total.
        pss: u64,
    },
    /// Memory unique to single processes.
    UniqueMemory {
        /// The USS sum.
        uss: u64,
    },
    /// The category holding the most PSS.
    LargestCategory {
        /// Its name (DESIGN §3).
        #[serde(with = "category_name")]
        category: Category,
        /// Its PSS.
        pss: u64,
        /// Its share of the PSS total, rounded percent.
        percent: u64,
    },
    /// Threads beyond one per process, and their stacks.
    ThreadStacks {
        /// Threads of the tree.
        threads: u64,
        /// Address space reserved for stacks.
        reserved: u64,
        /// Resident stack bytes.
        resident: u64,
    },
    /// The extension package with the most PSS (1 MiB or more).
    LargestExtension {
        /// Its name (untrusted: from the target's paths).
        name: String,
        /// Its PSS.
        pss: u64,
    },
    /// pymalloc's arenas keep a quarter or more free (1 MiB or more).
    PymallocFreeSpace {
        /// Free arena bytes.
        free: u64,
        /// Their share of the arenas, rounded percent.
        percent: u64,
    },
    /// Memory swapped out.
    Swapped {
        /// Swap of the tree.
        swap: u64,
    },
    /// The memory cgroup's charge against its limit.
    CgroupLimit {
        /// Charge.
        usage: u64,
        /// Limit.
        limit: u64,
        /// What can still be charged.
        headroom: u64,
    },
    /// The memory cgroup's charge, without a limit.
    CgroupUnlimited {
        /// Charge.
        usage: u64,
    },
    /// The OOM killer already killed processes of the cgroup.
    OomKills {
        /// Processes killed.
        kills: u64,
    },
    /// A forked worker has copied most of the python-heap it inherited (`crate::sharing`).
    CopiedPythonHeap {
        /// The worker.
        pid: u32,
        /// Its parent.
        parent: u32,
        /// python-heap bytes copied since the fork.
        copied: u64,
        /// `copied` as a percentage of what it inherited (shared + copied).
        percent: u64,
        /// Objects in the worker's permanent (frozen) generation, when its Python view says.
        frozen: Option<u64>,
        /// Whether `frozen` is too few for the heap to have been frozen (one object per 64
        /// bytes inherited): `gc.freeze()` before fork is then the advice.
        not_frozen: bool,
    },
}

/// A category in JSON by its DESIGN §3 name.
mod category_name {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::category::Category;

    pub fn serialize<S: Serializer>(c: &Category, s: S) -> Result<S::Ok, S::Error> {
        c.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Category, D::Error> {
        let name = String::deserialize(d)?;
        Category::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown category `{name}`")))
    }
}

impl Finding {
    /// The finding in one sentence, sizes in `style`.
    pub fn words(&self, style: SizeStyle) -> String {
        let b = |v: u64| style.size(v);
        match self {
            Finding::SharedPages {
                processes,
                rss,
                shared,
                pss,
            } => format!(
                "summing RSS would report {}; {} of it is pages shared between the {processes} \
                 processes, counted once here (PSS total {})",
                b(*rss),
                b(*shared),
                b(*pss)
            ),
            Finding::UniqueMemory { uss } => format!(
                "{} is unique to single processes (USS): what exiting them one by one would free",
                b(*uss)
            ),
            Finding::LargestCategory {
                category,
                pss,
                percent,
            } => format!(
                "{} is the largest part: {} PSS, {percent}% of the total",
                category.name(),
                b(*pss)
            ),
            Finding::ThreadStacks {
                threads,
                reserved,
                resident,
            } => format!(
                "{threads} threads reserve {} of stack address space; {} of it is resident",
                b(*reserved),
                b(*resident)
            ),
            Finding::LargestExtension { name, pss } => format!(
                "the largest extension package is {name}: {} PSS of code and data",
                b(*pss)
            ),
            Finding::PymallocFreeSpace { free, percent } => format!(
                "pymalloc's arenas hold {} of free space ({percent}% of them): memory Python \
                 freed but keeps, which is why RSS does not fall after objects are deleted",
                b(*free)
            ),
            Finding::Swapped { swap } => format!("{} is swapped out (not in RSS)", b(*swap)),
            Finding::CgroupLimit {
                usage,
                limit,
                headroom,
            } => format!(
                "the memory cgroup is charged {} of its {} limit ({} headroom); the OOM killer \
                 acts on this, not on RSS",
                b(*usage),
                b(*limit),
                b(*headroom)
            ),
            Finding::CgroupUnlimited { usage } => format!(
                "the memory cgroup is charged {} (page cache and kernel memory included) and has \
                 no limit",
                b(*usage)
            ),
            Finding::OomKills { kills } => {
                format!("the OOM killer has already killed {kills} process(es) in this cgroup")
            }
            Finding::CopiedPythonHeap {
                pid,
                parent,
                copied,
                percent,
                frozen,
                not_frozen,
            } => {
                let why = match (frozen, not_frozen) {
                    (Some(n), true) => format!(
                        "{n} objects are frozen: gc.freeze() before fork keeps the parent's \
                         objects out of collections, so GC passes do not write their headers (up \
                         to {} could stay shared)",
                        b(*copied)
                    ),
                    (Some(n), false) => format!(
                        "{n} objects are frozen (gc.freeze()), so the copies come from writes to \
                         objects (reference counts, attributes), not from collections"
                    ),
                    (None, _) => {
                        "no Python view of the worker says whether gc.freeze() was used".to_string()
                    }
                };
                format!(
                    "pid {pid}: {} of its python-heap inherited from pid {parent} ({percent}%) \
                     has been copied since fork; {why}",
                    b(*copied)
                )
            }
        }
    }
}

/// The findings of a tree ledger, most important first.
pub fn findings(t: &TreeLedger) -> Vec<Finding> {
    let mut f = Vec::new();
    let n = t.processes.len() as u64;
    if n > 1 && t.rss_overcount > 0 {
        f.push(Finding::SharedPages {
            processes: n,
            rss: t.totals.rss,
            shared: t.rss_overcount,
            pss: t.totals.pss,
        });
        f.push(Finding::UniqueMemory { uss: t.totals.uss });
    }
    if let Some((c, a)) = by_category(&t.processes).first() {
        if t.totals.pss > 0 {
            f.push(Finding::LargestCategory {
                category: *c,
                pss: a.pss,
                percent: pct(a.pss, t.totals.pss),
            });
        }
    }
    let threads: u64 = t.processes.iter().map(|p| u64::from(p.threads)).sum();
    let (reserved, resident) = t.processes.iter().fold((0, 0), |(a, b), p| {
        (a + p.thread_stacks.reserved, b + p.thread_stacks.resident)
    });
    if threads > n {
        f.push(Finding::ThreadStacks {
            threads,
            reserved,
            resident,
        });
    }
    if let Some((name, pss)) = largest_extension(&t.processes).filter(|e| e.1 >= 1 << 20) {
        f.push(Finding::LargestExtension { name, pss });
    }
    let (used, free) = t
        .processes
        .iter()
        .filter_map(|p| p.row(Category::PythonHeap)?.pymalloc)
        .fold((0u64, 0u64), |(u, f), s| {
            (u + s.used_bytes, f + s.free_bytes)
        });
    if free >= 1 << 20 && free * 4 >= used + free {
        f.push(Finding::PymallocFreeSpace {
            free,
            percent: pct(free, used + free),
        });
    }
    if t.totals.swap > 0 {
        f.push(Finding::Swapped {
            swap: t.totals.swap,
        });
    }
    if let Some(cg) = &t.cgroup {
        f.push(match (cg.limit, cg.headroom()) {
            (Some(limit), Some(headroom)) => Finding::CgroupLimit {
                usage: cg.usage,
                limit,
                headroom,
            },
            _ => Finding::CgroupUnlimited { usage: cg.usage },
        });
        if let Some(kills) = cg.oom_kills.filter(|k| *k > 0) {
            f.push(Finding::OomKills { kills });
        }
    }
    f.extend(crate::sharing::findings(t));
    f
}

/// The extension item (merged across processes by name) with the most PSS.
fn largest_extension(processes: &[ProcessLedger]) -> Option<(String, u64)> {
    let mut m: Vec<(String, u64)> = Vec::new();
    for it in processes
        .iter()
        .filter_map(|p| p.row(Category::Extensions))
        .flat_map(|r| &r.items)
    {
        match m.iter_mut().find(|(n, _)| *n == it.name) {
            Some((_, v)) => *v += it.amounts.pss,
            None => m.push((it.name.clone(), it.amounts.pss)),
        }
    }
    // The first of equals, as a stable sort by descending PSS put it first.
    m.into_iter().rev().max_by_key(|(_, v)| *v)
}

/// `findings` in JSON: each finding worded in binary units (the strings of JSON before
/// findings were data), then `finding_figures`: each finding's kind and figures, same order.
mod findings_json {
    use serde::ser::SerializeMap;
    use serde::Serializer;

    use super::Finding;
    use crate::units::SizeStyle;

    pub fn serialize<S: Serializer>(f: &[Finding], s: S) -> Result<S::Ok, S::Error> {
        let words: Vec<String> = f.iter().map(|f| f.words(SizeStyle::Binary)).collect();
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("findings", &words)?;
        m.serialize_entry("finding_figures", f)?;
        m.end()
    }
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
        assert_eq!(
            t.findings[..2],
            [
                Finding::SharedPages {
                    processes: 2,
                    rss: 180 << 20,
                    shared: 120 << 20,
                    pss: 60 << 20
                },
                Finding::UniqueMemory { uss: 30 << 20 }
            ]
        );
        assert!(t.findings[0]
            .words(SizeStyle::Binary)
            .starts_with("summing RSS would report 180 MiB; 120 MiB of it"));
        assert!(t.findings[0]
            .words(SizeStyle::Bytes)
            .starts_with("summing RSS would report 188743680; 125829120 of it"));
        let free = Finding::PymallocFreeSpace {
            free: 20 << 20,
            percent: 40,
        };
        assert!(t.findings.contains(&free), "{:?}", t.findings);
        assert!(free
            .words(SizeStyle::Binary)
            .contains("pymalloc's arenas hold 20.0 MiB of free space (40%"));
        // A well-packed heap says nothing about free space.
        let packed = HeapSplit {
            used_bytes: 30 << 20,
            free_bytes: 1 << 20,
        };
        let t = assemble(1, vec![process(10, Some(packed), 50 << 20)], None);
        assert_eq!(
            t.findings,
            [Finding::LargestCategory {
                category: Category::PythonHeap,
                pss: 50 << 20,
                percent: 100
            }],
            "one process, a packed heap: no sharing, no free-space finding"
        );
    }

    fn cgroup(limit: Option<u64>, oom_kills: Option<u64>) -> CgroupMemory {
        CgroupMemory {
            version: 2,
            usage: 70 << 20,
            limit,
            oom_kills,
            ..CgroupMemory::default()
        }
    }

    #[test]
    fn findings_of_threads_extensions_swap_and_the_cgroup() {
        let mut p = process(10, None, 8 << 20);
        p.threads = 4;
        p.thread_stacks = ThreadStacks {
            count: 4,
            reserved: 24 << 20,
            resident: 64 << 10,
            unlocated: 0,
        };
        p.totals.swap = 3 << 20;
        let item = |name: &str, pss| crate::ledger::Item {
            name: name.into(),
            amounts: Amounts {
                pss,
                ..Amounts::default()
            },
            size: 0,
            mappings: 1,
        };
        p.ledger.push(Row {
            category: Category::Extensions,
            amounts: Amounts {
                pss: 5 << 20,
                ..Amounts::default()
            },
            size: 0,
            mappings: 3,
            // Two items of equal PSS: the first is named.
            items: vec![
                item("numpy", 2 << 20),
                item("pandas", 2 << 20),
                item("x", 1),
            ],
            pymalloc: None,
        });
        let limited = assemble(10, vec![p.clone()], Some(cgroup(Some(100 << 20), Some(2))));
        assert_eq!(
            limited.findings[1..],
            [
                Finding::ThreadStacks {
                    threads: 4,
                    reserved: 24 << 20,
                    resident: 64 << 10
                },
                Finding::LargestExtension {
                    name: "numpy".into(),
                    pss: 2 << 20
                },
                Finding::Swapped { swap: 3 << 20 },
                Finding::CgroupLimit {
                    usage: 70 << 20,
                    limit: 100 << 20,
                    headroom: 30 << 20
                },
                Finding::OomKills { kills: 2 },
            ]
        );
        let unlimited = assemble(10, vec![p.clone()], Some(cgroup(None, Some(0))));
        assert_eq!(
            unlimited.findings.last(),
            Some(&Finding::CgroupUnlimited { usage: 70 << 20 })
        );
        // An extension under 1 MiB is not worth a finding.
        p.ledger[1].items = vec![item("tiny", (1 << 20) - 1)];
        let small = assemble(10, vec![p], None);
        assert!(!small
            .findings
            .iter()
            .any(|f| matches!(f, Finding::LargestExtension { .. })));
    }

    #[test]
    fn json_keeps_the_words_and_adds_the_figures() {
        let t = assemble(
            1,
            vec![process(10, None, 50 << 20)],
            Some(cgroup(None, None)),
        );
        let v = serde_json::to_string(&t).unwrap();
        assert!(
            v.contains(r#""findings":["python-heap is the largest part: 50.0 MiB PSS, 100% of the total","the memory cgroup is charged 70.0 MiB (page cache and kernel memory included) and has no limit"]"#),
            "{v}"
        );
        assert!(
            v.contains(r#""finding_figures":[{"kind":"largest_category","category":"python-heap","pss":52428800,"percent":100},{"kind":"cgroup_unlimited","usage":73400320}]"#),
            "{v}"
        );
        assert!(v.ends_with(r#"}]}"#), "figures come last: {v}");
    }
}
