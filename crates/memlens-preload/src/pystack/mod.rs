//! The Python stack of a sampled allocation, walked in the allocating thread, and the tables
//! that intern code objects and stacks into small numbers for the trace file.
//!
//! The interpreter is found once ([`detect`]): `Py_GetVersion` gives the minor version, whose
//! layout comes from the same generated tables memlens's outside reader uses
//! (`memlens-cpython/src/layouts/generated.rs`, included here by path); `PyCode_Type`,
//! `PyUnicode_Type` and `PyGILState_GetThisThreadState` are looked up with `dlsym`. On a
//! sampled allocation only, [`Stacks::sample`] takes this thread's own thread state (valid
//! without the GIL on 3.8-3.15; `_PyThreadState_UncheckedGet` would give the GIL holder on
//! 3.8-3.11) and walks its frames innermost first: 3.8-3.10 `PyFrameObject` (`f_back`,
//! `f_code`, `f_lasti`), 3.11-3.12 `tstate->cframe->current_frame`, 3.13+
//! `tstate->current_frame` (3.14+: `f_executable` is a tagged `_PyStackRef`), skipping the
//! frames owned by the C stack or the interpreter. Only this thread changes its own frame
//! chain, and the code objects its frames run stay alive while they run, so the reads are of
//! live memory; still every pointer is checked (non-null, aligned, user-space) and every code
//! object's type is `PyCode_Type` before it is read further: a frame that fails stops the walk
//! (`unreadable`), deeper than [`MAX_DEPTH`] frames is cut (`truncated`).
//!
//! What the walk gives (code address, its fingerprint, the instruction position, per frame) is
//! first compared with this thread's previous walk: while the outer frames, depth and flags
//! are unchanged, the ids already resolved in that context are kept per innermost frame and
//! domain in the thread's own small cache ([`Walk`]), so an allocation in a loop takes no
//! lock and hashes nothing. Otherwise it is hashed twice (128 bits) and looked up in a shared
//! direct-mapped cache of stacks already resolved;
//! on a miss each frame's code object is interned (address -> file-local id, the fingerprint
//! `co_filename` pointer + `co_name` pointer + `co_firstlineno` guarding against an address
//! reused by another code object), its strings decoded to UTF-8 into the tracer's own arena,
//! its line read from the code object's line table with memlens-cpython's pure decoder
//! (`linetable.rs`, included by path), and the resolved stack (domain, flags, (code id, line)
//! frames) interned. Everything lives in memory mapped once ([`Region`]), bounded: a code,
//! string or stack that does not fit is counted (`stacks_lost`) and its sample is given the
//! empty stack of its domain marked `lost=1`. Nothing here allocates through the allocator it
//! traces.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[rustfmt::skip]
#[path = "../../../memlens-cpython/src/layouts/generated.rs"]
#[allow(dead_code, missing_docs, clippy::all, clippy::pedantic)]
mod generated;
#[path = "../../../memlens-cpython/src/linetable.rs"]
#[allow(dead_code, missing_docs)]
mod linetable;

use crate::agg::{push_i64, push_u64};
use generated::Layout;

mod interp;
mod lines;
mod tables;
mod walk;

pub use interp::*;
pub use lines::*;
pub use tables::*;
pub use walk::*;

/// The deepest stack kept; deeper frames are left out (`truncated`).
pub const MAX_DEPTH: usize = 128;
/// Frame records visited at most in one walk (skipped shim frames included).
const MAX_WALK: usize = 4 * MAX_DEPTH;
/// Characters kept of a file name or function name.
const MAX_CHARS: usize = 1024;

/// Stack flag: deeper frames were left out.
pub const TRUNCATED: u8 = 1;
/// Stack flag: the walk stopped on a frame it could not read.
pub const UNREADABLE: u8 = 2;
/// Stack flag: the stack did not fit in the tracer's tables (its frames are not recorded).
pub const LOST: u8 = 4;

/// Domain numbers of the trace file's `stack domain=` (the event's source).
pub fn domain_name(d: u8) -> &'static str {
    match d {
        0 => "malloc",
        1 => "mmap",
        _ => "pymalloc",
    }
}
