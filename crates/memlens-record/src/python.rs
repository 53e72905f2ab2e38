//! The hook through which the Python view joins a recording ([`PythonView`]; the sampler asks
//! for readings at the ledger rate and collects them every tick; it is optional) and its
//! implementation on live interpreters read from outside by `memlens-cpython` ([`LiveView`]).
//!
//! [`LiveView`] never makes the sampler's tick wait for Python: attaching (which reads a whole
//! Python binary the first time, and can take hundreds of milliseconds for a stripped static
//! build), the GC and pymalloc reads and censuses run on a worker thread it owns, and finished
//! readings are handed back without blocking, each stamped with the moment it was read.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use memlens_cpython::views::{Event, Follower, Reading};
use memlens_cpython::Interpreter;
use memlens_ledger::Hints;
use memlens_remote::RemoteMemory;

use memlens_launch::cputime::thread_cpu_seconds;

pub use memlens_recording::python::{CensusEntry, PythonSample};

/// Readings finished since the last [`PythonView::take_ready`].
#[derive(Debug, Default)]
pub struct Ready {
    /// `(pid, sample)`, in the order they were read.
    pub samples: Vec<(u32, PythonSample)>,
    /// CPU seconds the view spent meanwhile (off the sampler's thread): charge it to the budget.
    pub cpu_seconds: f64,
}

/// The Python view, as the sampler sees it. Implementations read the interpreter from outside,
/// must not stop the target for long, and must not block the caller.
pub trait PythonView {
    /// Asks for a reading of `pid` (with an object census when `census`); it comes back through
    /// [`PythonView::take_ready`] when done. Processes that are not a supported Python give none.
    fn request(&mut self, pid: u32, census: bool);

    /// Readings done since the last call, each stamped with the moment it was read.
    fn take_ready(&mut self) -> Ready;

    /// Address ranges the ledger sorts ahead of its name rules (pymalloc arenas), as of the
    /// latest reading.
    fn hints(&mut self, _pid: u32) -> Hints {
        Hints::default()
    }

    /// The process exec'd: whatever was learnt of its old program no longer holds, and it may
    /// just have become a Python.
    fn exec(&mut self, _pid: u32) {}

    /// Waits up to `within` for the readings asked for (at the end of a recording).
    fn settle(&mut self, _within: Duration) {}
}

/// The worker wakes at least this often when idle.
const IDLE: Duration = Duration::from_secs(1);

enum Msg {
    Read { pid: u32, census: bool },
    Exec(u32),
}

#[derive(Default)]
struct Out {
    samples: Vec<(u32, PythonSample)>,
    arenas: HashMap<u32, Vec<(u64, u64)>>,
    /// Each attached interpreter and its memory, for [`PythonView::hints`]: a ledger reads the
    /// arena table itself, at the ledger's moment (arenas made since the last reading are
    /// Python heap too).
    readers: HashMap<u32, Arc<(Interpreter, RemoteMemory)>>,
    cpu_seconds: f64,
    /// Processes asked for and not yet read or given up.
    pending: HashSet<u32>,
}

/// What the worker hands back, and a signal when a process is done with.
#[derive(Default)]
struct Shared {
    out: Mutex<Out>,
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `pid` was read, or will not be for now.
    fn settled(&self, pid: u32) {
        self.lock().pending.remove(&pid);
        self.done.notify_all();
    }
}

/// The Python view of live processes through `memlens-cpython`, attached and read on a worker
/// thread. The periodic read (GC state, pymalloc) never stops the target (figures may be
/// slightly inexact); a census, when asked for, stops it briefly while its memory is copied.
/// Processes that are not a supported CPython are skipped quietly (and tried again after an
/// exec, or a while later).
pub struct LiveView {
    tx: Option<Sender<Msg>>,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LiveView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveView").finish_non_exhaustive()
    }
}

impl Default for LiveView {
    fn default() -> Self {
        LiveView::new(20)
    }
}

impl LiveView {
    /// A view whose censuses keep the `census_top` largest types; starts its worker thread.
    pub fn new(census_top: usize) -> LiveView {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("memlens-python".into())
            .spawn(move || {
                Worker {
                    follower: Follower::new(census_top),
                    shared: theirs,
                }
                .run(&rx)
            })
            .map_err(|e| log::warn!("no Python view: cannot start its thread: {e}"))
            .ok();
        LiveView {
            tx: worker.is_some().then_some(tx),
            shared,
            worker,
        }
    }

