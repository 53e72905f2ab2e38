//! What a report shows, computed once from a recording: the peak and where it came from, each
//! process, growth phases, and the series the charts draw. Every renderer works from this.

use serde::Serialize;

use memlens_ledger::Amounts;
use memlens_record::reader::{ProcessRow, Recording};
use memlens_record::Error;

use crate::growth::{phases, Phase};

/// Where the tree's peak figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeakSource {
    /// The kernel's exact peak charge of the memory cgroup memlens ran the tree in.
    Cgroup,
    /// A process's kernel high-water mark (VmHWM), above every sampled tree total.
    VmHwm,
    /// The highest sample (a spike shorter than the interval can be missed).
    Sampled,
}

impl PeakSource {
    /// Name as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            PeakSource::Cgroup => "cgroup",
            PeakSource::VmHwm => "vm_hwm",
            PeakSource::Sampled => "sampled",
        }
    }
}

/// The peak of the tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Peak {
    /// The tree's peak memory: the cgroup's exact peak charge when there is one, else the larger
    /// of the highest PSS total and the largest VmHWM. `--max-peak` checks this.
    pub bytes: u64,
    /// Where `bytes` comes from.
    pub source: PeakSource,
    /// Highest tree PSS total (sampled; PSS between `smaps_rollup` reads scaled by RSS).
    pub pss: u64,
    /// Highest tree RSS: the larger of the highest sampled RSS sum and the largest VmHWM.
    pub rss: u64,
    /// When the peak happened (s).
    pub at_seconds: f64,
    /// The process holding the most memory at that moment.
    pub pid: Option<u32>,
    /// Its command line (untrusted).
    pub cmdline: Option<String>,
    /// The cgroup's exact peak charge (page cache and kernel memory included), if any.
    pub cgroup: Option<u64>,
    /// Which figures are sampled rather than exact, in words.
    pub sampled: Vec<String>,
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

/// The ledger that shows the peak: the largest kept, the nearest the peak among near-equals.
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
    pub types: Vec<memlens_record::CensusEntry>,
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
    /// `(t, rss, pss, cgroup usage)` of the tree, thinned for charts.
    pub tree: Vec<(f64, u64, u64, Option<u64>)>,
    /// Ledger categories present, largest at the peak first.
    pub categories: Vec<String>,
    /// Category sums at each ledger.
    pub ledger_series: Vec<LedgerPoint>,
    /// The ledger at the peak (largest kept; nearest the peak's time among near-equals).
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

