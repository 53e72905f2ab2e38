//! The one way memlens attaches to the Python of a process, for every command and the
//! recorder: discovery once per binary, reuse for forked workers, bounded retries.
//!
//! Discovering an interpreter means parsing its binary (tens of milliseconds: the whole file is
//! read) and, for a stripped static build, scanning `.bss` for pymalloc's arena table. An
//! [`Attacher`] keeps what it learnt of each binary, keyed by the binary's build id (else its
//! device, inode, size and mtime), so 32 processes of one Python cost one discovery; a process
//! forked without exec from one already attached (same `/proc/PID/auxv`: same binary at the
//! same addresses) reuses that process's findings and is only checked with a few reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use memlens_remote::RemoteMemory;

use crate::binary::{self, BinaryKey};
use crate::error::{Error, Result};
use crate::process::{BinaryFindings, Interpreter};
use crate::reader::SharedPages;
use crate::session::Session;

/// Interpreters kept for forked-twin reuse (the most recent ones).
const MAX_TWINS: usize = 256;

/// What an attacher did so far (for logs, tests and benches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttachCounts {
    /// Binaries parsed (discoveries).
    pub discoveries: u64,
    /// Attaches that reused a known binary's findings.
    pub binary_reuses: u64,
    /// Attaches of forked workers that reused their parent's interpreter.
    pub twin_reuses: u64,
}

#[derive(Debug)]
struct Twin {
    auxv: Vec<u8>,
    interpreter: Interpreter,
}

#[derive(Debug, Default)]
struct State {
    binaries: HashMap<BinaryKey, Arc<BinaryFindings>>,
    twins: Vec<Twin>,
    counts: AttachCounts,
}

/// Attaches to interpreters, remembering what it learnt of each Python binary. Share one
/// between threads (`&Attacher` is enough) to read a tree of processes.
#[derive(Debug, Default)]
pub struct Attacher {
    state: Mutex<State>,
    pages: Option<Arc<SharedPages>>,
    discovery: Mutex<()>,
}

impl Attacher {
    /// An attacher with nothing learnt yet.
    pub fn new() -> Attacher {
        Attacher::default()
    }

    /// An attacher whose sessions share the pages they read between processes that map the
    /// same physical page (forked workers), for reading a whole tree (see [`crate::reader`]).
    pub fn for_tree() -> Attacher {
        Self::with_shared_pages(Arc::new(SharedPages::new()))
    }

