//! memlens-model: the plain data that memlens's readers produce and its reports render, with
//! the arithmetic reports do on it (sums by category, tree totals, findings, sizes in binary
//! units).
//!
//! It is the bottom of the crate graph: it depends on `serde` only, reads nothing (no `/proc`,
//! no target memory, no files; only [`clock`] reads the time and its one test switch),
//! prints nothing and has no `unsafe`. Readers fill these shapes
//! (`memlens-procfs`, `memlens-cpython`, `memlens-ledger`), the recording stores them
//! (`memlens-recording`), and renderers draw them (`memlens-report`) without linking any
//! reader. [`clock`] is the one clock of the times memlens reports, fixed for tests.

pub mod advice;
pub mod allocations;
pub mod arenas;
pub mod category;
pub mod census;
pub mod cgroup;
pub mod clock;
pub mod diff;
pub mod host;
pub mod ledger;
pub mod packages;
pub mod python;
pub mod referrers;
pub mod sharing;
pub mod stacks;
pub mod thread_costs;
pub mod tree;
pub mod units;

pub use category::Category;
pub use cgroup::CgroupMemory;
pub use ledger::{Amounts, HeapSplit, Item, ProcessLedger, PythonInfo, Row, ThreadStacks};
pub use tree::{Skipped, TreeLedger};

/// Serializes bytes read from the system as text, invalid UTF-8 replaced.
pub(crate) fn serialize_lossy<S: serde::Serializer>(
    v: &[u8],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v))
}
