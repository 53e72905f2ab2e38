//! Following processes over time (a recording): attach when a reading is first wanted, retry
//! quickly while an interpreter is starting (or a shim such as pyenv's `python3` is about to
//! exec it), leave alone for a while a process that is not a supported Python or refuses to be
//! read, re-read a just-attached interpreter whose pymalloc is not set up yet, and forget
//! processes that exited. Synchronous: the caller owns the thread and the clock of requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memlens_remote::RemoteMemory;

use crate::attach::{is_transient, Attacher};
use crate::census::TypeCount;
use crate::session::{ReadMode, Session};
use crate::{Error, GcState, Interpreter, Pymalloc};

/// After an exec, or when a process is first asked for, attaching is tried again quickly (the
/// interpreter may be starting) for this long.
const EXEC_WINDOW: Duration = Duration::from_secs(3);
/// A process that could not be attached otherwise is left alone this long (it may exec later).
const RETRY_LATER: Duration = Duration::from_secs(2);
/// Exited processes are looked for at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Quick re-reads of a just-attached interpreter whose collector is readable but pymalloc not
/// yet, and their spacing.
const REREADS: u8 = 25;
const REREAD_AFTER: Duration = Duration::from_millis(10);
/// A just-attached interpreter of which nothing is readable yet (its runtime is not set up: a
/// library's constructor or a starved CPU can hold it there for any time) is re-read, with
/// backoff from [`REREAD_AFTER`] to [`MAX_BACKOFF`], for this long after the attach.
const STARTING_WINDOW: Duration = EXEC_WINDOW;
/// The first quick retry waits this long; each next one twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(2);
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// One reading of a followed interpreter.
#[derive(Debug, Clone)]
pub struct Reading {
    /// When the interpreter was read.
    pub read_at: Instant,
    /// Collector state, when it could be read.
    pub gc: Option<GcState>,
    /// pymalloc, when it could be read.
    pub pymalloc: Option<Pymalloc>,
    /// The largest types of an object census (largest bytes first), when one was asked for and
    /// succeeded.
    pub census: Vec<TypeCount>,
}

/// What the follower has to tell its caller, in order.
#[derive(Debug)]
pub enum Event {
    /// A wanted reading of `pid`.
    Read(u32, Reading),
    /// No reading of `pid` will come for what was asked (not a supported Python, refused,
    /// unreadable, or exited).
    Settled(u32),
    /// `pid` is attached: its interpreter and memory, to read pymalloc's arena table at the
    /// ledger's moment.
    Attached(u32, Arc<(Interpreter, RemoteMemory)>),
    /// What was known of `pid` no longer holds (it exec'd, exited, or stopped being readable).
    Detached(u32),
}

/// One followed process.
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
    /// It exec'd: until it is Python, "not Python" is worth another quick try too.
    after_exec: bool,
    /// A refusal was reported (once per process).
    warned: bool,
    /// Quick re-reads left when a reading finds the collector but not pymalloc.
    rereads: u8,
    /// Until then, a reading that finds nothing at all (an interpreter still starting) is
    /// tried again after `reread_gap`, which doubles up to [`MAX_BACKOFF`].
    starting_until: Option<Instant>,
    reread_gap: Duration,
}

impl Followed {
    fn starting(now: Instant, after_exec: bool) -> Followed {
        Followed {
            quick_until: Some(now + EXEC_WINDOW),
            backoff: FIRST_BACKOFF,
            after_exec,
            ..Followed::default()
        }
    }
}

/// Follows processes over time; see the module docs.
pub struct Follower {
    attacher: Attacher,
    followed: HashMap<u32, Followed>,
    census_top: usize,
    swept: Instant,
    events: Vec<Event>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("followed", &self.followed.len())
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// A follower whose censuses keep the `census_top` largest types.
    pub fn new(census_top: usize) -> Follower {
        Follower {
            attacher: Attacher::new(),
            followed: HashMap::new(),
            census_top,
            swept: Instant::now(),
            events: Vec::new(),
        }
    }

    /// What happened since the last call.
    pub fn events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// A reading of `pid` is wanted (with an object census when `census`).
    pub fn want(&mut self, pid: u32, census: bool) {
        // A process seen for the first time may be a Python still starting (or one that
        // exec'd before it was first seen): quick retries for a while.
        let now = Instant::now();
        let f = self
            .followed
            .entry(pid)
            .or_insert_with(|| Followed::starting(now, false));
        // Left alone for now (not Python, or refused): no reading to wait for.
        let resting = f.session.is_none()
            && f.quick_until.is_none_or(|t| t <= now)
            && f.not_before.is_some_and(|t| t > now);
        if resting {
            self.events.push(Event::Settled(pid));
        } else {
            f.wanted = Some(f.wanted.unwrap_or(false) || census);
        }
    }

    /// `pid` exec'd: whatever was learnt of its old program no longer holds, and it may just
    /// have become a Python. A reading wanted before stays wanted.
    pub fn exec(&mut self, pid: u32) {
        self.attacher.forget(pid);
        let census = self.followed.get(&pid).and_then(|f| f.wanted);
        let mut f = Followed::starting(Instant::now(), true);
        f.wanted = Some(census.unwrap_or(false));
        self.followed.insert(pid, f);
        self.events.push(Event::Detached(pid));
    }

