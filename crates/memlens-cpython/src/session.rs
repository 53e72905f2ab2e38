//! A live process: attach, pause briefly, read, resume.

use std::time::{Duration, Instant};

use memlens_model::clock::{reported, Stopwatch};

use serde::Serialize;

use std::sync::Arc;

use memlens_remote::vm::RemoteMemory;
use memlens_remote::Pause;

use crate::census::Census;
use crate::error::Result;
use crate::gc::GcState;
use crate::modules::Modules;
use crate::process::Interpreter;
use crate::pymalloc::Pymalloc;
use crate::reader::{PageReader, ReadCounts, SharedPages};
use crate::threads::Thread;
use crate::{census, gc, modules, pymalloc, threads};

/// How the target is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Stop every thread for the shortest time needed (default): a consistent read.
    Paused,
    /// Never stop the target; figures may be inexact.
    Nonblocking,
}

/// GC, pymalloc and modules of a process, as the `snapshot` command shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PythonView {
    /// Exact version, e.g. `3.11.7`.
    pub version: String,
    /// Collector state.
    pub gc: Option<GcState>,
    /// pymalloc arenas.
    pub pymalloc: Option<Pymalloc>,
    /// `sys.modules`.
    pub modules: Option<Modules>,
    /// Whether the figures were read without stopping the target.
    pub inexact: bool,
}

/// Timing of a read. The durations are as reported (`memlens_model::clock`): zero under a
/// fixed clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// How long the target was stopped (`None` in nonblocking mode).
    pub paused: Option<Duration>,
    /// Bytes copied from the target.
    pub copied: u64,
    /// Total time.
    pub elapsed: Duration,
    /// System calls and bytes of the read (not filled by the census).
    pub reads: ReadCounts,
}

/// An attached interpreter in a live process.
pub struct Session {
    /// The interpreter.
    pub interpreter: Interpreter,
    mem: RemoteMemory,
    pages: Option<Arc<SharedPages>>,
}

fn keep<T>(pid: u32, what: &str, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            log::warn!("pid {pid}: cannot read {what}: {e}");
            None
        }
    }
}

