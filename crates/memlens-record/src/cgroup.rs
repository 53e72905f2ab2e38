//! A memory cgroup of memlens's own for the program it runs, so the kernel keeps the exact peak
//! of the whole tree (v2 `memory.peak`, v1 `memory.max_usage_in_bytes`). Created under the
//! memory cgroup memlens itself is in, removed at the end.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memlens_procfs::bytes::{parse_u64, trim};
use memlens_procfs::cgroup::{locate, parse_memberships, parse_mounts};

/// Prefix of the cgroups memlens creates (followed by memlens's PID).
pub const NAME_PREFIX: &str = "memlens-run-";

/// A memory cgroup created for one run.
#[derive(Debug)]
pub struct OwnCgroup {
    dir: PathBuf,
    version: u8,
    procs: File,
    /// `cgroup.procs` again, read-only: every process of the tree, in one read.
    members: File,
    usage: File,
    path_in_hierarchy: String,
}

impl OwnCgroup {
    /// Creates `memlens-run-<pid>` under memlens's own memory cgroup. `Err` says in words why
    /// it could not (no memory controller, no permission, v2 controller not delegated).
    pub fn create() -> Result<OwnCgroup, String> {
        let memberships = parse_memberships(
            &std::fs::read("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?,
        );
        let mounts = parse_mounts(
            &std::fs::read("/proc/self/mountinfo")
                .map_err(|e| format!("/proc/self/mountinfo: {e}"))?,
        );
        let (version, path, parent) =
            locate(&memberships, &mounts).ok_or("no memory cgroup controller is mounted")?;
        remove_stale(&parent);
        let name = format!("{NAME_PREFIX}{}", std::process::id());
        let dir = parent.join(&name);
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (usage_name, peak_name) = files(version);
        let opened = (|| {
            if !dir.join(peak_name).exists() {
                return Err(format!(
                    "{} has no {peak_name} (the memory controller is not enabled for child cgroups)",
                    dir.display()
                ));
            }
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map_err(|e| format!("cannot open {}/cgroup.procs: {e}", dir.display()))?;
            let members = File::open(dir.join("cgroup.procs"))
                .map_err(|e| format!("cannot open {}/cgroup.procs: {e}", dir.display()))?;
            let usage = File::open(dir.join(usage_name))
                .map_err(|e| format!("cannot open {}/{usage_name}: {e}", dir.display()))?;
            Ok((procs, members, usage))
        })();
        match opened {
            Ok((procs, members, usage)) => {
                let mut p = String::from_utf8_lossy(&path).into_owned();
                if !p.ends_with('/') {
                    p.push('/');
                }
                p.push_str(&name);
                Ok(OwnCgroup {
                    dir,
                    version,
                    procs,
                    members,
                    usage,
                    path_in_hierarchy: p,
                })
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// The writable `cgroup.procs` of the cgroup: the child writes `0` into it before exec.
    pub fn procs_file(&self) -> &File {
        &self.procs
    }

    /// 1 or 2.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Path within the hierarchy.
    pub fn path(&self) -> &str {
        &self.path_in_hierarchy
    }

    /// The cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a process is in the cgroup.
    pub fn contains(&self, pid: u32) -> bool {
        std::fs::read(self.dir.join("cgroup.procs")).is_ok_and(|b| {
            b.split(|c| *c == b'\n')
                .any(|l| parse_u64(trim(l)) == Some(u64::from(pid)))
        })
    }

    /// Appends the PIDs of every process in the cgroup (the whole tree, however many threads
    /// its processes have) to `out`; `buf` is scratch space.
    pub fn members(&self, buf: &mut Vec<u8>, out: &mut Vec<u32>) {
        if buf.len() < 4096 {
            buf.resize(4096, 0);
        }
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match self.members.read_at(&mut buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) => {
                    log::debug!("{}/cgroup.procs: {e}", self.dir.display());
                    return;
                }
            }
        }
        out.extend(
            buf[..len]
                .split(|c| *c == b'\n')
                .filter_map(|l| parse_u64(trim(l)))
                .filter_map(|p| u32::try_from(p).ok()),
        );
    }

    /// Current charge (a few microseconds: the file is kept open).
    pub fn usage(&self) -> Option<u64> {
        let mut buf = [0u8; 32];
        let n = self.usage.read_at(&mut buf, 0).ok()?;
        parse_u64(trim(&buf[..n]))
    }

    /// The kernel's peak charge since the cgroup was created.
    pub fn peak(&self) -> Option<u64> {
        let b = std::fs::read(self.dir.join(files(self.version).1)).ok()?;
        parse_u64(trim(&b))
    }

    /// Moves any process still inside to the parent cgroup and removes the cgroup.
    pub fn remove(self) {
        let parent = self.dir.parent().map(Path::to_path_buf);
        if let (Some(parent), Ok(b)) = (parent, std::fs::read(self.dir.join("cgroup.procs"))) {
            for l in b.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
                if let Err(e) = std::fs::write(parent.join("cgroup.procs"), l) {
                    log::debug!(
                        "cannot move {} out of {}: {e}",
                        String::from_utf8_lossy(l),
                        self.dir.display()
                    );
                }
            }
        }
        let dir = self.dir.clone();
        drop(self);
        // Right after the last process leaves, the kernel may still be releasing it: retry briefly.
        for attempt in 0..50 {
            match std::fs::remove_dir(&dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => {
                    if attempt == 49 {
                        log::warn!("cannot remove cgroup {}: {e}", dir.display());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }
}

fn files(version: u8) -> (&'static str, &'static str) {
    if version == 2 {
        ("memory.current", "memory.peak")
    } else {
        ("memory.usage_in_bytes", "memory.max_usage_in_bytes")
    }
}

/// Removes empty cgroups left by memlens runs that were killed (their memlens PID is gone).
fn remove_stale(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(NAME_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let empty = std::fs::read(e.path().join("cgroup.procs")).is_ok_and(|b| trim(&b).is_empty());
        if empty {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}
