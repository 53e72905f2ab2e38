//! `memlens diff A B`: what changed between two ledgers (two `snapshot --json` documents, or a
//! recording's ledgers), as plain data.
//!
//! [`Snapshot`] reads the documented JSON contract of `snapshot --json` (docs/json.md) back:
//! only the keys a diff needs, every other key ignored, so a snapshot written by this version
//! or a later one that adds keys reads the same. [`diff`] is a pure function of two of them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::advice::Advice;
use crate::tree::Finding;

/// Resident, proportional, unique and swapped bytes as `snapshot --json` prints them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// RSS.
    pub rss: u64,
    /// PSS.
    pub pss: u64,
    /// USS.
    pub uss: u64,
    /// Swap.
    pub swap: u64,
}

/// One ledger row (a category) of a process: its name as printed and its figures.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RowIn {
    /// Category name (DESIGN §3; kept as text, so a later version's category still reads).
    pub category: String,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// One type of a census.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TypeIn {
    /// `type(o).__name__` (untrusted).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Objects.
    pub count: u64,
    /// Bytes (`sys.getsizeof` sum).
    pub bytes: u64,
}

/// One package of `--packages`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PackageIn {
    /// Distribution name (untrusted).
    pub name: String,
    /// Bytes of its Python objects.
    pub object_bytes: u64,
    /// Its objects.
    pub objects: u64,
    /// Its extension modules' figures, if any.
    #[serde(default)]
    pub extension: Option<Figures>,
}

/// `python.packages` of a process (`snapshot --packages`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PackagesIn {
    /// By package.
    #[serde(default)]
    pub packages: Vec<PackageIn>,
    /// The census by type taken for `--packages` (absent in documents written before it was).
    #[serde(default)]
    pub types: Option<Vec<TypeIn>>,
}

/// The `python` object of a process, as far as a diff reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PythonIn {
    /// `python.packages`, with `--packages`.
    #[serde(default)]
    pub packages: Option<PackagesIn>,
}

/// One process of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProcessIn {
    /// PID.
    pub pid: u32,
    /// Parent PID.
    pub ppid: u32,
    /// comm (untrusted).
    pub name: String,
    /// Command line (untrusted).
    pub cmdline: String,
    /// Its totals.
    pub totals: Figures,
    /// Its ledger rows.
    pub ledger: Vec<RowIn>,
    /// Its Python view, when read.
    #[serde(default)]
    pub python: Option<PythonIn>,
}

/// A `snapshot --json` document (one process or a tree), read back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Snapshot {
    /// The root PID.
    pub root: u32,
    /// Tree totals.
    pub totals: Figures,
    /// Processes.
    pub processes: Vec<ProcessIn>,
    /// Findings as data.
    #[serde(default)]
    pub finding_figures: Vec<Finding>,
    /// Census by type (tree-wide) supplied from elsewhere (a recording's census table); when
    /// `None`, the processes' `python.packages.types` are used.
    #[serde(skip)]
    pub census: Option<Vec<TypeIn>>,
    /// `census` holds only each census's largest types (a recording keeps its top N): a type
    /// missing on one side is then unknown there, not zero, and is left out of the comparison.
    #[serde(skip)]
    pub census_top_only: bool,
    /// Why this side has no census, said instead of the generic reason.
    #[serde(skip)]
    pub census_absent: Option<String>,
    /// The advice (`snapshot --json` since it has one; absent in recordings and older files).
    #[serde(default)]
    pub advice: Option<Vec<Advice>>,
}

/// A figure on each side and its change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Change {
    /// In A.
    pub a: u64,
    /// In B.
    pub b: u64,
    /// `b - a`, saturated to `i64`.
    pub delta: i64,
}

impl Change {
    /// The change from `a` to `b`.
    pub fn new(a: u64, b: u64) -> Change {
        let delta = if b >= a {
            i64::try_from(b - a).unwrap_or(i64::MAX)
        } else {
            i64::try_from(a - b).map_or(i64::MIN, |d| -d)
        };
        Change { a, b, delta }
    }
}

/// The four figures' changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FiguresChange {
    /// RSS.
    pub rss: Change,
    /// PSS.
    pub pss: Change,
    /// USS.
    pub uss: Change,
    /// Swap.
    pub swap: Change,
}

