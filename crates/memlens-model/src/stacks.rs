//! Threads and their Python frames, and the JSON shape of `memlens stacks`.
//! `memlens-cpython` reads them; `memlens-report` draws them.

use serde::Serialize;

use crate::census::PythonVersion;

/// One Python frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// `co_name` (untrusted).
    pub function: String,
    /// `co_filename` (untrusted).
    pub file: String,
    /// Line being executed, when the line table has one.
    pub line: Option<u32>,
}

/// One thread of the interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Thread {
    /// `threading.get_ident()` (the `pthread_t`).
    pub thread_id: u64,
    /// The kernel's thread id, when known.
    pub native_thread_id: Option<u32>,
    /// The `threading.Thread`'s name (untrusted), when the thread has one.
    pub name: Option<String>,
    /// Innermost frame first, at most the reader's bound (`memlens_cpython::threads::MAX_FRAMES`).
    pub frames: Vec<Frame>,
    /// Frames of a deeper stack left out (the outermost ones).
    pub frames_omitted: u64,
}

/// What `memlens stacks` shows (its JSON, `docs/json.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StacksReport {
    /// The interpreter's version.
    pub python: PythonVersion,
    /// Every thread, as the interpreter lists them.
    pub threads: Vec<Thread>,
    /// Read without stopping the target: stacks may be inexact.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inexact: bool,
}
