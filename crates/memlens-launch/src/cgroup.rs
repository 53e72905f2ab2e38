//! A memory cgroup of memlens's own for the program it runs, so the kernel keeps the exact peak
//! of the whole tree (v2 `memory.peak`, v1 `memory.max_usage_in_bytes`). Created under the
//! memory cgroup memlens itself is in; an [`OwnCgroup`] is a guard: dropped, it moves any
//! process still inside to the parent and removes the directory, unless [`OwnCgroup::keep`]
//! was called. It removes only the directory it created itself.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memlens_procfs::bytes::{parse_u64, trim};
use memlens_procfs::cgroup::{locate, parse_memberships, parse_mounts};

use crate::error::CgroupError;

/// Prefix of the cgroups memlens creates (followed by memlens's PID: one per memlens process
/// at a time).
pub const NAME_PREFIX: &str = "memlens-run-";

/// A memory cgroup created for one run, removed when dropped (see the module).
#[derive(Debug)]
pub struct OwnCgroup {
    version: u8,
    procs: File,
    /// `cgroup.procs` again, read-only: every process of the tree, in one read.
    members: File,
    usage: File,
    path_in_hierarchy: String,
    /// Declared last: fields drop in order, so the files above are closed before the
    /// directory is removed.
    dir: CreatedDir,
}

/// A cgroup directory memlens created; removed on drop unless kept.
#[derive(Debug)]
struct CreatedDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for CreatedDir {
    fn drop(&mut self) {
        if !self.keep {
            remove_dir(&self.path);
        }
    }
}

impl OwnCgroup {
    /// Creates `memlens-run-<pid>` under memlens's own memory cgroup (cgroups of earlier
    /// memlens runs whose memlens is gone and that are empty are removed first).
    pub fn create() -> Result<OwnCgroup, CgroupError> {
        let read = |path: &str| {
            std::fs::read(path).map_err(|source| CgroupError::Unreadable {
                path: PathBuf::from(path),
                source,
            })
        };
        let memberships = parse_memberships(&read("/proc/self/cgroup")?);
        let mounts = parse_mounts(&read("/proc/self/mountinfo")?);
        let (version, path, parent) =
            locate(&memberships, &mounts).ok_or(CgroupError::NoController)?;
        remove_stale(&parent);
        let name = format!("{NAME_PREFIX}{}", std::process::id());
        let path_buf = parent.join(&name);
        std::fs::create_dir(&path_buf).map_err(|source| CgroupError::Create {
            dir: path_buf.clone(),
            source,
        })?;
        log::debug!("created cgroup {}", path_buf.display());
        // From here on the guard removes the directory on every failure.
        let dir = CreatedDir {
            path: path_buf,
            keep: false,
        };
        let (usage_name, peak_name) = files(version);
        if !dir.path.join(peak_name).exists() {
            return Err(CgroupError::NotDelegated {
                dir: dir.path.clone(),
                file: peak_name,
            });
        }
        let open = |file: &'static str, write: bool| {
            std::fs::OpenOptions::new()
                .read(!write)
                .write(write)
                .open(dir.path.join(file))
                .map_err(|source| CgroupError::Open {
                    dir: dir.path.clone(),
                    file,
                    source,
                })
        };
        let procs = open("cgroup.procs", true)?;
        let members = open("cgroup.procs", false)?;
        let usage = open(usage_name, false)?;
        let mut p = String::from_utf8_lossy(&path).into_owned();
        if !p.ends_with('/') {
            p.push('/');
        }
        p.push_str(&name);
        Ok(OwnCgroup {
            version,
            procs,
            members,
            usage,
            path_in_hierarchy: p,
            dir,
        })
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
        &self.dir.path
    }

    /// Whether a process is in the cgroup.
    pub fn contains(&self, pid: u32) -> bool {
        std::fs::read(self.dir.path.join("cgroup.procs")).is_ok_and(|b| {
            b.split(|c| *c == b'\n')
                .any(|l| parse_u64(trim(l)) == Some(u64::from(pid)))
        })
    }

    /// Appends the PIDs of every process in the cgroup (the whole tree, however many threads
    /// its processes have) to `out`; `buf` is scratch space.
    pub fn members(&self, buf: &mut Vec<u8>, out: &mut Vec<u32>) {
        let len = match memlens_procfs::read_from_start(&self.members, buf) {
            Ok(len) => len,
            Err(e) => {
                log::debug!("{}/cgroup.procs: {e}", self.dir.path.display());
                return;
            }
        };
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
        let b = std::fs::read(self.dir.path.join(files(self.version).1)).ok()?;
        parse_u64(trim(&b))
    }

    /// Leaves the cgroup in place (the caller takes it over) and returns its directory.
    pub fn keep(mut self) -> PathBuf {
        self.dir.keep = true;
        self.dir.path.clone()
    }
}

