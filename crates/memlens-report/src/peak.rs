//! The tree's peak, computed from a recording, and the breakdown (ledger) that shows it.
//!
//! The headline figure (what `--max-peak` checks) does not move with the page cache's state
//! and is never below a process's own VmHWM:
//! - the largest VmHWM (the kernel's exact high-water mark of one process's RSS), or
//! - the tree's PSS where a round of reads (`smaps_rollup` or a ledger of every live process
//!   at one tick) found it above every VmHWM, or
//! - where some process's PSS could not be read, the tree's RSS sum (shared pages counted
//!   once per process) in place of its PSS, said so.
//!
//! PSS between reads is an estimate (the `ticks.pss` series) and never the headline. The
//! memory cgroup's peak charge (page cache and kernel memory included, so it depends on what
//! the page cache held before the run) is shown apart.

use serde::Serialize;

use memlens_model::units::SizeStyle;
use memlens_recording::reader::{LedgerRow, Recording};

/// Where the tree's peak figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeakSource {
    /// A process's VmHWM: the kernel's exact peak RSS of that process, at least every tree
    /// PSS read.
    VmHwm,
    /// The tree's PSS, read from the kernel for every live process at one moment (sampled: a
    /// spike between reads can be missed), above every VmHWM.
    Pss,
    /// The tree's RSS sum, in place of PSS that could not be read for some process.
    Rss,
}

impl PeakSource {
    /// Name as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            PeakSource::VmHwm => "vm_hwm",
            PeakSource::Pss => "pss",
            PeakSource::Rss => "rss",
        }
    }

    /// What the figure is, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            PeakSource::VmHwm => "a process's VmHWM: the kernel's exact peak RSS",
            PeakSource::Pss => "the tree's PSS, read from smaps_rollup; sampled",
            PeakSource::Rss => "the tree's RSS sum, PSS unreadable; sampled",
        }
    }
}

/// A moment and a value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct At {
    pub value: u64,
    pub t: f64,
}

impl At {
    fn raise(&mut self, value: u64, t: f64) {
        if value > self.value {
            *self = At { value, t };
        }
    }
}

/// The highest tree PSS among the complete rounds of reads: instants where a PSS row was
/// written for every process alive at that tick (a PSS round or a ledger).
pub(crate) fn pss_read(rec: &Recording) -> Option<(At, usize)> {
    let mut rows: Vec<(f64, u64)> = rec.pss.iter().map(|r| (r.t, r.amounts.pss)).collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best: Option<At> = None;
    let mut rounds = 0;
    for group in rows.chunk_by(|a, b| a.0 == b.0) {
        let t = group[0].0;
        let k = rec.ticks.partition_point(|x| x.t < t);
        let Some(tick) = rec.ticks.get(k).filter(|x| x.t == t) else {
            continue;
        };
        if group.len() != tick.processes as usize || group.is_empty() {
            continue;
        }
        rounds += 1;
        let sum: u64 = group.iter().map(|r| r.1).sum();
        best.get_or_insert_with(At::default).raise(sum, t);
    }
    best.map(|b| (b, rounds))
}

/// The highest of a tick series.
pub(crate) fn tick_max(
    rec: &Recording,
    f: impl Fn(&memlens_recording::reader::TickRow) -> u64,
) -> At {
    let mut m = At::default();
    for tk in &rec.ticks {
        m.raise(f(tk), tk.t);
    }
    m
}

/// The breakdown chosen to show the peak.
#[derive(Debug, Clone, PartialEq)]
pub struct Breakdown {
    /// When the ledger was taken (s).
    pub t_seconds: f64,
    /// Its time minus the peak's (s): negative before the peak.
    pub from_peak_seconds: f64,
    /// Whether it shows the peak: within [`NEAR_SECONDS`] of it and holding at least
    /// [`NEAR_SHARE`] of the peak's figure.
    pub at_peak: bool,
    /// Its total as a share of the peak's figure (same measure: RSS for a VmHWM or RSS peak,
    /// PSS for a PSS peak).
    pub share_of_peak: f64,
    /// The measure compared: `pss` for a PSS peak, else `rss`.
    pub measure: &'static str,
    /// The ledger's total in that measure.
    pub bytes: u64,
    /// The peak's figure.
    pub peak_bytes: u64,
}