    /// An attacher whose sessions share pages through `pages` (e.g. a deferred set, confirmed
    /// by the caller once every process was read).
    pub fn with_shared_pages(pages: Arc<SharedPages>) -> Attacher {
        Attacher {
            pages: Some(pages),
            ..Attacher::default()
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What was done so far.
    pub fn counts(&self) -> AttachCounts {
        self.state().counts
    }

    /// The pages shared between the processes of a tree, when enabled.
    pub fn shared_pages(&self) -> Option<&Arc<SharedPages>> {
        self.pages.as_ref()
    }

    /// Finds and validates the interpreter of `pid` (reads only, no pause).
    pub fn attach(&self, pid: u32) -> Result<Session> {
        let mem = RemoteMemory::open(pid)?;
        let interpreter = self.interpreter(pid, &mem)?;
        Ok(Session::new(interpreter, mem, self.pages.clone()))
    }

    /// Attaches, trying again while the interpreter is not ready (a Python still starting:
    /// its libpython not mapped or its runtime not initialised) until `deadline`, with waits
    /// growing from 2 ms to 50 ms. Other errors, "not Python" included, end it at once.
    pub fn attach_until(&self, pid: u32, deadline: Instant) -> Result<Session> {
        let mut wait = Duration::from_millis(2);
        loop {
            match self.attach(pid) {
                Err(e @ Error::Invalid { .. }) if Instant::now() + wait < deadline => {
                    log::debug!("pid {pid}: not ready ({e}); again in {wait:?}");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    fn interpreter(&self, pid: u32, mem: &RemoteMemory) -> Result<Interpreter> {
        let auxv = std::fs::read(format!("/proc/{pid}/auxv")).unwrap_or_default();
        let twin = (!auxv.is_empty())
            .then(|| {
                self.state()
                    .twins
                    .iter()
                    .find(|t| t.auxv == auxv && t.interpreter.pid != pid)
                    .map(|t| t.interpreter.clone())
            })
            .flatten();
        if let Some(parent) = twin {
            match parent.in_forked_child(pid, mem) {
                Ok(it) => {
                    self.state().counts.twin_reuses += 1;
                    self.remember(auxv, &it);
                    return Ok(it);
                }
                Err(e) => log::debug!("pid {pid}: not the twin of {}: {e}", parent.pid),
            }
        }
        let maps = read_maps(pid)?;
        let exe = exe_of(pid);
        let placement = binary::locate(pid, &exe, &maps)?;
        if let Some(v) = &placement.file.name_version {
            binary::check_name_version(v)?;
        }
        let (file, key) = binary::open_binary(pid, &placement, &maps)?;
        let findings = self.findings(pid, &file, key, &placement)?;
        let it = Interpreter::attach(pid, mem, &findings, placement.base)?;
        self.remember(auxv, &it);
        Ok(it)
    }

    /// The findings of a binary: known, or discovered now (one discovery at a time, so that
    /// threads attaching to processes of one binary wait for the first instead of parsing it
    /// again).
    fn findings(
        &self,
        pid: u32,
        file: &memlens_remote::elf::MappedFile,
        key: BinaryKey,
        placement: &binary::Placement,
    ) -> Result<Arc<BinaryFindings>> {
        if let Some(f) = self.known(&key) {
            return Ok(f);
        }
        let _one_at_a_time = self.discovery.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = self.known(&key) {
            return Ok(f);
        }
        let started = Instant::now();
        let f = Arc::new(BinaryFindings::discover(
            pid,
            file,
            key.clone(),
            &placement.file,
        )?);
        log::debug!(
            "pid {pid}: discovered {} in {:?}",
            file.path.display(),
            started.elapsed()
        );
        let mut st = self.state();
        st.counts.discoveries += 1;
        st.binaries.insert(key, Arc::clone(&f));
        Ok(f)
    }

    fn known(&self, key: &BinaryKey) -> Option<Arc<BinaryFindings>> {
        let mut st = self.state();
        let f = st.binaries.get(key).cloned();
        if f.is_some() {
            st.counts.binary_reuses += 1;
        }
        f
    }

    fn remember(&self, auxv: Vec<u8>, it: &Interpreter) {
        if auxv.is_empty() {
            return;
        }
        let mut st = self.state();
        st.twins.retain(|t| t.interpreter.pid != it.pid);
        if st.twins.len() >= MAX_TWINS {
            st.twins.remove(0);
        }
        st.twins.push(Twin {
            auxv,
            interpreter: it.clone(),
        });
    }

    /// Forgets what was learnt of process `pid` (it exec'd or exited); its binary stays known.
    pub fn forget(&self, pid: u32) {
        self.state().twins.retain(|t| t.interpreter.pid != pid);
    }
}

/// Whether an attach failed because the interpreter is not ready yet (worth another try soon):
/// an interpreter state that does not validate (starting, or a stub whose libpython is not
/// loaded yet), or a process that is not Python yet (the moment between fork and exec).
pub fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Invalid { .. } | Error::NotPython { .. })
}

fn exe_of(pid: u32) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default()
}

/// `/proc/PID/maps`, with procfs's errors told as the Python view tells them.
pub(crate) fn read_maps(pid: u32) -> Result<Vec<memlens_procfs::maps::MapEntry>> {
    use memlens_procfs::Error as P;
    let proc = memlens_procfs::Process::new(pid)
        .map_err(|_| memlens_remote::Error::ProcessGone { pid })?;
    proc.maps().map_err(|e| {
        Error::Remote(match e {
            P::ProcessGone { .. } => memlens_remote::Error::ProcessGone { pid },
            P::PermissionDenied { .. } => memlens_remote::Error::PermissionDenied {
                pid,
                what: "read the mappings of",
            },
            other => memlens_remote::Error::Io {
                what: format!("read the mappings of process {pid}"),
                source: std::io::Error::other(other.to_string()),
            },
        })
    })
}
