//! What a report shows, computed once from a recording: the peak and where it came from, each
//! process, growth phases, and the series the charts draw. Every renderer works from this.

use serde::Serialize;

use memlens_model::tree::Finding;
use memlens_model::units::SizeStyle;
use memlens_model::Amounts;
use memlens_recording::reader::{LedgerRow, ProcessRow, Recording};
use memlens_recording::{Error, Mode};

use crate::growth::{phases, Phase};
use crate::peak::At;

pub use crate::peak::{Breakdown, Note, PeakSource};

/// The peak of the tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Peak {
    /// The tree's peak memory, what `--max-peak` checks: the largest VmHWM, or the tree's PSS
    /// read above it, or (PSS unreadable) its RSS sum; see [`PeakSource`]. Never below a
    /// process's own VmHWM, and independent of the page cache.
    pub bytes: u64,
    /// Where `bytes` comes from.
    pub source: PeakSource,
    /// Highest tree PSS read from the kernel (every live process at one moment), if any.
    pub pss: Option<u64>,
    /// When it was read (s).
    pub pss_at_seconds: Option<f64>,
    /// Rounds of PSS reads of the whole tree in the recording.
    pub pss_reads: usize,
    /// Highest tree PSS estimated between reads (each process's RSS times its PSS/RSS at its
    /// last read, RSS before any): an estimate, never the peak.
    pub pss_estimated: u64,
    /// Highest tree RSS: the larger of the highest sampled sum and the largest VmHWM.
    pub rss: u64,
    /// When the peak happened (s).
    pub at_seconds: f64,
    /// The process holding the most memory at that moment.
    pub pid: Option<u32>,
    /// Its command line (untrusted).
    pub cmdline: Option<String>,
    /// The peak charge of the memory cgroup memlens ran the tree in (page cache and kernel
    /// memory included): shown apart, it moves with the page cache's state.
    pub cgroup: Option<u64>,
    /// What each figure is, and which are sampled or estimated: `sampled` (in words, binary
    /// units) and `sampled_figures` (kind and figures) in JSON.
    #[serde(flatten, serialize_with = "crate::peak::notes_json")]
    pub sampled: Vec<Note>,
}

/// One process of the recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessSummary {
    /// PID.
    pub pid: u32,
    /// Parent PID.
    pub ppid: u32,
    /// comm (untrusted).
    pub name: String,
    /// Command line (untrusted).
    pub cmdline: String,
    /// The kernel's exact peak RSS.
    pub vm_hwm: u64,
    /// Highest PSS read.
    pub peak_pss: u64,
    /// First seen (s).
    pub first_seconds: f64,
    /// Last seen alive (s).
    pub last_seconds: f64,
    /// When it was seen gone (s), if it exited during the recording.
    pub exit_seconds: Option<f64>,
}

/// Sums by ledger category at one ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerPoint {
    /// Time (s).
    pub t: f64,
    /// PSS per category, in [`Model::categories`] order.
    pub pss: Vec<u64>,
}

/// The ledger chosen to show the peak (see [`Breakdown`] for whether it does).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerAtPeak {
    /// When (s).
    pub t: f64,
    /// Tree totals.
    pub totals: Amounts,
    /// Categories, largest PSS first.
    pub categories: Vec<(String, Amounts)>,
    /// The full ledger as `memlens snapshot --json` prints it.
    pub json: serde_json::Value,
    /// How near the peak it is.
    pub breakdown: Breakdown,
    /// Its findings: those the recorder stored (`finding_figures`), or, in a recording made
    /// before findings were data, computed again from the stored ledger.
    pub findings: Vec<Finding>,
}

/// What the reader of a report must not miss.
#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    /// A process whose memory could not be read (the recorder's words).
    Unreadable(String),
    /// The ledger shown is not at the peak.
    NoBreakdownAtPeak(Breakdown),
    /// No ledger of the tree was taken.
    NoLedger,
    /// The findings of the ledger shown could not be read back from the recording.
    FindingsUnreadable(String),
}