impl Breakdown {
    /// In words, sizes in `style`.
    pub fn words(&self, style: SizeStyle) -> String {
        let side = if self.from_peak_seconds < 0.0 {
            "before"
        } else {
            "after"
        };
        let dt = self.from_peak_seconds.abs();
        if self.at_peak {
            format!(
                "breakdown at the peak: ledger at {:.2} s, {dt:.2} s {side} it",
                self.t_seconds
            )
        } else {
            format!(
                "no breakdown at the peak: the nearest is {dt:.2} s {side} it (ledger at {:.2} s, \
                 holding {:.0}% of the peak's {}, {} of {})",
                self.t_seconds,
                self.share_of_peak * 100.0,
                self.measure.to_uppercase(),
                style.size(self.bytes),
                style.size(self.peak_bytes)
            )
        }
    }
}

/// JSON: the figures, and `note`, the words in binary units.
impl Serialize for Breakdown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            t_seconds: f64,
            from_peak_seconds: f64,
            at_peak: bool,
            share_of_peak: f64,
            note: String,
            measure: &'a str,
            bytes: u64,
            peak_bytes: u64,
        }
        Json {
            t_seconds: self.t_seconds,
            from_peak_seconds: self.from_peak_seconds,
            at_peak: self.at_peak,
            share_of_peak: self.share_of_peak,
            note: self.words(SizeStyle::Binary),
            measure: self.measure,
            bytes: self.bytes,
            peak_bytes: self.peak_bytes,
        }
        .serialize(s)
    }
}

/// A breakdown this close to the peak (s) and holding this share of it is the peak's.
pub const NEAR_SECONDS: f64 = 0.5;
/// See [`NEAR_SECONDS`].
pub const NEAR_SHARE: f64 = 0.9;

/// Picks the kept ledger that best shows a peak of `peak` bytes (by `source`) at `at`: the
/// nearest in time among those holding [`NEAR_SHARE`] of it, else the one holding the most.
pub(crate) fn breakdown(
    rec: &Recording,
    source: PeakSource,
    peak: u64,
    at: f64,
) -> Option<(&LedgerRow, Breakdown)> {
    let share = |l: &LedgerRow| {
        let v = match source {
            PeakSource::Pss => l.totals.pss,
            PeakSource::VmHwm | PeakSource::Rss => l.totals.rss,
        };
        (v as f64 / peak.max(1) as f64).min(1.0)
    };
    let kept = || {
        rec.ledgers
            .iter()
            .filter(|l| l.has_json && l.totals.rss > 0)
    };
    let near = kept()
        .filter(|l| share(l) >= NEAR_SHARE)
        .min_by(|a, b| (a.t - at).abs().total_cmp(&(b.t - at).abs()));
    let l = near.or_else(|| {
        kept().max_by(|a, b| {
            share(a)
                .total_cmp(&share(b))
                .then((b.t - at).abs().total_cmp(&(a.t - at).abs()))
        })
    })?;
    let s = share(l);
    let dt = l.t - at;
    let (measure, bytes) = match source {
        PeakSource::Pss => ("pss", l.totals.pss),
        _ => ("rss", l.totals.rss),
    };
    Some((
        l,
        Breakdown {
            t_seconds: l.t,
            from_peak_seconds: dt,
            at_peak: dt.abs() <= NEAR_SECONDS && s >= NEAR_SHARE,
            share_of_peak: s,
            measure,
            bytes,
            peak_bytes: peak,
        },
    ))
}

/// What a figure of the peak is, which are sampled or estimated: a note of the report, as data
/// (`kind` and figures in JSON's `sampled_figures`), worded by [`Note::words`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Note {
    /// Where the peak's figure comes from.
    PeakSource {
        /// The source.
        source: PeakSource,
        /// Processes of the recording.
        processes: usize,
        /// Rounds of PSS reads of the whole tree.
        pss_reads: usize,
    },
    /// The highest PSS estimated between reads is above the highest read.
    PssEstimateAbove {
        /// The highest estimate.
        estimated: u64,
        /// When (s).
        estimated_at_seconds: f64,
        /// The highest read.
        read: u64,
    },
    /// The tree's PSS was never read for every process at once.
    PssNeverRead,
    /// The peak charge of memlens's cgroup for the tree, shown apart.
    CgroupPeak {
        /// The charge.
        bytes: u64,
    },
    /// memlens made no cgroup for the tree.
    NoCgroup {
        /// Why (from the recording).
        reason: String,
    },
    /// The tree's RSS sum is sampled.
    RssSampled,
    /// A recorded process's VmHWM came before the recording began.
    PeakBeforeRecording {
        /// The process.
        pid: u32,
    },
    /// The CPU budget spaced the ticks out.
    BudgetInterval {
        /// The longest interval (s).
        interval_seconds: f64,
    },
    /// A process's VmHWM and its ru_maxrss (children it reaped included) disagree.
    RuMaxrss {
        /// The process.
        pid: u32,
        /// VmHWM read while it ran.
        vm_hwm: u64,
        /// ru_maxrss at its exit.
        ru_maxrss: u64,
    },
}

