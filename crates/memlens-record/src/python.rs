//! The hook through which the Python view joins a recording ([`PythonView`]; the sampler calls
//! it at the ledger rate, it is optional) and its implementation on live interpreters read
//! from outside by `memlens-cpython` ([`LiveView`]).

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use memlens_cpython::process::Interpreter;
use memlens_cpython::{ReadMode, Session};
use memlens_ledger::Hints;
use memlens_remote::RemoteMemory;

/// What the Python view saw in one process at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PythonSample {
    /// Objects tracked per GC generation (young first).
    pub gc_counts: Vec<u64>,
    /// Collections run per generation since start.
    pub gc_collections: Vec<u64>,
    /// pymalloc arenas allocated.
    pub pymalloc_arenas: Option<u64>,
    /// Bytes in used pymalloc blocks.
    pub pymalloc_used: Option<u64>,
    /// Bytes in free pymalloc blocks of allocated pools and arenas (fragmentation).
    pub pymalloc_free: Option<u64>,
    /// Top types of an object census, when one was taken this time (largest bytes first).
    pub census: Vec<CensusEntry>,
}

/// One type of an object census.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CensusEntry {
    /// Type name (untrusted: comes from the target).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Objects.
    pub count: u64,
    /// Shallow bytes (as `sys.getsizeof`).
    pub bytes: u64,
}

/// The Python view, as the sampler sees it. Implementations read the interpreter from outside;
/// they must not stop the target for long, and may return `None` when the process is not a
/// supported Python.
pub trait PythonView {
    /// Reads the view of one process. `census` asks for an object census this time.
    fn sample(&mut self, pid: u32, census: bool) -> Option<PythonSample>;

    /// Address ranges the ledger sorts ahead of its name rules (pymalloc arenas).
    fn hints(&mut self, _pid: u32) -> Hints {
        Hints::default()
    }

    /// The process exec'd: whatever was learnt of its old program no longer holds.
    fn exec(&mut self, _pid: u32) {}
}

/// How long a process that could not be attached (not Python, or an interpreter still
/// starting) is left alone before memlens tries again.
const RETRY_ATTACH_SECONDS: f64 = 2.0;

/// One attached interpreter: what `memlens-cpython` found, and its memory.
struct Attached {
    interpreter: Interpreter,
    mem: RemoteMemory,
    /// `/proc/PID/auxv`: identical in a process and the children it forked without exec.
    auxv: Vec<u8>,
}

/// What the periodic read gives.
struct Read {
    gc: Option<memlens_cpython::GcState>,
    pymalloc: Option<memlens_cpython::Pymalloc>,
}

/// The Python view of live processes through `memlens-cpython`, attached on first use. The
/// periodic read (GC state, pymalloc) never stops the target (figures may be slightly
/// inexact); a census, when asked for, stops it briefly while its memory is copied. Processes
/// that are not a supported CPython are skipped quietly (and tried again later: an exec may
/// make them one).
pub struct LiveView {
    attached: HashMap<u32, Result<Attached, Instant>>,
    /// Types kept from a census (largest bytes first).
    pub census_top: usize,
}

impl std::fmt::Debug for LiveView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveView")
            .field("attached", &self.attached.len())
            .finish()
    }
}

impl Default for LiveView {
    fn default() -> Self {
        LiveView {
            attached: HashMap::new(),
            census_top: 20,
        }
    }
}

impl LiveView {
    /// Attaches to `pid`. A worker forked from an attached process (same `auxv`: no exec since
    /// the fork) shares its interpreter's addresses, so its parent's findings are reused;
    /// finding them again means reading the whole Python binary, tens of milliseconds.
    fn attach(&self, pid: u32) -> memlens_cpython::Result<Attached> {
        let mem = RemoteMemory::open(pid).map_err(memlens_cpython::Error::Remote)?;
        let auxv = std::fs::read(format!("/proc/{pid}/auxv")).unwrap_or_default();
        let twin = (!auxv.is_empty())
            .then(|| {
                self.attached
                    .values()
                    .filter_map(|a| a.as_ref().ok())
                    .find(|a| a.auxv == auxv)
            })
            .flatten();
        let interpreter = match twin {
            Some(a) => {
                let mut it = a.interpreter.clone();
                it.pid = pid;
                it
            }
            None => Interpreter::attach(pid, &mem)?,
        };
        Ok(Attached {
            interpreter,
            mem,
            auxv,
        })
    }