impl Warning {
    /// In words, sizes in `style`.
    pub fn words(&self, style: SizeStyle) -> String {
        match self {
            Warning::Unreadable(what) => what.clone(),
            Warning::NoBreakdownAtPeak(b) => b.words(style),
            Warning::NoLedger => {
                "no breakdown: no ledger of the tree could be taken during the recording".into()
            }
            Warning::FindingsUnreadable(why) => {
                format!("the findings of the ledger shown could not be read back: {why}")
            }
        }
    }
}

/// One process's series.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSeries {
    /// PID.
    pub pid: u32,
    /// Label (untrusted).
    pub label: String,
    /// `(t, rss)` points.
    pub points: Vec<(f64, u64)>,
}

/// A Python view point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PythonPoint {
    /// Time (s).
    #[serde(rename = "t_seconds")]
    pub t: f64,
    /// PID.
    pub pid: u32,
    /// `gc.get_count()` per generation.
    pub gc_counts: Vec<u64>,
    /// Collections run per generation.
    pub gc_collections: Vec<u64>,
    /// Objects in the GC's permanent generation (`gc.get_freeze_count()`), when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_frozen: Option<u64>,
    /// pymalloc arenas.
    pub pymalloc_arenas: Option<u64>,
    /// Bytes in used pymalloc blocks.
    pub pymalloc_used: Option<u64>,
    /// Bytes in free pymalloc blocks.
    pub pymalloc_free: Option<u64>,
}

/// The last object census of a process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CensusSnapshot {
    /// PID.
    pub pid: u32,
    /// When (s).
    #[serde(rename = "t_seconds")]
    pub t: f64,
    /// Types, largest bytes first (names untrusted).
    pub types: Vec<memlens_recording::CensusEntry>,
}

/// Everything a report shows.
#[derive(Debug, Clone)]
pub struct Model {
    /// The recording file.
    pub file: String,
    /// `run` or `record`.
    pub mode: String,
    /// What ran (untrusted).
    pub command: String,
    /// Whether the writer finished cleanly.
    pub complete: bool,
    /// The program's status as a shell reports it (`run`).
    pub exit_code: Option<i32>,
    /// The signal that killed the program (`run`).
    pub exit_signal: Option<i32>,
    /// Length of the recording (s).
    pub duration_seconds: f64,
    /// Sampling interval (s).
    pub interval_seconds: f64,
    /// Ticks recorded.
    pub samples: u64,
    /// The peak.
    pub peak: Peak,
    /// Processes, in order of appearance.
    pub processes: Vec<ProcessSummary>,
    /// Growth phases.
    pub growth: Vec<Phase>,
    /// The series growth phases are found on: `cgroup` (the tree's exact total, read every
    /// tick) or `pss` (sampled).
    pub growth_series: &'static str,
    /// The leak verdict on the same series (docs/leaks.md).
    pub leak: crate::leak::Leak,
    /// `(t, rss, pss, cgroup usage)` of the tree, thinned for charts.
    pub tree: Vec<(f64, u64, u64, Option<u64>)>,
    /// Ledger categories present, largest at the peak first.
    pub categories: Vec<String>,
    /// Category sums at each ledger.
    pub ledger_series: Vec<LedgerPoint>,
    /// The ledger that best shows the peak: the nearest in time among those holding most of
    /// it; its [`Breakdown`] says whether it is at the peak.
    pub ledger_at_peak: Option<LedgerAtPeak>,
    /// Per-process RSS series, thinned.
    pub process_series: Vec<ProcessSeries>,
    /// The Python view over time.
    pub python: Vec<PythonPoint>,
    /// The last census of each process that had one.
    pub census: Vec<CensusSnapshot>,
    /// Why the peak is not exact for the whole tree, when memlens could not make a cgroup.
    pub cgroup_note: Option<String>,
    /// Largest single process VmHWM, for the findings.
    pub max_vm_hwm: u64,
    /// CPU seconds memlens itself used while recording.
    pub memlens_cpu_seconds: Option<f64>,
    /// What the reader must not miss: processes whose memory could not be read, a peak
    /// without a breakdown.
    pub warnings: Vec<Warning>,
    /// Copy-on-write sharing of each forked worker over time.
    pub sharing: crate::sharing_over_time::SharingOverTime,
    /// The advice computable from the ledger at the peak (none without a ledger).
    pub advice: Option<crate::recording_advice::RecordingAdvice>,
    /// What `run --trace` found (`None` without `--trace`).
    pub allocations: Option<memlens_model::allocations::Allocations>,
}

