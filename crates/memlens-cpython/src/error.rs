//! Errors of the Python view.

/// Why the Python view of a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process runs no Python that memlens can find.
    #[error("process {pid} is not a Python process (no python executable or libpython mapped)")]
    NotPython {
        /// Process id.
        pid: u32,
    },
    /// A Python memlens does not read.
    #[error("unsupported: {what}; memlens reads CPython 3.8 to 3.15 (GIL builds; Linux x86_64 and aarch64)")]
    Unsupported {
        /// What was found, e.g. "Python 2.7" or "free-threaded CPython 3.13t".
        what: String,
    },
    /// The generated layout disagrees with what the interpreter says about itself.
    #[error("layout mismatch for CPython {version}: {field} is {found} in the process, {expected} in memlens's table; refusing to read")]
    LayoutMismatch {
        /// Version.
        version: String,
        /// Field.
        field: &'static str,
        /// Value read from `_Py_DebugOffsets`.
        found: u64,
        /// Value in the generated table.
        expected: u64,
    },
    /// The interpreter state did not validate (not initialised yet, finalising, or corrupt).
    #[error("the interpreter state of process {pid} does not look valid: {why}")]
    Invalid {
        /// Process id.
        pid: u32,
        /// What failed.
        why: String,
    },
    /// A remote read or pause failed.
    #[error(transparent)]
    Remote(#[from] memlens_remote::Error),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
