//! memlens-recording: the recording file, one SQLite file with a versioned schema
//! (`docs/recording.md`), its only writer ([`RecordingWriter`]) and reader ([`Recording`]),
//! the typed metadata it carries ([`Meta`], [`End`]), and the rules for the files memlens
//! creates ([`destination`]: never deleting, truncating or writing through anything it did not
//! create).
//!
//! It knows the format only: it reads no `/proc` file and no process's memory, and depends on
//! `memlens-model` for the shapes it stores, SQLite, serde and `rustix` (safe system calls for
//! `O_NOFOLLOW` opens and `renameat2`; no `unsafe` here). The sampler that fills a recording is
//! `memlens-record`'s; the reports drawn from one are `memlens-report`'s. It prints nothing.

pub mod destination;
mod error;
pub mod meta;
pub mod python;
pub mod reader;
pub mod schema;
pub mod trace;
pub mod trace_live;
mod trace_series;
pub mod trace_store;
pub mod writer;

pub use error::{Error, Result};
pub use meta::{End, Meta, Mode};
pub use python::{CensusEntry, PythonSample};
pub use reader::Recording;
pub use writer::{Counters, ProcessInfo, RecordingWriter};