/// At most this many points per chart series.
const MAX_POINTS: usize = 1500;

/// Thins `(t, v)` points to at most `max` by keeping each bucket's highest value.
pub fn thin(points: &[(f64, u64)], max: usize) -> Vec<(f64, u64)> {
    if points.len() <= max || max < 2 {
        return points.to_vec();
    }
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .filter_map(|c| c.iter().copied().max_by_key(|p| p.1))
        .collect()
}

fn label(p: &ProcessRow) -> String {
    if p.cmdline.is_empty() {
        p.name.clone()
    } else {
        p.cmdline.clone()
    }
}

/// The ledger categories (largest in `chosen` first) and their sums at each ledger.
fn ledger_series(rec: &Recording, chosen: Option<&LedgerRow>) -> (Vec<String>, Vec<LedgerPoint>) {
    let mut categories: Vec<String> = Vec::new();
    for l in &rec.ledgers {
        for (c, _) in &l.categories {
            if !categories.contains(c) {
                categories.push(c.clone());
            }
        }
    }
    let pss_of = |l: &LedgerRow, c: &str| {
        l.categories
            .iter()
            .find(|(n, _)| n == c)
            .map(|(_, a)| a.pss)
            .unwrap_or(0)
    };
    if let Some(l) = chosen {
        categories.sort_by_key(|c| std::cmp::Reverse(pss_of(l, c)));
    }
    let series = rec
        .ledgers
        .iter()
        .map(|l| LedgerPoint {
            t: l.t,
            pss: categories.iter().map(|c| pss_of(l, c)).collect(),
        })
        .collect();
    (categories, series)
}

/// Each process's RSS over time, thinned.
fn process_series(rec: &Recording) -> Vec<ProcessSeries> {
    let end = rec.ticks.last().map_or(0.0, |t| t.t);
    rec.processes
        .iter()
        .map(|p| {
            // Rows are written only on change: each value holds until the next row (a
            // step), and the last one until the process ended (or the recording did).
            let mut pts: Vec<(f64, u64)> = Vec::new();
            for s in rec.samples_of(p.id) {
                if let Some(&(_, prev)) = pts.last() {
                    pts.push((s.t, prev));
                }
                pts.push((s.t, s.counters.rss));
            }
            if let Some(&(_, v)) = pts.last() {
                let until = match p.exit_t {
                    Some(e) => e,
                    None if !rec.complete() => p.last_t.max(end),
                    None => p.last_t,
                };
                pts.push((until, v));
            }
            ProcessSeries {
                pid: p.pid,
                label: label(p),
                points: thin(&pts, MAX_POINTS),
            }
        })
        .collect()
}

/// The Python view over time, and the last census of each process.
fn python_view(rec: &Recording) -> (Vec<PythonPoint>, Vec<CensusSnapshot>) {
    let pid_of = |id: i64| {
        rec.processes
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.pid)
            .unwrap_or(0)
    };
    let python = rec
        .python
        .iter()
        .map(|r| PythonPoint {
            t: r.t,
            pid: pid_of(r.process),
            gc_counts: r.sample.gc_counts.clone(),
            gc_collections: r.sample.gc_collections.clone(),
            gc_frozen: r.sample.gc_frozen,
            pymalloc_arenas: r.sample.pymalloc_arenas,
            pymalloc_used: r.sample.pymalloc_used,
            pymalloc_free: r.sample.pymalloc_free,
        })
        .collect();
    let mut census: Vec<CensusSnapshot> = Vec::new();
    for r in rec.python.iter().filter(|r| !r.sample.census.is_empty()) {
        let pid = pid_of(r.process);
        let snap = CensusSnapshot {
            pid,
            t: r.t,
            types: r.sample.census.clone(),
        };
        match census.iter_mut().find(|c| c.pid == pid) {
            Some(c) => *c = snap,
            None => census.push(snap),
        }
    }
    (python, census)
}

