//! `memlens snapshot PID [--tree]`: the reconciled ledger of a process or a whole tree.

use std::collections::HashMap;
use std::io::Write;

use memlens_model::advice::{self, Advice};
use memlens_model::arenas::MallocArenas;
use memlens_model::census::Tallies;
use memlens_model::thread_costs::ThreadCosts;
use std::process::ExitCode;

use memlens_ledger::with_python;
use memlens_report::{ledger_text, python_text};

use crate::exit::{CliResult, Code};
use crate::output::{print_json, write_error, Global};

/// The reason the reports give for sharing not measured under `--no-sharing`.
pub const NO_SHARING: &str = "turned off (--no-sharing)";

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
    /// dicts, and what they hold) to their packages, beside each package's extension modules.
    /// Takes a census of each Python process (a walk of its heap, verified in a short pause)
    /// and a walk from its modules in import order.
    #[arg(long)]
    pub packages: bool,
    /// Also give object-level advice (docs/advice.md): classes without `__slots__`, large
    /// lists of floats or ints, duplicated str/bytes values, packages whose import holds the
    /// most memory, free memory spread over glibc's per-thread malloc arenas. Takes a census
    /// of each Python process (a walk of its heap, verified in a short pause; one walk with
    /// --packages) and walks its glibc arenas' heaps (in another short pause).
    /// Without it, snapshot still advises what the ledger shows.
    #[arg(long)]
    pub advice: bool,
    /// With --tree: do not compare forked workers' pages with their parents' (copy-on-write
    /// sharing from pagemap); the report says it was not measured.
    #[arg(long)]
    pub no_sharing: bool,
    /// Also write the self-contained HTML page here (a new file, or one memlens wrote with
    /// `--force`; never a link or a file memlens did not write).
    #[arg(long, value_name = "OUT")]
    pub html: Option<std::path::PathBuf>,
    /// Replace an HTML page that memlens itself wrote; other files are never replaced.
    #[arg(long)]
    pub force: bool,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    // An exited process (a zombie) or a kernel thread has no memory to account: said as such.
    if let Some(e) = crate::exit::target_state_error(args.pid) {
        return Err(e);
    }
    let page = super::diff::reserve_html(args.html.as_deref(), args.force)?;
    let mut ledger = with_python::snapshot_with_python(args.pid, args.tree, args.nonblocking)?;
    let tallies = if args.packages || args.advice {
        with_python::census_each(
            &mut ledger,
            args.pid,
            args.nonblocking,
            args.packages,
            args.advice,
        )
        .map_err(|e| crate::python_view::cli_error(e.pid, e.error))?
    } else {
        Default::default()
    };
    if args.tree && args.no_sharing {
        memlens_ledger::sharing::not_measured(&mut ledger, crate::commands::snapshot::NO_SHARING);
    } else if args.tree {
        memlens_ledger::sharing::measure(&mut ledger); // copy-on-write per worker (DESIGN §6)
    }
    ledger.refresh_findings();
    // with --advice, the glibc arenas (a walk of their heaps) and the threads (thread-stacks)
    // of each Python process, each read in a short pause of its own
    let arenas: HashMap<u32, MallocArenas> = if args.advice {
        per_python(&ledger, |pid| {
            memlens_ledger::arenas::read(pid, args.nonblocking)
        })
    } else {
        HashMap::new()
    };
    let threads: HashMap<u32, ThreadCosts> = if args.advice {
        per_python(&ledger, |pid| {
            memlens_ledger::thread_costs::read(pid, args.nonblocking)
        })
    } else {
        HashMap::new()
    };
    let advice = advise(&ledger, &tallies, &arenas, &threads, args.advice);
    let html_opts = memlens_report::snapshot_html::Options {
        bytes: global.bytes,
    };
    super::diff::write_page(page, |w| {
        let advice = Some((advice.as_slice(), args.advice));
        memlens_report::snapshot_html::render_with_advice(&ledger, advice, &html_opts, w)
    })?;
    if args.json {
        print_json(&SnapshotJson {
            ledger: &ledger,
            advice: &advice,
        })?;
    } else {
        let opts = ledger_text::Options {
            bytes: global.bytes,
            ..Default::default()
        };
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        ledger_text::render_snapshot(&ledger, &opts, &mut out).map_err(write_error)?;
        let py = python_text::Options {
            bytes: global.bytes,
        };
        python_text::render_views(&ledger, &py, &mut out).map_err(write_error)?;
        memlens_report::advice_text::render(&advice, args.advice, global.bytes, &mut out)
            .map_err(write_error)?;
        out.flush().map_err(write_error)?;
    }
    Ok(Code::Ok.into())
}

/// `snapshot --json`: the tree ledger and its advice (docs/json.md).
#[derive(serde::Serialize)]
struct SnapshotJson<'a> {
    #[serde(flatten)]
    ledger: &'a memlens_model::TreeLedger,
    advice: &'a [Advice],
}

/// The advice of every process, largest saving first; object-level advice from the census
/// tallies when `census` (`--advice`).
/// `read` of each process of the tree that has a Python view, by PID (`None`s left out).
fn per_python<T>(
    ledger: &memlens_model::TreeLedger,
    read: impl Fn(u32) -> Option<T>,
) -> HashMap<u32, T> {
    ledger
        .processes
        .iter()
        .filter(|p| p.python.is_some())
        .filter_map(|p| Some((p.pid, read(p.pid)?)))
        .collect()
}

fn advise(
    ledger: &memlens_model::TreeLedger,
    tallies: &HashMap<u32, Tallies>,
    arenas: &HashMap<u32, MallocArenas>,
    threads: &HashMap<u32, ThreadCosts>,
    census: bool,
) -> Vec<Advice> {
    let mut out: Vec<Advice> = ledger
        .processes
        .iter()
        .flat_map(|p| {
            let inputs = advice::Inputs {
                census: tallies.get(&p.pid).filter(|_| census),
                arenas: arenas.get(&p.pid),
                threads: threads.get(&p.pid),
            };
            advice::advise(p, &inputs)
        })
        .collect();
    out.sort_by(|a, b| b.saving_bytes.cmp(&a.saving_bytes).then(a.pid.cmp(&b.pid)));
    out
}
