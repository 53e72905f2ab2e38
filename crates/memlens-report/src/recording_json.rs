//! The JSON of a recording report (`memlens run --json`, `memlens report --json`), documented
//! in `docs/json.md` under "## run" and "## report".

use std::io::Write;

use serde::Serialize;

use crate::growth::Phase;
use crate::model::{Breakdown, CensusSnapshot, Model, Peak, ProcessSummary, PythonPoint};

/// Options of the JSON renderer.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Indent the output.
    pub pretty: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    recording: &'a str,
    mode: &'a str,
    command: &'a str,
    complete: bool,
    exit_code: Option<i32>,
    exit_signal: Option<i32>,
    duration_seconds: f64,
    interval_seconds: f64,
    samples: u64,
    peak: &'a Peak,
    processes: &'a [ProcessSummary],
    growth: &'a [Phase],
    growth_series: &'static str,
    leak: &'a crate::leak::Leak,
    ledger_at_peak: Option<&'a serde_json::Value>,
    ledger_at_peak_seconds: Option<f64>,
    breakdown: Option<&'a Breakdown>,
    warnings: Vec<String>,
    memlens_cpu_seconds: Option<f64>,
    python: &'a [PythonPoint],
    census: &'a [CensusSnapshot],
    sharing: &'a crate::sharing_over_time::SharingOverTime,
    advice: &'a [memlens_model::advice::Advice],
    advice_from: Option<&'a crate::recording_advice::RecordingAdvice>,
    allocations: Option<&'a memlens_model::allocations::Allocations>,
}

/// Writes the report as JSON (sizes in integer bytes, times in seconds).
pub fn render(model: &Model, opts: &Options, mut out: impl Write) -> std::io::Result<()> {
    let r = Report {
        recording: &model.file,
        mode: &model.mode,
        command: &model.command,
        complete: model.complete,
        exit_code: model.exit_code,
        exit_signal: model.exit_signal,
        duration_seconds: model.duration_seconds,
        interval_seconds: model.interval_seconds,
        samples: model.samples,
        peak: &model.peak,
        processes: &model.processes,
        growth: &model.growth,
        growth_series: model.growth_series,
        leak: &model.leak,
        ledger_at_peak: model.ledger_at_peak.as_ref().map(|l| &l.json),
        ledger_at_peak_seconds: model.ledger_at_peak.as_ref().map(|l| l.t),
        breakdown: model.ledger_at_peak.as_ref().map(|l| &l.breakdown),
        warnings: model
            .warnings
            .iter()
            .map(|w| w.words(memlens_model::units::SizeStyle::Binary))
            .collect(),
        memlens_cpu_seconds: model.memlens_cpu_seconds,
        python: &model.python,
        census: &model.census,
        sharing: &model.sharing,
        advice: model.advice.as_ref().map_or(&[], |a| a.items.as_slice()),
        advice_from: model.advice.as_ref(),
        allocations: model.allocations.as_ref(),
    };
    if opts.pretty {
        serde_json::to_writer_pretty(&mut out, &r)?;
    } else {
        serde_json::to_writer(&mut out, &r)?;
    }
    writeln!(out)
}