/// The processes of a recording. A recording cut off by a crash has no exit for processes
/// still alive at its end: they lived at least until its last tick.
fn process_summaries(rec: &Recording) -> Vec<ProcessSummary> {
    let end = rec.ticks.last().map_or(0.0, |t| t.t);
    rec.processes
        .iter()
        .map(|p| {
            let samples = rec.samples_of(p.id);
            let pss = rec.pss_of(p.id);
            let mut last = p.last_t;
            if p.exit_t.is_none() && !rec.complete() {
                last = last.max(end);
            }
            last = last
                .max(samples.last().map_or(0.0, |s| s.t))
                .max(pss.last().map_or(0.0, |s| s.t));
            ProcessSummary {
                pid: p.pid,
                ppid: p.ppid,
                name: p.name.clone(),
                cmdline: p.cmdline.clone(),
                vm_hwm: p
                    .vm_hwm
                    .max(samples.iter().map(|s| s.counters.vm_hwm).max().unwrap_or(0)),
                peak_pss: p
                    .peak_pss
                    .max(pss.iter().map(|s| s.amounts.pss).max().unwrap_or(0)),
                first_seconds: p.first_t,
                last_seconds: last,
                exit_seconds: p.exit_t,
            }
        })
        .collect()
}

/// The largest VmHWM, when it was reached, and which process (index) holds it. When: the
/// first sample showing its final value; when none does (the last of it came from wait4's
/// ru_maxrss, after the last sample), the last moment the process was seen alive.
fn largest_vm_hwm(rec: &Recording, processes: &[ProcessSummary]) -> (At, Option<usize>) {
    let mut hwm = (At::default(), None::<usize>);
    for (k, p) in rec.processes.iter().enumerate() {
        let v = processes[k].vm_hwm;
        if v > hwm.0.value {
            let when = rec
                .samples_of(p.id)
                .iter()
                .find(|s| s.counters.vm_hwm >= v)
                .map(|s| s.t)
                .unwrap_or(processes[k].last_seconds);
            hwm = (At { value: v, t: when }, Some(k));
        }
    }
    hwm
}

/// Processes whose memory could not be read (recorded as `unreadable` events).
fn unreadable(rec: &Recording) -> Vec<String> {
    rec.events
        .iter()
        .filter(|e| e.kind == "unreadable")
        .map(|e| e.detail.clone())
        .collect()
}

/// Where a process's peak may lie when VmHWM (read while it ran) and wait4's ru_maxrss (which
/// also counts the children it reaped) disagree.
fn ru_maxrss_notes(rec: &Recording, processes: &[ProcessSummary], out: &mut Vec<Note>) {
    for p in processes {
        let Some(maxrss) = rec
            .processes
            .iter()
            .find(|r| r.pid == p.pid)
            .and_then(|r| r.ru_maxrss)
        else {
            continue;
        };
        if maxrss > p.vm_hwm + p.vm_hwm / 50 {
            out.push(Note::RuMaxrss {
                pid: p.pid,
                vm_hwm: p.vm_hwm,
                ru_maxrss: maxrss,
            });
        }
    }
}

