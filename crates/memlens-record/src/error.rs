//! Errors of the sampler and of recordings.

use std::path::PathBuf;

/// What went wrong while recording or reading a recording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The recording file does not exist.
    #[error("{path}: no such recording")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a memlens recording (not SQLite, or no memlens schema).
    #[error("{path}: not a memlens recording ({why})")]
    NotARecording {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        why: String,
    },
    /// The file is shorter than its own header says: it was cut off.
    #[error("{path}: truncated recording ({actual} bytes, the header says {expected})")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes on disk.
        actual: u64,
        /// Bytes the SQLite header announces.
        expected: u64,
    },
    /// SQLite found the file damaged.
    #[error("{path}: corrupt recording ({why})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// SQLite's diagnosis.
        why: String,
    },
    /// The recording was written by a newer memlens.
    #[error("{path}: recording schema version {found} is not supported (this memlens reads 1 to {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Newest version this build reads.
        supported: i64,
    },
    /// An SQLite error while writing or reading.
    #[error("{path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// An I/O error outside SQLite (cgroup files, the recording's directory).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading `/proc` failed.
    #[error(transparent)]
    Procfs(#[from] memlens_procfs::Error),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
