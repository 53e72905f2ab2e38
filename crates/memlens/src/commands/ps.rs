//! `memlens ps`: Python processes on this host as trees, with RSS/PSS/USS/swap.

use std::io::Write;
use std::process::ExitCode;

use memlens_report::ledger_text;

use crate::exit::{CliResult, Code};
use crate::output::{print_json, write_error, Global};

/// Arguments of `memlens ps`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// List every process, not only Python ones.
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let report = memlens_ledger::host::ps(args.all)?;
    if args.json {
        print_json(&report)?;
    } else {
        let opts = ledger_text::Options {
            bytes: global.bytes,
            ..Default::default()
        };
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        ledger_text::render_ps(&report, &opts, &mut out).map_err(write_error)?;
        out.flush().map_err(write_error)?;
    }
    Ok(Code::Ok.into())
}
