//! `memlens snapshot PID [--tree]`: the reconciled ledger of a process or a whole tree.

use std::io::Write;
use std::process::ExitCode;

use memlens_ledger::Hints;
use memlens_report::ledger_text;

use crate::exit::{CliResult, Code};
use crate::output::{print_json, write_error, Global};

/// Arguments of `memlens snapshot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process to read.
    pub pid: u32,
    /// Include every descendant of the process (the tree is the unit: totals sum PSS).
    #[arg(long)]
    pub tree: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read the Python view without stopping the process (figures may be inexact).
    #[arg(long)]
    pub nonblocking: bool,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    // An exited process (a zombie) or a kernel thread has no memory to account: said as such.
    if let Some(e) = crate::exit::target_state_error(args.pid) {
        return Err(e);
    }
    // The Python view of each process: its pymalloc arenas feed the ledger as hints, the rest
    // is attached to the process once its ledger is built.
    let mut views = std::collections::HashMap::new();
    let mut ledger = memlens_ledger::snapshot(args.pid, args.tree, &mut |pid| -> Hints {
        let (view, hints) = crate::python_view::inspect(pid, args.nonblocking);
        if let Some(v) = view {
            views.insert(pid, v);
        }
        hints
    })?;
    for p in &mut ledger.processes {
        if let Some(v) = views.remove(&p.pid) {
            p.attach_python_view(v);
        }
    }
    ledger.refresh_findings();
    if args.json {
        print_json(&ledger)?;
    } else {
        let opts = ledger_text::Options {
            bytes: global.bytes,
            ..Default::default()
        };
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        ledger_text::render_snapshot(&ledger, &opts, &mut out).map_err(write_error)?;
        crate::python_view::render_views(&ledger, global, &mut out).map_err(write_error)?;
        out.flush().map_err(write_error)?;
    }
    Ok(Code::Ok.into())
}
