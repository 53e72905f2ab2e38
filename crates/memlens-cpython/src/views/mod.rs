//! The one path by which commands and recordings get a process's Python view: attach (through
//! one [`Attacher`] that knows each Python binary once and lets forked twins reuse their
//! parent's findings), read, retry an interpreter still starting, and give the ledger its
//! hints (pymalloc's arenas). [`TreeViews`] reads each process of a snapshot once;
//! [`Follower`] follows processes over time for a recording.
//!
//! Neither prints anything nor decides what a failure means to a user: a process that is not
//! a supported Python has no view, and the reason is logged.

mod follow;
mod tree;

pub use follow::{Event, Follower, Reading};
pub use tree::{inspect, inspect_with, TreeViews};

use crate::session::ReadMode;

/// The read mode from a `--nonblocking` flag.
pub fn mode(nonblocking: bool) -> ReadMode {
    if nonblocking {
        ReadMode::Nonblocking
    } else {
        ReadMode::Paused
    }
}
