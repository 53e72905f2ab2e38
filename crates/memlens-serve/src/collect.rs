//! One collection: every Python process tree of the host (as `memlens ps` finds them), each read
//! as `memlens snapshot --tree --nonblocking` reads it (the ledger with each process's Python
//! view, never stopping a process) with its copy-on-write sharing measured, and, with
//! `--census`, each Python process's census (which stops it briefly).

use std::collections::{BTreeMap, BTreeSet};

use memlens_cpython::views::mode;
use memlens_ledger::tree::TreeLedger;
use memlens_model::ledger::{Amounts, ProcessLedger};

use crate::expo::Spec;
use crate::metrics::{self as m, Families};
use crate::Config;

/// Bytes of the command line kept in `memlens_process_info` (the rest is cut, at a character
/// boundary).
pub const CMDLINE_LABEL_BYTES: usize = 200;

/// Counts that grow over the collector's life (exported as counters).
#[derive(Debug, Default)]
pub struct Totals {
    /// Failed reads by what was read.
    pub failures: BTreeMap<&'static str, u64>,
    /// Processes left out by reason.
    pub skipped: BTreeMap<&'static str, u64>,
}

/// What `memlens_read_failures_total{what}` counts (each exported from the start, at 0).
pub const FAILURE_KINDS: [&str; 6] = [
    "process_list",
    "tree",
    "python_view",
    "pagemap",
    "kpagecount",
    "census",
];
/// Why `memlens_targets_skipped_total{reason}` counts a process.
pub const SKIP_REASONS: [&str; 3] = ["gone", "permission", "limit"];

impl Totals {
    /// Every count at 0.
    pub fn new() -> Totals {
        Totals {
            failures: FAILURE_KINDS.iter().map(|k| (*k, 0)).collect(),
            skipped: SKIP_REASONS.iter().map(|k| (*k, 0)).collect(),
        }
    }

    fn fail(&mut self, what: &'static str, n: u64) {
        *self.failures.entry(what).or_default() += n;
    }
    fn skip(&mut self, why: &'static str, n: u64) {
        *self.skipped.entry(why).or_default() += n;
    }
}

/// What one collection found: the families (memlens's own figures are added by the caller)
/// and the processes in them.
#[derive(Debug)]
pub struct Collected {
    /// The families.
    pub families: Families,
    /// Processes exported.
    pub processes: usize,
}

/// The process and tree families, declared in this order so that every exposition lists them
/// alike (with HELP and TYPE even when no process has a sample).
const DECLARED: &[&Spec] = &[
    &m::PSS,
    &m::USS,
    &m::RSS,
    &m::SWAP,
    &m::PSS_TOTAL,
    &m::USS_TOTAL,
    &m::RSS_TOTAL,
    &m::SWAP_TOTAL,
    &m::INFO,
    &m::THREADS,
    &m::SHARED,
    &m::COPIED,
    &m::OWN,
    &m::GC_COLLECTIONS,
    &m::GC_COLLECTED,
    &m::GC_UNCOLLECTABLE,
    &m::GC_PENDING,
    &m::GC_THRESHOLD,
    &m::GC_FROZEN,
    &m::PYMALLOC_USED,
    &m::PYMALLOC_FREE,
    &m::PYMALLOC_ARENAS,
    &m::MODULES,
    &m::TREE_PSS,
    &m::TREE_USS,
    &m::TREE_RSS,
    &m::TREE_SWAP,
    &m::TREE_EXCLUSIVE,
    &m::TREE_PROCESSES,
    &m::CGROUP_USAGE,
    &m::CGROUP_LIMIT,
];

/// Takes one collection. Returns `None` when `stop` said so before it was complete (a half
/// collection is never served).
pub fn collect(cfg: &Config, totals: &mut Totals, stop: &dyn Fn() -> bool) -> Option<Collected> {
    let mut fam = Families::default();
    for s in DECLARED {
        fam.declare(s);
    }
    if cfg.census {
        fam.declare(&m::CENSUS_OBJECTS);
        fam.declare(&m::CENSUS_BYTES);
    }
    let report = match memlens_ledger::host::ps(false) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("cannot list the processes: {e}");
            totals.fail("process_list", 1);
            return Some(Collected {
                families: fam,
                processes: 0,
            });
        }
    };
    totals.skip("permission", u64::from(report.unreadable));
    let mut seen: BTreeSet<u32> = BTreeSet::new();
    let mut cgroups: BTreeSet<Vec<u8>> = BTreeSet::new();
    for tree in &report.trees {
        if stop() {
            return None;
        }
        if seen.contains(&tree.root) {
            continue; // read already, below another tree's root
        }
        let room = cfg.max_processes.saturating_sub(seen.len());
        if room == 0 {
            totals.skip("limit", tree.processes.len() as u64);
            continue;
        }
        let Some(mut ledger) = read_tree(tree.root, room, totals) else {
            continue;
        };
        ledger.processes.retain(|p| !seen.contains(&p.pid));
        for p in &ledger.processes {
            seen.insert(p.pid);
            process_figures(&mut fam, p, ledger.root, totals);
            if cfg.census && p.python.is_some() {
                census(&mut fam, p, cfg, totals);
            }
        }
        tree_figures(&mut fam, &ledger, totals);
        if let Some(cg) = &ledger.cgroup {
            if cgroups.insert(cg.path.clone()) {
                let label = vec![("cgroup", String::from_utf8_lossy(&cg.path).into_owned())];
                fam.int(&m::CGROUP_USAGE, label.clone(), cg.usage);
                if let Some(limit) = cg.limit {
                    fam.int(&m::CGROUP_LIMIT, label, limit);
                }
            }
        }
    }
    Some(Collected {
        families: fam,
        processes: seen.len(),
    })
}

