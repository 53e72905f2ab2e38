//! Exit codes and user-facing errors. The table is documented in `docs/cli.md`; keep both in
//! step.

use std::process::ExitCode;

/// The documented exit codes of memlens (commands that run a program exit with its status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// An unexpected failure (I/O error, bug); the message says what.
    Failure = 1,
    /// Bad command-line usage.
    Usage = 2,
    /// The process does not exist, or exited while it was being read.
    NoProcess = 3,
    /// The kernel refused access to the process (ptrace permission).
    PermissionDenied = 4,
    /// The target is not a supported Python (for commands that need the Python view).
    Unsupported = 5,
    /// A recording file is missing, corrupt or truncated.
    BadRecording = 6,
    /// `--max-peak` was exceeded.
    BudgetExceeded = 7,
    /// The Python view could not be read completely or consistently (a census that lost too
    /// many objects, a heap that kept changing or collecting, memlens's memory cap).
    Incomplete = 8,
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
    /// What failed and why.
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

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prints the error to stderr.
    pub fn print(&self) {
        eprintln!("memlens: error: {}", self.message);
        if let Some(h) = &self.hint {
            eprintln!("memlens: hint: {h}");
        }
    }
}

impl From<memlens_procfs::Error> for CliError {
    fn from(e: memlens_procfs::Error) -> Self {
        use memlens_procfs::Error as E;
        match &e {
            E::ProcessGone { pid } => CliError::new(Code::NoProcess, e.to_string())
                .with_hint(format!("check the PID (`memlens ps --all` lists processes); {pid} may have exited")),
            E::PermissionDenied { .. } => CliError::new(Code::PermissionDenied, e.to_string()).with_hint(
                "reading another user's process needs the same user, root, or CAP_SYS_PTRACE \
                 (e.g. `sudo memlens ...`); with Yama, /proc/sys/kernel/yama/ptrace_scope must allow it",
            ),
            _ => CliError::new(Code::Failure, e.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new(Code::Failure, e.to_string())
    }
}

/// Result alias for commands.
pub type CliResult<T> = Result<T, CliError>;