    fn attached(&mut self, pid: u32) -> Option<&Attached> {
        let retry = match self.attached.get(&pid) {
            Some(Ok(_)) => false,
            Some(Err(when)) => when.elapsed().as_secs_f64() >= RETRY_ATTACH_SECONDS,
            None => true,
        };
        if retry {
            let a = self.attach(pid).map_err(|e| {
                log::debug!("pid {pid}: no Python view: {e}");
                Instant::now()
            });
            self.attached.insert(pid, a);
        }
        self.attached.get(&pid)?.as_ref().ok()
    }

    fn read(&mut self, pid: u32) -> Option<Read> {
        let a = self.attached(pid)?;
        let gc = memlens_cpython::gc::read(&a.interpreter, &a.mem);
        let pymalloc = memlens_cpython::pymalloc::read(&a.interpreter, &a.mem);
        if gc.is_err() && pymalloc.is_err() {
            // Exited, exec'd, or not readable any more: attach again later.
            log::debug!("pid {pid}: Python view unreadable");
            self.attached.insert(pid, Err(Instant::now()));
            return None;
        }
        Some(Read {
            gc: gc.ok(),
            pymalloc: pymalloc.ok(),
        })
    }

    fn census(&mut self, pid: u32) -> Vec<CensusEntry> {
        let top = self.census_top;
        let session = match Session::attach(pid) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("pid {pid}: census: {e}");
                return Vec::new();
            }
        };
        match session.census(ReadMode::Paused) {
            Ok((c, stats)) => {
                if let Some(p) = stats.paused {
                    log::info!(
                        "pid {pid}: paused {:.1} ms for a census",
                        p.as_secs_f64() * 1e3
                    );
                }
                let mut types = c.types;
                types.sort_by_key(|t| std::cmp::Reverse(t.bytes));
                types
                    .into_iter()
                    .take(top)
                    .map(|t| CensusEntry {
                        type_name: t.type_name,
                        count: t.count,
                        bytes: t.bytes,
                    })
                    .collect()
            }
            Err(e) => {
                log::debug!("pid {pid}: census: {e}");
                Vec::new()
            }
        }
    }
}

impl PythonView for LiveView {
    fn exec(&mut self, pid: u32) {
        // Attach again at the next read instead of waiting out the retry delay: the shim that
        // was not Python (pyenv's bash, `env`) may just have become the interpreter.
        self.attached.remove(&pid);
    }

    fn sample(&mut self, pid: u32, census: bool) -> Option<PythonSample> {
        let r = self.read(pid)?;
        let gens =
            r.gc.as_ref()
                .map(|g| g.generations.as_slice())
                .unwrap_or(&[]);
        Some(PythonSample {
            gc_counts: gens
                .iter()
                .map(|g| u64::try_from(g.count).unwrap_or(0))
                .collect(),
            gc_collections: gens
                .iter()
                .map(|g| u64::try_from(g.collections).unwrap_or(0))
                .collect(),
            pymalloc_arenas: r.pymalloc.as_ref().map(|p| p.arenas),
            pymalloc_used: r.pymalloc.as_ref().map(|p| p.used_bytes),
            pymalloc_free: r.pymalloc.as_ref().map(|p| p.free_bytes),
            census: if census { self.census(pid) } else { Vec::new() },
        })
    }

    fn hints(&mut self, pid: u32) -> Hints {
        // The arena table alone (one read): the ledger needs the ranges, not the pool headers,
        // which cost tens of milliseconds for a heap of a few hundred MiB. A ledger taken at a
        // new peak must stay cheap.
        let Some(a) = self.attached(pid) else {
            return Hints::default();
        };
        match memlens_cpython::pymalloc::arena_ranges(&a.interpreter, &a.mem) {
            Ok(python_arenas) => Hints { python_arenas },
            Err(e) => {
                log::debug!("pid {pid}: pymalloc arenas: {e}");
                Hints::default()
            }
        }
    }
}
