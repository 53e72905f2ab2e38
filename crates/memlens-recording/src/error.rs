//! Errors of the recording file and of the files memlens creates: format and file system only.

use std::path::PathBuf;

/// What went wrong while writing or reading a recording (or creating a report file).
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
    /// An I/O error outside SQLite (the recording's directory, a report file).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// memlens will not write at this path (it exists and memlens did not write it, it is not
    /// a regular file, or it changed while memlens looked at it).
    #[error("{path}: {why}")]
    Refused {
        /// The path.
        path: PathBuf,
        /// Why, in words.
        why: String,
        /// Whether `--force` would replace it (a file memlens wrote).
        force_helps: bool,
    },
}

impl Error {
    /// Whether the error is a full disk (or quota): SQLite's `SQLITE_FULL`, or `ENOSPC` /
    /// `EDQUOT` from the file system.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Sqlite { source, .. } => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            Error::Io { source, .. } => {
                let full = [rustix::io::Errno::NOSPC, rustix::io::Errno::DQUOT];
                source
                    .raw_os_error()
                    .is_some_and(|e| full.iter().any(|f| f.raw_os_error() == e))
            }
            _ => false,
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
