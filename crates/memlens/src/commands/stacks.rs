//! `memlens stacks`: the Python stack of every thread, read from outside.

use std::io::Write;
use std::process::ExitCode;

use memlens_model::census::PythonVersion;
use memlens_model::stacks::StacksReport;
use memlens_report::stacks_text;

use crate::exit::CliResult;
use crate::output::{print_json, write_error, Global};
use crate::python_view::{attach, cli_error, mode};

/// Arguments of `memlens stacks`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process.
    pub pid: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read without stopping the target (stacks may be inexact).
    #[arg(long)]
    pub nonblocking: bool,
}

/// Runs the command.
pub fn run(args: Args, _global: &Global) -> CliResult<ExitCode> {
    let session = attach(args.pid)?;
    let (threads, stats) = session
        .stacks(mode(args.nonblocking))
        .map_err(|e| cli_error(args.pid, e))?;
    let report = StacksReport {
        python: PythonVersion {
            version: session.interpreter.version.to_string(),
        },
        threads,
        inexact: args.nonblocking,
    };
    if args.json {
        print_json(&report)?;
    } else {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        stacks_text::render(&report, args.pid, stats.paused, &mut out)
            .and_then(|()| out.flush())
            .map_err(write_error)?;
    }
    Ok(ExitCode::SUCCESS)
}
