//! Errors of remote reads, ELF parsing and pauses.

use std::path::PathBuf;

/// What went wrong reading another process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process (or thread) does not exist any more.
    #[error("process {pid} does not exist (or exited while it was being read)")]
    ProcessGone {
        /// Process id.
        pid: u32,
    },
    /// The kernel refused access.
    #[error("permission denied to {what} process {pid}")]
    PermissionDenied {
        /// Process id.
        pid: u32,
        /// What was attempted ("read the memory of", "pause").
        what: &'static str,
    },
    /// An address range that is not mapped (or not readable) in the target.
    #[error("cannot read {len} bytes at {addr:#x} in the target")]
    Unreadable {
        /// Start address.
        addr: u64,
        /// Length.
        len: usize,
    },
    /// A single read longer than memlens makes ([`crate::MAX_READ`]): the length came from the
    /// target's memory and is corrupt, or was read while it changed.
    #[error("a read of {len} bytes at {addr:#x} is longer than memlens reads at once (a length read from the target is corrupt or changing)")]
    TooLong {
        /// Start address.
        addr: u64,
        /// Length asked for.
        len: usize,
    },
    /// An ELF file that cannot be parsed.
    #[error("cannot parse ELF file {path}: {reason}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A thread did not stop in time.
    #[error("thread {tid} of process {pid} did not stop within {ms} ms")]
    StopTimeout {
        /// Process id.
        pid: u32,
        /// Thread id.
        tid: i32,
        /// How long we waited.
        ms: u64,
    },
    /// memlens's own memory for one read reached its hard cap.
    #[error("memlens's memory cap of {cap_mib} MiB was reached while {what}")]
    MemoryCap {
        /// The cap, MiB.
        cap_mib: u64,
        /// What needed more.
        what: &'static str,
    },
    /// Any other I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Maps an OS error of an operation on a process to the variant that explains it.
    pub fn from_os(pid: u32, what: &'static str, e: std::io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::ESRCH) | Some(libc::ENOENT) => Error::ProcessGone { pid },
            Some(libc::EPERM) | Some(libc::EACCES) => Error::PermissionDenied { pid, what },
            _ => Error::Io {
                what: format!("{what} process {pid}"),
                source: e,
            },
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
