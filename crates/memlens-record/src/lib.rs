//! memlens-record: the sampler of a process tree over time (DESIGN §7), which fills a
//! recording (`memlens-recording`: the file, its writer and reader, re-exported here at their
//! old paths).
//!
//! It reads `/proc` and cgroup files, creates (and removes) the memory cgroup `memlens run`
//! places the program in, starts the program with signals forwarded, and joins the Python view.
//! It does not know the file format (that is `memlens-recording`'s) and prints nothing: reports
//! are `memlens-report`'s.

pub mod budget;
pub mod cgroup;
pub mod cputime;
mod discovery;
mod error;
pub mod launch;
pub mod python;
pub mod sampler;

pub use memlens_recording::{destination, reader, schema, writer};
pub use memlens_recording::{End, Meta, Mode, Recording, RecordingWriter};

pub use error::{Error, Result};
pub use python::{CensusEntry, LiveView, PythonSample, PythonView};
pub use sampler::{Config, Finish, Sampler};
