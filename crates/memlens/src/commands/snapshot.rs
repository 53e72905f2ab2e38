//! `memlens snapshot PID [--tree]`: the reconciled ledger of a process or a whole tree.

use std::io::Write;
use std::process::ExitCode;

use memlens_ledger::PythonViewExt;
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
    /// Also attribute Python objects (code objects, functions, classes, modules and their
    /// dicts) to their packages, beside each package's extension modules. Takes a census of
    /// each Python process (a walk of its heap, verified in a short pause).
    #[arg(long)]
    pub packages: bool,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    // An exited process (a zombie) or a kernel thread has no memory to account: said as such.
    if let Some(e) = crate::exit::target_state_error(args.pid) {
        return Err(e);
    }
    // The Python view of each process: its pymalloc arenas feed the ledger as hints, the rest
    // is attached to the process once its ledger is built.
    let views = memlens_cpython::views::TreeViews::new(args.pid, args.nonblocking, args.tree);
    let mut ledger = memlens_ledger::snapshot(args.pid, args.tree, &|pid| memlens_ledger::Hints {
        python_arenas: views.read(pid),
    })?;
    let mut views = views.into_views();
    for p in &mut ledger.processes {
        if let Some(v) = views.remove(&p.pid) {
            p.attach_python_view(v);
        }
    }
    if args.packages {
        attach_packages(&mut ledger, args.pid, args.nonblocking)?;
    }
    if args.tree {
        memlens_ledger::sharing::measure(&mut ledger); // copy-on-write per worker (DESIGN §6)
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

/// Takes a census of each process with a Python view and attaches its objects by package.
/// The root's failure fails the command (no figures rather than wrong ones); a descendant that
/// exited meanwhile is left without packages.
fn attach_packages(
    ledger: &mut memlens_ledger::TreeLedger,
    root: u32,
    nonblocking: bool,
) -> CliResult<()> {
    let attacher = memlens_cpython::Attacher::new();
    let mode = crate::python_view::mode(nonblocking);
    for p in &mut ledger.processes {
        let viewed = p
            .python
            .as_ref()
            .is_some_and(|py| py.gc.is_some() || py.pymalloc.is_some() || py.modules.is_some());
        if !viewed {
            continue; // no Python view read: no interpreter to census
        }
        let pid = p.pid;
        let read = attacher
            .attach(pid)
            .and_then(|s| s.census_by_module(mode, memlens_cpython::census::CENSUS_MEMORY_CAP));
        match read {
            Ok((census, by_module, stats)) => {
                log::info!(
                    "pid {pid}: census for --packages in {:.1} ms ({} objects, {} origins)",
                    stats.elapsed.as_secs_f64() * 1e3,
                    census.objects,
                    by_module.origins.len()
                );
                let mut dists = memlens_ledger::distribution::DistributionResolver::new(format!(
                    "/proc/{pid}/root"
                ));
                p.attach_packages(&census, &by_module, &mut dists);
            }
            Err(memlens_cpython::Error::Remote(memlens_remote::Error::ProcessGone { .. }))
                if pid != root =>
            {
                log::info!("pid {pid} exited before its census: no packages");
            }
            Err(e) => return Err(crate::python_view::cli_error(pid, e)),
        }
    }
    Ok(())
}