impl FiguresChange {
    fn new(a: Figures, b: Figures) -> FiguresChange {
        FiguresChange {
            rss: Change::new(a.rss, b.rss),
            pss: Change::new(a.pss, b.pss),
            uss: Change::new(a.uss, b.uss),
            swap: Change::new(a.swap, b.swap),
        }
    }
}

/// A category's change over the whole tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryChange {
    /// Category name.
    pub category: String,
    /// Its figures' changes.
    #[serde(flatten)]
    pub change: FiguresChange,
}

/// How two processes were paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// The same PID and command line on both sides.
    Pid,
    /// Each side's root (the process the snapshot was asked for).
    Root,
    /// The same command line (PIDs differ: another run).
    Cmdline,
}

/// A process present on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessChange {
    /// PID in A.
    pub pid_a: u32,
    /// PID in B.
    pub pid_b: u32,
    /// comm in B (untrusted).
    pub name: String,
    /// Command line in B (untrusted).
    pub cmdline: String,
    /// How the pair was made.
    pub matched_by: MatchedBy,
    /// Its totals' changes.
    pub totals: FiguresChange,
}

/// A process on one side only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmatched {
    /// PID.
    pub pid: u32,
    /// comm (untrusted).
    pub name: String,
    /// Command line (untrusted).
    pub cmdline: String,
    /// Its totals.
    pub totals: Figures,
}

/// A type whose count or bytes changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeChange {
    /// `type(o).__name__` (untrusted).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Objects.
    pub count: Change,
    /// Bytes.
    pub bytes: Change,
    /// `"a"` or `"b"`: the side whose census kept only its largest types (a recording's top
    /// 20 by bytes) and does not list this one; its figures there are taken as 0, though they
    /// may be up to that side's smallest listed type. Absent when both sides list it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absent_from: Option<&'static str>,
}

/// The census compared, when both sides carry one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CensusChange {
    /// Objects counted on each side.
    pub objects: Change,
    /// Their bytes.
    pub bytes: Change,
    /// Types whose bytes grew (or, bytes equal, whose count grew), most bytes first.
    pub grown: Vec<TypeChange>,
    /// Types whose bytes shrank (or, bytes equal, whose count shrank), most bytes first.
    pub shrunk: Vec<TypeChange>,
    /// A side kept only its largest types (a recording's top 20 by bytes): `objects` and
    /// `bytes` sum the listed types only, and a type one side does not list says so
    /// (`absent_from`).
    pub top_only: bool,
}

/// A package whose memory changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageChange {
    /// Distribution name (untrusted).
    pub name: String,
    /// Bytes of its Python objects.
    pub object_bytes: Change,
    /// Its objects.
    pub objects: Change,
    /// PSS of its extension modules.
    pub extension_pss: Change,
}

/// Everything `memlens diff` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Root PIDs of A and B.
    pub roots: (u32, u32),
    /// Tree totals.
    pub totals: FiguresChange,
    /// Per category, largest PSS change (either sign) first; categories on either side.
    pub categories: Vec<CategoryChange>,
    /// Processes on both sides, largest PSS change first.
    pub processes: Vec<ProcessChange>,
    /// Processes in A only (exited).
    pub only_in_a: Vec<Unmatched>,
    /// Processes in B only (new).
    pub only_in_b: Vec<Unmatched>,
    /// The census compared, or `None` (see `census_absent`).
    pub census: Option<CensusChange>,
    /// Why there is no census comparison (`None` when there is one).
    pub census_absent: Option<String>,
    /// Packages (`--packages` on both sides), largest object-bytes change first; `None` when
    /// a side has none.
    pub packages: Option<Vec<PackageChange>>,
    /// Findings of B that A did not have.
    pub findings_appeared: Vec<Finding>,
    /// Findings of A that B no longer has.
    pub findings_gone: Vec<Finding>,
    /// Advice of B whose kind and subject A lacks (both sides must carry advice).
    pub advice_appeared: Vec<Advice>,
    /// Advice of A whose kind and subject B lacks.
    pub advice_gone: Vec<Advice>,
    /// Why advice is not compared (a side carries none: a recording, an older snapshot), or
    /// `None` when it is.
    pub advice_absent: Option<String>,
    /// Neither side carries advice (the text then says nothing of it).
    #[serde(skip)]
    pub advice_on_neither: bool,
}

/// At most this many types in each of `grown` and `shrunk`.
pub const TOP_TYPES: usize = 20;

