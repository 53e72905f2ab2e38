//! memlens-record: the sampler of a process tree over time (DESIGN §7), which fills a
//! recording (`memlens-recording`: the file, its writer and reader, re-exported here at their
//! old paths).
//!
//! It reads `/proc` and cgroup files, supervises `memlens run`'s program and `memlens record`'s
//! tree behind one call each ([`supervise`]; starting the program, signals and the run's
//! memory cgroup are `memlens-launch`'s), and joins the Python view. It does not know the file
//! format (that is `memlens-recording`'s), has no `unsafe`, and prints nothing: the caller
//! prints what [`supervise::Notice`] says, and reports are `memlens-report`'s.

pub mod budget;
mod discovery;
mod error;
pub mod python;
pub mod sampler;
pub mod supervise;

pub use memlens_recording::{destination, reader, schema, writer};
pub use memlens_recording::{End, Meta, Mode, Recording, RecordingWriter};

pub use error::{Error, Result};
/// The system's page size in bytes (for a recording's metadata).
pub use memlens_procfs::page_size;
pub use python::{CensusEntry, LiveView, PythonSample, PythonView};
pub use sampler::{Config, Finish, Sampler};
