//! Every metric `memlens serve` exports (documented one by one in `docs/metrics.md`), and a set
//! of families under construction.

use crate::expo::{Family, Kind, Sample, Spec, Value};

macro_rules! spec {
    ($id:ident, $name:literal, $kind:ident, $unit:expr, $help:literal) => {
        #[doc = $help]
        pub static $id: Spec = Spec {
            name: $name,
            help: $help,
            kind: Kind::$kind,
            unit: $unit,
        };
    };
}

const B: Option<&str> = Some("bytes");
const S: Option<&str> = Some("seconds");

// Per process and ledger category (labels pid, comm, category).
spec!(PSS, "memlens_process_pss_bytes", Gauge, B, "Proportional set size of the process in a ledger category (sums to the process total; sums over processes without double counting).");
spec!(
    USS,
    "memlens_process_uss_bytes",
    Gauge,
    B,
    "Unique set size (private resident pages) of the process in a ledger category."
);
spec!(RSS, "memlens_process_rss_bytes", Gauge, B, "Resident set size of the process in a ledger category (shared pages counted in every process).");
spec!(
    SWAP,
    "memlens_process_swap_bytes",
    Gauge,
    B,
    "Swapped-out bytes of the process in a ledger category."
);
// Per process (labels pid, comm).
spec!(
    PSS_TOTAL,
    "memlens_process_total_pss_bytes",
    Gauge,
    B,
    "Proportional set size of the process (all categories)."
);
spec!(
    USS_TOTAL,
    "memlens_process_total_uss_bytes",
    Gauge,
    B,
    "Unique set size of the process (all categories)."
);
spec!(
    RSS_TOTAL,
    "memlens_process_total_rss_bytes",
    Gauge,
    B,
    "Resident set size of the process (all categories)."
);
spec!(
    SWAP_TOTAL,
    "memlens_process_total_swap_bytes",
    Gauge,
    B,
    "Swapped-out bytes of the process (all categories)."
);
spec!(INFO, "memlens_process_info", Gauge, None, "Always 1: the process's parent, tree root, command line (truncated to 200 bytes) and Python version.");
spec!(
    THREADS,
    "memlens_process_threads",
    Gauge,
    None,
    "Threads of the process."
);
// Copy-on-write sharing of a forked process with its parent (labels pid, comm, category).
spec!(SHARED, "memlens_process_shared_with_parent_bytes", Gauge, B, "Resident bytes the process still shares with its parent (the same physical page, from pagemap).");
spec!(
    COPIED,
    "memlens_process_copied_bytes",
    Gauge,
    B,
    "Private resident bytes at addresses the parent also maps (copied on write since the fork)."
);
spec!(
    OWN,
    "memlens_process_own_bytes",
    Gauge,
    B,
    "Resident bytes at addresses the parent does not map."
);
// The Python view (labels pid, comm [, generation]).
spec!(
    GC_COLLECTIONS,
    "memlens_python_gc_collections",
    Counter,
    None,
    "Collections of a GC generation (gc.get_stats()[i]['collections'])."
);
spec!(
    GC_COLLECTED,
    "memlens_python_gc_collected_objects",
    Counter,
    None,
    "Objects a GC generation collected (gc.get_stats()[i]['collected'])."
);
spec!(
    GC_UNCOLLECTABLE,
    "memlens_python_gc_uncollectable_objects",
    Counter,
    None,
    "Objects a GC generation found uncollectable (gc.get_stats()[i]['uncollectable'])."
);
spec!(GC_PENDING, "memlens_python_gc_pending", Gauge, None, "gc.get_count()[i]: allocations minus deallocations (generation 0) or collections of the younger generation since this one's last.");
spec!(
    GC_THRESHOLD,
    "memlens_python_gc_threshold",
    Gauge,
    None,
    "gc.get_threshold()[i]."
);
spec!(
    GC_FROZEN,
    "memlens_python_gc_frozen_objects",
    Gauge,
    None,
    "Objects in the permanent generation (gc.get_freeze_count())."
);
spec!(
    PYMALLOC_USED,
    "memlens_python_pymalloc_used_bytes",
    Gauge,
    B,
    "Bytes in allocated pymalloc blocks."
);
spec!(PYMALLOC_FREE, "memlens_python_pymalloc_free_bytes", Gauge, B, "Bytes of pymalloc arenas not in allocated blocks (free blocks, empty pools, headers): fragmentation.");
spec!(
    PYMALLOC_ARENAS,
    "memlens_python_pymalloc_arenas",
    Gauge,
    None,
    "pymalloc arenas allocated now."
);
spec!(
    MODULES,
    "memlens_python_modules",
    Gauge,
    None,
    "len(sys.modules)."
);
// The census, only with --census (labels pid, comm, type).
spec!(
    CENSUS_OBJECTS,
    "memlens_python_census_objects",
    Gauge,
    None,
    "Objects of a type (the --census-top types by bytes of each process)."
);
spec!(
    CENSUS_BYTES,
    "memlens_python_census_bytes",
    Gauge,
    B,
    "sys.getsizeof bytes of a type's objects (the --census-top types by bytes of each process)."
);
// Trees (labels root, comm).
spec!(
    TREE_PSS,
    "memlens_tree_pss_bytes",
    Gauge,
    B,
    "PSS summed over a process tree (the honest total)."
);
spec!(
    TREE_USS,
    "memlens_tree_uss_bytes",
    Gauge,
    B,
    "USS summed over a process tree."
);
spec!(
    TREE_RSS,
    "memlens_tree_rss_bytes",
    Gauge,
    B,
    "RSS summed over a process tree (overcounts shared pages)."
);
spec!(
    TREE_SWAP,
    "memlens_tree_swap_bytes",
    Gauge,
    B,
    "Swap summed over a process tree."
);
spec!(TREE_EXCLUSIVE, "memlens_tree_exclusive_bytes", Gauge, B, "Resident bytes mapped by the tree's processes only (freed if the whole tree exits), from /proc/kpagecount.");
spec!(
    TREE_PROCESSES,
    "memlens_tree_processes",
    Gauge,
    None,
    "Processes in the tree."
);
// Memory cgroups of the trees (label cgroup).
spec!(
    CGROUP_USAGE,
    "memlens_cgroup_usage_bytes",
    Gauge,
    B,
    "Memory usage of a cgroup that holds a tree's root."
);
spec!(
    CGROUP_LIMIT,
    "memlens_cgroup_limit_bytes",
    Gauge,
    B,
    "Memory limit (memory.max) of that cgroup; absent when unlimited."
);
// memlens itself.
spec!(
    COLLECTIONS,
    "memlens_collections",
    Counter,
    None,
    "Complete collections since memlens serve started."
);
spec!(
    COLLECTION_DURATION,
    "memlens_collection_duration_seconds",
    Gauge,
    S,
    "Wall time of the last complete collection (a scrape only serves its stored figures)."
);
spec!(
    COLLECTION_CPU,
    "memlens_collection_cpu_seconds",
    Gauge,
    S,
    "CPU time memlens spent on the last complete collection."
);
spec!(
    COLLECTOR_CPU,
    "memlens_collector_cpu_seconds",
    Counter,
    S,
    "CPU time memlens spent collecting since it started."
);
spec!(
    COLLECTION_TIME,
    "memlens_collection_timestamp_seconds",
    Gauge,
    S,
    "Unix time the figures served were complete."
);
spec!(
    COLLECTION_AGE,
    "memlens_collection_age_seconds",
    Gauge,
    S,
    "Age of the figures served, at the scrape."
);
spec!(
    CPU_BUDGET,
    "memlens_cpu_budget_ratio",
    Gauge,
    None,
    "The share of one core memlens may spend collecting (--cpu-budget)."
);
spec!(
    PROCESSES,
    "memlens_processes",
    Gauge,
    None,
    "Processes in the figures served."
);
spec!(READ_FAILURES, "memlens_read_failures", Counter, None, "Reads that failed since start, by what was read (a tree, a process, pagemap pages, kpagecount frames, a census).");
spec!(SKIPPED, "memlens_targets_skipped", Counter, None, "Processes left out of a collection since start, by reason (gone: exited while read; permission; limit: beyond --max-processes).");

