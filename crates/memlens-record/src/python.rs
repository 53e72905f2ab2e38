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

use memlens_cpython::attach::is_transient;
use memlens_cpython::{Attacher, Error, Interpreter, ReadMode, Session};
use memlens_ledger::Hints;
use memlens_remote::RemoteMemory;

use crate::cputime::thread_cpu_seconds;

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

/// After an exec, or when a process is first asked for, attaching is tried again quickly (the
/// interpreter may be starting) for this long.
const EXEC_WINDOW: Duration = Duration::from_secs(3);
/// A process that could not be attached otherwise is left alone this long (it may exec later).
const RETRY_LATER: Duration = Duration::from_secs(2);
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
            .spawn(move || Worker::new(census_top, theirs).run(&rx))
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

/// One followed process, on the worker.
#[derive(Default)]
struct Followed {
    session: Option<Session>,
    /// A reading is wanted (with a census).
    wanted: Option<bool>,
    /// No attach before this.
    not_before: Option<Instant>,
    /// Quick retries (the interpreter is starting) until this.
    quick_until: Option<Instant>,
    /// The next quick retry waits this long.
    backoff: Duration,
    /// It exec'd: until it is Python, "not Python" is worth another quick try too (a shim
    /// such as pyenv's `python3` execs the interpreter next).
    after_exec: bool,
    /// A refusal was reported (once per process).
    warned: bool,
    /// Quick re-reads left when a reading finds nothing (an interpreter still starting).
    rereads: u8,
}

/// Quick re-reads of a just-attached interpreter that gave nothing yet, and their spacing.
const REREADS: u8 = 25;
const REREAD_AFTER: Duration = Duration::from_millis(10);

struct Worker {
    attacher: Attacher,
    followed: HashMap<u32, Followed>,
    shared: Arc<Shared>,
    census_top: usize,
    swept: Instant,
}

impl Worker {
    fn new(census_top: usize, shared: Arc<Shared>) -> Worker {
        Worker {
            attacher: Attacher::new(),
            followed: HashMap::new(),
            shared,
            census_top,
            swept: Instant::now(),
        }
    }