/// Compares two snapshots.
pub fn diff(a: &Snapshot, b: &Snapshot) -> Diff {
    let (processes, only_in_a, only_in_b) = match_processes(a, b);
    let (census, census_absent) = match (census_of(a), census_of(b)) {
        (Ok(ca), Ok(cb)) => (
            Some(census_change(
                &ca,
                &cb,
                (a.census_top_only, b.census_top_only),
            )),
            None,
        ),
        (Err(why), _) => (None, Some(format!("A has no census: {why}"))),
        (_, Err(why)) => (None, Some(format!("B has no census: {why}"))),
    };
    Diff {
        roots: (a.root, b.root),
        totals: FiguresChange::new(a.totals, b.totals),
        categories: categories(a, b),
        processes,
        only_in_a,
        only_in_b,
        census,
        census_absent,
        packages: packages(a, b),
        findings_appeared: findings_missing(&b.finding_figures, &a.finding_figures),
        findings_gone: findings_missing(&a.finding_figures, &b.finding_figures),
        advice_appeared: advice_missing(&b.advice, &a.advice),
        advice_gone: advice_missing(&a.advice, &b.advice),
        advice_absent: match (&a.advice, &b.advice) {
            (Some(_), Some(_)) => None,
            (None, _) => Some("A carries no advice (a recording, or an older snapshot)".into()),
            (_, None) => Some("B carries no advice (a recording, or an older snapshot)".into()),
        },
        advice_on_neither: a.advice.is_none() && b.advice.is_none(),
    }
}

/// The advice of `x` whose id and subject `y` lacks, when both carry advice.
fn advice_missing(x: &Option<Vec<Advice>>, y: &Option<Vec<Advice>>) -> Vec<Advice> {
    let (Some(x), Some(y)) = (x, y) else {
        return Vec::new();
    };
    let have: BTreeSet<(&str, &str)> = y
        .iter()
        .map(|a| (a.id.as_str(), a.subject.as_str()))
        .collect();
    x.iter()
        .filter(|a| !have.contains(&(a.id.as_str(), a.subject.as_str())))
        .cloned()
        .collect()
}

fn by_category(s: &Snapshot) -> BTreeMap<&str, Figures> {
    let mut m: BTreeMap<&str, Figures> = BTreeMap::new();
    for row in s.processes.iter().flat_map(|p| &p.ledger) {
        let f = m.entry(row.category.as_str()).or_default();
        f.rss = f.rss.saturating_add(row.figures.rss);
        f.pss = f.pss.saturating_add(row.figures.pss);
        f.uss = f.uss.saturating_add(row.figures.uss);
        f.swap = f.swap.saturating_add(row.figures.swap);
    }
    m
}

fn categories(a: &Snapshot, b: &Snapshot) -> Vec<CategoryChange> {
    let (ma, mb) = (by_category(a), by_category(b));
    let names: BTreeSet<&str> = ma.keys().chain(mb.keys()).copied().collect();
    let mut out: Vec<CategoryChange> = names
        .into_iter()
        .map(|n| CategoryChange {
            category: n.to_string(),
            change: FiguresChange::new(
                ma.get(n).copied().unwrap_or_default(),
                mb.get(n).copied().unwrap_or_default(),
            ),
        })
        .collect();
    out.sort_by(|x, y| {
        y.change
            .pss
            .delta
            .unsigned_abs()
            .cmp(&x.change.pss.delta.unsigned_abs())
            .then_with(|| x.category.cmp(&y.category))
    });
    out
}

type Matched = (Vec<ProcessChange>, Vec<Unmatched>, Vec<Unmatched>);