/// Every metric, for the documentation's test.
pub const ALL: &[&Spec] = &[
    &PSS,
    &USS,
    &RSS,
    &SWAP,
    &PSS_TOTAL,
    &USS_TOTAL,
    &RSS_TOTAL,
    &SWAP_TOTAL,
    &INFO,
    &THREADS,
    &SHARED,
    &COPIED,
    &OWN,
    &GC_COLLECTIONS,
    &GC_COLLECTED,
    &GC_UNCOLLECTABLE,
    &GC_PENDING,
    &GC_THRESHOLD,
    &GC_FROZEN,
    &PYMALLOC_USED,
    &PYMALLOC_FREE,
    &PYMALLOC_ARENAS,
    &MODULES,
    &CENSUS_OBJECTS,
    &CENSUS_BYTES,
    &TREE_PSS,
    &TREE_USS,
    &TREE_RSS,
    &TREE_SWAP,
    &TREE_EXCLUSIVE,
    &TREE_PROCESSES,
    &CGROUP_USAGE,
    &CGROUP_LIMIT,
    &COLLECTIONS,
    &COLLECTION_DURATION,
    &COLLECTION_CPU,
    &COLLECTOR_CPU,
    &COLLECTION_TIME,
    &COLLECTION_AGE,
    &CPU_BUDGET,
    &PROCESSES,
    &READ_FAILURES,
    &SKIPPED,
];

