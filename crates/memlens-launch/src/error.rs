//! Errors of starting a program and of making its memory cgroup.

use std::ffi::OsString;
use std::path::PathBuf;

/// Why a program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No such file, or not on `PATH`.
    #[error("{program}: command not found")]
    NotFound {
        /// The program as given.
        program: String,
    },
    /// Found but not executable (permission, a directory, not an executable format).
    #[error("{program}: cannot execute: {source}")]
    NotExecutable {
        /// The program as given.
        program: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another failure.
    #[error("{program}: cannot start: {source}")]
    Other {
        /// The program as given.
        program: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn spawn_error(program: &OsString, e: std::io::Error) -> SpawnError {
    let name = program.to_string_lossy().into_owned();
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => SpawnError::NotFound { program: name },
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => {
            SpawnError::NotExecutable {
                program: name,
                source: e,
            }
        }
        _ => SpawnError::Other {
            program: name,
            source: e,
        },
    }
}

/// Why memlens has no memory cgroup of its own for the run. The words are those the recording
/// keeps (`cgroup_error`), so they say what a reader of the report can check.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The caller asked for none (`memlens run --no-cgroup`).
    #[error("disabled with --no-cgroup")]
    Disabled,
    /// memlens's own cgroup or the mounts could not be read.
    #[error("{}: {source}", path.display())]
    Unreadable {
        /// `/proc/self/cgroup` or `/proc/self/mountinfo`.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No memory controller is mounted (v1) or in the unified hierarchy (v2).
    #[error("no memory cgroup controller is mounted")]
    NoController,
    /// The cgroup directory could not be made (no permission, a read-only mount).
    #[error("cannot create {}: {source}", dir.display())]
    Create {
        /// The directory memlens tried to make.
        dir: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The memory controller is not enabled for child cgroups (v2, not delegated).
    #[error("{} has no {file} (the memory controller is not enabled for child cgroups)", dir.display())]
    NotDelegated {
        /// The cgroup memlens made (and removed again).
        dir: PathBuf,
        /// The peak file that is missing.
        file: &'static str,
    },
    /// A file of the new cgroup could not be opened.
    #[error("cannot open {}/{file}: {source}", dir.display())]
    Open {
        /// The cgroup memlens made (and removed again).
        dir: PathBuf,
        /// The file.
        file: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The program did not land in the cgroup (its own move failed before exec).
    #[error("the program could not be moved into {}", dir.display())]
    NotJoined {
        /// The cgroup memlens made (and removed again).
        dir: PathBuf,
    },
}
