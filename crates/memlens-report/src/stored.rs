//! The findings of a ledger stored in a recording: its `finding_figures`, or, for a recording
//! made before findings were data (only their words in binary units were stored), the findings
//! computed again from the stored ledger's figures, with the function that computed them then.

use serde::Deserialize;

use memlens_model::ledger::{HeapSplit, Item, ProcessLedger, Row, ThreadStacks};
use memlens_model::tree::{findings as compute, Finding};
use memlens_model::{Amounts, Category, CgroupMemory, TreeLedger};

/// The findings of a stored ledger (`snapshot --json`'s shape), or why they cannot be read.
pub(crate) fn findings(json: &serde_json::Value) -> Result<Vec<Finding>, String> {
    if let Some(figures) = json.get("finding_figures") {
        return Vec::<Finding>::deserialize(figures).map_err(|e| e.to_string());
    }
    let tree = StoredTree::deserialize(json).map_err(|e| e.to_string())?;
    Ok(compute(&tree.into_ledger()?))
}

// The parts of the stored ledger the findings read; every other figure is left at zero.

#[derive(Deserialize, Default)]
#[serde(default)]
struct StoredAmounts {
    rss: u64,
    pss: u64,
    uss: u64,
    swap: u64,
}

impl From<&StoredAmounts> for Amounts {
    fn from(a: &StoredAmounts) -> Amounts {
        Amounts {
            rss: a.rss,
            pss: a.pss,
            uss: a.uss,
            swap: a.swap,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StoredItem {
    name: String,
    #[serde(flatten)]
    amounts: StoredAmounts,
}

#[derive(Deserialize)]
struct StoredSplit {
    used_bytes: u64,
    free_bytes: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StoredRow {
    category: String,
    #[serde(flatten)]
    amounts: StoredAmounts,
    items: Vec<StoredItem>,
    pymalloc: Option<StoredSplit>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StoredStacks {
    count: u64,
    reserved: u64,
    resident: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StoredProcess {
    pid: u32,
    threads: u32,
    totals: StoredAmounts,
    ledger: Vec<StoredRow>,
    thread_stacks: StoredStacks,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StoredCgroup {
    usage: u64,
    limit: Option<u64>,
    oom_kills: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StoredTree {
    root: u32,
    totals: StoredAmounts,
    rss_overcount: u64,
    processes: Vec<StoredProcess>,
    cgroup: Option<StoredCgroup>,
}

impl StoredTree {
    fn into_ledger(self) -> Result<TreeLedger, String> {
        let mut processes = Vec::with_capacity(self.processes.len());
        for p in self.processes {
            let mut ledger = Vec::with_capacity(p.ledger.len());
            for r in p.ledger {
                ledger.push(Row {
                    category: Category::from_name(&r.category)
                        .ok_or_else(|| format!("unknown category `{}`", r.category))?,
                    amounts: Amounts::from(&r.amounts),
                    size: 0,
                    mappings: 0,
                    items: r
                        .items
                        .iter()
                        .map(|i| Item {
                            name: i.name.clone(),
                            amounts: Amounts::from(&i.amounts),
                            size: 0,
                            mappings: 0,
                        })
                        .collect(),
                    pymalloc: r.pymalloc.map(|s| HeapSplit {
                        used_bytes: s.used_bytes,
                        free_bytes: s.free_bytes,
                    }),
                });
            }
            processes.push(ProcessLedger {
                pid: p.pid,
                ppid: 0,
                name: String::new(),
                cmdline: String::new(),
                python: None,
                threads: p.threads,
                vm_hwm: 0,
                totals: Amounts::from(&p.totals),
                size: 0,
                ledger,
                thread_stacks: ThreadStacks {
                    count: p.thread_stacks.count,
                    reserved: p.thread_stacks.reserved,
                    resident: p.thread_stacks.resident,
                    unlocated: 0,
                },
                sharing: None,
            });
        }
        Ok(TreeLedger {
            root: self.root,
            totals: Amounts::from(&self.totals),
            rss_overcount: self.rss_overcount,
            processes,
            cgroup: self.cgroup.map(|c| CgroupMemory {
                usage: c.usage,
                limit: c.limit,
                oom_kills: c.oom_kills,
                ..CgroupMemory::default()
            }),
            skipped: Vec::new(),
            findings: Vec::new(),
            exclusive: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memlens_model::tree::assemble;

    const MIB: u64 = 1 << 20;

    /// A tree with every kind of finding: two processes sharing pages, threads, an extension,
    /// free pymalloc space, swap and a limited cgroup that saw OOM kills.
    pub(crate) fn every_finding() -> TreeLedger {
        let process = |pid, ext: &str| {
            let amounts = Amounts {
                rss: 90 * MIB,
                pss: 30 * MIB,
                uss: 10 * MIB,
                swap: MIB,
            };
            let item = Item {
                name: ext.into(),
                amounts: Amounts {
                    pss: 2 * MIB,
                    ..amounts
                },
                size: 0,
                mappings: 1,
            };
            ProcessLedger {
                pid,
                ppid: 1,
                name: "python3".into(),
                cmdline: "python3 app.py".into(),
                python: None,
                sharing: None,
                threads: 3,
                vm_hwm: 90 * MIB,
                totals: amounts,
                size: 100 * MIB,
                ledger: vec![
                    Row {
                        category: Category::PythonHeap,
                        amounts: Amounts {
                            pss: 28 * MIB,
                            ..amounts
                        },
                        size: 0,
                        mappings: 1,
                        items: Vec::new(),
                        pymalloc: Some(HeapSplit {
                            used_bytes: 6 * MIB,
                            free_bytes: 2 * MIB,
                        }),
                    },
                    Row {
                        category: Category::Extensions,
                        amounts: Amounts {
                            pss: 2 * MIB,
                            ..amounts
                        },
                        size: 0,
                        mappings: 1,
                        items: vec![item],
                        pymalloc: None,
                    },
                ],
                thread_stacks: ThreadStacks {
                    count: 3,
                    reserved: 24 * MIB,
                    resident: 64 << 10,
                    unlocated: 0,
                },
            }
        };
        let cgroup = CgroupMemory {
            version: 2,
            usage: 70 * MIB,
            limit: Some(100 * MIB),
            oom_kills: Some(2),
            ..CgroupMemory::default()
        };
        assemble(
            10,
            vec![process(10, "numpy"), process(11, "numpy")],
            Some(cgroup),
        )
    }

    #[test]
    fn findings_computed_again_from_a_stored_ledger_without_figures_are_the_same() {
        let tree = every_finding();
        // Every kind but cgroup_unlimited (the cgroup has a limit).
        assert_eq!(tree.findings.len(), 9, "{:?}", tree.findings);
        let mut json = serde_json::to_value(&tree).unwrap();
        assert_eq!(findings(&json).unwrap(), tree.findings);
        // An older recording stored only the words.
        json.as_object_mut().unwrap().remove("finding_figures");
        assert_eq!(findings(&json).unwrap(), tree.findings);
        // A ledger of an unknown shape is an error, not silently no findings.
        json["processes"][0]["ledger"][0]["category"] = "nonsense".into();
        assert!(findings(&json).unwrap_err().contains("nonsense"));
        assert!(findings(&serde_json::json!({"finding_figures": [{"kind": "x"}]})).is_err());
    }
}
