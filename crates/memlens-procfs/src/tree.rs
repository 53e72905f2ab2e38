//! Process trees: every process on the host with its parent, and descendants of a root.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::Result;

/// One row of the process table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcEntry {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// The comm.
    pub comm: Vec<u8>,
    /// Start time after boot, in clock ticks (tells a reused PID apart).
    pub start_time: u64,
}

/// A snapshot of the process table.
#[derive(Debug, Clone, Default)]
pub struct ProcessTable {
    entries: BTreeMap<u32, ProcEntry>,
}

impl ProcessTable {
    /// Reads every `/proc/PID/stat`; processes that exit during the scan are skipped.
    pub fn scan() -> Result<Self> {
        Self::scan_root(Path::new("/proc"))
    }

    /// Same, under another procfs root.
    pub fn scan_root(root: &Path) -> Result<Self> {
        let rd = std::fs::read_dir(root).map_err(|e| crate::Error::Io {
            path: root.to_path_buf(),
            source: e,
        })?;
        let mut entries = BTreeMap::new();
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(bytes) = std::fs::read(e.path().join("stat")) else {
                continue;
            };
            if let Ok(st) = crate::stat::parse(&bytes) {
                entries.insert(
                    pid,
                    ProcEntry {
                        pid,
                        ppid: st.ppid,
                        comm: st.comm,
                        start_time: st.start_time,
                    },
                );
            }
        }
        Ok(ProcessTable { entries })
    }

    /// Builds a table from rows (tests, recordings).
    pub fn from_entries(rows: impl IntoIterator<Item = ProcEntry>) -> Self {
        ProcessTable {
            entries: rows.into_iter().map(|e| (e.pid, e)).collect(),
        }
    }

    /// The row of a process.
    pub fn get(&self, pid: u32) -> Option<&ProcEntry> {
        self.entries.get(&pid)
    }

    /// Every row, by PID.
    pub fn iter(&self) -> impl Iterator<Item = &ProcEntry> {
        self.entries.values()
    }

    /// Direct children of a process, by PID.
    pub fn children(&self, pid: u32) -> Vec<u32> {
        self.entries
            .values()
            .filter(|e| e.ppid == pid && e.pid != pid)
            .map(|e| e.pid)
            .collect()
    }

    /// The process and all its descendants, parents before children.
    pub fn subtree(&self, root: u32) -> Vec<u32> {
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            for kid in self.children(out[i]) {
                if !out.contains(&kid) {
                    out.push(kid);
                }
            }
            i += 1;
        }
        out
    }

    /// The nearest ancestor (or the process itself) that satisfies `pred`, walking PPid links.
    pub fn topmost_matching(&self, pid: u32, pred: impl Fn(u32) -> bool) -> u32 {
        let mut best = pid;
        let mut cur = pid;
        let mut guard = 0;
        while let Some(e) = self.entries.get(&cur) {
            if e.ppid == 0 || e.ppid == cur || guard > 4096 {
                break;
            }
            cur = e.ppid;
            if pred(cur) {
                best = cur;
            } else {
                break;
            }
            guard += 1;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> ProcessTable {
        ProcessTable::from_entries(
            [(1, 0), (10, 1), (11, 10), (12, 10), (13, 11), (20, 1)].map(|(pid, ppid)| ProcEntry {
                pid,
                ppid,
                comm: b"x".to_vec(),
                start_time: 0,
            }),
        )
    }

    #[test]
    fn subtree_is_parents_first() {
        assert_eq!(t().subtree(10), vec![10, 11, 12, 13]);
        assert_eq!(t().subtree(20), vec![20]);
        assert_eq!(t().children(1), vec![10, 20]);
    }

    #[test]
    fn topmost() {
        let t = t();
        assert_eq!(t.topmost_matching(13, |p| p >= 10), 10);
        assert_eq!(t.topmost_matching(13, |_| false), 13);
    }

    #[test]
    fn scans_real_proc() {
        let t = ProcessTable::scan().unwrap();
        let me = std::process::id();
        assert!(t.get(me).is_some());
    }
}
