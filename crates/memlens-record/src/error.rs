//! Errors of the sampler: the recording's (format and file system) and `/proc`'s.

/// What stopped a recording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the recording failed (`memlens_recording::Error`: SQLite, the file system).
    #[error(transparent)]
    Recording(#[from] memlens_recording::Error),
    /// Reading `/proc` failed.
    #[error(transparent)]
    Procfs(#[from] memlens_procfs::Error),
}

impl Error {
    /// Whether the error is a full disk (or quota) while writing the recording.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Recording(e) if e.is_disk_full())
    }

    /// Whether writing the recording failed (SQLite or the file system), as opposed to
    /// reading the processes.
    pub fn is_write_failure(&self) -> bool {
        matches!(
            self,
            Error::Recording(
                memlens_recording::Error::Sqlite { .. } | memlens_recording::Error::Io { .. }
            )
        )
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
