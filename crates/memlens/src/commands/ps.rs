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
    /// Do not compare forked workers' pages with their parents' (copy-on-write sharing, read
    /// from pagemap for trees of more than one process); the report says it was not measured.
    #[arg(long)]
    pub no_sharing: bool,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    use memlens_ledger::host::PsSharing;
    let sharing = if args.no_sharing {
        PsSharing::Off(crate::commands::snapshot::NO_SHARING.into())
    } else {
        PsSharing::Measure
    };
    let report = memlens_ledger::host::ps_with(args.all, &sharing)?;
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
