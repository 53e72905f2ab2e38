//! Exit codes and user-facing errors. The table is documented in `docs/cli.md`; keep both in
//! step.

use std::process::ExitCode;

use memlens_ledger::target::{self, Cause, Tracer, Unfit};

/// The documented exit codes of memlens (commands that run a program exit with its status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// Success (also: stdout was closed, and memlens stopped printing quietly).
    Ok = 0,
    /// An unexpected failure (I/O error, bug); the message says what.
    Failure = 1,
    /// Bad command-line usage.
    Usage = 2,
    /// The process does not exist, or has exited (a zombie included), or exited while it was
    /// being read.
    NoProcess = 3,
    /// The kernel refused access to the process (ptrace permission, or another tracer holds
    /// it).
    PermissionDenied = 4,
    /// The target is not supported: a kernel thread, or not a supported Python (for commands
    /// that need the Python view).
    Unsupported = 5,
    /// A recording file is missing, corrupt or truncated, or lacks what was asked of it (a
    /// ledger to diff, traced allocations for `report --flamegraph`/`--lines`).
    BadRecording = 6,
    /// `--max-peak` was exceeded.
    BudgetExceeded = 7,
    /// An output file cannot be written: memlens refuses the destination (it exists and memlens
    /// did not write it, or it is a link, a device, a FIFO...), its directory is missing or
    /// read-only, or the disk filled up.
    Output = 8,
    /// The Python view could not be read completely or consistently (a census that lost too
    /// many objects, a heap that kept changing or collecting, memlens's memory cap).
    Incomplete = 9,
    /// `serve` cannot listen on its address (in use, not an address of this host, or a
    /// privileged port).
    CannotListen = 10,
    /// `diff`: A and B cannot be compared (a snapshot against a recording, a file that is not
    /// a memlens snapshot or recording, an unreadable file).
    NotComparable = 11,
    /// `run` could not execute the program (not executable).
    CannotExecute = 126,
    /// `run` could not find the program.
    CommandNotFound = 127,
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}

/// An error as the user sees it: what failed, why, and what to do.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub code: Code,
    /// What failed and why (empty for a quiet end).
    pub message: String,
    /// What to do about it, when there is something to do.
    pub hint: Option<String>,
}

impl CliError {
    /// An error with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// Stdout was closed (a pipe whose reader left, as in `memlens ps | head -1`): memlens stops
    /// printing and exits 0 without a word, as Unix filters do.
    pub fn quiet() -> Self {
        CliError::new(Code::Ok, "")
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prints the error to stderr (escaped; nothing when quiet; never fails).
    pub fn print(&self) {
        if self.message.is_empty() {
            return;
        }
        crate::messages::error(&self.message);
        if let Some(h) = &self.hint {
            crate::messages::hint(h);
        }
    }
}

impl From<memlens_record::supervise::StartError> for CliError {
    fn from(e: memlens_record::supervise::StartError) -> Self {
        use memlens_record::supervise::{SpawnError, StartError};
        match e {
            StartError::NoCommand => CliError::new(Code::Usage, e.to_string()),
            StartError::Pipe(_) => CliError::new(Code::Failure, e.to_string()),
            StartError::Spawn(s @ SpawnError::NotFound { .. }) => {
                CliError::new(Code::CommandNotFound, s.to_string())
                    .with_hint("check the program name and PATH; `memlens run -- CMD ARGS...`")
            }
            StartError::Spawn(s @ SpawnError::NotExecutable { .. }) => {
                CliError::new(Code::CannotExecute, s.to_string())
                    .with_hint("the file must be an executable program or a script with a #! line and execute permission")
            }
            StartError::Spawn(s) => CliError::new(Code::Failure, s.to_string()),
            StartError::Recording(r) => crate::recording::recorder_error(r),
        }
    }
}

const PERMISSION_HINT: &str = "reading another user's process needs the same user, root, or \
    CAP_SYS_PTRACE (e.g. `sudo memlens ...`); with Yama, /proc/sys/kernel/yama/ptrace_scope must \
    allow it (0, or 1 for your own children)";

impl From<memlens_ledger::ReadError> for CliError {
    fn from(e: memlens_ledger::ReadError) -> Self {
        match target::cause(&e) {
            Cause::ProcessGone { pid } => {
                CliError::new(Code::NoProcess, e.to_string()).with_hint(format!(
                    "check the PID (`memlens ps --all` lists processes); {pid} may have exited"
                ))
            }
            Cause::PermissionDenied { pid } => match pid.and_then(tracer_of) {
                Some(t) => traced(pid.unwrap_or(0), &t),
                None => {
                    CliError::new(Code::PermissionDenied, e.to_string()).with_hint(PERMISSION_HINT)
                }
            },
            Cause::KernelThread { .. } => CliError::new(Code::Unsupported, e.to_string())
                .with_hint("memlens reads user processes; `memlens ps --all` lists them"),
            Cause::Other => CliError::new(Code::Failure, e.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new(Code::Failure, e.to_string())
    }
}

/// Who traces `pid`, if anyone (see [`memlens_ledger::target::tracer_of`]).
pub fn tracer_of(pid: u32) -> Option<Tracer> {
    target::tracer_of(pid)
}

/// The error for a target that another tracer holds.
fn traced(pid: u32, t: &Tracer) -> CliError {
    let who = if t.name.is_empty() {
        format!("pid {}", t.pid)
    } else {
        format!("pid {} ({})", t.pid, t.name)
    };
    CliError::new(
        Code::PermissionDenied,
        format!("process {pid} is already traced by {who}: a process has one tracer at a time"),
    )
    .with_hint("detach the debugger or tracer (gdb, strace, py-spy) first, or read without stopping the process with `--nonblocking` where the command has it")
}

/// The error for a permission failure on `pid`: it names the tracer when the process is
/// already traced, else the usual permission hint. Every command that pauses a process maps
/// its permission errors through here.
pub fn permission_denied(pid: u32, message: String) -> CliError {
    match tracer_of(pid) {
        Some(t) => traced(pid, &t),
        None => CliError::new(Code::PermissionDenied, message).with_hint(PERMISSION_HINT),
    }
}

/// The error when `pid` cannot be a target at all, whatever the command: it does not exist
/// or has exited (a zombie: exit 3), or it is a kernel thread (exit 5). `None` for a live user
/// process (or one whose state cannot be read: the command's own error then says why).
pub fn target_state_error(pid: u32) -> Option<CliError> {
    match target::unfit(pid)? {
        Unfit::Gone(e) | Unfit::KernelThread(e) => Some(e.into()),
        Unfit::Exited { ppid } => Some(
            CliError::new(
                Code::NoProcess,
                format!(
                    "process {pid} has exited (a zombie that its parent, pid {ppid}, has not reaped): it has no memory left to read"
                ),
            )
            .with_hint("check the PID (`memlens ps --all` lists processes)"),
        ),
    }
}

/// Result alias for commands.
pub type CliResult<T> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_and_live_processes() {
        assert!(target_state_error(std::process::id()).is_none());
        assert!(tracer_of(std::process::id()).is_none());
        let e = target_state_error(u32::MAX).expect("no such process");
        assert_eq!(e.code, Code::NoProcess);
        // A kernel thread, where this PID namespace shows one (kthreadd is PID 2 on a host).
        let kthread = (2..64).find(|&pid| target::is_kernel_thread(pid));
        if let Some(pid) = kthread {
            let e = target_state_error(pid).expect("a kernel thread");
            assert_eq!(e.code, Code::Unsupported);
            assert!(e.message.contains("kernel thread"), "{}", e.message);
        }
    }
}