/// The peak's figure, source and time (see [`crate::peak`]), and the notes saying what it is.
fn tree_peak(rec: &Recording, processes: &[ProcessSummary]) -> (Peak, Option<usize>) {
    let (hwm, hwm_k) = largest_vm_hwm(rec, processes);
    let read = crate::peak::pss_read(rec);
    let rss_sum = crate::peak::tick_max(rec, |t| t.rss);
    let estimated = crate::peak::tick_max(rec, |t| t.pss);
    let unreadable = unreadable(rec);
    let (bytes, source, at) = if !unreadable.is_empty() {
        if rss_sum.value > hwm.value {
            (rss_sum.value, PeakSource::Rss, rss_sum.t)
        } else {
            (hwm.value, PeakSource::VmHwm, hwm.t)
        }
    } else {
        match read {
            Some((r, _)) if r.value > hwm.value => (r.value, PeakSource::Pss, r.t),
            _ => (hwm.value, PeakSource::VmHwm, hwm.t),
        }
    };
    let reads = read.map_or(0, |r| r.1);
    let n = processes.len();
    let mut notes = vec![Note::PeakSource {
        source,
        processes: n,
        pss_reads: reads,
    }];
    match read {
        Some((r, _)) if estimated.value > r.value + r.value / 50 => {
            notes.push(Note::PssEstimateAbove {
                estimated: estimated.value,
                estimated_at_seconds: estimated.t,
                read: r.value,
            })
        }
        Some(_) => {}
        None => notes.push(Note::PssNeverRead),
    }
    let cgroup = rec.end.cgroup_peak;
    match (cgroup, rec.meta.cgroup_error.as_deref()) {
        (Some(bytes), _) => notes.push(Note::CgroupPeak { bytes }),
        (None, Some(why)) => notes.push(Note::NoCgroup {
            reason: why.to_string(),
        }),
        (None, None) => {}
    }
    if n > 1 {
        notes.push(Note::RssSampled);
    }
    if rec.meta.mode == Some(Mode::Record) {
        if let Some(k) = hwm_k {
            let first = rec.samples_of(rec.processes[k].id).first();
            if source == PeakSource::VmHwm && first.is_some_and(|s| s.counters.vm_hwm >= hwm.value)
            {
                notes.push(Note::PeakBeforeRecording {
                    pid: processes[k].pid,
                });
            }
        }
    }
    if let Some(iv) = rec.end.budget_interval_s {
        notes.push(Note::BudgetInterval {
            interval_seconds: iv,
        });
    }
    ru_maxrss_notes(rec, processes, &mut notes);
    let pid_at = Model::largest_at(rec, at).or_else(|| hwm_k.map(|k| rec.processes[k].id));
    let peak_proc = pid_at.and_then(|id| rec.processes.iter().find(|p| p.id == id));
    let peak = Peak {
        bytes,
        source,
        pss: read.map(|r| r.0.value),
        pss_at_seconds: read.map(|r| r.0.t),
        pss_reads: reads,
        pss_estimated: estimated.value,
        rss: rss_sum.value.max(hwm.value),
        at_seconds: at,
        pid: peak_proc.map(|p| p.pid),
        cmdline: peak_proc.map(label),
        cgroup,
        sampled: notes,
    };
    (peak, hwm_k)
}

