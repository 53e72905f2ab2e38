//! The trace files of `memlens run --trace` in the recording (schema version 3): their import
//! ([`import_dir`], into the `traces` and `trace_*` tables) and the attribution drawn from
//! them ([`Recording::allocations`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use memlens_model::allocations::Allocations;
use memlens_model::allocations::{
    AtPeak, Breakdown, ByLine, Domain, Frame, LineTotals, Lines, Lost, Reconciliation, Stack,
};

use crate::error::{Error, Result};
use crate::reader::Recording;
use crate::trace::Limits;
use crate::writer::RecordingWriter;

/// The name under which stacks with no Python frame are grouped (`by_line`).
pub const NATIVE: &str = "<native>";

/// `CLOCK_MONOTONIC` now (ns), the clock of the trace files.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// Where a run's tracer writes: `dir/name` for the first process, `dir/name.PID[.N]` for the
/// others (docs/trace-format.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceFiles {
    /// The private directory.
    pub dir: PathBuf,
    /// The first process's file name.
    pub name: String,
}

impl TraceFiles {
    /// `MEMLENS_TRACE_OUT`.
    pub fn out(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// Whether a file name in the directory is one the tracer writes.
    pub fn is_trace_name(&self, file: &str) -> bool {
        let Some(rest) = file.strip_prefix(self.name.as_str()) else {
            return false;
        };
        rest.is_empty()
            || rest.strip_prefix('.').is_some_and(|r| {
                r.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    && r.split('.').count() <= 2
            })
    }

    /// The trace files present, by name (regular files only: a link is not read).
    pub fn list(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if self.is_trace_name(&name) && e.file_type()?.is_file() {
                v.push(e.path());
            }
        }
        v.sort();
        Ok(v)
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Files imported.
    pub files: usize,
    /// Files not imported, with why; and files imported with skipped lines, with their counts.
    pub problems: Vec<String>,
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Reads every trace file of `files` and writes them into the recording (the import of a
/// run that did not import during the run: [`crate::trace_live::LiveImport`] does both);
/// `start_ns` is `CLOCK_MONOTONIC` at the recording's t = 0. A file that cannot be read is
/// said in the report and as an event, never silently left out.
pub fn import_dir(
    w: &mut RecordingWriter,
    files: &TraceFiles,
    start_ns: u64,
    limits: Limits,
) -> Result<ImportReport> {
    crate::trace_live::LiveImport::new(files.clone(), start_ns, limits).finish(w)
}

pub(crate) fn domain_name(d: Domain) -> &'static str {
    match d {
        Domain::Pymalloc => "pymalloc",
        Domain::Malloc => "malloc",
        Domain::Mmap => "mmap",
    }
}

fn domain_of(s: &str) -> Option<Domain> {
    match s {
        "pymalloc" => Some(Domain::Pymalloc),
        "malloc" => Some(Domain::Malloc),
        "mmap" => Some(Domain::Mmap),
        _ => None,
    }
}

/// A traced process as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Id in the recording.
    pub id: i64,
    /// PID.
    pub pid: u32,
    /// Parent PID.
    pub ppid: u32,
    /// `all` or `sampled`.
    pub mode: String,
    /// Mean sample interval.
    pub sample_bytes: u64,
    /// `3.M` the tracer found.
    pub python: Option<String>,
    /// When the process's trace started (s since the recording's start; a forked child's
    /// fork).
    pub start_t: f64,
    /// Whether the process wrote its `end` line.
    pub ended: bool,
    /// The last peak block's time and live bytes (version 2).
    pub peak: Option<(f64, u64)>,
    /// Lines or items the parser skipped.
    pub skipped: u64,
    /// The trace format version of its file.
    pub version: u32,
}

/// One `snap`/`end` row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SnapRow {
    pub(crate) t: f64,
    pub(crate) at_end: bool,
    pub(crate) live: u64,
    mmap: u64,
    pymalloc: u64,
    malloc: u64,
    peak_live: u64,
    untouched: u64,
    tracer: u64,
    /// A forked child's inherited blocks still live (schema 5; 0 before).
    pub(crate) inherited: u64,
    lost: [u64; 6],
}

/// One `site` row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SiteRow {
    pub(crate) t: f64,
    pub(crate) stack: u32,
    pub(crate) live: u64,
    live_count: u64,
    alloc: u64,
    alloc_count: u64,
    freed: u64,
    freed_count: u64,
    temp: u64,
    temp_count: u64,
    inherited: u64,
    inherited_count: u64,
}

/// Everything stored of one trace.
pub(crate) struct Loaded {
    pub(crate) row: TraceRow,
    pub(crate) snaps: Vec<SnapRow>,
    pub(crate) sites: Vec<SiteRow>,
    stacks: HashMap<u32, (Domain, Vec<Frame>)>,
    peak: Vec<(u32, u64, u64)>,
}

impl Loaded {
    pub(crate) fn stack(&self, id: u32) -> (Domain, Vec<Frame>) {
        self.stacks
            .get(&id)
            .cloned()
            .unwrap_or((Domain::Malloc, Vec::new()))
    }

    /// Live bytes at `t`: the last row at or before it, 0 before the first and after `end`.
    pub(crate) fn live_at(&self, t: f64) -> Option<&SnapRow> {
        let n = self.snaps.partition_point(|s| s.t <= t);
        let s = self.snaps.get(n.checked_sub(1)?)?;
        (!(s.at_end && s.t < t)).then_some(s)
    }

    /// The tracer's untouched figure at `t` (measured at snapshots only): the first snapshot
    /// at or after `t`, else the last one; 0 when the process was not alive then.
    ///
    /// Only a snapshot at or after a peak has seen every block live at the peak (those freed
    /// since excepted); the last one before it can predate the allocations that made the
    /// peak. Measured (it::trace_truth, 3.13, snapshots every 100 ms): a 256 MiB untouched
    /// `np.zeros` made between the snapshot 39 ms before the peak and the peak, seen only by
    /// the snapshot 62 ms after it; the nearest snapshot on either side (the rule before)
    /// took the earlier one in 1 run of 6 and showed 168 MiB untouched for 416 MiB.
    pub(crate) fn untouched_at(&self, t: f64) -> u64 {
        if self.live_at(t).is_none() {
            return 0;
        }
        let n = self.snaps.partition_point(|s| s.t < t);
        self.snaps
            .get(n)
            .or_else(|| self.snaps.last())
            .map_or(0, |s| s.untouched)
    }

    /// The tracer's own resident bytes at `t`, which only grow (its pages are never given
    /// back while it traces): the first snapshot at or after `t` (the least upper bound the
    /// file holds), else the last one; 0 when the process had not started by then or had
    /// ended.
    pub(crate) fn tracer_at(&self, t: f64) -> u64 {
        if self.row.start_t > t || self.snaps.last().is_some_and(|s| s.at_end && s.t < t) {
            return 0;
        }
        let n = self.snaps.partition_point(|s| s.t < t);
        self.snaps
            .get(n)
            .or(self.snaps.last())
            .map_or(0, |s| s.tracer)
    }

    /// Each stack's state at `t` (its last site at or before it).
    fn sites_at(&self, t: f64) -> BTreeMap<u32, SiteRow> {
        let mut m = BTreeMap::new();
        for s in self.sites.iter().filter(|s| s.t <= t) {
            m.insert(s.stack, *s);
        }
        m
    }

