//! `census --growth`'s leak verdict: the process's PSS sampled through the growth interval and
//! judged by the rule of `memlens_report::leak` (docs/leaks.md), with the types that grew.

use memlens_model::census::{CensusReport, Grown};
use memlens_report::leak::{Leak, TypeGrowth, MAX_TYPES};
use serde::Serialize;

/// PSS reads through the interval.
pub const SAMPLES: u32 = 40;

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