impl Model {
    /// Computes the model of a recording.
    pub fn from_recording(rec: &Recording) -> Result<Model, Error> {
        let interval = rec.meta.interval_s.unwrap_or(0.01);
        let duration = rec.last_t();
        let processes = process_summaries(rec);
        let (peak, hwm_k) = tree_peak(rec, &processes);
        let max_vm_hwm = hwm_k.map_or(0, |k| processes[k].vm_hwm);
        let mut warnings: Vec<Warning> = unreadable(rec)
            .into_iter()
            .map(Warning::Unreadable)
            .collect();
        // Trace files not read, or read with lines skipped (`run --trace`).
        warnings.extend(
            rec.events
                .iter()
                .filter(|e| e.kind == "trace")
                .map(|e| Warning::Unreadable(e.detail.clone())),
        );
        let allocations = rec.allocations()?;

        // Growth is found on the tree's total memory where memlens made the program a cgroup
        // (read every tick), else on the PSS estimated every tick.
        let cgroup_points: Option<Vec<(f64, u64)>> = rec
            .ticks
            .iter()
            .map(|t| Some((t.t, t.cgroup_usage?)))
            .collect();
        let (growth_series, total_points) = match cgroup_points {
            Some(p) if !p.is_empty() && peak.cgroup.is_some() => ("cgroup", p),
            _ => ("pss", rec.ticks.iter().map(|t| (t.t, t.pss)).collect()),
        };
        let growth = phases(&total_points, interval);
        let leak = crate::leak::of_recording(rec, growth_series, &total_points);
        let tree: Vec<(f64, u64, u64, Option<u64>)> = {
            let per = rec.ticks.len().div_ceil(MAX_POINTS).max(1);
            rec.ticks
                .chunks(per)
                .filter_map(|c| {
                    let m = c.iter().max_by_key(|t| t.pss)?;
                    Some((
                        m.t,
                        c.iter().map(|t| t.rss).max()?,
                        m.pss,
                        c.iter().filter_map(|t| t.cgroup_usage).max(),
                    ))
                })
                .collect()
        };

        let chosen = crate::peak::breakdown(rec, peak.source, peak.bytes, peak.at_seconds);
        match &chosen {
            Some((_, b)) if !b.at_peak => warnings.push(Warning::NoBreakdownAtPeak(b.clone())),
            None if peak.bytes > 0 => warnings.push(Warning::NoLedger),
            _ => {}
        }
        let (categories, ledger_series) = ledger_series(rec, chosen.as_ref().map(|c| c.0));
        let ledger_at_peak = match chosen {
            Some((l, breakdown)) => {
                let json = rec.ledger_json(l.id)?;
                let findings = crate::stored::findings(&json).unwrap_or_else(|why| {
                    warnings.push(Warning::FindingsUnreadable(why));
                    Vec::new()
                });
                Some(LedgerAtPeak {
                    t: l.t,
                    totals: l.totals,
                    categories: l.categories.clone(),
                    json,
                    breakdown,
                    findings,
                })
            }
            None => None,
        };
        let (python, census) = python_view(rec);
        let sharing = crate::sharing_over_time::SharingOverTime::of(rec);
        let advice = ledger_at_peak
            .as_ref()
            .map(|l| crate::recording_advice::of(l, &python, &sharing));
        Ok(Model {
            file: rec.path.display().to_string(),
            mode: rec.meta.mode.unwrap_or(Mode::Record).as_str().to_string(),
            command: rec.meta.command.clone().unwrap_or_default(),
            complete: rec.complete(),
            exit_code: rec.end.exit_code,
            exit_signal: rec.end.exit_signal,
            duration_seconds: duration,
            interval_seconds: interval,
            samples: rec.ticks.len() as u64,
            peak,
            max_vm_hwm,
            process_series: process_series(rec),
            processes,
            growth,
            growth_series,
            leak,
            tree,
            categories,
            ledger_series,
            ledger_at_peak,
            python,
            census,
            cgroup_note: rec.meta.cgroup_error.clone(),
            memlens_cpu_seconds: rec.end.memlens_cpu_s,
            warnings,
            sharing,
            advice,
            allocations,
        })
    }