    /// The earliest moment a wanted reading can be tried.
    pub fn next_due(&self) -> Option<Instant> {
        self.followed
            .values()
            .filter(|f| f.wanted.is_some())
            .map(|f| f.not_before.unwrap_or_else(Instant::now))
            .min()
    }

    /// Attaches and reads every process whose reading is due; forgets exited processes.
    pub fn work(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .followed
            .iter()
            .filter(|(_, f)| f.wanted.is_some() && f.not_before.is_none_or(|t| t <= now))
            .map(|(&p, _)| p)
            .collect();
        for pid in due {
            if self.ensure_attached(pid) && !self.read(pid) {
                self.events.push(Event::Settled(pid));
            }
        }
        self.sweep();
    }

    /// Forgets processes that exited (their sessions hold open files).
    fn sweep(&mut self) {
        if self.swept.elapsed() < SWEEP_EVERY {
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
            self.events.push(Event::Detached(pid));
            self.events.push(Event::Settled(pid));
        }
    }

    /// Attaches `pid` if needed; `false` when it cannot be read now (retry scheduled, or
    /// settled).
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
                        self.events.push(Event::Attached(pid, reader));
                    }
                    Err(e) => log::debug!("pid {pid}: no arena reads for ledgers: {e}"),
                }
                f.session = Some(s);
                f.not_before = None;
                f.quick_until = None;
                f.rereads = REREADS;
                f.starting_until = Some(Instant::now() + STARTING_WINDOW);
                f.reread_gap = REREAD_AFTER;
                true
            }
            Err(e) => {
                let now = Instant::now();
                let starting = match e {
                    Error::NotPython { .. } => f.after_exec,
                    _ => is_transient(&e),
                };
                if f.quick_until.is_some_and(|t| now < t) && starting {
                    f.not_before = Some(now + f.backoff);
                    f.backoff = (f.backoff * 2).min(MAX_BACKOFF);
                } else {
                    let refused = matches!(
                        e,
                        Error::Remote(memlens_remote::Error::PermissionDenied { .. })
                    );
                    if refused && !f.warned {
                        f.warned = true;
                        let hints = crate::access::access_hints(pid);
                        log::warn!("pid {pid}: no Python view: {e} ({hints:?})");
                    }
                    log::debug!("pid {pid}: no Python view: {e}");
                    f.not_before = Some(now + RETRY_LATER);
                    f.wanted = None;
                    f.quick_until = None;
                    self.events.push(Event::Settled(pid));
                }
                false
            }
        }
    }

    /// Reads `pid` if a reading is wanted; `true` when it gave nothing yet and a quick re-read
    /// is scheduled (the reading is still pending).
    fn read(&mut self, pid: u32) -> bool {
        let Some(f) = self.followed.get_mut(&pid) else {
            return false;
        };
        let (Some(session), Some(census)) = (f.session.as_ref(), f.wanted.take()) else {
            return false;
        };
        let read_at = Instant::now();
        let (gc, pymalloc) = match session.gc_and_pymalloc(ReadMode::Nonblocking) {
            Ok((gc, pm)) => {
                for e in [gc.as_ref().err(), pm.as_ref().err()].into_iter().flatten() {
                    log::debug!("pid {pid}: Python view: {e}");
                }
                (gc.ok(), pm.ok())
            }
            Err(_) => (None, None),
        };
        let now = Instant::now();
        if gc.is_none() && pymalloc.is_none() && f.starting_until.is_some_and(|t| now < t) {
            // Just attached and nothing readable: the runtime is not set up yet, however long
            // that takes; read again shortly, so that a short program still gets its view.
            f.wanted = Some(census);
            f.not_before = Some(now + f.reread_gap);
            f.reread_gap = (f.reread_gap * 2).min(MAX_BACKOFF);
            return true;
        }
        if pymalloc.is_none() && f.rereads > 0 {
            // Just attached, pymalloc not readable yet: the interpreter may still be setting
            // up its state; read again shortly rather than give a reading without it.
            f.rereads -= 1;
            f.wanted = Some(census);
            f.not_before = Some(now + REREAD_AFTER);
            return true;
        }
        if gc.is_none() && pymalloc.is_none() {
            // Exited, exec'd, or not readable any more: attach again at the next request.
            log::debug!("pid {pid}: Python view unreadable");
            f.session = None;
            self.events.push(Event::Detached(pid));
            return false;
        }
        f.rereads = 0;
        f.starting_until = None;
        let census = if census {
            census_of(session, self.census_top)
        } else {
            Vec::new()
        };
        log::trace!("pid {pid}: Python {} read", session.interpreter.version);
        self.events.push(Event::Read(
            pid,
            Reading {
                read_at,
                gc,
                pymalloc,
                census,
            },
        ));
        false
    }
}

/// An object census (the target is stopped while its memory is copied), the `top` largest
/// types first; none when it fails (logged).
fn census_of(session: &Session, top: usize) -> Vec<TypeCount> {
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
            types.truncate(top);
            types
        }
        Err(e) => {
            log::debug!("pid {pid}: census: {e}");
            Vec::new()
        }
    }
}