/// Pairs processes: same PID and command line first, then the two roots, then equal command
/// lines in order of appearance.
fn match_processes(a: &Snapshot, b: &Snapshot) -> Matched {
    let mut pairs: Vec<(usize, usize, MatchedBy)> = Vec::new();
    let mut used_b = vec![false; b.processes.len()];
    let mut used_a = vec![false; a.processes.len()];
    let mut pair = |i: usize, j: usize, by, ua: &mut Vec<bool>, ub: &mut Vec<bool>| {
        ua[i] = true;
        ub[j] = true;
        pairs.push((i, j, by));
    };
    for (i, p) in a.processes.iter().enumerate() {
        if let Some(j) = b
            .processes
            .iter()
            .position(|q| q.pid == p.pid && q.cmdline == p.cmdline)
        {
            pair(i, j, MatchedBy::Pid, &mut used_a, &mut used_b);
        }
    }
    let ra = a.processes.iter().position(|p| p.pid == a.root);
    let rb = b.processes.iter().position(|p| p.pid == b.root);
    if let (Some(i), Some(j)) = (ra, rb) {
        if !used_a[i] && !used_b[j] {
            pair(i, j, MatchedBy::Root, &mut used_a, &mut used_b);
        }
    }
    for (i, p) in a.processes.iter().enumerate() {
        if used_a[i] {
            continue;
        }
        let free =
            (0..b.processes.len()).find(|&j| !used_b[j] && b.processes[j].cmdline == p.cmdline);
        if let Some(j) = free {
            pair(i, j, MatchedBy::Cmdline, &mut used_a, &mut used_b);
        }
    }
    let mut changes: Vec<ProcessChange> = pairs
        .into_iter()
        .map(|(i, j, by)| {
            let (p, q) = (&a.processes[i], &b.processes[j]);
            ProcessChange {
                pid_a: p.pid,
                pid_b: q.pid,
                name: q.name.clone(),
                cmdline: q.cmdline.clone(),
                matched_by: by,
                totals: FiguresChange::new(p.totals, q.totals),
            }
        })
        .collect();
    changes.sort_by(|x, y| {
        y.totals
            .pss
            .delta
            .unsigned_abs()
            .cmp(&x.totals.pss.delta.unsigned_abs())
            .then_with(|| x.pid_b.cmp(&y.pid_b))
    });
    let unmatched = |s: &Snapshot, used: &[bool]| -> Vec<Unmatched> {
        s.processes
            .iter()
            .zip(used)
            .filter(|(_, u)| !**u)
            .map(|(p, _)| Unmatched {
                pid: p.pid,
                name: p.name.clone(),
                cmdline: p.cmdline.clone(),
                totals: p.totals,
            })
            .collect()
    };
    let only_a = unmatched(a, &used_a);
    let only_b = unmatched(b, &used_b);
    (changes, only_a, only_b)
}

/// The tree's census by type name: the supplied one, else the sum of the processes'
/// `--packages` censuses; an error says why there is none.
fn census_of(s: &Snapshot) -> Result<BTreeMap<String, (u64, u64)>, String> {
    let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut add = |t: &TypeIn| {
        let e = m.entry(t.type_name.clone()).or_default();
        e.0 = e.0.saturating_add(t.count);
        e.1 = e.1.saturating_add(t.bytes);
    };
    if let Some(why) = &s.census_absent {
        return Err(why.clone());
    }
    if let Some(types) = &s.census {
        types.iter().for_each(&mut add);
        return Ok(m);
    }
    let mut any = false;
    for p in &s.processes {
        let types = p
            .python
            .as_ref()
            .and_then(|py| py.packages.as_ref())
            .and_then(|pk| pk.types.as_ref());
        if let Some(types) = types {
            any = true;
            types.iter().for_each(&mut add);
        }
    }
    if any {
        Ok(m)
    } else {
        Err("no process carries a census (snapshot without --packages, or a recording without --census-every)".into())
    }
}

fn census_change(
    a: &BTreeMap<String, (u64, u64)>,
    b: &BTreeMap<String, (u64, u64)>,
    top_only: (bool, bool),
) -> CensusChange {
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let (mut grown, mut shrunk) = (Vec::new(), Vec::new());
    for n in names {
        let absent_from = match (a.get(n), b.get(n)) {
            (None, _) if top_only.0 => Some("a"),
            (_, None) if top_only.1 => Some("b"),
            _ => None,
        };
        let (ca, ba) = a.get(n).copied().unwrap_or_default();
        let (cb, bb) = b.get(n).copied().unwrap_or_default();
        let t = TypeChange {
            type_name: n.clone(),
            count: Change::new(ca, cb),
            bytes: Change::new(ba, bb),
            absent_from,
        };
        match (t.bytes.delta.signum(), t.count.delta.signum()) {
            (1, _) | (0, 1) => grown.push(t),
            (-1, _) | (0, -1) => shrunk.push(t),
            _ => {}
        }
    }
    let order = |x: &TypeChange, y: &TypeChange| {
        y.bytes
            .delta
            .unsigned_abs()
            .cmp(&x.bytes.delta.unsigned_abs())
            .then_with(|| {
                y.count
                    .delta
                    .unsigned_abs()
                    .cmp(&x.count.delta.unsigned_abs())
            })
            .then_with(|| x.type_name.cmp(&y.type_name))
    };
    grown.sort_by(order);
    shrunk.sort_by(order);
    grown.truncate(TOP_TYPES);
    shrunk.truncate(TOP_TYPES);
    let sum = |m: &BTreeMap<String, (u64, u64)>| {
        m.values().fold((0u64, 0u64), |(c, b), v| {
            (c.saturating_add(v.0), b.saturating_add(v.1))
        })
    };
    let (sa, sb) = (sum(a), sum(b));
    CensusChange {
        objects: Change::new(sa.0, sb.0),
        bytes: Change::new(sa.1, sb.1),
        grown,
        shrunk,
        top_only: top_only.0 || top_only.1,
    }
}

