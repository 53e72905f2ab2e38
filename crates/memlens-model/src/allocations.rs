//! Allocation attribution: what `memlens run --trace` learnt from the tracer
//! (`memlens-preload`, DESIGN.md §8), as reports render it and `"allocations"` in the JSON
//! contract carries it (docs/json.md).
//!
//! Byte figures are sums of sample weights: estimates in `sampled` mode (each says so through
//! [`Allocations::mode`]), exact in `all` mode. Lines were resolved by the tracer inside the
//! target (the code object's own line table); a frame whose line could not be resolved has
//! line 0.

use serde::{Deserialize, Serialize};

/// One Python frame of an allocation's stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frame {
    /// `co_filename` as the target holds it (untrusted text: escape before printing).
    pub file: String,
    /// `co_qualname` (3.11+) or `co_name`.
    pub function: String,
    /// The line executing when the allocation was made; 0 when unknown.
    pub line: u32,
}

/// Where the allocated bytes came from, which tells the ledger row they reconcile with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Domain {
    /// CPython's `PyMem_Malloc`/`PyObject_Malloc` domains (pymalloc blocks and what pymalloc
    /// passes on to malloc), wrapped with `PyMem_SetAllocator`.
    Pymalloc,
    /// The C malloc family called directly (extensions, the interpreter's raw domain).
    Malloc,
    /// Anonymous `mmap` called directly.
    Mmap,
}

/// Bytes and allocation count of one stack or one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// Innermost frame first; empty when the allocation was made with no Python frame on
    /// the thread (native code, interpreter start-up).
    pub frames: Vec<Frame>,
    /// Which allocator the bytes came from.
    pub domain: Domain,
    /// Bytes (sums of sample weights).
    pub bytes: u64,
    /// Allocations (sums of sample counts).
    pub count: u64,
    /// The process the bytes were allocated in.
    pub pid: u32,
}

/// Figures of one source line: the innermost frame of the stacks it is the top of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByLine {
    /// `co_filename` (untrusted text).
    pub file: String,
    /// Line number; 0 when unknown.
    pub line: u32,
    /// `co_qualname` or `co_name`.
    pub function: String,
    /// Bytes (sums of sample weights).
    pub bytes: u64,
    /// Allocations (sums of sample counts).
    pub count: u64,
}

/// Whether [`AtPeak::by_line`] and [`AtPeak::stacks`] break all of [`AtPeak::bytes`] down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Breakdown {
    /// They hold all of the peak's bytes (or the peak is 0).
    #[default]
    Complete,
    /// The block of stacks at this peak of a process (all of them for one process) was not
    /// completely imported: memlens stopped while the tracer wrote it, or the tracer was
    /// killed or its write failed part-way (a full disk, a file size limit). The bytes are known (from the process's snapshots), their
    /// lines and stacks are not: `by_line` and `stacks` hold only other processes' bytes
    /// (nothing for one process), never a part of a block. Also in a tree whose peak takes
    /// a process's stacks from its snapshot (not its own peak block) when they do not sum to
    /// its live bytes then: that snapshot's `site` lines were not all imported.
    Cut,
    /// The trace format (version 1) has no stacks at the peak.
    None,
}

/// What was live when the traced total was highest. Each allocation is counted once, in the
/// process that made it: a forked child's blocks inherited at fork are not in `bytes`,
/// `by_line` or `stacks` (its parent counts them while it holds them), but in
/// `inherited_bytes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtPeak {
    /// Seconds since the recording started.
    pub t: f64,
    /// Bytes (sums of sample weights).
    pub bytes: u64,
    /// By innermost line, largest first.
    pub by_line: Vec<ByLine>,
    /// By whole stack, largest first.
    pub stacks: Vec<Stack>,
    /// Forked children's blocks inherited at fork and still live in them then, summed over
    /// the children (a block inherited by 4 children counts 4 times): memory the kernel
    /// shares with the parent's copy until either writes to its page, so not in `bytes`.
    /// Pages a child has written (Python's reference counts write to every object touched)
    /// are its own copies: they show in the ledger's PSS, not here. 0 in recordings made
    /// before it was kept apart, whose children counted these blocks in `bytes`.
    #[serde(default)]
    pub inherited_bytes: u64,
    /// `inherited_bytes` by the innermost line that allocated them (in the ancestor).
    #[serde(default)]
    pub inherited_by_line: Vec<ByLine>,
    /// Whether `by_line` and `stacks` hold all of `bytes` (`complete` in JSON written before
    /// this field, which did not say).
    #[serde(default)]
    pub breakdown: Breakdown,
    /// The highest traced live bytes the recorded snapshots saw: each process's highest
    /// `peak_live_bytes` (its tracer's high-water mark), a tree's as for `bytes`. Equal to
    /// `bytes` unless a newer peak's block of stacks was cut (not completely imported): then
    /// `bytes` and its breakdown are an older, lower peak, exact at its time, and this is the
    /// higher figure, with no breakdown. With a trace file that has no end line (killed, or
    /// memlens stopped before importing it) it is a lower bound of the run's traced peak.
    /// 0 in JSON written before this field.
    #[serde(default)]
    pub highest_seen_bytes: u64,
    /// When `highest_seen_bytes` was seen (s since the recording started): its peak block's
    /// time when it is that block's, else the first snapshot that showed it (the high itself
    /// was at or before it).
    #[serde(default)]
    pub highest_seen_t: f64,
}

