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

use memlens_model::units::format_bytes;
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// In words, for the reports.
    pub note: String,
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
    let at_peak = dt.abs() <= NEAR_SECONDS && s >= NEAR_SHARE;
    let side = if dt < 0.0 { "before" } else { "after" };
    let measure = match source {
        PeakSource::Pss => "PSS",
        _ => "RSS",
    };
    let note = if at_peak {
        format!(
            "breakdown at the peak: ledger at {:.2} s, {:.2} s {side} it",
            l.t,
            dt.abs()
        )
    } else {
        format!(
            "no breakdown at the peak: the nearest is {:.2} s {side} it (ledger at {:.2} s, \
             holding {:.0}% of the peak's {measure}, {} of {})",
            dt.abs(),
            l.t,
            s * 100.0,
            format_bytes(match source {
                PeakSource::Pss => l.totals.pss,
                _ => l.totals.rss,
            }),
            format_bytes(peak)
        )
    };
    Some((
        l,
        Breakdown {
            t_seconds: l.t,
            from_peak_seconds: dt,
            at_peak,
            share_of_peak: s,
            note,
        },
    ))
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
