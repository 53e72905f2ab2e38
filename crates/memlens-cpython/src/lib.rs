//! The Python view of a process, read from outside (DESIGN §5): interpreter discovery and
//! version, threads and stacks, GC state, pymalloc arenas, `sys.modules`, and the object
//! census. Generic over [`memlens_remote::ProcessMemory`], so the decoders are tested on byte
//! slices; [`session::Session`] ties them to a live process with short ptrace pauses.
//!
//! It never writes to the target and never panics on what it reads: every value from the
//! target is bounded and checked, and failures are typed [`Error`]s.

pub mod access;
pub mod attach;
pub mod attrs;
pub mod binary;
pub mod census;
pub mod dicts;
mod error;
pub mod gc;
pub mod layouts;
pub mod linetable;
pub mod modules;
pub mod numpy;
pub mod objects;
pub mod process;
pub mod pymalloc;
pub mod reader;
pub mod remote_exec;
pub mod session;
pub mod sizes;
pub mod thread_costs;
pub mod threads;
pub mod views;

pub use attach::Attacher;
pub use census::{Census, TypeCount};
pub use error::{Error, Result};
pub use gc::{GcState, Generation};
pub use modules::Modules;
pub use process::{Interpreter, Version};
pub use pymalloc::Pymalloc;
pub use session::{PythonView, ReadMode, Session};
pub use sizes::{ObjectSize, SizeKind, Sizer, TypeFacts};
pub use threads::{Frame, Thread};
