//! memlens-record: the sampler of a process tree over time (DESIGN §7) and its recording, one
//! SQLite file with a versioned schema (`docs/recording.md`).
//!
//! It reads `/proc` and cgroup files, supervises `memlens run`'s program and `memlens record`'s
//! tree behind one call each ([`supervise`]; starting the program, signals and the run's
//! memory cgroup are `memlens-launch`'s), and writes and reads recordings. It has no `unsafe`
//! of its own apart from the recording's destination (`renameat2`). It prints nothing: the
//! caller prints what [`supervise::Notice`] says, and reports are `memlens-report`'s.

pub mod budget;
pub mod destination;
mod discovery;
mod error;
pub mod python;
pub mod reader;
pub mod sampler;
pub mod schema;
pub mod supervise;
pub mod writer;

pub use error::{Error, Result};
pub use python::{CensusEntry, LiveView, PythonSample, PythonView};
pub use reader::Recording;
pub use sampler::{Config, Finish, Sampler};
pub use writer::RecordingWriter;
