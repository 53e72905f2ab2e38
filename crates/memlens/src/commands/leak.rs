//! `census --growth`'s leak verdict: the process's PSS sampled through the growth interval and
//! judged by the rule of `memlens_report::leak` (docs/leaks.md), with the types that grew.

use std::time::{Duration, Instant};

use memlens_model::census::{CensusReport, Grown};
use memlens_report::leak::{Leak, TypeGrowth, MAX_TYPES};
use serde::Serialize;

/// PSS reads through the interval.
const SAMPLES: u32 = 40;

/// `census --json` with the verdict (`"leak"`, only with `--growth`).
#[derive(Serialize)]
pub struct WithLeak<'a> {
    /// The census.
    #[serde(flatten)]
    pub report: &'a CensusReport,
    /// The verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak: Option<&'a Leak>,
}

/// Waits `d`, reading the PSS of `pid` (`smaps_rollup`) [`SAMPLES`] + 1 times evenly through
/// it: `(seconds since the start, bytes)`. Reads that fail are left out (the verdict then has
/// fewer points, and says `too-short` below its minimum).
pub fn sample_pss(pid: u32, d: Duration) -> Vec<(f64, u64)> {
    let start = Instant::now();
    let proc = memlens_procfs::Process::new(pid).ok();
    let mut out = Vec::new();
    for i in 0..=SAMPLES {
        let at = d.mul_f64(f64::from(i) / f64::from(SAMPLES));
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let t = start.elapsed().as_secs_f64();
        match proc.as_ref().map(|p| p.smaps_rollup()) {
            Some(Ok(c)) => out.push((t, c.pss)),
            Some(Err(e)) => log::debug!("census --growth: PSS of {pid}: {e}"),
            None => {}
        }
    }
    out
}

/// The verdict on the PSS points, with the types that grew most in bytes.
pub fn verdict(pid: u32, pss: &[(f64, u64)], grown: &Grown) -> Leak {
    let mut l = memlens_report::leak::of_recording_points("pss", pss);
    l.pid = Some(pid);
    l.types = grown
        .by_bytes
        .iter()
        .take(MAX_TYPES)
        .map(|g| TypeGrowth {
            type_name: g.type_name.clone(),
            count_delta: g.delta,
            bytes_delta: g.bytes_delta,
        })
        .collect();
    l
}
