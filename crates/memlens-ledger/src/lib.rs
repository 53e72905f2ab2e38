//! The reconciled memory ledger (DESIGN §3): every mapping of a process sorted into exactly one
//! category with RSS, PSS, USS and swap; process trees summed by PSS; findings in plain words.
//!
//! It reads `/proc` through `memlens-procfs` and takes interpreter knowledge (pymalloc arena
//! addresses) as [`Hints`]; it prints nothing. The shapes it fills ([`ProcessLedger`],
//! [`TreeLedger`], ...) and the arithmetic reports do on them (`tree::assemble`,
//! `tree::by_category`, findings) live in `memlens-model` and are re-exported here at their
//! old paths; this crate owns only what needs `/proc` or the Python view: reading and sorting.

pub mod arenas;
pub mod category;
pub mod distribution;
pub mod host;
pub mod packages;
mod parallel;
pub mod process;
pub mod sharing;
pub mod target;
pub mod thread_costs;
pub mod tree;
pub mod with_python;
pub use memlens_model::units;

pub use category::Category;
pub use process::{
    build, category_ranges, Amounts, AmountsOf, CategoryRange, HeapSplit, Hints, Item,
    ProcessLedger, ProcessParts, PythonInfo, PythonViewExt, Row, ThreadStacks,
};
pub use target::ReadError;
pub use tree::{snapshot, TreeLedger};
