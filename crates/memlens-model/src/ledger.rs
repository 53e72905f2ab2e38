//! The ledger of one process (DESIGN §3): rows by category, their items, totals and the
//! Python found in it.

use serde::Serialize;

use crate::category::Category;

/// RSS, PSS, USS and swap of a row, an item or a process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Amounts {
    /// Resident set.
    pub rss: u64,
    /// Proportional set.
    pub pss: u64,
    /// Unique set (Private_Clean + Private_Dirty).
    pub uss: u64,
    /// Swapped out.
    pub swap: u64,
}

impl Amounts {
    /// Adds another.
    pub fn add(&mut self, o: &Amounts) {
        self.rss += o.rss;
        self.pss += o.pss;
        self.uss += o.uss;
        self.swap += o.swap;
    }
}

/// One named part of a ledger row (a distribution, a library, a file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Name (untrusted: comes from the target's paths).
    pub name: String,
    /// Its amounts.
    #[serde(flatten)]
    pub amounts: Amounts,
    /// Virtual size of its mappings.
    pub size: u64,
    /// Number of mappings.
    pub mappings: u64,
}

/// One category of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The category.
    pub category: Category,
    /// Its amounts.
    #[serde(flatten)]
    pub amounts: Amounts,
    /// Virtual size of its mappings.
    pub size: u64,
    /// Number of mappings (a mapping split between categories counts in each).
    pub mappings: u64,
    /// Its parts, largest PSS first.
    pub items: Vec<Item>,
    /// For `python-heap`: pymalloc's split of the arena bytes (virtual sizes, so the row's
    /// amounts and the totals are unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pymalloc: Option<HeapSplit>,
}

/// Bytes of pymalloc arenas in allocated blocks versus free (free blocks, empty pools,
/// headers): fragmentation at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HeapSplit {
    /// Bytes in allocated blocks.
    pub used_bytes: u64,
    /// The rest of the arenas.
    pub free_bytes: u64,
}

/// Thread stacks found in the address space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ThreadStacks {
    /// Stacks found (the main thread's included).
    pub count: u64,
    /// Address space reserved for them, guard pages included.
    pub reserved: u64,
    /// Resident bytes.
    pub resident: u64,
    /// Threads whose stack could not be located (running on a CPU, no stack pointer shown).
    pub unlocated: u64,
}

/// What the ledger knows about the Python in a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PythonInfo {
    /// `3.11` from file names, or the exact `3.11.7` when the interpreter was read.
    pub version: Option<String>,
    /// Where the interpreter lives: the executable (static build) or libpython (shared build).
    pub binary: String,
    /// `static` or `shared`.
    pub build: &'static str,
    /// The collector's state, when the interpreter was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc: Option<crate::python::GcState>,
    /// pymalloc's arenas and bytes, when the interpreter was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pymalloc: Option<crate::python::Pymalloc>,
    /// `sys.modules`, when the interpreter was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules: Option<crate::python::Modules>,
    /// The view was read without stopping the process (figures may be inexact).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inexact: bool,
    /// Python objects by package (`snapshot --packages`): bytes already inside the heap rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<crate::packages::PythonPackages>,
}

/// The reconciled ledger of one process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessLedger {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// The comm.
    pub name: String,
    /// Command line, arguments joined by spaces (untrusted).
    pub cmdline: String,
    /// The Python found in the process, if any.
    pub python: Option<PythonInfo>,
    /// Threads.
    pub threads: u32,
    /// Peak RSS (the kernel's exact high-water mark).
    pub vm_hwm: u64,
    /// Sum of every mapping (equals the sum of the rows).
    pub totals: Amounts,
    /// Virtual size.
    pub size: u64,
    /// One row a category that has mappings, largest PSS first.
    pub ledger: Vec<Row>,
    /// Stacks.
    pub thread_stacks: ThreadStacks,
    /// Copy-on-write sharing with its parent (`snapshot --tree`, parent in the tree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing: Option<crate::sharing::Sharing>,
}

impl ProcessLedger {
    /// The row of a category, if present.
    pub fn row(&self, c: Category) -> Option<&Row> {
        self.ledger.iter().find(|r| r.category == c)
    }
}