/// Per package name over the tree: (object bytes, objects, extension PSS); `None` when no
/// process carries `--packages`.
fn packages_of(s: &Snapshot) -> Option<BTreeMap<&str, (u64, u64, u64)>> {
    let mut m: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    let mut any = false;
    for pk in s
        .processes
        .iter()
        .filter_map(|p| p.python.as_ref()?.packages.as_ref())
    {
        any = true;
        for p in &pk.packages {
            let e = m.entry(p.name.as_str()).or_default();
            e.0 = e.0.saturating_add(p.object_bytes);
            e.1 = e.1.saturating_add(p.objects);
            e.2 = e.2.saturating_add(p.extension.map_or(0, |x| x.pss));
        }
    }
    any.then_some(m)
}

fn packages(a: &Snapshot, b: &Snapshot) -> Option<Vec<PackageChange>> {
    let (ma, mb) = (packages_of(a)?, packages_of(b)?);
    let names: BTreeSet<&str> = ma.keys().chain(mb.keys()).copied().collect();
    let mut out: Vec<PackageChange> = names
        .into_iter()
        .map(|n| {
            let (oa, ca, ea) = ma.get(n).copied().unwrap_or_default();
            let (ob, cb, eb) = mb.get(n).copied().unwrap_or_default();
            PackageChange {
                name: n.to_string(),
                object_bytes: Change::new(oa, ob),
                objects: Change::new(ca, cb),
                extension_pss: Change::new(ea, eb),
            }
        })
        .filter(|p| p.object_bytes.delta != 0 || p.objects.delta != 0 || p.extension_pss.delta != 0)
        .collect();
    out.sort_by(|x, y| {
        let size = |p: &PackageChange| {
            p.object_bytes
                .delta
                .unsigned_abs()
                .saturating_add(p.extension_pss.delta.unsigned_abs())
        };
        size(y).cmp(&size(x)).then_with(|| x.name.cmp(&y.name))
    });
    Some(out)
}

/// A finding's identity across two ledgers: its kind and its subject (the category, the
/// extension, the worker), not its figures.
pub fn finding_id(f: &Finding) -> String {
    match f {
        Finding::LargestCategory { category, .. } => {
            format!("largest_category:{}", category.name())
        }
        Finding::LargestExtension { name, .. } => format!("largest_extension:{name}"),
        Finding::CopiedPythonHeap { pid, .. } => format!("copied_python_heap:{pid}"),
        other => kind_of(other).to_string(),
    }
}

fn kind_of(f: &Finding) -> &'static str {
    match f {
        Finding::SharedPages { .. } => "shared_pages",
        Finding::UniqueMemory { .. } => "unique_memory",
        Finding::LargestCategory { .. } => "largest_category",
        Finding::ThreadStacks { .. } => "thread_stacks",
        Finding::LargestExtension { .. } => "largest_extension",
        Finding::PymallocFreeSpace { .. } => "pymalloc_free_space",
        Finding::Swapped { .. } => "swapped",
        Finding::CgroupLimit { .. } => "cgroup_limit",
        Finding::CgroupUnlimited { .. } => "cgroup_unlimited",
        Finding::OomKills { .. } => "oom_kills",
        Finding::CopiedPythonHeap { .. } => "copied_python_heap",
    }
}