    fn last_sites(&self) -> BTreeMap<u32, SiteRow> {
        self.sites_at(f64::INFINITY)
    }
}

impl Recording {
    /// The traced processes (none before schema version 3, or without `--trace`).
    pub fn traces(&self) -> Result<Vec<TraceRow>> {
        if self.schema_version < 3 {
            return Ok(Vec::new());
        }
        self.rows(
            "SELECT id, pid, ppid, mode, sample_bytes, python, ended, peak_t, peak_bytes, skipped, \
             start_t, version FROM traces ORDER BY id",
            |r| {
                let peak = match (r.get::<_, Option<f64>>(7)?, r.get::<_, Option<i64>>(8)?) {
                    (Some(t), Some(b)) => Some((t, u(b))),
                    _ => None,
                };
                Ok(TraceRow {
                    id: r.get(0)?,
                    pid: r.get(1)?,
                    ppid: r.get(2)?,
                    mode: r.get(3)?,
                    sample_bytes: u(r.get(4)?),
                    python: r.get(5)?,
                    ended: r.get(6)?,
                    peak,
                    skipped: u(r.get(9)?),
                    start_t: r.get(10)?,
                    version: r.get(11)?,
                })
            },
        )
    }

    fn rows<T>(
        &self,
        sql: &str,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let e = |source| Error::Corrupt {
            path: self.path.clone(),
            why: format!("trace tables: {source}"),
        };
        let mut st = self.conn.prepare(sql).map_err(e)?;
        let rows = st.query_map([], f).map_err(e)?;
        rows.collect::<std::result::Result<Vec<T>, _>>().map_err(e)
    }