    /// Forgets processes that exited (their sessions hold open files).
    fn sweep(&mut self) {
        if self.swept.elapsed() < IDLE {
            return;
        }
        self.swept = Instant::now();
        let gone: Vec<u32> = self
            .followed
            .keys()
            .copied()
            .filter(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
            .collect();
        for pid in gone {
            self.followed.remove(&pid);
            self.attacher.forget(pid);
            let mut out = self.shared.lock();
            out.arenas.remove(&pid);
            out.readers.remove(&pid);
            drop(out);
            self.shared.settled(pid);
        }
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        loop {
            let wait = self.next_due().map_or(IDLE, |at| {
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
            self.work();
            self.sweep();
            self.shared.lock().cpu_seconds += thread_cpu_seconds() - cpu0;
        }
    }

    fn take(&mut self, m: Msg) {
        match m {
            Msg::Read { pid, census } => {
                // A process seen for the first time may be a Python still starting (or one
                // that exec'd before the sampler first saw it): quick retries for a while.
                let now = Instant::now();
                let f = self.followed.entry(pid).or_insert_with(|| Followed {
                    quick_until: Some(now + EXEC_WINDOW),
                    backoff: Duration::from_millis(2),
                    ..Followed::default()
                });
                // Left alone for now (not Python, or refused): no reading to wait for.
                let resting = f.session.is_none()
                    && f.quick_until.is_none_or(|t| t <= now)
                    && f.not_before.is_some_and(|t| t > now);
                if resting {
                    self.shared.settled(pid);
                } else {
                    f.wanted = Some(f.wanted.unwrap_or(false) || census);
                }
            }
            Msg::Exec(pid) => {
                self.attacher.forget(pid);
                let census = self
                    .followed
                    .get(&pid)
                    .and_then(|f| f.wanted)
                    .unwrap_or(false);
                let now = Instant::now();
                self.followed.insert(
                    pid,
                    Followed {
                        wanted: Some(census),
                        quick_until: Some(now + EXEC_WINDOW),
                        backoff: Duration::from_millis(2),
                        after_exec: true,
                        ..Followed::default()
                    },
                );
            }
        }
    }

    /// The earliest moment a wanted reading can be tried.
    fn next_due(&self) -> Option<Instant> {
        self.followed
            .values()
            .filter(|f| f.wanted.is_some())
            .map(|f| f.not_before.unwrap_or_else(Instant::now))
            .min()
    }

    fn work(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .followed
            .iter()
            .filter(|(_, f)| f.wanted.is_some() && f.not_before.is_none_or(|t| t <= now))
            .map(|(&p, _)| p)
            .collect();
        for pid in due {
            if self.ensure_attached(pid) {
                self.read(pid);
            }
        }
    }

    /// Attaches `pid` if needed; `false` when it cannot be read now (retry scheduled).
    fn ensure_attached(&mut self, pid: u32) -> bool {
        let Some(f) = self.followed.get_mut(&pid) else {
            return false;
        };
        if f.session.is_some() {
            return true;
        }
        match self.attacher.attach(pid) {
            Ok(s) => {
                log::debug!("pid {pid}: Python {} attached", s.interpreter.version);
                match RemoteMemory::open(pid) {
                    Ok(mem) => {
                        let reader = Arc::new((s.interpreter.clone(), mem));
                        self.shared.lock().readers.insert(pid, reader);
                    }
                    Err(e) => log::debug!("pid {pid}: no arena reads for ledgers: {e}"),
                }
                f.session = Some(s);
                f.not_before = None;
                f.quick_until = None;
                f.rereads = REREADS;
                true
            }
            Err(e) => {
                let now = Instant::now();
                let starting = match e {
                    Error::NotPython { .. } => f.after_exec,
                    _ => is_transient(&e),
                };
                let quick = f.quick_until.is_some_and(|t| now < t) && starting;
                if quick {
                    f.not_before = Some(now + f.backoff);
                    f.backoff = (f.backoff * 2).min(Duration::from_millis(50));
                } else {
                    let refused = matches!(
                        e,
                        Error::Remote(memlens_remote::Error::PermissionDenied { .. })
                    );
                    if refused && !f.warned {
                        f.warned = true;
                        let hints = memlens_cpython::access::access_hints(pid);
                        log::warn!("pid {pid}: no Python view: {e} ({hints:?})");
                    }
                    log::debug!("pid {pid}: no Python view: {e}");
                    f.not_before = Some(now + RETRY_LATER);
                    f.wanted = None;
                    f.quick_until = None;
                    self.shared.settled(pid);
                }
                false
            }
        }
    }

    fn read(&mut self, pid: u32) {
        if !self.read_one(pid) {
            self.shared.settled(pid);
        }
    }

    /// Reads `pid` if a reading is wanted; `true` when it gave nothing yet and a quick re-read
    /// is scheduled (the reading is still pending).
    fn read_one(&mut self, pid: u32) -> bool {
        let Some(f) = self.followed.get_mut(&pid) else {
            return false;
        };
        let (Some(session), Some(census)) = (f.session.as_ref(), f.wanted.take()) else {
            return false;
        };
        let read_at = Instant::now();
        let it = &session.interpreter;
        let (gc, pymalloc) = match session.gc_and_pymalloc(ReadMode::Nonblocking) {
            Ok((gc, pm)) => {
                for e in [gc.as_ref().err(), pm.as_ref().err()].into_iter().flatten() {
                    log::debug!("pid {pid}: Python view: {e}");
                }
                (gc.ok(), pm.ok())
            }
            Err(_) => (None, None),
        };
        if pymalloc.is_none() && f.rereads > 0 {
            // Just attached, pymalloc not readable yet: the interpreter may still be setting
            // up its state; read again shortly rather than record a row without it.
            f.rereads -= 1;
            f.wanted = Some(census);
            f.not_before = Some(Instant::now() + REREAD_AFTER);
            return true;
        }
        if gc.is_none() && pymalloc.is_none() {
            // Exited, exec'd, or not readable any more: attach again at the next request.
            log::debug!("pid {pid}: Python view unreadable");
            f.session = None;
            self.shared.lock().readers.remove(&pid);
            return false;
        }
        f.rereads = 0;
        let top = self.census_top;
        let census = if census {
            census_of(session, top)
        } else {
            Vec::new()
        };
        let gens = gc.as_ref().map(|g| g.generations.as_slice()).unwrap_or(&[]);
        let sample = PythonSample {
            gc_counts: gens
                .iter()
                .map(|g| u64::try_from(g.count).unwrap_or(0))
                .collect(),
            gc_collections: gens
                .iter()
                .map(|g| u64::try_from(g.collections).unwrap_or(0))
                .collect(),
            pymalloc_arenas: pymalloc.as_ref().map(|p| p.arenas),
            pymalloc_used: pymalloc.as_ref().map(|p| p.used_bytes),
            pymalloc_free: pymalloc.as_ref().map(|p| p.free_bytes),
            census,
            read_at: Some(read_at),
        };
        log::trace!("pid {pid}: Python {} read", it.version);
        let mut out = self.shared.lock();
        if let Some(p) = &pymalloc {
            out.arenas.insert(pid, p.arena_ranges.clone());
        }
        out.samples.push((pid, sample));
        false
    }
}

/// An object census (the target is stopped while its memory is copied), largest types first.
fn census_of(session: &Session, top: usize) -> Vec<CensusEntry> {
    let pid = session.pid();
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