fn files(version: u8) -> (&'static str, &'static str) {
    if version == 2 {
        ("memory.current", "memory.peak")
    } else {
        ("memory.usage_in_bytes", "memory.max_usage_in_bytes")
    }
}

/// Moves any process still inside `dir` to the parent cgroup and removes `dir`.
fn remove_dir(dir: &Path) {
    if let (Some(parent), Ok(b)) = (dir.parent(), std::fs::read(dir.join("cgroup.procs"))) {
        for l in b.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
            if let Err(e) = std::fs::write(parent.join("cgroup.procs"), l) {
                log::debug!(
                    "cannot move {} out of {}: {e}",
                    String::from_utf8_lossy(l),
                    dir.display()
                );
            }
        }
    }
    // Right after the last process leaves, the kernel may still be releasing it: retry briefly.
    for attempt in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => {
                log::debug!("removed cgroup {}", dir.display());
                return;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// One cgroup per memlens process at a time (its name holds the PID): the tests take turns.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    /// A cgroup of this test process, or `None` where the machine gives none to an
    /// unprivileged user (as root, a failure fails the test).
    fn created() -> Option<OwnCgroup> {
        match OwnCgroup::create() {
            Ok(cg) => Some(cg),
            // SAFETY: geteuid has no preconditions.
            Err(e) if unsafe { libc::geteuid() } != 0 => {
                eprintln!("skipped: no memory cgroup for a non-root user ({e})");
                None
            }
            Err(e) => panic!("root could not create a memory cgroup: {e}"),
        }
    }

    #[test]
    fn a_dropped_cgroup_is_removed() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cg) = created() else { return };
        let dir = cg.dir().to_path_buf();
        assert!(dir.is_dir(), "{} was not created", dir.display());
        assert!(dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(NAME_PREFIX)));
        assert!(cg.usage().is_some() && cg.peak().is_some());
        drop(cg);
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }

    #[test]
    fn a_kept_cgroup_stays() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cg) = created() else { return };
        let dir = cg.keep();
        assert!(dir.is_dir(), "{} was removed though kept", dir.display());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_cgroup_with_a_process_inside_is_emptied_and_removed() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cg) = created() else { return };
        let dir = cg.dir().to_path_buf();
        let held = crate::hold(&"true".into(), &[], Some(cg.procs_file())).unwrap();
        let pid = held.pid();
        // The held child moved itself in before waiting for its go.
        let mut inside = false;
        for _ in 0..10_000 {
            inside = cg.contains(pid);
            if inside {
                break;
            }
            std::thread::yield_now();
        }
        assert!(inside, "the held child did not join {}", dir.display());
        drop(cg);
        assert!(!dir.exists(), "{} is left behind", dir.display());
        held.cancel();
    }

    /// A caller's start: any error on the way returns (with `?`) and drops the cgroup.
    fn start_in_own_cgroup(
        program: &str,
        dir: &mut Option<PathBuf>,
    ) -> Result<(OwnCgroup, u32), crate::SpawnError> {
        let Some(cg) = created() else {
            return Err(crate::SpawnError::NotFound {
                program: "no cgroup".into(),
            });
        };
        *dir = Some(cg.dir().to_path_buf());
        let pid = crate::hold(&program.into(), &[], Some(cg.procs_file()))?.release()?;
        Ok((cg, pid))
    }

    #[test]
    fn a_failed_start_drops_the_cgroup() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let mut dir = None;
        let started = start_in_own_cgroup("/nonexistent/memlens-test-program", &mut dir);
        let Some(dir) = dir else { return };
        assert!(
            matches!(started, Err(crate::SpawnError::NotFound { ref program }) if program.contains("nonexistent"))
        );
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }

    #[test]
    fn stale_cgroups_of_dead_runs_go_and_live_ones_stay() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cg) = created() else { return };
        let parent = cg.dir().parent().unwrap().to_path_buf();
        // PID 1 is alive: its (empty) cgroup is not memlens's to remove. A PID above the
        // kernel's maximum is never alive.
        let alive = parent.join(format!("{NAME_PREFIX}1"));
        let dead = parent.join(format!("{NAME_PREFIX}4194305"));
        let foreign = parent.join("memlens-test-not-ours");
        for d in [&alive, &dead, &foreign] {
            std::fs::create_dir(d).unwrap();
        }
        drop(cg);
        let again = created().unwrap();
        let (alive_left, dead_left, foreign_left) =
            (alive.exists(), dead.exists(), foreign.exists());
        drop(again);
        for d in [&alive, &dead, &foreign] {
            let _ = std::fs::remove_dir(d);
        }
        assert!(
            alive_left && foreign_left,
            "a cgroup memlens may not remove was removed"
        );
        assert!(!dead_left, "the cgroup of a dead run was left");
    }
}
