//! `memlens report FILE`: the summary of a recording on stdout, `--json`, `--html OUT`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::exit::{CliResult, Code};
use crate::output::Global;
use crate::recording::{self, emit, Summary};

/// Arguments of `memlens report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recording (`.db`) written by `memlens run` or `memlens record`.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write the self-contained HTML report here.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let (_, model) = recording::open(&args.file)?;
    let summary = if args.json {
        Summary::Off
    } else {
        Summary::Stdout
    };
    emit(&model, global, args.json, summary, args.html.as_deref())?;
    Ok(Code::Ok.into())
}
