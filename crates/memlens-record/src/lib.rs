//! memlens-record: the sampler of a process tree over time (DESIGN §7) and its recording, one
//! SQLite file with a versioned schema (`docs/recording.md`).
//!
//! It reads `/proc` and cgroup files, creates (and removes) the memory cgroup `memlens run`
//! places the program in, starts the program with signals forwarded, and writes and reads
//! recordings. It prints nothing: reports are `memlens-report`'s.

pub mod budget;
pub mod cgroup;
pub mod cputime;
pub mod destination;
mod discovery;
mod error;
pub mod launch;
pub mod python;
pub mod reader;
pub mod sampler;
pub mod schema;
pub mod writer;

pub use error::{Error, Result};
pub use python::{CensusEntry, LiveView, PythonSample, PythonView};
pub use reader::Recording;
pub use sampler::{Config, Finish, Sampler};
pub use writer::RecordingWriter;
