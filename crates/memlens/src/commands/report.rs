//! `memlens report FILE`: the summary of a recording on stdout, `--json`, `--html OUT`.

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
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let mut outputs = Outputs::reserve(args.html.as_deref(), args.json_out.as_deref(), args.force)?;
    let (_, model) = recording::open(&args.file)?;
    let summary = if args.json {
        Summary::Off
    } else {
        Summary::Stdout
    };
    emit(&model, global, args.json, summary, &mut outputs)?;
    Ok(Code::Ok.into())
}
