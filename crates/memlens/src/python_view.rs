//! The Python view for commands: attaching with messages and exit codes. Reading it is
//! `memlens_cpython::views`'s, its text `memlens_report::python_text`'s.

use std::time::Duration;

use memlens_cpython::{Attacher, Error, Session};

use crate::exit::{CliError, Code};

pub use memlens_cpython::views::mode;

/// Turns a Python-view error into the user's message, hint and exit code.
pub fn cli_error(pid: u32, e: Error) -> CliError {
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
        _ if e.is_process_gone() => CliError::new(Code::NoProcess, e.to_string())
            .with_hint(format!(
                "check the PID (`memlens ps` lists Python processes); {pid} may have exited"
            )),
        // Names the tracer when another one holds the process (`TracerPid`); otherwise says
        // what else may refuse it (Yama, another user).
        _ if e.is_permission_denied() => {
            match crate::exit::tracer_of(pid) {
                Some(_) => crate::exit::permission_denied(pid, e.to_string()),
                None => CliError::new(Code::PermissionDenied, e.to_string())
                    .with_hint(access_hint(pid)),
            }
        }
        Error::Invalid { .. } | Error::Decode { .. } => CliError::new(Code::Failure, e.to_string())
            .with_hint("the interpreter may be starting up or shutting down; try again"),
        Error::Incomplete { .. }
        | Error::Inconsistent { .. }
        | Error::BrokenGcList { .. } => incomplete(e),
        _ if e.is_memory_cap() => incomplete(e),
        Error::Remote(_) => CliError::new(Code::Failure, e.to_string()),
    }
}

/// A census or view that could not be read completely or consistently: exit 9.
fn incomplete(e: Error) -> CliError {
    CliError::new(Code::Incomplete, e.to_string()).with_hint(
        "no figures were printed rather than wrong ones; `memlens census --nonblocking` \
         reads without stopping the target (inexact), `-v` says more",
    )
}

/// Words what may stand between memlens and `pid` (see [`memlens_cpython::access`]); the
/// general rule when nothing specific is found.
fn access_hint(pid: u32) -> String {
    use memlens_cpython::access::{access_hints, AccessHint};
    let words: Vec<String> = access_hints(pid)
        .into_iter()
        .filter_map(|h| match h {
            // worded by `exit::permission_denied`
            AccessHint::Traced { .. } => None,
            AccessHint::Yama { scope } => Some(format!(
                "/proc/sys/kernel/yama/ptrace_scope is {scope}: {}",
                match scope {
                    1 => "only a process's own descendants may be read without CAP_SYS_PTRACE; run memlens as root (`sudo memlens ...`)",
                    2 => "only CAP_SYS_PTRACE may read another process; run memlens as root",
                    _ => "no process may read another's memory; set it to 0, 1 or 2 to use memlens",
                }
            )),
            AccessHint::OtherUser { uid, mine } => Some(format!(
                "process {pid} runs as user {uid}, memlens as user {mine}: run memlens as that \
                 user or as root (`sudo memlens ...`)"
            )),
        })
        .collect();
    if words.is_empty() {
        "reading another process needs the same user and ptrace permission, root, or \
         CAP_SYS_PTRACE (e.g. `sudo memlens ...`); with Yama, /proc/sys/kernel/yama/ptrace_scope \
         must allow it (0, or 1 for your own children); a process already traced (gdb, \
         py-spy) cannot be paused: `--nonblocking` reads without stopping it"
            .into()
    } else {
        words.join("; ")
    }
}

/// How long a command waits for an interpreter that is still starting.
const STARTING_WAIT: Duration = Duration::from_secs(1);

/// Attaches to the interpreter of `pid` (waiting up to a second for one still starting), with
/// CLI errors.
pub fn attach(pid: u32) -> Result<Session, CliError> {
    Attacher::new()
        .attach_until(pid, std::time::Instant::now() + STARTING_WAIT)
        .map_err(|e| cli_error(pid, e))
}