/// The ledger of the tree under `root` with its Python views (read without stopping anyone),
/// cut to `room` processes, its sharing measured; `None` (counted) when it cannot be read.
fn read_tree(root: u32, room: usize, totals: &mut Totals) -> Option<TreeLedger> {
    let mut ledger = match memlens_ledger::with_python::snapshot_with_python(root, true, true) {
        Ok(l) => l,
        Err(memlens_procfs::Error::ProcessGone { .. }) => {
            totals.skip("gone", 1);
            return None;
        }
        Err(memlens_procfs::Error::PermissionDenied { .. }) => {
            totals.skip("permission", 1);
            return None;
        }
        Err(e) => {
            log::debug!("cannot read the tree of {root}: {e}");
            totals.fail("tree", 1);
            return None;
        }
    };
    for s in &ledger.skipped {
        totals.skip(
            if s.permission_denied {
                "permission"
            } else {
                "gone"
            },
            1,
        );
    }
    if ledger.processes.len() > room {
        // Parents come before their children: the cut keeps each kept worker's parent.
        totals.skip("limit", (ledger.processes.len() - room) as u64);
        let mut kept = std::mem::take(&mut ledger.processes);
        kept.truncate(room);
        let skipped = std::mem::take(&mut ledger.skipped);
        ledger = memlens_model::tree::assemble(root, kept, ledger.cgroup.take());
        ledger.skipped = skipped;
    }
    memlens_ledger::sharing::measure(&mut ledger);
    Some(ledger)
}

fn who(p: &ProcessLedger) -> Vec<(&'static str, String)> {
    vec![("pid", p.pid.to_string()), ("comm", p.name.clone())]
}

