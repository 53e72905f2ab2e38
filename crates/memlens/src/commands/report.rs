//! `memlens report FILE`: the summary of a recording on stdout, `--json`, `--html OUT`; with
//! traced allocations `--flamegraph OUT.svg` and `--lines PATH[:FUNCTION]` (report_trace.rs).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::exit::{CliResult, Code};
use crate::output::Global;
use crate::recording::{self, emit, Outputs, Summary};

/// Arguments of `memlens report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recording (`.db`) written by `memlens run` or `memlens record`.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write the self-contained HTML report here (a new file, or one memlens wrote with
    /// `--force`).
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
    /// Write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Replace report files that memlens itself wrote; other files are never replaced.
    #[arg(long)]
    pub force: bool,
    /// Views of traced allocations.
    #[command(flatten)]
    pub trace: super::report_trace::TraceArgs,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let flamegraph = args.trace.reserve(
        &[args.html.as_deref(), args.json_out.as_deref()],
        args.force,
    )?;
    let mut outputs = Outputs::reserve(args.html.as_deref(), args.json_out.as_deref(), args.force)?;
    let (_, model) = recording::open(&args.file)?;
    // The recording's traced allocations (`run --trace`), None without a trace.
    let allocations = model.allocations.as_ref();
    if args.trace.any() && allocations.is_none() {
        return Err(super::report_trace::no_trace(&args.file));
    }
    let summary = if args.json || args.trace.lines.is_some() {
        Summary::Off
    } else {
        Summary::Stdout
    };
    if let Some(a) = allocations {
        let lines = args
            .trace
            .lines
            .as_deref()
            .map(|spec| super::report_trace::select_lines(spec, a).map(|sel| (spec, sel)))
            .transpose()?;
        super::report_trace::write_flamegraph(flamegraph, a, &args.file, global)?;
        if let Some((spec, sel)) = lines {
            super::report_trace::print_lines(spec, &sel, a, global)?;
        }
    }
    emit(&model, global, args.json, summary, &mut outputs)?;
    Ok(Code::Ok.into())
}