/// A set of allocations by line (leaked: alive at exit; temporary: freed soon after).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lines {
    /// Bytes (sums of sample weights).
    pub bytes: u64,
    /// By innermost line, largest first.
    pub by_line: Vec<ByLine>,
}

/// Traced bytes against what the kernel charged to one ledger category at the peak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// A ledger category (`python-heap`, `native-heap`, ...).
    pub category: String,
    /// Live traced bytes of the domains charged to this category.
    pub traced_bytes: u64,
    /// The category's PSS in the ledger nearest the peak.
    pub pss: u64,
    /// Traced as live but never touched (no resident page): calloc'd zero pages, arrays
    /// allocated and not written. Measured by the tracer with `mincore` on large live
    /// sampled allocations.
    pub untouched_bytes: u64,
    /// The tracer's own resident memory (its tables and queue), which the ledger counts in
    /// this category's PSS (private anonymous memory): on `native-heap`, 0 elsewhere and in
    /// recordings made before it was measured.
    #[serde(default)]
    pub tracer_bytes: u64,
}

/// Allocated and freed over the whole run, for one source line (`report --lines`:
/// memory_profiler-style figures from the trace alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineTotals {
    /// `co_filename` (untrusted text).
    pub file: String,
    /// Line number; 0 when unknown.
    pub line: u32,
    /// `co_qualname` or `co_name`.
    pub function: String,
    /// Bytes allocated over the run.
    pub allocated_bytes: u64,
    /// Allocations over the run.
    pub allocated_count: u64,
    /// Bytes freed over the run.
    pub freed_bytes: u64,
    /// Frees over the run.
    pub freed_count: u64,
}

/// What the tracer could not record: never silent (each makes a figure an underestimate
/// or leaves bytes in `live`; the tracer's crate docs say which).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// Samples refused by a full event queue: missing from every figure.
    pub dropped_allocs: u64,
    /// Frees refused by a full event queue: their bytes stay live.
    pub dropped_frees: u64,
    /// Samples with no free slot in the pointer table: missing.
    pub table_full: u64,
    /// Events queued in a parent at fork, discarded in the child.
    pub lost_at_fork: u64,
    /// Sampled allocations whose Python stack could not be read (counted, kept with the
    /// frames that were read).
    pub unreadable_stacks: u64,
    /// Sampled allocations whose stack did not fit in the tracer's bounded tables (kept,
    /// with no frames).
    #[serde(default)]
    pub stacks_lost: u64,
    /// Trace files that ended without an `end` line (killed, or replaced by exec).
    pub unfinished_traces: u64,
}

/// One stack's live bytes over time ([`OverTime`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackSeries {
    /// Innermost frame first (empty: no Python frame).
    pub frames: Vec<Frame>,
    /// Which allocator the bytes came from.
    pub domain: Domain,
    /// The processes whose stacks with these frames are summed here.
    pub pids: Vec<u32>,
    /// Its highest live bytes over the run (over every snapshot, not only those kept).
    pub max_bytes: u64,
    /// When it was that high first (seconds since the recording started).
    pub max_t: f64,
    /// Live bytes at each of [`OverTime::t`].
    pub bytes: Vec<u64>,
}

/// Live traced bytes over time, whole and by stack: the tracer's snapshot times (one a
/// second per process), the tree's traced live bytes then, the stacks that held the most at
/// any time (each the same frames summed over processes), and the rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OverTime {
    /// Seconds since the recording started; every snapshot time of any process, or, past
    /// [`OverTime::MAX_POINTS`], the one with the most live bytes in each of that many
    /// equal runs of them.
    pub t: Vec<f64>,
    /// Traced live bytes of every process at each time (the last snapshot of each at or
    /// before it; 0 before its first and after its `end`).
    pub live_bytes: Vec<u64>,
    /// At most [`OverTime::MAX_STACKS`] stacks, largest [`StackSeries::max_bytes`] first.
    pub stacks: Vec<StackSeries>,
    /// `live_bytes` less the stacks above, at each time.
    pub other_bytes: Vec<u64>,
    /// Snapshot times in the run (more than `t` holds when thinned).
    pub snapshots: u64,
}

impl OverTime {
    /// Most times kept.
    pub const MAX_POINTS: usize = 600;
    /// Most stacks drawn apart.
    pub const MAX_STACKS: usize = 8;
}

/// What `--trace` found over a whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocations {
    /// `sampled` or `all`.
    pub mode: String,
    /// Mean sample interval (1 in `all` mode).
    pub sample_interval_bytes: u64,
    /// Live at the traced peak.
    pub at_peak: AtPeak,
    /// Alive at exit.
    pub leaked: Lines,
    /// Freed soon after allocation.
    pub temporary: Lines,
    /// Traced bytes against the ledger at the peak.
    pub reconciliation: Vec<Reconciliation>,
    /// Per line over the whole run (allocated, freed); the innermost frame's line.
    pub totals_by_line: Vec<LineTotals>,
    /// What the tracer could not record.
    pub lost: Lost,
    /// Live bytes over time, by stack.
    #[serde(default)]
    pub over_time: OverTime,
}
