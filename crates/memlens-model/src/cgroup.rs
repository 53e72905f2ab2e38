//! The memory figures of a cgroup (read by `memlens-procfs`).

use serde::Serialize;

/// Memory figures of one cgroup, normalised across v1 and v2. Sizes in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CgroupMemory {
    /// 1 or 2.
    pub version: u8,
    /// The cgroup's path within its hierarchy.
    #[serde(serialize_with = "crate::serialize_lossy")]
    pub path: Vec<u8>,
    /// Current charge (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    pub usage: u64,
    /// Hard limit (v2 `memory.max`; v1 the smaller of `limit_in_bytes` and the hierarchical
    /// limit), `None` when unlimited.
    pub limit: Option<u64>,
    /// v2 `memory.high` throttling threshold, `None` when unlimited or v1.
    pub high: Option<u64>,
    /// Peak charge (v2 `memory.peak`, v1 `max_usage_in_bytes`), when the kernel keeps one.
    pub peak: Option<u64>,
    /// Anonymous memory charged.
    pub anon: Option<u64>,
    /// Page cache charged.
    pub file: Option<u64>,
    /// Kernel memory charged.
    pub kernel: Option<u64>,
    /// Shared memory (tmpfs, shm) charged.
    pub shmem: Option<u64>,
    /// Socket buffers charged (v2).
    pub sock: Option<u64>,
    /// Times the limit was hit and the OOM path entered.
    pub oom_events: Option<u64>,
    /// Processes killed by the OOM killer in this cgroup.
    pub oom_kills: Option<u64>,
    /// Memory pressure (v2 `memory.pressure`): share of time some task stalled, 10 s average.
    pub pressure_some_avg10: Option<f64>,
    /// Full-stall 10 s average.
    pub pressure_full_avg10: Option<f64>,
}

impl CgroupMemory {
    /// What can still be charged before the limit: `None` when unlimited.
    pub fn headroom(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.usage))
    }
}
