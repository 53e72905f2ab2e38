//! `memlens census`: objects by type, read from outside; `--growth` shows what grew.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use memlens_model::census::{CensusReport, Grown};
use memlens_report::census_text;

use crate::exit::{CliError, CliResult, Code};
use crate::flags;
use crate::output::{print_json, write_error, Global};
use crate::python_view::{attach, cli_error, mode};

/// Arguments of `memlens census`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process.
    pub pid: u32,
    /// Types to show (0 for all).
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Take two censuses this far apart (1ms to 24h, e.g. `10s`, `500ms`, `2m`) and show the
    /// types that grew, by bytes and by count, like objgraph.show_growth() but from outside.
    #[arg(long, value_parser = flags::growth)]
    pub growth: Option<Duration>,
    /// Read without stopping the target (figures may be inexact).
    #[arg(long)]
    pub nonblocking: bool,
    /// The most memory memlens may use for the census (e.g. `512M`, `2GiB`); a census that
    /// needs more fails with exit 9. About 2.5% of the heap walked, plus 32 MiB of copies.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory, default_value = "256MiB")]
    pub max_memory: u64,
    /// Who holds the instances of TYPE (`__name__`, or `module.qualname`): the shortest chains
    /// from a module global or a thread's frame local, with the instances and shallow bytes
    /// each holds (`--top` chains). The target is stopped for the whole walk, which grows with
    /// the objects reached (docs/leaks.md gives figures); `--nonblocking` never stops it.
    #[arg(long, value_name = "TYPE", conflicts_with = "growth")]
    pub referrers: Option<String>,
}

/// `--max-memory`: a size of at least 4 MiB.
fn parse_memory(s: &str) -> Result<u64, String> {
    match flags::size(s)? {
        b if b >= 4 << 20 => Ok(b),
        _ => Err(format!("`{s}` is too small for a census (at least 4MiB)")),
    }
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let session = attach(args.pid)?;
    let read_mode = mode(args.nonblocking);
    if let Some(name) = &args.referrers {
        return super::referrers::run(&session, &args, name, read_mode, global);
    }
    let take = || {
        session
            .census_capped(read_mode, args.max_memory)
            .map_err(|e| cli_error(args.pid, e))
    };
    let top = if args.top == 0 { usize::MAX } else { args.top };
    let (first, stats) = take()?;
    let (census, grown, stats, leak) = match args.growth {
        Some(d) => {
            let (pss, failed) = memlens_ledger::host::sample_pss(args.pid, d, super::leak::SAMPLES);
            if failed > 0 {
                crate::messages::message("warning", &format!(
                    "{failed} of {} reads of the PSS of {} failed: the leak verdict has fewer points",
                    super::leak::SAMPLES + 1,
                    args.pid
                ));
            }
            let (second, stats) = take()?;
            let grown = Grown::between(&first, &second, top);
            let leak = super::leak::verdict(args.pid, &pss, &grown);
            (second, Some(grown), stats, Some(leak))
        }
        None => (first, None, stats, None),
    };
    let version = session.interpreter.version.to_string();
    let report = CensusReport::new(version, census, grown, top, args.nonblocking);
    if args.json {
        print_json(&super::leak::WithLeak {
            report: &report,
            leak: leak.as_ref(),
        })?;
    } else {
        render_text(&report, args.pid, stats.elapsed, global)?;
        if let Some(l) = &leak {
            let style = memlens_model::units::SizeStyle::exact(global.bytes);
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", memlens_report::leak::words(l, style))
                .and_then(|()| out.flush())
                .map_err(write_error)?;
        }
    }
    // A Python process always has objects: none means the walk read nothing it could trust.
    // Both outputs say `objects: 0` and exit 1.
    if report.objects == 0 {
        return Err(CliError::new(Code::Failure, "the census found no objects"));
    }
    Ok(ExitCode::SUCCESS)
}

fn render_text(
    report: &CensusReport,
    pid: u32,
    elapsed: Duration,
    global: &Global,
) -> CliResult<()> {
    let opts = census_text::Options {
        bytes: global.bytes,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    census_text::render(report, pid, elapsed, &opts, &mut out)
        .and_then(|()| out.flush())
        .map_err(write_error)
}