/// Findings of `from` whose identity [`finding_id`] is not among `other`'s.
fn findings_missing(from: &[Finding], other: &[Finding]) -> Vec<Finding> {
    let ids: BTreeSet<String> = other.iter().map(finding_id).collect();
    from.iter()
        .filter(|f| !ids.contains(&finding_id(f)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, cmdline: &str, heap: u64) -> ProcessIn {
        ProcessIn {
            pid,
            ppid: 1,
            name: "python3".into(),
            cmdline: cmdline.into(),
            totals: Figures {
                rss: heap,
                pss: heap,
                uss: heap,
                swap: 0,
            },
            ledger: vec![RowIn {
                category: "native-heap".into(),
                figures: Figures {
                    rss: heap,
                    pss: heap,
                    uss: heap,
                    swap: 0,
                },
            }],
            python: None,
        }
    }

    fn snap(root: u32, ps: Vec<ProcessIn>) -> Snapshot {
        let pss = ps.iter().map(|p| p.totals.pss).sum();
        Snapshot {
            root,
            totals: Figures {
                rss: pss,
                pss,
                uss: pss,
                swap: 0,
            },
            processes: ps,
            finding_figures: vec![],
            census: None,
            census_top_only: false,
            census_absent: None,
            advice: None,
        }
    }

    #[test]
    fn change_is_signed_and_saturates() {
        assert_eq!(Change::new(10, 4).delta, -6);
        assert_eq!(Change::new(4, 10).delta, 6);
        assert_eq!(Change::new(0, u64::MAX).delta, i64::MAX);
        assert_eq!(Change::new(u64::MAX, 0).delta, i64::MIN);
    }

    #[test]
    fn processes_pair_by_pid_then_root_then_cmdline() {
        let a = snap(
            10,
            vec![
                process(10, "srv", 100),
                process(11, "w", 5),
                process(12, "gone", 1),
            ],
        );
        let b = snap(
            20,
            vec![
                process(20, "srv", 300),
                process(21, "w", 7),
                process(22, "new", 2),
            ],
        );
        let d = diff(&a, &b);
        let by: Vec<_> = d
            .processes
            .iter()
            .map(|p| (p.pid_a, p.pid_b, p.matched_by))
            .collect();
        assert_eq!(
            by,
            vec![(10, 20, MatchedBy::Root), (11, 21, MatchedBy::Cmdline)]
        );
        assert_eq!(d.only_in_a[0].pid, 12);
        assert_eq!(d.only_in_b[0].pid, 22);
        assert_eq!(d.totals.pss.delta, 309 - 106);
        assert_eq!(d.categories[0].change.pss.delta, 203);
        // Same PID but another command line: a reused PID, not the same process.
        let c = snap(10, vec![process(10, "other", 1)]);
        assert_eq!(diff(&a, &c).processes[0].matched_by, MatchedBy::Root);
    }

    #[test]
    fn census_absent_is_said_not_zero() {
        let a = snap(1, vec![process(1, "x", 1)]);
        let mut b = a.clone();
        b.census = Some(vec![TypeIn {
            type_name: "Foo".into(),
            count: 3,
            bytes: 48,
        }]);
        let d = diff(&a, &b);
        assert!(d.census.is_none());
        assert!(d.census_absent.unwrap().starts_with("A has no census"));
        let mut a2 = a.clone();
        a2.census = Some(vec![TypeIn {
            type_name: "Bar".into(),
            count: 1,
            bytes: 16,
        }]);
        let c = diff(&a2, &b).census.unwrap();
        assert_eq!(c.grown[0].type_name, "Foo");
        assert_eq!(c.grown[0].bytes.delta, 48);
        assert_eq!(c.shrunk[0].type_name, "Bar");
        assert_eq!(c.shrunk[0].count.delta, -1);
    }

    #[test]
    fn findings_compare_by_kind_and_subject() {
        let mut a = snap(1, vec![process(1, "x", 1)]);
        let mut b = a.clone();
        a.finding_figures = vec![Finding::Swapped { swap: 5 }];
        b.finding_figures = vec![
            Finding::Swapped { swap: 9 },
            Finding::LargestExtension {
                name: "numpy".into(),
                pss: 3,
            },
        ];
        let d = diff(&a, &b);
        assert!(d.findings_gone.is_empty());
        assert_eq!(
            finding_id(&d.findings_appeared[0]),
            "largest_extension:numpy"
        );
    }
}
