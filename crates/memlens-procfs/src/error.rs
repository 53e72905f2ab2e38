//! Errors of the procfs layer.

use std::path::PathBuf;

/// What went wrong reading or parsing a `/proc` or cgroup file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process does not exist (any more): its `/proc` entry is gone or vanished mid-read.
    #[error("process {pid} does not exist (or exited while being read)")]
    ProcessGone {
        /// The process id.
        pid: u32,
    },
    /// The kernel refused the read (ptrace access mode check, or file permissions).
    #[error("permission denied reading {}", path.display())]
    PermissionDenied {
        /// The file that could not be read.
        path: PathBuf,
    },
    /// A kernel thread: it has no user-space address space to account.
    #[error("process {pid} is a kernel thread: it has no user-space memory to account")]
    KernelThread {
        /// The process id.
        pid: u32,
    },
    /// Another I/O error.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The content did not have the expected shape.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// Which file or record.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn parse(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Parse {
            what,
            detail: detail.into(),
        }
    }
}
