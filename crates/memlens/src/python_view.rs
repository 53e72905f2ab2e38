//! The Python view for commands: attaching with messages and exit codes, the `snapshot`
//! integration ([`inspect`]), and terminal-safe printing of strings from the target.

use memlens_cpython::{Error, PythonView, ReadMode, Session};
use memlens_ledger::Hints;

use crate::exit::{CliError, Code};

/// The read mode from a `--nonblocking` flag.
pub fn mode(nonblocking: bool) -> ReadMode {
    if nonblocking {
        ReadMode::Nonblocking
    } else {
        ReadMode::Paused
    }
}

/// Turns a Python-view error into the user's message, hint and exit code.
pub fn cli_error(pid: u32, e: Error) -> CliError {
    use memlens_remote::Error as R;
    // An exited process (a zombie) or a kernel thread is said as such, whatever failed.
    if let Some(state) = crate::exit::target_state_error(pid) {
        return state;
    }
    match e {
        Error::NotPython { .. } => CliError::new(
            Code::Unsupported,
            format!("unsupported: {e}; memlens reads CPython 3.8 to 3.15"),
        ),
        Error::Unsupported { .. } | Error::LayoutMismatch { .. } => {
            CliError::new(Code::Unsupported, e.to_string()).with_hint(
                "`memlens snapshot PID` still shows the process's memory ledger without the Python view",
            )
        }
        Error::Remote(R::ProcessGone { .. }) => CliError::new(Code::NoProcess, e.to_string())
            .with_hint(format!(
                "check the PID (`memlens ps` lists Python processes); {pid} may have exited"
            )),
        // Names the tracer when another one holds the process (`TracerPid`).
        Error::Remote(R::PermissionDenied { .. }) => crate::exit::permission_denied(pid, e.to_string()),
        Error::Invalid { .. } => CliError::new(Code::Failure, e.to_string())
            .with_hint("the interpreter may be starting up or shutting down; try again"),
        Error::Remote(_) => CliError::new(Code::Failure, e.to_string()),
    }
}

/// Attaches to the interpreter of `pid`, with CLI errors.
pub fn attach(pid: u32) -> Result<Session, CliError> {
    Session::attach(pid).map_err(|e| cli_error(pid, e))
}

/// The Python view and ledger hints of a process, for `snapshot`. Never fails: a process
/// without a supported Python gives `(None, Hints::default())` and a logged message.
pub fn inspect(pid: u32, nonblocking: bool) -> (Option<PythonView>, Hints) {
    let session = match Session::attach(pid) {
        Ok(s) => s,
        Err(e @ Error::NotPython { .. }) => {
            log::debug!("pid {pid}: {e}");
            return (None, Hints::default());
        }
        Err(e) => {
            log::warn!("pid {pid}: no Python view: {e}");
            return (None, Hints::default());
        }
    };
    match session.view(mode(nonblocking)) {
        Ok((view, stats)) => {
            if let Some(p) = stats.paused {
                log::info!(
                    "pid {pid}: paused {:.1} ms for the Python view",
                    p.as_secs_f64() * 1e3
                );
            }
            let hints = Hints {
                python_arenas: view
                    .pymalloc
                    .as_ref()
                    .map(|p| p.arena_ranges.clone())
                    .unwrap_or_default(),
            };
            (Some(view), hints)
        }
        Err(e) => {
            log::warn!("pid {pid}: no Python view: {e}");
            (None, Hints::default())
        }
    }
}

/// A few lines per process with a Python view (text output of `snapshot`).
pub fn render_views(
    ledger: &memlens_ledger::TreeLedger,
    global: &crate::output::Global,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let size = |b: u64| {
        if global.bytes {
            b.to_string()
        } else {
            memlens_ledger::units::format_bytes(b)
        }
    };
    for p in &ledger.processes {
        let Some(py) = &p.python else { continue };
        if py.gc.is_none() && py.pymalloc.is_none() && py.modules.is_none() {
            continue;
        }
        writeln!(
            w,
            "\nPython view of PID {} (Python {}){}",
            p.pid,
            py.version.as_deref().unwrap_or("?"),
            if py.inexact {
                ", read without stopping it: figures may be inexact"
            } else {
                ""
            }
        )?;
        if let Some(gc) = &py.gc {
            let gens: Vec<String> = gc
                .generations
                .iter()
                .map(|g| format!("{}/{}", g.count, g.threshold))
                .collect();
            let collections: Vec<String> = gc
                .generations
                .iter()
                .map(|g| g.collections.to_string())
                .collect();
            writeln!(
                w,
                "  gc: count/threshold {}, collections {}, frozen {}{}",
                gens.join(" "),
                collections.join(" "),
                gc.frozen,
                if gc.collecting {
                    ", collecting now"
                } else {
                    ""
                }
            )?;
        }
        if let Some(pm) = &py.pymalloc {
            writeln!(
                w,
                "  pymalloc: {} arenas, {} pools, {} in used blocks, {} free",
                pm.arenas,
                pm.pools,
                size(pm.used_bytes),
                size(pm.free_bytes)
            )?;
        }
        if let Some(m) = &py.modules {
            writeln!(w, "  modules: {} in sys.modules", m.count)?;
        }
    }
    Ok(())
}

/// `{"version": "3.12.1"}`: the `python` object of the `census` and `stacks` JSON.
#[derive(Debug, serde::Serialize)]
pub struct PythonVersion {
    /// The exact version read from the interpreter.
    pub version: String,
}
