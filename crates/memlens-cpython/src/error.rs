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
    /// An object that does not decode (a length out of range, a broken table): the census
    /// counts it as unreadable.
    #[error("cannot decode {what} at {addr:#x}")]
    Decode {
        /// Address.
        addr: u64,
        /// What did not decode.
        what: String,
    },
    /// A GC generation list that does not close: a null link, a loop that does not pass its
    /// head, or more objects than the process's memory can hold.
    #[error("the GC list at {head:#x} of process {pid} is broken after {after} objects ({why})")]
    BrokenGcList {
        /// Process id.
        pid: u32,
        /// The list head.
        head: u64,
        /// Objects walked before the break.
        after: u64,
        /// What broke it.
        why: &'static str,
    },
    /// The heap kept changing while it was read, or a collection kept running, through every
    /// attempt memlens allows itself.
    #[error("no consistent census of process {pid}: {why}")]
    Inconsistent {
        /// Process id.
        pid: u32,
        /// What happened.
        why: String,
    },
    /// Too many objects could not be read for the census to stand.
    #[error("the census of process {pid} is incomplete: {unreadable} of {reached} objects could not be read ({bytes} bytes of reads failed), more than the {limit} memlens accepts")]
    Incomplete {
        /// Process id.
        pid: u32,
        /// Objects that could not be read.
        unreadable: u64,
        /// Objects reached (read or not).
        reached: u64,
        /// Bytes of the reads that failed.
        bytes: u64,
        /// The accepted fraction, as text ("0.1%").
        limit: &'static str,
    },
    /// A remote read or pause failed.
    #[error(transparent)]
    Remote(#[from] memlens_remote::Error),
}

impl Error {
    /// Whether the process does not exist (any more), or exited while it was read.
    pub fn is_process_gone(&self) -> bool {
        matches!(
            self,
            Error::Remote(memlens_remote::Error::ProcessGone { .. })
        )
    }

    /// Whether the kernel refused to read or pause the process.
    pub fn is_permission_denied(&self) -> bool {
        matches!(
            self,
            Error::Remote(memlens_remote::Error::PermissionDenied { .. })
        )
    }

    /// Whether memlens's own memory cap for the read was reached.
    pub fn is_memory_cap(&self) -> bool {
        matches!(self, Error::Remote(memlens_remote::Error::MemoryCap { .. }))
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
