//! `ps`: the Python processes of the host grouped into trees (read by `memlens-ledger`).

use serde::Serialize;

use crate::ledger::{Amounts, PythonInfo};
use crate::sharing::{Exclusive, Sharing};

/// One process in `ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PsProcess {
    /// Process id.
    pub pid: u32,
    /// Parent.
    pub ppid: u32,
    /// comm.
    pub name: String,
    /// Command line (untrusted).
    pub cmdline: String,
    /// Python found in the process.
    pub python: Option<PythonInfo>,
    /// Threads.
    pub threads: u32,
    /// Peak RSS.
    pub vm_hwm: u64,
    /// RSS, PSS, USS, swap.
    pub totals: Amounts,
    /// Depth below the tree's root (0 for the root).
    pub depth: u32,
    /// Copy-on-write sharing with its parent, for a process whose parent is listed in its
    /// tree (`memlens ps`; `measured: false` and a reason where not measured, as with
    /// `--no-sharing`). Absent for a root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing: Option<Sharing>,
}

/// One tree: a root process and its selected descendants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PsTree {
    /// The root's PID.
    pub root: u32,
    /// Sums over the tree's processes.
    pub totals: Amounts,
    /// `rss - pss`: how much summing RSS overstates the tree.
    pub rss_overcount: u64,
    /// Parents before children.
    pub processes: Vec<PsProcess>,
    /// Resident bytes only the tree's processes map, for a tree of more than one process
    /// (`memlens ps`; `measured: false` and a reason where not measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<Exclusive>,
}

/// The `ps` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PsReport {
    /// Trees, largest PSS first.
    pub trees: Vec<PsTree>,
    /// Sums over every listed process.
    pub totals: Amounts,
    /// Processes that could not be read (permission), left out.
    pub unreadable: u32,
}