    /// The process with the most RSS at time `t` (its latest sample at or before `t`).
    fn largest_at(rec: &Recording, t: f64) -> Option<i64> {
        rec.processes
            .iter()
            .filter(|p| p.first_t <= t + 1e-9)
            .filter_map(|p| {
                let s = rec.samples_of(p.id);
                let k = s.partition_point(|x| x.t <= t + 1e-9);
                let v = if k > 0 {
                    s[k - 1].counters.rss
                } else {
                    s.first()?.counters.rss
                };
                Some((p.id, v))
            })
            .max_by_key(|&(_, v)| v)
            .map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memlens_model::tree::assemble;
    use memlens_recording::writer::{Counters, ProcessInfo, RecordingWriter};
    use memlens_recording::{End, Meta};

    fn meta(mode: Mode) -> Meta {
        Meta {
            mode: Some(mode),
            ..Meta::default()
        }
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("memlens-model-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    const MIB: u64 = 1 << 20;

    fn amounts(pss: u64, rss: u64) -> Amounts {
        Amounts {
            rss,
            pss,
            uss: pss / 2,
            swap: 0,
        }
    }

    /// Two processes sharing most of their memory: RSS sums to 200 MiB, PSS to 120 MiB.
    fn forked(w: &mut RecordingWriter) -> (i64, i64) {
        let info = |pid| ProcessInfo {
            pid,
            ppid: 1,
            start_ticks: u64::from(pid),
            name: "python3".into(),
            cmdline: "python3 app.py".into(),
        };
        let a = w.add_process(&info(10), 0.0).unwrap();
        let b = w.add_process(&info(11), 0.0).unwrap();
        let c = Counters {
            rss: 100 * MIB,
            vm_hwm: 100 * MIB,
            threads: 1,
            ..Counters::default()
        };
        for id in [a, b] {
            w.sample(0.01, id, &c).unwrap();
        }
        (a, b)
    }

    #[test]
    fn the_peak_is_pss_read_for_the_whole_tree_never_an_estimate() {
        let path = tmp("pss");
        let mut w = RecordingWriter::create(&path, &meta(Mode::Record)).unwrap();
        let (a, b) = forked(&mut w);
        // The first tick knows no PSS yet: its estimate is the RSS sum.
        w.tick(0.01, 200 * MIB, 200 * MIB, 2, None).unwrap();
        // A complete round at 0.5 s: 60 + 60 MiB.
        w.tick(0.5, 200 * MIB, 120 * MIB, 2, None).unwrap();
        w.pss(0.5, a, &amounts(60 * MIB, 100 * MIB), 10).unwrap();
        w.pss(0.5, b, &amounts(60 * MIB, 100 * MIB), 10).unwrap();
        // An incomplete one at 0.9 s (one process read): not a tree figure.
        w.tick(0.9, 200 * MIB, 150 * MIB, 2, None).unwrap();
        w.pss(0.9, a, &amounts(90 * MIB, 100 * MIB), 10).unwrap();
        w.finish(&End {
            end_t: Some(1.0),
            ..End::default()
        })
        .unwrap();
        let m = Model::from_recording(&Recording::open(&path).unwrap()).unwrap();
        assert_eq!(m.peak.pss, Some(120 * MIB));
        assert_eq!(m.peak.pss_reads, 1);
        assert_eq!(m.peak.pss_estimated, 200 * MIB);
        assert_eq!(m.peak.source, PeakSource::Pss);
        assert_eq!(m.peak.bytes, 120 * MIB);
        assert!((m.peak.at_seconds - 0.5).abs() < 1e-9);
        assert_eq!(m.warnings, [Warning::NoLedger]);
        assert!(
            m.warnings[0]
                .words(SizeStyle::Binary)
                .contains("no breakdown"),
            "{:?}",
            m.warnings
        );
        // The estimate above the read is a note with its figures, worded in either style.
        let above = Note::PssEstimateAbove {
            estimated: 200 * MIB,
            estimated_at_seconds: 0.01,
            read: 120 * MIB,
        };
        assert!(m.peak.sampled.contains(&above), "{:?}", m.peak.sampled);
        assert!(above.words(SizeStyle::Bytes).ends_with(
            "the highest estimate, 209715200 at 0.01 s, is above the highest read, 125829120"
        ));
        assert!(above.words(SizeStyle::Binary).ends_with(
            "the highest estimate, 200 MiB at 0.01 s, is above the highest read, 120 MiB"
        ));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn an_unreadable_process_makes_the_peak_rss_and_warns() {
        let path = tmp("unreadable");
        let mut w = RecordingWriter::create(&path, &meta(Mode::Record)).unwrap();
        let (a, _) = forked(&mut w);
        w.tick(0.01, 200 * MIB, 200 * MIB, 2, None).unwrap();
        w.event(
            0.01,
            "unreadable",
            Some(a),
            "pid 10: permission denied reading smaps",
        )
        .unwrap();
        w.finish(&End::default()).unwrap();
        let m = Model::from_recording(&Recording::open(&path).unwrap()).unwrap();
        assert_eq!(m.peak.source, PeakSource::Rss);
        assert_eq!(m.peak.bytes, 200 * MIB);
        assert_eq!(
            m.warnings[0],
            Warning::Unreadable("pid 10: permission denied reading smaps".into())
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn an_early_breakdown_is_not_called_the_peaks() {
        let path = tmp("early");
        let mut w = RecordingWriter::create(&path, &meta(Mode::Run)).unwrap();
        let info = ProcessInfo {
            pid: 20,
            ppid: 1,
            start_ticks: 1,
            name: "python3".into(),
            cmdline: "python3 build.py".into(),
        };
        let id = w.add_process(&info, 0.0).unwrap();
        // A ledger at 1 s with 100 MiB, then growth to 400 MiB at 6 s (VmHWM) without one.
        let mut tree = assemble(20, Vec::new(), None);
        tree.totals = amounts(100 * MIB, 100 * MIB);
        w.tick(1.0, 100 * MIB, 100 * MIB, 1, None).unwrap();
        w.ledger(1.0, "first", &tree, true).unwrap();
        for (t, rss) in [(1.0, 100), (6.0, 400)] {
            let c = Counters {
                rss: rss * MIB,
                vm_hwm: rss * MIB,
                threads: 1,
                ..Counters::default()
            };
            w.sample(t, id, &c).unwrap();
            w.tick(t, rss * MIB, rss * MIB, 1, None).unwrap();
        }
        w.close_process(id, 6.0, Some(6.1), 400 * MIB, 0, None)
            .unwrap();
        w.finish(&End::default()).unwrap();
        let m = Model::from_recording(&Recording::open(&path).unwrap()).unwrap();
        assert_eq!(m.peak.source, PeakSource::VmHwm);
        assert!((m.peak.at_seconds - 6.0).abs() < 1e-9);
        let l = m.ledger_at_peak.expect("the only ledger is shown");
        assert!(!l.breakdown.at_peak);
        assert!((l.breakdown.from_peak_seconds + 5.0).abs() < 1e-9);
        assert_eq!(
            (
                l.breakdown.measure,
                l.breakdown.bytes,
                l.breakdown.peak_bytes
            ),
            ("rss", 100 * MIB, 400 * MIB)
        );
        assert_eq!(
            l.breakdown.words(SizeStyle::Binary),
            "no breakdown at the peak: the nearest is 5.00 s before it (ledger at 1.00 s, \
             holding 25% of the peak's RSS, 100 MiB of 400 MiB)"
        );
        assert!(l
            .breakdown
            .words(SizeStyle::Bytes)
            .ends_with("holding 25% of the peak's RSS, 104857600 of 419430400)"));
        assert!(m
            .warnings
            .contains(&Warning::NoBreakdownAtPeak(l.breakdown.clone())));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_cut_off_recording_keeps_processes_alive_until_its_last_tick() {
        let path = tmp("cutoff");
        let mut w = RecordingWriter::create(&path, &meta(Mode::Run)).unwrap();
        let (a, _) = forked(&mut w);
        for k in 1..=35 {
            w.tick(f64::from(k) * 0.1, 200 * MIB, 120 * MIB, 2, None)
                .unwrap();
        }
        w.pss(3.5, a, &amounts(60 * MIB, 100 * MIB), 10).unwrap();
        // The writer dies here: no close_process, no finish.
        w.commit().unwrap();
        drop(w);
        let m = Model::from_recording(&Recording::open(&path).unwrap()).unwrap();
        assert!(!m.complete);
        for p in &m.processes {
            assert!((p.last_seconds - 3.5).abs() < 1e-9, "{p:?}");
            assert_eq!(p.vm_hwm, 100 * MIB);
        }
        assert_eq!(m.processes[0].peak_pss, 60 * MIB);
        assert_eq!(m.peak.bytes, 100 * MIB);
        let _ = std::fs::remove_file(&path);
    }
}