    fn out(&self) -> MutexGuard<'_, Out> {
        self.shared.lock()
    }

    /// pymalloc's arenas of `pid` now: one read of its arena table on the caller's thread (the
    /// ledger's moment; the pool headers are not read), else those of its last reading.
    fn arenas_now(&self, pid: u32) -> Vec<(u64, u64)> {
        let reader = self.out().readers.get(&pid).cloned();
        if let Some(r) = reader {
            match memlens_cpython::pymalloc::arena_ranges(&r.0, &r.1) {
                Ok(a) => return a,
                Err(e) => log::debug!("pid {pid}: pymalloc arenas: {e}"),
            }
        }
        self.out().arenas.get(&pid).cloned().unwrap_or_default()
    }

    fn send(&self, pid: u32, m: Msg) {
        if let Some(tx) = &self.tx {
            self.out().pending.insert(pid);
            if tx.send(m).is_err() {
                self.out().pending.remove(&pid);
            }
        }
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        // Closing the channel ends the worker after what it is doing now.
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl PythonView for LiveView {
    fn request(&mut self, pid: u32, census: bool) {
        self.send(pid, Msg::Read { pid, census });
    }

    fn settle(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut out = self.out();
        while !out.pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::debug!(
                    "Python view: {} readings not done in time",
                    out.pending.len()
                );
                return;
            }
            out = self
                .shared
                .done
                .wait_timeout(out, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn take_ready(&mut self) -> Ready {
        let mut out = self.out();
        Ready {
            samples: std::mem::take(&mut out.samples),
            cpu_seconds: std::mem::take(&mut out.cpu_seconds),
        }
    }

    fn hints(&mut self, pid: u32) -> Hints {
        Hints {
            python_arenas: self.arenas_now(pid),
        }
    }

    fn exec(&mut self, pid: u32) {
        let mut out = self.out();
        out.arenas.remove(&pid);
        out.readers.remove(&pid);
        drop(out);
        self.send(pid, Msg::Exec(pid));
    }
}

/// The worker thread: a [`Follower`] fed by the sampler's requests, its events applied to
/// what [`LiveView`] hands back.
struct Worker {
    follower: Follower,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(mut self, rx: &Receiver<Msg>) {
        loop {
            let wait = self.follower.next_due().map_or(IDLE, |at| {
                at.saturating_duration_since(Instant::now()).min(IDLE)
            });
            match rx.recv_timeout(wait) {
                Ok(m) => self.take(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(m) = rx.try_recv() {
                self.take(m);
            }
            let cpu0 = thread_cpu_seconds();
            self.follower.work();
            self.apply();
            self.shared.lock().cpu_seconds += thread_cpu_seconds() - cpu0;
        }
    }

    fn take(&mut self, m: Msg) {
        match m {
            Msg::Read { pid, census } => self.follower.want(pid, census),
            Msg::Exec(pid) => self.follower.exec(pid),
        }
        self.apply();
    }

    /// Hands the follower's news to [`LiveView`].
    fn apply(&mut self) {
        for e in self.follower.events() {
            match e {
                Event::Read(pid, r) => {
                    let mut out = self.shared.lock();
                    if let Some(p) = &r.pymalloc {
                        out.arenas.insert(pid, p.arena_ranges.clone());
                    }
                    out.samples.push((pid, sample_of(r)));
                }
                Event::Settled(pid) => self.shared.settled(pid),
                Event::Attached(pid, reader) => {
                    self.shared.lock().readers.insert(pid, reader);
                }
                Event::Detached(pid) => {
                    let mut out = self.shared.lock();
                    out.arenas.remove(&pid);
                    out.readers.remove(&pid);
                }
            }
        }
    }
}

/// A reading as the recording stores it.
fn sample_of(r: Reading) -> PythonSample {
    let gens =
        r.gc.as_ref()
            .map(|g| g.generations.as_slice())
            .unwrap_or(&[]);
    PythonSample {
        gc_counts: gens
            .iter()
            .map(|g| u64::try_from(g.count).unwrap_or(0))
            .collect(),
        gc_collections: gens
            .iter()
            .map(|g| u64::try_from(g.collections).unwrap_or(0))
            .collect(),
        gc_frozen: r.gc.as_ref().map(|g| g.frozen),
        pymalloc_arenas: r.pymalloc.as_ref().map(|p| p.arenas),
        pymalloc_used: r.pymalloc.as_ref().map(|p| p.used_bytes),
        pymalloc_free: r.pymalloc.as_ref().map(|p| p.free_bytes),
        census: r
            .census
            .into_iter()
            .map(|t| CensusEntry {
                type_name: t.type_name,
                count: t.count,
                bytes: t.bytes,
            })
            .collect(),
        read_at: Some(r.read_at),
    }
}