impl Model {
    /// Computes the model of a recording.
    pub fn from_recording(rec: &Recording) -> Result<Model, Error> {
        let interval = rec.meta_f64("interval_s").unwrap_or(0.01);
        let duration = rec.last_t();
        let processes: Vec<ProcessSummary> = rec
            .processes
            .iter()
            .map(|p| ProcessSummary {
                pid: p.pid,
                ppid: p.ppid,
                name: p.name.clone(),
                cmdline: p.cmdline.clone(),
                vm_hwm: p.vm_hwm.max(
                    rec.samples_of(p.id)
                        .iter()
                        .map(|s| s.counters.vm_hwm)
                        .max()
                        .unwrap_or(0),
                ),
                peak_pss: p.peak_pss.max(
                    rec.pss_of(p.id)
                        .iter()
                        .map(|s| s.amounts.pss)
                        .max()
                        .unwrap_or(0),
                ),
                first_seconds: p.first_t,
                last_seconds: p.last_t,
                exit_seconds: p.exit_t,
            })
            .collect();

        // Sampled maxima of the tree.
        let mut rss_max = (0u64, 0.0f64);
        let mut pss_max = (0u64, 0.0f64);
        let mut cg_max = (0u64, 0.0f64);
        for tk in &rec.ticks {
            if tk.rss > rss_max.0 {
                rss_max = (tk.rss, tk.t);
            }
            if tk.pss > pss_max.0 {
                pss_max = (tk.pss, tk.t);
            }
            if let Some(u) = tk.cgroup_usage {
                if u > cg_max.0 {
                    cg_max = (u, tk.t);
                }
            }
        }
        // The largest VmHWM, and when it was reached (the first sample showing its final value).
        let mut hwm = (0u64, 0.0f64, None::<usize>);
        for (k, p) in rec.processes.iter().enumerate() {
            let v = processes[k].vm_hwm;
            if v > hwm.0 {
                let when = rec
                    .samples_of(p.id)
                    .iter()
                    .find(|s| s.counters.vm_hwm >= v)
                    .map(|s| s.t)
                    .unwrap_or(p.exit_t.unwrap_or(p.last_t));
                hwm = (v, when, Some(k));
            }
        }
        let cgroup_peak = rec.meta("cgroup_peak").and_then(|v| v.parse::<u64>().ok());
        let (bytes, source) = match cgroup_peak {
            Some(c) => (c, PeakSource::Cgroup),
            None if hwm.0 > pss_max.0 => (hwm.0, PeakSource::VmHwm),
            None => (pss_max.0, PeakSource::Sampled),
        };
        // When: a spike between samples shows as a VmHWM rise; otherwise the highest sample.
        let sampled_at = match source {
            PeakSource::Cgroup if cg_max.0 > 0 => (cg_max.0, cg_max.1),
            _ => pss_max,
        };
        let spike = hwm.0 > rss_max.0 + rss_max.0 / 20 || bytes > sampled_at.0 + sampled_at.0 / 20;
        let at = if spike && hwm.2.is_some() {
            hwm.1
        } else {
            sampled_at.1
        };
        let pid_at = Self::largest_at(rec, at).or_else(|| hwm.2.map(|k| rec.processes[k].id));
        let peak_proc = pid_at.and_then(|id| rec.processes.iter().find(|p| p.id == id));
        let mut sampled = vec![
            "pss: tree PSS totals are sampled (PSS between smaps_rollup reads is scaled by RSS)"
                .to_string(),
        ];
        let cgroup_note = rec.meta("cgroup_error").map(str::to_string);
        match source {
            PeakSource::Cgroup => {}
            _ => {
                sampled.push(format!(
                "tree peak: {} (each process's VmHWM is exact; the sum over processes is sampled)",
                cgroup_note.as_deref().unwrap_or("no memory cgroup of memlens's own")
            ))
            }
        }
        if rec.processes.len() > 1 {
            sampled.push("rss: the tree RSS sum is sampled; per-process VmHWM is exact".into());
        }
        // A process's VmHWM is read while it runs; once it exits only wait4's ru_maxrss is
        // left, which also counts the children it reaped, so it is not taken as the process's
        // own (the sampler keeps it only for processes without children). Say where the two
        // disagree: the process may have peaked in its last moments.
        for p in &processes {
            let Some(maxrss) = rec
                .processes
                .iter()
                .find(|r| r.pid == p.pid)
                .and_then(|r| r.ru_maxrss)
            else {
                continue;
            };
            if maxrss > p.vm_hwm + p.vm_hwm / 50 {
                sampled.push(format!(
                    "vm_hwm of pid {}: {} MiB was read while it ran; the kernel's ru_maxrss at \
                     its exit, {} MiB, counts the children it reaped too, so its own peak lies \
                     between the two",
                    p.pid,
                    p.vm_hwm >> 20,
                    maxrss >> 20
                ));
            }
        }
        let peak = Peak {
            bytes,
            source,
            pss: pss_max.0,
            rss: rss_max.0.max(hwm.0),
            at_seconds: at,
            pid: peak_proc.map(|p| p.pid),
            cmdline: peak_proc.map(label),
            cgroup: cgroup_peak,
            sampled,
        };

        // Growth is found on the tree's exact total where memlens made the program a cgroup
        // (read every tick), else on the sampled PSS, whose steps when a PSS read lands would
        // otherwise look like growth.
        let cgroup_points: Option<Vec<(f64, u64)>> = rec
            .ticks
            .iter()
            .map(|t| Some((t.t, t.cgroup_usage?)))
            .collect();
        let (growth_series, total_points) = match cgroup_points {
            Some(p) if !p.is_empty() && source == PeakSource::Cgroup => ("cgroup", p),
            _ => ("pss", rec.ticks.iter().map(|t| (t.t, t.pss)).collect()),
        };
        let growth = phases(&total_points, interval);
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

        // Ledger series and the ledger at the peak.
        let mut categories: Vec<String> = Vec::new();
        for l in &rec.ledgers {
            for (c, _) in &l.categories {
                if !categories.contains(c) {
                    categories.push(c.clone());
                }
            }
        }
        // The ledger that best shows what the peak was made of: the largest one kept (ledgers
        // are taken as the tree reaches new highs), and of those within 2% of it the one
        // nearest the peak's time. Nearest in time alone can pick a ledger taken just before
        // the tree forked or grew, while the budget held the next one back.
        let kept = || rec.ledgers.iter().filter(|l| l.has_json);
        let largest = kept().map(|l| l.totals.pss).max().unwrap_or(0);
        let nearest = kept()
            .filter(|l| l.totals.pss as f64 >= largest as f64 * 0.98)
            .min_by(|a, b| (a.t - at).abs().total_cmp(&(b.t - at).abs()));
        if let Some(l) = nearest {
            categories.sort_by_key(|c| {
                std::cmp::Reverse(
                    l.categories
                        .iter()
                        .find(|(n, _)| n == c)
                        .map(|(_, a)| a.pss)
                        .unwrap_or(0),
                )
            });
        }
        let ledger_series = rec
            .ledgers
            .iter()
            .map(|l| LedgerPoint {
                t: l.t,
                pss: categories
                    .iter()
                    .map(|c| {
                        l.categories
                            .iter()
                            .find(|(n, _)| n == c)
                            .map(|(_, a)| a.pss)
                            .unwrap_or(0)
                    })
                    .collect(),
            })
            .collect();
        let ledger_at_peak = match nearest {
            Some(l) => Some(LedgerAtPeak {
                t: l.t,
                totals: l.totals,
                categories: l.categories.clone(),
                json: rec.ledger_json(l.id)?,
            }),
            None => None,
        };

        let process_series = rec
            .processes
            .iter()
            .map(|p| {
                // Rows are written only on change: each value holds until the next row (a
                // step), and the last one until the process ended.
                let mut pts: Vec<(f64, u64)> = Vec::new();
                for s in rec.samples_of(p.id) {
                    if let Some(&(_, prev)) = pts.last() {
                        pts.push((s.t, prev));
                    }
                    pts.push((s.t, s.counters.rss));
                }
                if let Some(&(_, v)) = pts.last() {
                    pts.push((p.exit_t.unwrap_or(p.last_t), v));
                }
                ProcessSeries {
                    pid: p.pid,
                    label: label(p),
                    points: thin(&pts, MAX_POINTS),
                }
            })
            .collect();
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
        let exit_signal = rec.meta("exit_signal").and_then(|v| v.parse().ok());
        Ok(Model {
            file: rec.path.display().to_string(),
            mode: rec.meta("mode").unwrap_or("record").to_string(),
            command: rec.meta("command").unwrap_or("").to_string(),
            complete: rec.complete(),
            exit_code: rec.meta("exit_code").and_then(|v| v.parse().ok()),
            exit_signal,
            duration_seconds: duration,
            interval_seconds: interval,
            samples: rec.ticks.len() as u64,
            peak,
            max_vm_hwm: hwm.0,
            processes,
            growth,
            growth_series,
            tree,
            categories,
            ledger_series,
            ledger_at_peak,
            process_series,
            python,
            census,
            cgroup_note,
            memlens_cpu_seconds: rec.meta_f64("memlens_cpu_s"),
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