/// Families under construction, in the order of their first sample (or declaration).
#[derive(Debug, Default)]
pub struct Families {
    list: Vec<Family>,
}

impl Families {
    /// Declares a family (so it is shown, with HELP and TYPE, even without samples).
    pub fn declare(&mut self, spec: &'static Spec) -> &mut Family {
        let i = match self.list.iter().position(|f| std::ptr::eq(f.spec, spec)) {
            Some(i) => i,
            None => {
                self.list.push(Family {
                    spec,
                    samples: Vec::new(),
                });
                self.list.len() - 1
            }
        };
        &mut self.list[i]
    }

    /// Adds a sample.
    pub fn push(&mut self, spec: &'static Spec, labels: Vec<(&'static str, String)>, v: Value) {
        self.declare(spec).samples.push(Sample { labels, value: v });
    }

    /// Adds an integer sample.
    pub fn int(&mut self, spec: &'static Spec, labels: Vec<(&'static str, String)>, v: u64) {
        self.push(spec, labels, Value::Int(v));
    }

    /// The families so far.
    pub fn list(&self) -> &[Family] {
        &self.list
    }

    /// The families.
    pub fn into_vec(self) -> Vec<Family> {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample name of a family (counters end with `_total`).
    fn sample_name(s: &Spec) -> String {
        match s.kind {
            Kind::Counter => format!("{}_total", s.name),
            Kind::Gauge => s.name.to_string(),
        }
    }

    /// docs/metrics.md lists every metric in its tables, and nothing else; names carry their
    /// unit.
    #[test]
    fn the_documentation_lists_exactly_the_metrics() {
        let doc = include_str!("../../../docs/metrics.md");
        let documented: std::collections::BTreeSet<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect();
        let exported: std::collections::BTreeSet<String> =
            ALL.iter().map(|s| sample_name(s)).collect();
        assert_eq!(documented, exported);
        for s in ALL {
            assert!(s.name.starts_with("memlens_"), "{}", s.name);
            if let Some(u) = s.unit {
                assert!(s.name.ends_with(&format!("_{u}")), "{}", s.name);
            }
            assert!(
                !s.name.ends_with("_total") && !s.name.ends_with("_count"),
                "{}",
                s.name
            );
        }
    }
}