    fn load_traces(&self) -> Result<Vec<Loaded>> {
        let traces = self.traces()?;
        if traces.is_empty() {
            return Ok(Vec::new());
        }
        let mut codes: HashMap<(i64, u32), (String, String)> = HashMap::new();
        for (t, id, file, name) in
            self.rows("SELECT trace, id, file, name FROM trace_codes", |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                ))
            })?
        {
            codes.insert((t, id), (file, name));
        }
        let mut stacks: HashMap<i64, HashMap<u32, (Domain, Vec<Frame>)>> = HashMap::new();
        for (t, id, domain) in self.rows("SELECT trace, id, domain FROM trace_stacks", |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
            ))
        })? {
            let d = domain_of(&domain).unwrap_or(Domain::Malloc);
            stacks.entry(t).or_default().insert(id, (d, Vec::new()));
        }
        for (t, stack, code, line) in self.rows(
            "SELECT trace, stack, code, line FROM trace_frames ORDER BY trace, stack, depth",
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, u32>(3)?,
                ))
            },
        )? {
            let (file, function) = codes
                .get(&(t, code))
                .cloned()
                .unwrap_or_else(|| ("<unknown code>".into(), "<unknown code>".into()));
            if let Some(s) = stacks.get_mut(&t).and_then(|m| m.get_mut(&stack)) {
                s.1.push(Frame {
                    file,
                    function,
                    line,
                });
            }
        }
        let mut snaps: HashMap<i64, Vec<SnapRow>> = HashMap::new();
        // Version 3 files have no tracer_bytes (not measured then).
        let tracer_col = if self.schema_version >= 4 {
            "tracer_bytes"
        } else {
            "0"
        };
        // Before version 5 a forked child's inherited blocks were in its own figures.
        let (inh_snap, inh_site) = if self.schema_version >= 5 {
            ("inherited_bytes", "inherited_bytes, inherited_count")
        } else {
            ("0", "0, 0")
        };
        for (t, s) in self.rows(
            &format!(
                "SELECT trace, t, at_end, live_bytes, live_mmap_bytes, live_pymalloc_bytes, \
                 live_malloc_bytes, peak_live_bytes, untouched_bytes, dropped_allocs, \
                 dropped_frees, table_full, lost_at_fork, unreadable_stacks, stacks_lost, \
                 {tracer_col}, {inh_snap} FROM trace_snaps ORDER BY trace, t, at_end"
            ),
            |r| {
                let n = |k| r.get::<_, i64>(k).map(u);
                Ok((
                    r.get::<_, i64>(0)?,
                    SnapRow {
                        t: r.get(1)?,
                        at_end: r.get(2)?,
                        live: n(3)?,
                        mmap: n(4)?,
                        pymalloc: n(5)?,
                        malloc: n(6)?,
                        peak_live: n(7)?,
                        untouched: n(8)?,
                        lost: [n(9)?, n(10)?, n(11)?, n(12)?, n(13)?, n(14)?],
                        tracer: n(15)?,
                        inherited: n(16)?,
                    },
                ))
            },
        )? {
            snaps.entry(t).or_default().push(s);
        }
        let mut sites: HashMap<i64, Vec<SiteRow>> = HashMap::new();
        for (t, s) in self.rows(
            &format!(
                "SELECT trace, t, stack, live_bytes, live_count, alloc_bytes, alloc_count, \
                 freed_bytes, freed_count, temp_bytes, temp_count, {inh_site} FROM trace_sites \
                 ORDER BY trace, rowid"
            ),
            |r| {
                let n = |k| r.get::<_, i64>(k).map(u);
                Ok((
                    r.get::<_, i64>(0)?,
                    SiteRow {
                        t: r.get(1)?,
                        stack: r.get(2)?,
                        live: n(3)?,
                        live_count: n(4)?,
                        alloc: n(5)?,
                        alloc_count: n(6)?,
                        freed: n(7)?,
                        freed_count: n(8)?,
                        temp: n(9)?,
                        temp_count: n(10)?,
                        inherited: n(11)?,
                        inherited_count: n(12)?,
                    },
                ))
            },
        )? {
            sites.entry(t).or_default().push(s);
        }
        let mut peak: HashMap<i64, Vec<(u32, u64, u64)>> = HashMap::new();
        for (t, s, b, c) in self.rows("SELECT trace, stack, bytes, count FROM trace_peak", |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u32>(1)?,
                u(r.get(2)?),
                u(r.get(3)?),
            ))
        })? {
            peak.entry(t).or_default().push((s, b, c));
        }
        Ok(traces
            .into_iter()
            .map(|row| {
                let id = row.id;
                Loaded {
                    row,
                    snaps: snaps.remove(&id).unwrap_or_default(),
                    sites: sites.remove(&id).unwrap_or_default(),
                    stacks: stacks.remove(&id).unwrap_or_default(),
                    peak: peak.remove(&id).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// What `--trace` found (`None` when the run was not traced). See docs/json.md
    /// (`allocations`) for how a tree's peak is chosen and how the figures reconcile with the
    /// ledger.
    pub fn allocations(&self) -> Result<Option<Allocations>> {
        let traces = self.load_traces()?;
        let Some(first) = traces.first() else {
            return Ok(None);
        };
        let mut a = Allocations {
            mode: first.row.mode.clone(),
            sample_interval_bytes: first.row.sample_bytes,
            at_peak: at_peak(&traces),
            leaked: Lines {
                bytes: 0,
                by_line: Vec::new(),
            },
            temporary: Lines {
                bytes: 0,
                by_line: Vec::new(),
            },
            reconciliation: Vec::new(),
            totals_by_line: Vec::new(),
            lost: Lost::default(),
            over_time: crate::trace_series::over_time(&traces),
        };
        let mut leaked = Vec::new();
        let mut temporary = Vec::new();
        let mut totals: BTreeMap<(String, u32, String), LineTotals> = BTreeMap::new();
        for tr in &traces {
            if let Some(last) = tr.snaps.last() {
                for (sum, v) in [
                    &mut a.lost.dropped_allocs,
                    &mut a.lost.dropped_frees,
                    &mut a.lost.table_full,
                    &mut a.lost.lost_at_fork,
                    &mut a.lost.unreadable_stacks,
                    &mut a.lost.stacks_lost,
                ]
                .into_iter()
                .zip(last.lost)
                {
                    *sum = sum.saturating_add(v);
                }
                if last.at_end {
                    a.leaked.bytes = a.leaked.bytes.saturating_add(last.live);
                }
            }
            if !tr.row.ended {
                a.lost.unfinished_traces += 1;
            }
            for (stack, s) in tr.last_sites() {
                let (domain, frames) = tr.stack(stack);
                if tr.row.ended && s.live > 0 {
                    leaked.push(Stack {
                        frames: frames.clone(),
                        domain,
                        bytes: s.live,
                        count: s.live_count,
                        pid: tr.row.pid,
                    });
                }
                if s.temp > 0 {
                    a.temporary.bytes = a.temporary.bytes.saturating_add(s.temp);
                    temporary.push(Stack {
                        frames: frames.clone(),
                        domain,
                        bytes: s.temp,
                        count: s.temp_count,
                        pid: tr.row.pid,
                    });
                }
                let (file, line, function) = line_of(&frames);
                let e = totals
                    .entry((file.clone(), line, function.clone()))
                    .or_insert_with(|| LineTotals {
                        file,
                        line,
                        function,
                        allocated_bytes: 0,
                        allocated_count: 0,
                        freed_bytes: 0,
                        freed_count: 0,
                    });
                e.allocated_bytes = e.allocated_bytes.saturating_add(s.alloc);
                e.allocated_count = e.allocated_count.saturating_add(s.alloc_count);
                e.freed_bytes = e.freed_bytes.saturating_add(s.freed);
                e.freed_count = e.freed_count.saturating_add(s.freed_count);
            }
        }
        a.leaked.by_line = by_line(&leaked);
        a.temporary.by_line = by_line(&temporary);
        a.totals_by_line = totals.into_values().collect();
        a.totals_by_line.sort_by(|x, y| {
            y.allocated_bytes
                .cmp(&x.allocated_bytes)
                .then_with(|| (&x.file, x.line).cmp(&(&y.file, y.line)))
        });
        a.reconciliation = self.reconcile(&traces, &a.at_peak);
        Ok(Some(a))
    }

    /// Traced live bytes per domain at the peak against the ledger nearest it: `pymalloc` ->
    /// `python-heap`, `malloc` and `mmap` -> `native-heap` (the ledger counts `[heap]`, glibc's
    /// mmapped chunks and other private anonymous mappings there). `untouched_bytes` is the
    /// tracer's process-wide figure, shown on `native-heap` (it measures large allocations,
    /// which glibc serves from mmapped chunks).
    fn reconcile(&self, traces: &[Loaded], peak: &AtPeak) -> Vec<Reconciliation> {
        let Some(ledger) = self
            .ledgers
            .iter()
            .min_by(|a, b| (a.t - peak.t).abs().total_cmp(&(b.t - peak.t).abs()))
        else {
            return Vec::new();
        };
        let (mut py, mut native, mut untouched, mut tracer) = (0u64, 0u64, 0u64, 0u64);
        if peak.stacks.is_empty() || peak.breakdown != Breakdown::Complete {
            // No sites (version 1), or a process's block not imported (its bytes are in no
            // stack): the domains of each process's snapshot nearest the peak.
            for tr in traces {
                let Some(s) = tr
                    .snaps
                    .iter()
                    .min_by(|a, b| (a.t - peak.t).abs().total_cmp(&(b.t - peak.t).abs()))
                else {
                    continue;
                };
                py = py.saturating_add(s.pymalloc);
                native = native.saturating_add(s.malloc).saturating_add(s.mmap);
                untouched = untouched.saturating_add(tr.untouched_at(peak.t));
            }
        } else {
            for s in &peak.stacks {
                match s.domain {
                    Domain::Pymalloc => py = py.saturating_add(s.bytes),
                    Domain::Malloc | Domain::Mmap => native = native.saturating_add(s.bytes),
                }
            }
            for tr in traces {
                untouched = untouched.saturating_add(tr.untouched_at(peak.t));
            }
        }
        // Inside the ledger's PSS: at the ledger's time.
        for tr in traces {
            tracer = tracer.saturating_add(tr.tracer_at(ledger.t));
        }
        let pss = |name: &str| {
            ledger
                .categories
                .iter()
                .find(|(c, _)| c == name)
                .map_or(0, |(_, a)| a.pss)
        };
        vec![
            Reconciliation {
                category: "python-heap".into(),
                traced_bytes: py,
                pss: pss("python-heap"),
                untouched_bytes: 0,
                tracer_bytes: 0,
            },
            Reconciliation {
                category: "native-heap".into(),
                traced_bytes: native,
                pss: pss("native-heap"),
                untouched_bytes: untouched,
                tracer_bytes: tracer,
            },
        ]
    }
}

/// The innermost frame's `(file, line, function)`; [`NATIVE`] for a stack with no Python frame.
fn line_of(frames: &[Frame]) -> (String, u32, String) {
    match frames.first() {
        Some(f) => (f.file.clone(), f.line, f.function.clone()),
        None => (NATIVE.into(), 0, NATIVE.into()),
    }
}

/// Stacks summed by innermost line, largest first.
fn by_line(stacks: &[Stack]) -> Vec<ByLine> {
    let mut m: BTreeMap<(String, u32, String), (u64, u64)> = BTreeMap::new();
    for s in stacks {
        let e = m.entry(line_of(&s.frames)).or_default();
        e.0 = e.0.saturating_add(s.bytes);
        e.1 = e.1.saturating_add(s.count);
    }
    let mut v: Vec<ByLine> = m
        .into_iter()
        .map(|((file, line, function), (bytes, count))| ByLine {
            file,
            line,
            function,
            bytes,
            count,
        })
        .collect();
    v.sort_by_key(|b| std::cmp::Reverse(b.bytes));
    v
}

/// What was live at the traced peak. One process: its last peak block (exact in `all` mode),
/// or with none (version 1, or a block not completely imported) its highest `peak_live_bytes`
/// at the first snapshot that shows it, with no stacks. A tree: the highest sum of the
/// processes' live bytes, tried at every snapshot time and at each process's own peak (the
/// others at their last snapshot then); each process's stacks at that time (its peak block for
/// the process whose peak it is). Also the highest the snapshots saw ([`seen_peak`] as each
/// process's own peak), which is higher only when a newer peak block was cut.
fn at_peak(traces: &[Loaded]) -> AtPeak {
    let mut p = AtPeak {
        t: 0.0,
        bytes: 0,
        by_line: Vec::new(),
        stacks: Vec::new(),
        inherited_bytes: 0,
        inherited_by_line: Vec::new(),
        breakdown: Breakdown::Complete,
        highest_seen_bytes: 0,
        highest_seen_t: 0.0,
    };
    if let [tr] = traces {
        if let Some((t, bytes)) = own_peak(tr) {
            (p.t, p.bytes) = (t, bytes);
            p.stacks = peak_stacks(tr);
            p.breakdown = breakdown_of(tr, bytes);
        }
        (p.highest_seen_t, p.highest_seen_bytes) = seen_peak(tr).unwrap_or((p.t, p.bytes));
    } else {
        let best = tree_peak(traces, own_peak);
        (p.bytes, p.t) = (best.0, best.1);
        let seen = tree_peak(traces, seen_peak);
        (p.highest_seen_bytes, p.highest_seen_t) = (seen.0, seen.1);
        for (k, tr) in traces.iter().enumerate() {
            if Some(k) == best.2 {
                p.stacks.extend(peak_stacks(tr));
                let own = own_peak(tr).map_or(0, |o| o.1);
                p.breakdown = breakdown_of(tr, own);
                continue;
            }
            if tr.live_at(p.t).is_none() {
                continue;
            }
            if !sites_hold(tr, p.t) {
                p.breakdown = Breakdown::Cut;
            }
            for (id, s) in tr.sites_at(p.t) {
                if s.live == 0 {
                    continue;
                }
                let (domain, frames) = tr.stack(id);
                p.stacks.push(Stack {
                    frames,
                    domain,
                    bytes: s.live,
                    count: s.live_count,
                    pid: tr.row.pid,
                });
            }
        }
    }
    // Never below the figure shown (a process with no snapshot but a block).
    if p.highest_seen_bytes <= p.bytes {
        (p.highest_seen_bytes, p.highest_seen_t) = (p.bytes, p.t);
    }
    p.stacks.sort_by_key(|b| std::cmp::Reverse(b.bytes));
    p.by_line = by_line(&p.stacks);
    (p.inherited_bytes, p.inherited_by_line) = inherited_at(traces, p.t);
    p
}

/// A tree's highest sum of live bytes `(bytes, t, the process whose own peak it is)`: tried at
/// every snapshot time (each process at its state then), and at each process's `own` peak with
/// the others at their state then.
fn tree_peak(
    traces: &[Loaded],
    own: fn(&Loaded) -> Option<(f64, u64)>,
) -> (u64, f64, Option<usize>) {
    let mut times: Vec<f64> = traces
        .iter()
        .flat_map(|tr| tr.snaps.iter().map(|s| s.t))
        .collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let others = |t: f64, skip: Option<usize>| -> u64 {
        traces
            .iter()
            .enumerate()
            .filter(|(k, _)| Some(*k) != skip)
            .filter_map(|(_, tr)| tr.live_at(t))
            .map(|s| s.live)
            .fold(0u64, u64::saturating_add)
    };
    let mut best: (u64, f64, Option<usize>) = (0, 0.0, None);
    for t in times {
        let sum = others(t, None);
        if sum > best.0 {
            best = (sum, t, None);
        }
    }
    for (k, tr) in traces.iter().enumerate() {
        let Some((t, own)) = own(tr) else {
            continue;
        };
        let sum = own.saturating_add(others(t, Some(k)));
        if sum > best.0 {
            best = (sum, t, Some(k));
        }
    }
    best
}

/// Whether a process's peak block breaks its own peak of `bytes` down: it does when the block
/// was imported (or there is nothing to break down); a version 1 trace has no blocks; else the
/// block was cut (memlens stopped while the tracer wrote it, or the tracer was killed then).
fn breakdown_of(tr: &Loaded, bytes: u64) -> Breakdown {
    if tr.row.peak.is_some() || bytes == 0 {
        Breakdown::Complete
    } else if tr.row.version < 2 {
        Breakdown::None
    } else {
        Breakdown::Cut
    }
}

/// Whether a process's stacks at `t` (each one's last `site` line at or before it) hold its
/// live bytes at its snapshot then: their sum is the snapshot's, exactly in `all` mode, to a
/// byte a stack sampled (each figure is rounded on its own). A snapshot whose `site` lines
/// were not all imported (memlens stopped between two imports while the tracer's write of
/// them was under way, or the tracer was killed while writing them; or lines skipped at a
/// limit) does not: the lines it lacks leave their stacks at older figures.
fn sites_hold(tr: &Loaded, t: f64) -> bool {
    let Some(snap) = tr.live_at(t) else {
        return true;
    };
    let sites = tr.sites_at(t);
    let sum = sites
        .values()
        .map(|s| s.live)
        .fold(0u64, u64::saturating_add);
    let slack = if tr.row.sample_bytes <= 1 {
        0
    } else {
        sites.len() as u64 + 1
    };
    sum.abs_diff(snap.live) <= slack
}

/// Forked children's inherited blocks still live at `t` (each at its last snapshot at or
/// before it: the figure only falls after the fork, so this is at least the figure at `t`),
/// summed, and by innermost line.
fn inherited_at(traces: &[Loaded], t: f64) -> (u64, Vec<ByLine>) {
    let mut sum = 0u64;
    let mut stacks = Vec::new();
    for tr in traces {
        let Some(s) = tr.live_at(t) else { continue };
        if s.inherited == 0 {
            continue;
        }
        sum = sum.saturating_add(s.inherited);
        for (id, site) in tr.sites_at(t) {
            if site.inherited == 0 {
                continue;
            }
            let (domain, frames) = tr.stack(id);
            stacks.push(Stack {
                frames,
                domain,
                bytes: site.inherited,
                count: site.inherited_count,
                pid: tr.row.pid,
            });
        }
    }
    (sum, by_line(&stacks))
}

/// The private directory of a run's trace files: created by memlens (mode 0700, a fresh name
/// under the temporary directory, never an existing path), and removed with
/// [`TraceDir::remove`], which deletes only the tracer's files in it and then the directory,
/// and only while it is still the directory memlens created (same device and inode).
#[derive(Debug)]
pub struct TraceDir {
    files: TraceFiles,
    dev: u64,
    ino: u64,
}

impl TraceDir {
    /// Creates a fresh directory under `parent` (`std::env::temp_dir()` for a run).
    pub fn create(parent: &std::path::Path) -> std::io::Result<TraceDir> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let mut last = None;
        for n in 0..64u32 {
            let dir = parent.join(format!(
                "memlens-trace-{}-{:x}-{n}",
                std::process::id(),
                monotonic_ns()
            ));
            // mkdir never follows a link in the last component: an existing name (a file, a
            // link, a directory) is EEXIST, and another name is tried.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let m = std::fs::symlink_metadata(&dir)?;
                    if !m.is_dir() {
                        return Err(std::io::Error::other(format!(
                            "{} was replaced while memlens created it",
                            dir.display()
                        )));
                    }
                    // A umask may have taken bits: exactly 0700.
                    if m.permissions().mode() & 0o777 != 0o700 {
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
                    }
                    return Ok(TraceDir {
                        files: TraceFiles {
                            dir,
                            name: "trace".into(),
                        },
                        dev: m.dev(),
                        ino: m.ino(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
    }

    /// The files in it.
    pub fn files(&self) -> &TraceFiles {
        &self.files
    }

    /// Deletes the tracer's files (regular files named as the tracer names them) and the
    /// directory. Anything else found in it is left, with the directory, and said in the
    /// error.
    pub fn remove(self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let dir = &self.files.dir;
        let m = std::fs::symlink_metadata(dir)?;
        if !m.is_dir() || (m.dev(), m.ino()) != (self.dev, self.ino) {
            return Err(std::io::Error::other(format!(
                "{} is no longer the directory memlens created; left alone",
                dir.display()
            )));
        }
        for f in self.files.list()? {
            std::fs::remove_file(&f)?;
        }
        std::fs::remove_dir(dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{}: {e} (memlens removes only the files it knows)",
                    dir.display()
                ),
            )
        })
    }
}

/// A process's own peak: its last peak block, or (version 1, or no block imported) its highest
/// `peak_live_bytes` (or live) at the first snapshot that shows it.
fn own_peak(tr: &Loaded) -> Option<(f64, u64)> {
    if let Some(p) = tr.row.peak {
        return Some(p);
    }
    snaps_peak(tr)
}

/// A process's highest `peak_live_bytes` (or live) at the first snapshot that shows it.
fn snaps_peak(tr: &Loaded) -> Option<(f64, u64)> {
    let top = tr.snaps.iter().map(|s| s.peak_live.max(s.live)).max()?;
    let t = tr.snaps.iter().find(|s| s.peak_live.max(s.live) == top)?.t;
    Some((t, top))
}

/// The highest a process's own live bytes were seen: its peak block when no snapshot saw
/// higher (the tracer writes a block with the snapshot that shows its peak, so this is the
/// block whenever the newest block was imported), else the snapshots' highest
/// `peak_live_bytes` (a newer block was cut).
fn seen_peak(tr: &Loaded) -> Option<(f64, u64)> {
    match (tr.row.peak, snaps_peak(tr)) {
        (Some(b), Some(s)) if s.1 > b.1 => Some(s),
        (Some(b), _) => Some(b),
        (None, s) => s,
    }
}

/// The stacks of a process's peak block.
fn peak_stacks(tr: &Loaded) -> Vec<Stack> {
    tr.peak
        .iter()
        .filter(|(_, b, _)| *b > 0)
        .map(|&(id, bytes, count)| {
            let (domain, frames) = tr.stack(id);
            Stack {
                frames,
                domain,
                bytes,
                count,
                pid: tr.row.pid,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{End, Meta};
    use crate::trace::parse;

    const ROOT: &str = "memlens-trace 2 pid=10 ppid=1 mode=all sample_bytes=1 clock=monotonic start_ns=1000000000 python=3.12 temp_ns=1000000\n\
code id=1 first_line=1 file=%2Fw%2Fapp.py name=%3Cmodule%3E\n\
code id=2 first_line=5 file=%2Fw%2Fapp.py name=build\n\
stack id=1 domain=malloc frames=2:7,1:20\n\
stack id=2 domain=pymalloc frames=1:21\n\
stack id=3 domain=malloc frames=\n\
snap t_ns=2000000000 live_bytes=1300 live_mmap_bytes=0 live_pymalloc_bytes=300 live_malloc_bytes=1000 peak_live_bytes=1300 total_bytes=1300 untouched_bytes=0\n\
site stack=1 live_bytes=1000 live_count=1 alloc_bytes=1000 alloc_count=1\n\
site stack=2 live_bytes=300 live_count=3 alloc_bytes=300 alloc_count=3\n\
peak t_ns=2000000000 live_bytes=1300\n\
peaksite stack=1 bytes=1000 count=1\n\
peaksite stack=2 bytes=300 count=3\n\
snap t_ns=3000000000 live_bytes=350 live_mmap_bytes=0 live_pymalloc_bytes=300 live_malloc_bytes=50 peak_live_bytes=1300 total_bytes=1350\n\
site stack=1 live_bytes=0 live_count=0 alloc_bytes=1000 alloc_count=1 freed_bytes=1000 freed_count=1\n\
site stack=3 live_bytes=50 live_count=1 alloc_bytes=80 alloc_count=2 freed_bytes=30 freed_count=1 temp_bytes=30 temp_count=1\n\
end t_ns=4000000000 live_bytes=350 live_mmap_bytes=0 peak_live_bytes=1300 total_bytes=1350 dropped_frees=2\n";

    const CHILD: &str = "memlens-trace 2 pid=11 ppid=10 mode=all sample_bytes=1 clock=monotonic start_ns=2500000000 python=3.12 forked_from=10 inherited_live_bytes=0\n\
code id=1 first_line=1 file=%2Fw%2Fworker.py name=work\n\
stack id=1 domain=mmap frames=1:3\n\
snap t_ns=2600000000 live_bytes=5000 live_mmap_bytes=5000\n\
site stack=1 live_bytes=5000 live_count=1 alloc_bytes=5000 alloc_count=1\n\
peak t_ns=2600000000 live_bytes=5000\n\
peaksite stack=1 bytes=5000 count=1\n";

    fn recording(name: &str, traces: &[&str]) -> Recording {
        let p = std::env::temp_dir().join(format!(
            "memlens-trace-store-{name}-{}.db",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        let w = RecordingWriter::create(&p, &Meta::default()).unwrap();
        for (k, t) in traces.iter().enumerate() {
            let t = parse(t.as_bytes(), Limits::default()).unwrap();
            crate::trace_live::write_trace(&w.conn, &format!("trace{k}"), &t, 1_000_000_000)
                .unwrap();
        }
        w.finish(&End::default()).unwrap();
        let r = Recording::open(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        r
    }

    /// A version 3 process whose first peak block (1300 bytes at 1.0 s) is whole and whose
    /// newer one (2000 bytes, seen by the snapshot at 2.0 s) is cut: `sites=2`, one
    /// `peaksite` line, then the file ends (the tracer was killed while writing it).
    const CUT: &str = "memlens-trace 3 pid=20 ppid=1 mode=all sample_bytes=1 clock=monotonic start_ns=1000000000 python=3.12 temp_ns=1000000\n\
code id=1 first_line=1 file=%2Fw%2Fcut.py name=grow\n\
stack id=1 domain=malloc frames=1:4\n\
stack id=2 domain=malloc frames=1:5\n\
snap t_ns=2000000000 live_bytes=1300 live_mmap_bytes=0 live_pymalloc_bytes=0 live_malloc_bytes=1300 peak_live_bytes=1300 total_bytes=1300 untouched_bytes=0 inherited_live_bytes=0\n\
site stack=1 live_bytes=1300 live_count=1 alloc_bytes=1300 alloc_count=1\n\
peak t_ns=2000000000 live_bytes=1300 sites=1\n\
peaksite stack=1 bytes=1300 count=1\n\
snap t_ns=3000000000 live_bytes=2000 live_mmap_bytes=0 live_pymalloc_bytes=0 live_malloc_bytes=2000 peak_live_bytes=2000 total_bytes=2000 untouched_bytes=0 inherited_live_bytes=0\n\
site stack=2 live_bytes=700 live_count=1 alloc_bytes=700 alloc_count=1\n\
peak t_ns=3000000000 live_bytes=2000 sites=2\n\
peaksite stack=1 bytes=1300 count=1\n";

    /// `CUT` up to its first `peak` line: a block that was never complete (no earlier one).
    fn cut_first() -> String {
        let first = CUT.find("peaksite stack=1").unwrap();
        let mut s = CUT[..first].to_string();
        s.push_str("peaksite stack=1 bytes=1000 count=1\n");
        // Made a block of 2 lines, cut after 1: `sites=1` → `sites=2`.
        s.replacen("live_bytes=1300 sites=1", "live_bytes=1300 sites=2", 1)
    }

    /// A cut newest block: the peak shown is the older whole one (its stacks sum to its
    /// bytes, its breakdown complete), and the higher figure the snapshots saw is kept apart.
    #[test]
    fn a_cut_newest_block_leaves_the_older_peak_and_says_the_higher_one() {
        let t = parse(CUT.as_bytes(), Limits::default()).unwrap();
        assert_eq!(t.skipped.peak_cut, 1, "{:?}", t.skipped);
        let a = recording("cut-newest", &[CUT])
            .allocations()
            .unwrap()
            .unwrap();
        let p = &a.at_peak;
        assert_eq!((p.t, p.bytes), (1.0, 1300));
        assert_eq!(p.breakdown, Breakdown::Complete);
        assert_eq!(p.stacks.iter().map(|s| s.bytes).sum::<u64>(), 1300);
        assert_eq!((p.highest_seen_t, p.highest_seen_bytes), (2.0, 2000));
        let j = serde_json::to_value(p).unwrap();
        assert_eq!(j["breakdown"], "complete");
        assert_eq!(j["highest_seen_bytes"], 2000);
    }

    /// No whole block at all: the bytes from the snapshots, no stacks, and `cut` says why.
    #[test]
    fn no_whole_block_is_a_cut_breakdown() {
        let text = cut_first();
        let t = parse(text.as_bytes(), Limits::default()).unwrap();
        assert_eq!((t.skipped.peak_cut, t.peak.is_none()), (1, true));
        let a = recording("cut-first", &[&text])
            .allocations()
            .unwrap()
            .unwrap();
        let p = &a.at_peak;
        assert_eq!((p.t, p.bytes), (1.0, 1300));
        assert!(p.stacks.is_empty() && p.by_line.is_empty(), "{p:?}");
        assert_eq!(p.breakdown, Breakdown::Cut);
        assert_eq!((p.highest_seen_t, p.highest_seen_bytes), (1.0, 1300));
        let j = serde_json::to_value(p).unwrap();
        assert_eq!(j["breakdown"], "cut");
    }

    /// A tree whose child's block was cut, the child's peak (5000) above what its snapshot
    /// saw live (4000): the tree's peak is the child's own with the root then, the root's
    /// stacks are shown, the child's bytes are in the peak without them, and the breakdown
    /// says `cut`.
    #[test]
    fn a_tree_with_a_cut_block_is_a_cut_breakdown() {
        let child = "memlens-trace 2 pid=11 ppid=10 mode=all sample_bytes=1 clock=monotonic start_ns=2500000000 python=3.12 forked_from=10 inherited_live_bytes=0\n\
code id=1 first_line=1 file=%2Fw%2Fworker.py name=work\n\
stack id=1 domain=mmap frames=1:3\n\
snap t_ns=2600000000 live_bytes=4000 live_mmap_bytes=4000 peak_live_bytes=5000\n\
site stack=1 live_bytes=4000 live_count=1 alloc_bytes=5000 alloc_count=2 freed_bytes=1000 freed_count=1\n\
peak t_ns=2600000000 live_bytes=5000 sites=2\n\
peaksite stack=1 bytes=4000 count=1\n";
        let a = recording("cut-tree", &[ROOT, child])
            .allocations()
            .unwrap()
            .unwrap();
        let p = &a.at_peak;
        assert_eq!(p.bytes, 6300);
        assert_eq!(p.breakdown, Breakdown::Cut);
        assert_eq!(p.stacks.iter().map(|s| s.bytes).sum::<u64>(), 1300);
        assert!(p.stacks.iter().all(|s| s.pid == 10), "{:?}", p.stacks);
        assert_eq!(p.highest_seen_bytes, 6300);
    }

    /// A tree whose peak is at a snapshot time, where the child's stacks come from its `site`
    /// lines: with one of that snapshot's lines not imported (memlens stopped mid-write), the
    /// stacks sum below the bytes, and the breakdown says `cut`; with all of them, `complete`
    /// and the stacks hold the bytes.
    #[test]
    fn a_tree_peak_from_a_snapshot_missing_site_lines_is_cut() {
        let whole = "memlens-trace 3 pid=11 ppid=10 mode=all sample_bytes=1 clock=monotonic start_ns=2500000000 python=3.12 forked_from=10 inherited_live_bytes=0\n\
code id=1 first_line=1 file=%2Fw%2Fworker.py name=work\n\
stack id=1 domain=malloc frames=1:3\n\
stack id=2 domain=malloc frames=1:4\n\
snap t_ns=2600000000 live_bytes=5000 live_mmap_bytes=0 live_pymalloc_bytes=0 live_malloc_bytes=5000 peak_live_bytes=5000 total_bytes=5000 inherited_live_bytes=0\n\
site stack=1 live_bytes=3000 live_count=1 alloc_bytes=3000 alloc_count=1\n\
site stack=2 live_bytes=2000 live_count=1 alloc_bytes=2000 alloc_count=1\n";
        let a = recording("snap-whole", &[ROOT, whole])
            .allocations()
            .unwrap()
            .unwrap();
        let p = &a.at_peak;
        assert_eq!((p.t, p.bytes), (1.6, 6300));
        assert_eq!(p.breakdown, Breakdown::Complete);
        assert_eq!(p.stacks.iter().map(|s| s.bytes).sum::<u64>(), 6300);

        let cut = &whole[..whole.rfind("site stack=2").unwrap()];
        let a = recording("snap-cut", &[ROOT, cut])
            .allocations()
            .unwrap()
            .unwrap();
        let p = &a.at_peak;
        assert_eq!((p.t, p.bytes), (1.6, 6300));
        assert_eq!(p.stacks.iter().map(|s| s.bytes).sum::<u64>(), 4300);
        assert_eq!(p.breakdown, Breakdown::Cut, "stacks sum below bytes: {p:?}");
    }

    /// Whole blocks: the highest seen is the peak shown; version 1 has no breakdown, said so.
    #[test]
    fn whole_blocks_and_version_1() {
        for set in [&[ROOT][..], &[ROOT, CHILD][..]] {
            let a = recording("whole", set).allocations().unwrap().unwrap();
            let p = &a.at_peak;
            assert_eq!(p.breakdown, Breakdown::Complete);
            assert_eq!((p.highest_seen_t, p.highest_seen_bytes), (p.t, p.bytes));
        }
        let v1 = "memlens-trace 1 pid=7 ppid=1 mode=sampled sample_bytes=524288 clock=monotonic start_ns=1000000000\n\
snap t_ns=2000000000 live_bytes=1048576 live_mmap_bytes=0 peak_live_bytes=2097152 total_bytes=3145728\n";
        let a = recording("v1", &[v1]).allocations().unwrap().unwrap();
        assert_eq!(a.at_peak.bytes, 2_097_152);
        assert_eq!(a.at_peak.breakdown, Breakdown::None);
        assert_eq!(
            serde_json::to_value(&a.at_peak).unwrap()["breakdown"],
            "none"
        );
    }

    #[test]
    fn one_process_peak_block_lines_leaks_and_temporaries() {
        let r = recording("one", &[ROOT]);
        let a = r.allocations().unwrap().unwrap();
        assert_eq!(a.mode, "all");
        assert_eq!((a.at_peak.t, a.at_peak.bytes), (1.0, 1300));
        assert_eq!(a.at_peak.stacks.len(), 2);
        let top = &a.at_peak.stacks[0];
        assert_eq!((top.bytes, top.domain, top.pid), (1000, Domain::Malloc, 10));
        assert_eq!(top.frames[0].function, "build");
        assert_eq!(top.frames[0].line, 7);
        assert_eq!(top.frames[1].function, "<module>");
        assert_eq!(a.at_peak.by_line[0].file, "/w/app.py");
        assert_eq!(a.at_peak.by_line[0].line, 7);
        // Alive at exit: the pymalloc site and the native one (no Python frame).
        assert_eq!(a.leaked.bytes, 350);
        let native = a.leaked.by_line.iter().find(|l| l.file == NATIVE).unwrap();
        assert_eq!(native.bytes, 50);
        assert_eq!(a.temporary.bytes, 30);
        assert_eq!(a.temporary.by_line[0].file, NATIVE);
        let t7 = a.totals_by_line.iter().find(|l| l.line == 7).unwrap();
        assert_eq!((t7.allocated_bytes, t7.freed_bytes), (1000, 1000));
        assert_eq!(a.lost.dropped_frees, 2);
        assert_eq!(a.lost.unfinished_traces, 0);
        assert!(
            a.reconciliation.is_empty(),
            "no ledger, nothing to reconcile"
        );
    }

    /// `tracer_bytes` is kept per snapshot; a version 3 file (no such column) reads it as 0.
    #[test]
    fn tracer_bytes_kept_and_read_as_zero_from_version_3() {
        let with = ROOT.replacen(
            "untouched_bytes=0\n",
            "untouched_bytes=0 tracer_bytes=4096000\n",
            1,
        );
        let r = recording("tracer4", &[&with]);
        let t = r.load_traces().unwrap();
        let tracer: Vec<u64> = t[0].snaps.iter().map(|s| s.tracer).collect();
        assert_eq!(tracer, [4_096_000, 0, 0]);

        let p = std::env::temp_dir().join(format!("memlens-v3-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let w = RecordingWriter::create(&p, &Meta::default()).unwrap();
        let parsed = parse(with.as_bytes(), Limits::default()).unwrap();
        crate::trace_live::write_trace(&w.conn, "trace0", &parsed, 1_000_000_000).unwrap();
        w.conn
            .execute_batch(
                "ALTER TABLE trace_snaps DROP COLUMN tracer_bytes; \
                 UPDATE meta SET value = '3' WHERE key = 'schema_version';",
            )
            .unwrap();
        w.finish(&End::default()).unwrap();
        let r = Recording::open(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(r.schema_version, 3);
        let t = r.load_traces().unwrap();
        assert_eq!(t[0].snaps.len(), 3);
        assert!(t[0].snaps.iter().all(|s| s.tracer == 0));
        assert_eq!(r.allocations().unwrap().unwrap().at_peak.bytes, 1300);
    }

    /// The untouched figure at a peak comes from the first snapshot at or after it, even when
    /// the one before is nearer: only that one has seen the blocks that made the peak.
    #[test]
    fn untouched_at_a_peak_is_read_after_it() {
        let text = "memlens-trace 3 pid=30 ppid=1 mode=all sample_bytes=1 clock=monotonic start_ns=1000000000 python=3.13 temp_ns=1000000\n\
code id=1 first_line=1 file=%2Fw%2Fz.py name=grow\n\
stack id=1 domain=mmap frames=1:4\n\
snap t_ns=2000000000 live_bytes=100 live_mmap_bytes=100 live_pymalloc_bytes=0 live_malloc_bytes=0 peak_live_bytes=100 total_bytes=100 untouched_bytes=100 inherited_live_bytes=0\n\
site stack=1 live_bytes=100 live_count=1 alloc_bytes=100 alloc_count=1\n\
peak t_ns=2040000000 live_bytes=5100 sites=1\n\
peaksite stack=1 bytes=5100 count=2\n\
snap t_ns=2100000000 live_bytes=5100 live_mmap_bytes=5100 live_pymalloc_bytes=0 live_malloc_bytes=0 peak_live_bytes=5100 total_bytes=5100 untouched_bytes=5000 inherited_live_bytes=0\n\
site stack=1 live_bytes=5100 live_count=2 alloc_bytes=5100 alloc_count=2\n\
end t_ns=2200000000 live_bytes=5100 live_mmap_bytes=5100 peak_live_bytes=5100 total_bytes=5100 untouched_bytes=5000\n";
        let r = recording("untouched-after", &[text]);
        let t = r.load_traces().unwrap();
        assert!((r.allocations().unwrap().unwrap().at_peak.t - 1.04).abs() < 1e-9);
        assert_eq!(t[0].untouched_at(1.04), 5000, "the snapshot after the peak");
        assert_eq!(t[0].untouched_at(1.0), 100, "a snapshot at the time itself");
        assert_eq!(
            t[0].untouched_at(1.15),
            5000,
            "after the last snapshot: the last one"
        );
        assert_eq!(t[0].untouched_at(1.3), 0, "after the end");
    }

    #[test]
    fn a_tree_peak_is_the_highest_sum() {
        let r = recording("tree", &[ROOT, CHILD]);
        let a = r.allocations().unwrap().unwrap();
        // The child's peak at 1.6 s (5000) with the root then (its 1.0 s snapshot: 1300)
        // beats the root's own peak (1300, the child not started).
        assert_eq!(a.at_peak.bytes, 6300);
        assert!((a.at_peak.t - 1.6).abs() < 1e-9, "{}", a.at_peak.t);
        let pids: Vec<u32> = a.at_peak.stacks.iter().map(|s| s.pid).collect();
        assert_eq!(pids, [11, 10, 10]);
        assert_eq!(a.lost.unfinished_traces, 1, "the child wrote no end line");
        assert_eq!(a.leaked.bytes, 350, "only processes that ended leak");
    }

    /// A version 3 child: its own figures make the tree's peak; what it inherited and still
    /// holds is said apart (not counted again), by the line that made it.
    #[test]
    fn a_childs_inherited_blocks_count_once() {
        const CHILD3: &str = "memlens-trace 3 pid=12 ppid=10 mode=all sample_bytes=1 clock=monotonic start_ns=2500000000 python=3.12 forked_from=10 inherited_live_bytes=1300\n\
code id=1 first_line=1 file=%2Fw%2Fworker.py name=work\n\
code id=2 first_line=5 file=%2Fw%2Fapp.py name=build\n\
stack id=1 domain=mmap frames=1:3\n\
stack id=2 domain=malloc frames=2:7\n\
snap t_ns=2600000000 live_bytes=5000 live_mmap_bytes=5000 inherited_live_bytes=1000\n\
site stack=2 live_bytes=0 live_count=0 inherited_bytes=1000 inherited_count=1\n\
site stack=1 live_bytes=5000 live_count=1 alloc_bytes=5000 alloc_count=1\n\
peak t_ns=2600000000 live_bytes=5000\n\
peaksite stack=1 bytes=5000 count=1\n";
        let r = recording("inherited", &[ROOT, CHILD3]);
        let a = r.allocations().unwrap().unwrap();
        assert_eq!(a.at_peak.bytes, 6300);
        assert!((a.at_peak.t - 1.6).abs() < 1e-9, "{}", a.at_peak.t);
        assert_eq!(a.at_peak.inherited_bytes, 1000);
        let l = &a.at_peak.inherited_by_line;
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].file.as_str(), l[0].line, l[0].bytes),
            ("/w/app.py", 7, 1000)
        );
        // The parent's line holds its own 1000 bytes once, not the child's inherited too.
        let build: u64 = a
            .at_peak
            .by_line
            .iter()
            .filter(|b| b.line == 7)
            .map(|b| b.bytes)
            .sum();
        assert_eq!(build, 1000);
        // A recording of schema 4 has no inherited columns: read as 0.
        let p = std::env::temp_dir().join(format!("memlens-v4-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let w = RecordingWriter::create(&p, &Meta::default()).unwrap();
        for (k, t) in [ROOT, CHILD3].iter().enumerate() {
            let t = parse(t.as_bytes(), Limits::default()).unwrap();
            crate::trace_live::write_trace(&w.conn, &format!("trace{k}"), &t, 1_000_000_000)
                .unwrap();
        }
        w.conn
            .execute_batch(
                "ALTER TABLE trace_snaps DROP COLUMN inherited_bytes; \
                 ALTER TABLE trace_sites DROP COLUMN inherited_bytes; \
                 ALTER TABLE trace_sites DROP COLUMN inherited_count; \
                 UPDATE meta SET value = '4' WHERE key = 'schema_version';",
            )
            .unwrap();
        w.finish(&End::default()).unwrap();
        let r = Recording::open(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        let a = r.allocations().unwrap().unwrap();
        assert_eq!((a.at_peak.bytes, a.at_peak.inherited_bytes), (6300, 0));
    }

    /// Files imported while the tracer writes them (cut mid-line, a child appearing later)
    /// give the recording a one-shot import gives.
    #[test]
    fn an_import_during_the_run_equals_one_at_the_end() {
        use crate::trace_live::LiveImport;
        let dir = std::env::temp_dir().join(format!("memlens-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let files = TraceFiles {
            dir: dir.clone(),
            name: "trace".into(),
        };
        let db = dir.join("r.db");
        let mut w = RecordingWriter::create(&db, &Meta::default()).unwrap();
        let mut live = LiveImport::new(files.clone(), 1_000_000_000, Limits::default());
        let append = |name: &str, bytes: &[u8]| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .unwrap();
            f.write_all(bytes).unwrap();
        };
        let root = ROOT.as_bytes();
        // Cut inside the peak block, mid-line: the first import sees part of it.
        let cut = ROOT.find("peaksite stack=2").unwrap() + 5;
        append("trace", &root[..cut]);
        let s = live.import(&mut w).unwrap();
        assert_eq!((s.files, s.snaps, s.sites), (1, 1, 2));
        assert!(!live.import(&mut w).unwrap().wrote(), "nothing new");
        w.commit().unwrap();
        // Readable at this moment: the peak so far from its snapshot, and no breakdown (its
        // block is not complete: never a part of one, which would show a stack as 0).
        {
            let r = Recording::open(&db).unwrap();
            let a = r.allocations().unwrap().unwrap();
            assert_eq!(a.at_peak.bytes, 1300);
            assert!(a.at_peak.stacks.is_empty(), "{:?}", a.at_peak.stacks);
            assert_eq!(a.at_peak.breakdown, Breakdown::Cut);
            assert_eq!(a.lost.unfinished_traces, 1);
        }
        append("trace", &root[cut..]);
        append("trace.11", CHILD.as_bytes());
        append("trace.12", b"memlens-trace 2 pid=12 mo");
        live.import(&mut w).unwrap();
        let rep = live.finish(&mut w).unwrap();
        assert_eq!(rep.files, 2);
        assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
        assert!(rep.problems[0].contains("trace.12 not read"));
        w.finish(&End::default()).unwrap();
        let got = Recording::open(&db).unwrap().allocations().unwrap();
        let want = recording("live-want", &[ROOT, CHILD])
            .allocations()
            .unwrap();
        assert_eq!(got, want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn live_bytes_by_stack_over_time() {
        let r = recording("series", &[ROOT, CHILD]);
        let o = r.allocations().unwrap().unwrap().over_time;
        let t: Vec<String> = o.t.iter().map(|t| format!("{t:.1}")).collect();
        assert_eq!(t, ["1.0", "1.6", "2.0", "3.0"]);
        assert_eq!(o.snapshots, 4);
        assert_eq!(o.live_bytes, [1300, 6300, 5350, 5350]);
        let rows: Vec<(u64, &[u64], &[u32])> = o
            .stacks
            .iter()
            .map(|s| (s.max_bytes, s.bytes.as_slice(), s.pids.as_slice()))
            .collect();
        assert_eq!(
            rows,
            [
                (5000, &[0, 5000, 5000, 5000][..], &[11][..]),
                (1000, &[1000, 1000, 0, 0][..], &[10][..]),
                (300, &[300, 300, 300, 300][..], &[10][..]),
                (50, &[0, 0, 50, 50][..], &[10][..]),
            ]
        );
        assert_eq!(o.stacks[1].frames[0].function, "build");
        assert!((o.stacks[0].max_t - 1.6).abs() < 1e-9);
        assert_eq!(o.other_bytes, [0, 0, 0, 0]);
    }

    #[test]
    fn no_trace_no_allocations() {
        let r = recording("none", &[]);
        assert!(r.allocations().unwrap().is_none());
    }

    #[test]
    fn trace_names_in_the_directory() {
        let f = TraceFiles {
            dir: PathBuf::from("/x"),
            name: "trace".into(),
        };
        for ok in ["trace", "trace.12", "trace.12.1"] {
            assert!(f.is_trace_name(ok), "{ok}");
        }
        for no in [
            "trace.",
            "trace.a",
            "trace.1.2.3",
            "tracex",
            "other",
            "trace.1..2",
        ] {
            assert!(!f.is_trace_name(no), "{no}");
        }
    }

    #[test]
    fn the_private_directory_is_fresh_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let parent = std::env::temp_dir().join(format!("memlens-tracedir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        std::fs::create_dir_all(&parent).unwrap();
        let d = TraceDir::create(&parent).unwrap();
        let m = std::fs::metadata(&d.files().dir).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        std::fs::write(d.files().out(), b"x").unwrap();
        std::fs::write(d.files().dir.join("trace.5"), b"x").unwrap();
        let dir = d.files().dir.clone();
        d.remove().unwrap();
        assert!(!dir.exists());
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