impl Note {
    /// In words, sizes in `style`.
    pub fn words(&self, style: SizeStyle) -> String {
        match self {
            Note::PeakSource {
                source,
                processes,
                pss_reads: reads,
            } => match source {
                PeakSource::VmHwm if *processes <= 1 => format!(
                    "peak: the process's VmHWM, the kernel's exact high-water mark of its \
                     resident memory (RSS: anonymous, file and shared pages it maps); the tree's \
                     PSS, read {reads} time(s), is sampled and never above it"
                ),
                PeakSource::VmHwm => format!(
                    "peak: the largest VmHWM of a process, the kernel's exact high-water mark of \
                     its RSS; the tree's PSS (sum over its processes), read {reads} time(s), was \
                     never above it, but is sampled: a moment between reads when the processes \
                     together held more can be missed"
                ),
                PeakSource::Pss => format!(
                    "peak: the tree's PSS (each shared page divided among the processes sharing \
                     it), read from smaps_rollup for every process at once ({reads} time(s)); \
                     sampled: a moment between reads can be missed. No process's VmHWM is above it"
                ),
                PeakSource::Rss => "peak: the tree's RSS sum (pages shared between processes \
                     counted in each), because the PSS of some process could not be read (see \
                     warnings); sampled"
                    .to_string(),
            },
            Note::PssEstimateAbove {
                estimated,
                estimated_at_seconds,
                read,
            } => format!(
                "pss: tree PSS between reads is estimated from RSS (each process's PSS/RSS at its \
                 last read); the highest estimate, {} at {estimated_at_seconds:.2} s, is above \
                 the highest read, {}",
                style.size(*estimated),
                style.size(*read)
            ),
            Note::PssNeverRead => "pss: the tree's PSS was never read for every process at once; \
                 the ticks' PSS is estimated from RSS"
                .to_string(),
            Note::CgroupPeak { bytes } => format!(
                "cgroup: the tree's memory cgroup peaked at {}, page cache and kernel memory \
                 included; that moves with what the page cache held before the run, so it is \
                 shown apart and is not the peak",
                style.size(*bytes)
            ),
            Note::NoCgroup { reason } => format!(
                "tree peak: no memory cgroup of memlens's own ({reason}): each process's VmHWM \
                 is exact, the sums over processes are sampled"
            ),
            Note::RssSampled => {
                "rss: the tree RSS sum is sampled; per-process VmHWM is exact".to_string()
            }
            Note::PeakBeforeRecording { pid } => format!(
                "vm_hwm of pid {pid} counts its whole life: its peak came before the recording \
                 began"
            ),
            Note::BudgetInterval { interval_seconds } => format!(
                "interval: the CPU budget spaced the ticks out to {:.0} ms at times",
                interval_seconds * 1e3
            ),
            Note::RuMaxrss {
                pid,
                vm_hwm,
                ru_maxrss,
            } => format!(
                "vm_hwm of pid {pid}: {} was read while it ran; the kernel's ru_maxrss at its \
                 exit, {}, counts the children it reaped too, so its own peak lies between the two",
                style.size(*vm_hwm),
                style.size(*ru_maxrss)
            ),
        }
    }
}

/// `sampled` in JSON: each note worded in binary units, then `sampled_figures`: each note's
/// kind and figures, same order.
pub(crate) fn notes_json<S: serde::Serializer>(n: &[Note], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let words: Vec<String> = n.iter().map(|n| n.words(SizeStyle::Binary)).collect();
    let mut m = s.serialize_map(Some(2))?;
    m.serialize_entry("sampled", &words)?;
    m.serialize_entry("sampled_figures", n)?;
    m.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_have_stable_names() {
        assert_eq!(PeakSource::VmHwm.name(), "vm_hwm");
        assert_eq!(PeakSource::Pss.name(), "pss");
        assert_eq!(PeakSource::Rss.name(), "rss");
    }
}
