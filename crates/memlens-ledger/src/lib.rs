//! The reconciled memory ledger (DESIGN §3): every mapping of a process sorted into exactly one
//! category with RSS, PSS, USS and swap; process trees summed by PSS; findings in plain words.
//!
//! It reads `/proc` through `memlens-procfs` and takes interpreter knowledge (pymalloc arena
//! addresses) as [`Hints`]; it prints nothing.

pub mod category;
pub mod distribution;
pub mod host;
pub mod packages;
mod parallel;
pub mod process;
pub mod tree;
pub mod units;

pub use category::Category;
pub use process::{
    build, Amounts, HeapSplit, Hints, Item, ProcessLedger, ProcessParts, PythonInfo, Row,
    ThreadStacks,
};
pub use tree::{snapshot, TreeLedger};