fn with(
    mut l: Vec<(&'static str, String)>,
    k: &'static str,
    v: String,
) -> Vec<(&'static str, String)> {
    l.push((k, v));
    l
}

fn amounts(
    fam: &mut Families,
    specs: [&'static Spec; 4],
    labels: &[(&'static str, String)],
    a: &Amounts,
) {
    for (spec, v) in specs.into_iter().zip([a.pss, a.uss, a.rss, a.swap]) {
        fam.int(spec, labels.to_vec(), v);
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn truncate_label(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn process_figures(fam: &mut Families, p: &ProcessLedger, root: u32, totals: &mut Totals) {
    let id = who(p);
    for row in &p.ledger {
        let l = with(id.clone(), "category", row.category.name().to_string());
        amounts(fam, [&m::PSS, &m::USS, &m::RSS, &m::SWAP], &l, &row.amounts);
    }
    amounts(
        fam,
        [&m::PSS_TOTAL, &m::USS_TOTAL, &m::RSS_TOTAL, &m::SWAP_TOTAL],
        &id,
        &p.totals,
    );
    let mut info = id.clone();
    info.push(("ppid", p.ppid.to_string()));
    info.push(("root", root.to_string()));
    info.push(("cmdline", truncate_label(&p.cmdline, CMDLINE_LABEL_BYTES)));
    let version = p.python.as_ref().and_then(|py| py.version.clone());
    info.push(("python_version", version.unwrap_or_default()));
    fam.int(&m::INFO, info, 1);
    fam.int(&m::THREADS, id.clone(), u64::from(p.threads));
    if let Some(f) = p.sharing.as_ref().and_then(|s| s.figures.as_ref()) {
        totals.fail("pagemap", f.failed_reads);
        for r in &f.by_category {
            let l = with(id.clone(), "category", r.category.name().to_string());
            fam.int(&m::SHARED, l.clone(), r.shared_with_parent);
            fam.int(&m::COPIED, l.clone(), r.copied);
            fam.int(&m::OWN, l, r.own);
        }
    }
    let Some(py) = &p.python else { return };
    if py.gc.is_none() && py.pymalloc.is_none() && py.modules.is_none() {
        totals.fail("python_view", 1);
    }
    if let Some(gc) = &py.gc {
        for (i, g) in gc.generations.iter().enumerate() {
            let l = with(id.clone(), "generation", i.to_string());
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            fam.int(&m::GC_COLLECTIONS, l.clone(), n(g.collections));
            fam.int(&m::GC_COLLECTED, l.clone(), n(g.collected));
            fam.int(&m::GC_UNCOLLECTABLE, l.clone(), n(g.uncollectable));
            fam.push(
                &m::GC_PENDING,
                l.clone(),
                crate::expo::Value::Float(g.count as f64),
            );
            fam.push(
                &m::GC_THRESHOLD,
                l,
                crate::expo::Value::Float(g.threshold as f64),
            );
        }
        fam.int(&m::GC_FROZEN, id.clone(), gc.frozen);
    }
    if let Some(pm) = &py.pymalloc {
        fam.int(&m::PYMALLOC_USED, id.clone(), pm.used_bytes);
        fam.int(&m::PYMALLOC_FREE, id.clone(), pm.free_bytes);
        fam.int(&m::PYMALLOC_ARENAS, id.clone(), pm.arenas);
    }
    if let Some(md) = &py.modules {
        fam.int(&m::MODULES, id, md.count);
    }
}

fn tree_figures(fam: &mut Families, t: &TreeLedger, totals: &mut Totals) {
    let comm = t
        .processes
        .iter()
        .find(|p| p.pid == t.root)
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let l = vec![("root", t.root.to_string()), ("comm", comm)];
    let specs = [&m::TREE_PSS, &m::TREE_USS, &m::TREE_RSS, &m::TREE_SWAP];
    amounts(fam, specs, &l, &t.totals);
    fam.int(&m::TREE_PROCESSES, l.clone(), t.processes.len() as u64);
    if let Some(x) = &t.exclusive {
        totals.fail("kpagecount", x.failed_reads);
        if let Some(bytes) = x.bytes {
            fam.int(&m::TREE_EXCLUSIVE, l, bytes);
        }
    }
}

/// The census of one Python process (it is stopped briefly, to prove the walk consistent):
/// its `--census-top` types by bytes.
fn census(fam: &mut Families, p: &ProcessLedger, cfg: &Config, totals: &mut Totals) {
    let result = memlens_cpython::Session::attach(p.pid)
        .and_then(|s| s.census_capped(mode(false), cfg.census_max_memory));
    let mut c = match result {
        Ok((c, _)) => c,
        Err(e) if e.is_process_gone() => {
            totals.skip("gone", 1);
            return;
        }
        Err(e) => {
            log::debug!("no census of {}: {e}", p.pid);
            totals.fail("census", 1);
            return;
        }
    };
    c.types
        .sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.type_name.cmp(&b.type_name)));
    for t in c.types.iter().take(cfg.census_top) {
        let l = with(who(p), "type", t.type_name.clone());
        fam.int(&m::CENSUS_OBJECTS, l.clone(), t.count);
        fam.int(&m::CENSUS_BYTES, l, t.bytes);
    }
}

/// memlens's own figures of a complete collection.
pub fn self_figures(fam: &mut Families, s: &SelfFigures, totals: &Totals) {
    use crate::expo::Value::Float;
    fam.int(&m::COLLECTIONS, vec![], s.collections);
    fam.push(&m::COLLECTION_DURATION, vec![], Float(s.duration));
    fam.push(&m::COLLECTION_CPU, vec![], Float(s.cpu));
    fam.push(&m::COLLECTOR_CPU, vec![], Float(s.cpu_total));
    fam.push(&m::COLLECTION_TIME, vec![], Float(s.completed_unix));
    fam.push(&m::CPU_BUDGET, vec![], Float(s.budget));
    fam.int(&m::PROCESSES, vec![], s.processes as u64);
    fam.declare(&m::READ_FAILURES);
    for (what, n) in &totals.failures {
        fam.int(&m::READ_FAILURES, vec![("what", what.to_string())], *n);
    }
    fam.declare(&m::SKIPPED);
    for (why, n) in &totals.skipped {
        fam.int(&m::SKIPPED, vec![("reason", why.to_string())], *n);
    }
}

/// memlens's own figures of a collection.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelfFigures {
    /// Complete collections so far (this one included).
    pub collections: u64,
    /// This collection's wall seconds.
    pub duration: f64,
    /// This collection's CPU seconds.
    pub cpu: f64,
    /// CPU seconds of every collection.
    pub cpu_total: f64,
    /// When it completed (Unix seconds).
    pub completed_unix: f64,
    /// The budget (share of a core).
    pub budget: f64,
    /// Processes exported.
    pub processes: usize,
}