/// Milliseconds to hold a pause before reading, for the test that kills memlens mid-pause
/// (`MEMLENS_TEST_HOLD_PAUSE_MS`); 0 otherwise.
fn test_hold() -> Duration {
    std::env::var("MEMLENS_TEST_HOLD_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or_default()
}

impl Session {
    /// Finds and validates the interpreter of `pid` (reads only, no pause). To attach to
    /// several processes, use one [`crate::Attacher`]: it discovers each binary once.
    pub fn attach(pid: u32) -> Result<Session> {
        crate::Attacher::new().attach(pid)
    }

    pub(crate) fn new(
        interpreter: Interpreter,
        mem: RemoteMemory,
        pages: Option<Arc<SharedPages>>,
    ) -> Session {
        Session {
            interpreter,
            mem,
            pages,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.interpreter.pid
    }

    fn reader(&self) -> PageReader<'_, RemoteMemory> {
        PageReader::new(&self.mem, self.interpreter.pid, self.pages.as_deref())
    }

    fn pause(&self, mode: ReadMode) -> Result<Option<Pause>> {
        match mode {
            ReadMode::Nonblocking => Ok(None),
            ReadMode::Paused => {
                let p = Pause::stop(self.interpreter.pid)?;
                let hold = test_hold();
                if !hold.is_zero() {
                    std::thread::sleep(hold);
                }
                Ok(Some(p))
            }
        }
    }

    /// Threads with their stacks.
    pub fn stacks(&self, mode: ReadMode) -> Result<(Vec<Thread>, ReadStats)> {
        let start = Stopwatch::start();
        let reader = self.reader();
        let pause = self.pause(mode)?;
        let read_start = Instant::now();
        let result = threads::threads(&self.interpreter, &reader);
        let read = read_start.elapsed();
        let paused = pause.map(Pause::resume).map(reported);
        log::debug!(
            "pid {}: stacks read in {read:?} ({:?}), {:?} in all",
            self.interpreter.pid,
            reader.counts(),
            start.elapsed()
        );
        let reads = reader.counts();
        Ok((
            result?,
            ReadStats {
                paused,
                copied: reads.bytes,
                elapsed: start.elapsed(),
                reads,
            },
        ))
    }

    /// Each thread with what it holds besides its stack (`thread-stacks` advice), read in
    /// one pause.
    pub fn thread_states(&self, mode: ReadMode) -> Result<Vec<crate::thread_costs::ThreadState>> {
        let reader = self.reader();
        let pause = self.pause(mode)?;
        let result = crate::thread_costs::read(&self.interpreter, &reader);
        if let Some(p) = pause {
            let stopped = p.resume();
            log::info!(
                "pid {}: thread states read in a pause of {:.1} ms",
                self.interpreter.pid,
                stopped.as_secs_f64() * 1e3
            );
        }
        result
    }

    /// GC, pymalloc and modules. Parts that fail are logged and left out.
    pub fn view(&self, mode: ReadMode) -> Result<(PythonView, ReadStats)> {
        let start = Stopwatch::start();
        let it = &self.interpreter;
        let reader = self.reader();
        let pause = self.pause(mode)?;
        let gc = gc::read(it, &reader);
        let pm = pymalloc::read(it, &reader);
        let mods = modules::read(it, &reader);
        let paused = pause.map(Pause::resume).map(reported);
        let reads = reader.counts();
        Ok((
            PythonView {
                version: it.version.to_string(),
                gc: keep(it.pid, "the GC state", gc),
                pymalloc: keep(it.pid, "pymalloc", pm),
                modules: keep(it.pid, "sys.modules", mods),
                inexact: mode == ReadMode::Nonblocking,
            },
            ReadStats {
                paused,
                copied: reads.bytes,
                elapsed: start.elapsed(),
                reads,
            },
        ))
    }

    /// The collector's state and pymalloc alone (what a recording samples), each part's
    /// failure left to the caller to report.
    pub fn gc_and_pymalloc(&self, mode: ReadMode) -> Result<(Result<GcState>, Result<Pymalloc>)> {
        let it = &self.interpreter;
        let reader = self.reader();
        let pause = self.pause(mode)?;
        let gc = gc::read(it, &reader);
        let pm = pymalloc::read(it, &reader);
        drop(pause);
        Ok((gc, pm))
    }

    /// The object census (see [`census::read`]) within memlens's default memory cap.
    pub fn census(&self, mode: ReadMode) -> Result<(Census, ReadStats)> {
        self.census_capped(mode, census::CENSUS_MEMORY_CAP)
    }

    /// The object census with at most `cap` bytes of memlens's own memory for it. Paused mode
    /// walks the running target and proves the walk consistent in a short pause (or, when the
    /// heap keeps changing, walks it stopped); nonblocking mode never stops it.
    pub fn census_capped(&self, mode: ReadMode, cap: u64) -> Result<(Census, ReadStats)> {
        self.census_with(mode, cap, false.into())
            .map(|(c, _, s)| (c, s))
    }

    /// The object census with, from the same walk, the bytes of code objects, functions,
    /// classes and modules by the module name or file they carry (what `snapshot --packages`
    /// attributes to packages).
    pub fn census_by_module(
        &self,
        mode: ReadMode,
        cap: u64,
    ) -> Result<(Census, census::ModuleObjects, ReadStats)> {
        let (c, m, s) = self.census_with(mode, cap, true.into())?;
        Ok((c, m.unwrap_or_default(), s))
    }

    /// `census --referrers`: the shortest chains from module globals and frame locals to the
    /// instances of `type_name` (`__name__` or `module.qualname`), the `top` with the most
    /// bytes (0: all). Paused mode stops the target for the whole walk (exact); nonblocking
    /// mode never stops it (the result says so).
    pub fn referrers(
        &self,
        mode: ReadMode,
        cap: u64,
        type_name: &str,
        top: usize,
    ) -> Result<memlens_model::referrers::Referrers> {
        let stop = || -> Result<Pause> {
            self.pause(ReadMode::Paused)?
                .ok_or(crate::error::Error::Remote(
                    memlens_remote::Error::ProcessGone {
                        pid: self.interpreter.pid,
                    },
                ))
        };
        let stop: Option<&dyn Fn() -> Result<Pause>> = match mode {
            ReadMode::Paused => Some(&stop),
            ReadMode::Nonblocking => None,
        };
        census::referrers::read(&self.interpreter, &self.mem, stop, cap, type_name, top)
    }

    /// The object census with its tallies for advice (`Census::tallies`) and, with
    /// `by_module`, the attribution of [`Session::census_by_module`], from one walk.
    pub fn census_for_advice(
        &self,
        mode: ReadMode,
        cap: u64,
        by_module: bool,
    ) -> Result<(Census, Option<census::ModuleObjects>, ReadStats)> {
        let extras = census::Extras {
            by_module,
            advice: true,
        };
        self.census_with(mode, cap, extras)
    }

    fn census_with(
        &self,
        mode: ReadMode,
        cap: u64,
        extras: census::Extras,
    ) -> Result<(Census, Option<census::ModuleObjects>, ReadStats)> {
        let start = Stopwatch::start();
        let stop = || -> Result<Pause> {
            self.pause(ReadMode::Paused)?
                .ok_or(crate::error::Error::Remote(
                    memlens_remote::Error::ProcessGone {
                        pid: self.interpreter.pid,
                    },
                ))
        };
        let stop: Option<&dyn Fn() -> Result<Pause>> = match mode {
            ReadMode::Paused => Some(&stop),
            ReadMode::Nonblocking => None,
        };
        let read = census::read_with(&self.interpreter, &self.mem, stop, cap, extras)?;
        Ok((
            read.census,
            read.by_module,
            ReadStats {
                paused: read.paused,
                copied: read.copied,
                elapsed: start.elapsed(),
                reads: ReadCounts::default(),
            },
        ))
    }
}
