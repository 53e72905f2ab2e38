//! The supervision of `memlens run` and `memlens record` behind one call each: start (or find)
//! the program, sample its tree until it ends or a signal or the duration says stop, finish
//! the recording. The caller creates the recording file (it chooses its name and checks its
//! report files meanwhile), prints what [`Notice`] says, and reads the recording back.
//!
//! `run`: the program is forked and held before exec ([`memlens_launch::hold`]) while it joins
//! the run's own memory cgroup and the caller prepares the files; it runs once they exist,
//! with signals forwarded and memlens as the subreaper of its tree. The cgroup is a guard: it
//! is removed on every path once the program has ended (at once when the program could not be
//! placed in it).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memlens_launch::{self as launch, Waiter};
use memlens_procfs::Process;

pub use memlens_launch::{CgroupError, OwnCgroup, Reaped, SpawnError};

use crate::python::LiveView;
use crate::sampler::{Config, Finish, Sampler};
use crate::writer::RecordingWriter;
use crate::Error;
use memlens_recording::trace::Limits;
use memlens_recording::trace_live::LiveImport;
use memlens_recording::trace_store::{import_dir, monotonic_ns, ImportReport, TraceFiles};

/// Why the program (or the tree) could not be started or followed: nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No command was given.
    #[error("no command to run")]
    NoCommand,
    /// The pipe the supervision waits on could not be made.
    #[error("cannot create a pipe: {0}")]
    Pipe(#[source] std::io::Error),
    /// The program could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The tree could not be read, or the recording not started.
    #[error(transparent)]
    Recording(#[from] Error),
}

/// What the supervision says while it runs, for the caller to print.
#[derive(Debug)]
pub enum Notice<'a> {
    /// `record` has started sampling the tree of `pid` into `path`.
    Recording {
        /// The root of the tree.
        pid: u32,
        /// The recording.
        path: &'a Path,
    },
    /// `record` stops sampling (the duration is over, a stop signal came, or the tree is
    /// gone); the trace files (`--trace`) are imported after the callback returns.
    Stopping {
        /// Whether the root of the tree still runs.
        running: bool,
    },
    /// `run`'s recording stopped at `at` seconds (what it holds is kept); the program keeps
    /// running.
    Stopped {
        /// Seconds since the start.
        at: f64,
        /// Why.
        error: &'a Error,
        /// The recording.
        path: &'a Path,
    },
}

/// Why the recording stopped before the program did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It could not be written (a full disk, an I/O error).
    WriteFailed,
    /// Another failure (reading `/proc`).
    Failed,
}

impl Stopped {
    fn of(e: &Error) -> Stopped {
        if e.is_write_failure() {
            Stopped::WriteFailed
        } else {
            Stopped::Failed
        }
    }
}

/// What `memlens run` asks for.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    /// The program and its arguments.
    pub command: &'a [OsString],
    /// The command line as the recording shows it (for a program that exits before the
    /// first sample).
    pub command_text: &'a str,
    /// The sampler's configuration.
    pub config: Config,
    /// Read the Python view of the processes.
    pub python: bool,
    /// Place the program in a memory cgroup of memlens's own.
    pub cgroup: bool,
    /// Variables set in the program's environment (`--trace`: the tracer's).
    pub env: Vec<(OsString, OsString)>,
    /// The trace files to import into the recording while the program runs and when it has
    /// ended (`--trace`).
    pub trace: Option<TraceFiles>,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// The recording.
    pub path: PathBuf,
    /// The program's end (its status is `run`'s).
    pub exit: Reaped,
    /// Why the recording stopped before the program, if it did (it holds what came before).
    pub stopped: Option<Stopped>,
    /// What the import of the trace files did (`--trace`), or why it failed.
    pub trace: Option<Result<ImportReport, Error>>,
}

/// `memlens run`: starts the program, records its tree until it exits, and finishes the
/// recording. `prepare` creates the recording (with the cgroup, or why there is none, for its
/// metadata) while the program is held; its error is returned with the program not run.
pub fn run_program<E: From<StartError>>(
    req: &RunRequest<'_>,
    prepare: impl FnOnce(Result<&OwnCgroup, &CgroupError>) -> Result<RecordingWriter, E>,
    notify: &mut dyn FnMut(Notice<'_>),
) -> Result<RunOutcome, E> {
    let (program, args) = req.command.split_first().ok_or(StartError::NoCommand)?;
    let cgroup = if req.cgroup {
        OwnCgroup::create()
    } else {
        Err(CgroupError::Disabled)
    };
    if let Err(why) = &cgroup {
        log::info!("no memory cgroup for the run: {why}");
    }
    let mut waiter = Waiter::new().map_err(StartError::Pipe)?;
    launch::forward_signals();
    waiter.wake_on_child_exit();
    launch::become_subreaper();
    // The program is forked now and joins its cgroup while the files are prepared (a cgroup
    // move takes milliseconds); it runs only once they are. Every early return below drops
    // the cgroup after the held child is gone.
    let procs = cgroup.as_ref().ok().map(OwnCgroup::procs_file);
    let held = launch::hold_with_env(program, args, procs, &req.env).map_err(StartError::from)?;
    let writer = match prepare(cgroup.as_ref()) {
        Ok(w) => w,
        Err(e) => {
            held.cancel();
            return Err(e);
        }
    };
    let path = writer.path().to_path_buf();
    let start = Instant::now();
    // The trace files' clock at t = 0 (Instant is CLOCK_MONOTONIC too: read back to back).
    let start_ns = monotonic_ns();
    let pid = match held.release() {
        Ok(pid) => pid,
        Err(e) => {
            writer.discard();
            return Err(StartError::from(e).into());
        }
    };
    launch::set_child(pid);
    let mut sup = Supervision {
        pid,
        command: req.command_text,
        path: &path,
        start,
        interval: req.config.interval,
        sampler: None,
        orphan_cgroup: None,
        stopped: None,
        notify,
        trace: req
            .trace
            .clone()
            .map(|f| LiveImport::new(f, start_ns, Limits::default())),
        next_import: Instant::now() + IMPORT_INTERVAL,
        trace_report: None,
    };
    sup.start(req, writer, placed(cgroup.ok(), pid));
    let exit = sup.watch(&mut waiter);
    // A cgroup whose sampler failed goes now that the program has ended.
    drop(sup.orphan_cgroup.take());
    sup.finish(&Finish {
        exit_code: Some(exit.shell_status()),
        exit_signal: exit.signal,
    });
    let stopped = sup.stopped;
    let trace = sup.trace_report.take();
    Ok(RunOutcome {
        path,
        exit,
        stopped,
        trace,
    })
}

/// The cgroup if the program landed in it (the child wrote itself into it before exec; a
/// program that has already exited has left every cgroup: nothing to check), with the reason
/// otherwise (the cgroup is then removed at once).
fn placed(cgroup: Option<OwnCgroup>, pid: u32) -> (Option<OwnCgroup>, Option<CgroupError>) {
    match cgroup {
        Some(cg) if cg.contains(pid) || !running(pid) => (Some(cg), None),
        Some(cg) => {
            let why = CgroupError::NotJoined {
                dir: cg.dir().to_path_buf(),
            };
            log::info!("{why}");
            (None, Some(why))
        }
        None => (None, None),
    }
}

/// Whether a process is running (not exited, not a zombie).
fn running(pid: u32) -> bool {
    Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state != b'Z' && s.state != b'X')
}

/// The sampling of a running program.
struct Supervision<'a, 'n> {
    pid: u32,
    command: &'a str,
    path: &'a Path,
    start: Instant,
    interval: Duration,
    sampler: Option<Sampler>,
    /// A cgroup whose sampler failed, to be removed once the program has ended.
    orphan_cgroup: Option<OwnCgroup>,
    stopped: Option<Stopped>,
    notify: &'n mut dyn FnMut(Notice<'_>),
    /// The import of the trace files.
    trace: Option<LiveImport>,
    /// When the trace files are read next.
    next_import: Instant,
    trace_report: Option<Result<ImportReport, Error>>,
}

impl Supervision<'_, '_> {
    fn start(
        &mut self,
        req: &RunRequest<'_>,
        writer: RecordingWriter,
        (cgroup, placement_error): (Option<OwnCgroup>, Option<CgroupError>),
    ) {
        match Sampler::new(req.config.clone(), writer, self.pid, self.start) {
            Ok(mut s) => {
                if req.python {
                    s.set_python_view(Box::new(LiveView::default()));
                }
                if let Some(cg) = cgroup {
                    s.place_in(cg);
                }
                s.adopt_children_of(std::process::id());
                let pid = self.pid;
                let _ = s.update_meta(|m| {
                    m.root_pid = Some(pid);
                    if let Some(why) = placement_error {
                        m.cgroup_error = Some(why.to_string());
                    }
                });
                self.sampler = Some(s);
            }
            Err(e) => {
                self.orphan_cgroup = cgroup;
                self.recording_stopped(&e);
            }
        }
    }

    /// Says why the recording stopped; the program keeps running.
    fn recording_stopped(&mut self, e: &Error) {
        let at = self.start.elapsed().as_secs_f64();
        (self.notify)(Notice::Stopped {
            at,
            error: e,
            path: self.path,
        });
        self.stopped = Some(Stopped::of(e));
    }

    /// Samples until the program exits, reaping it and any orphan handed to memlens. Between
    /// ticks it waits on the [`Waiter`]: the program's exit or a signal ends the wait at once.
    fn watch(&mut self, waiter: &mut Waiter) -> Reaped {
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                if let Some(Err(e)) = self.sampler.as_mut().map(Sampler::tick) {
                    self.recording_stopped(&e);
                    self.orphan_cgroup = self.sampler.take().and_then(Sampler::abandon);
                }
                // The sampler's schedule: later than the interval when the budget spaces ticks.
                next = self.sampler.as_ref().map_or_else(
                    || launch::next_tick(self.start, self.interval),
                    Sampler::next_tick,
                );
            }
            if Instant::now() >= self.next_import {
                self.import_traces();
                self.next_import = Instant::now() + IMPORT_INTERVAL;
            }
            for sig in launch::take_forwarded() {
                if let Some(s) = self.sampler.as_mut() {
                    let _ = s.event(
                        "signal",
                        &format!("{} forwarded to pid {}", launch::signal_name(sig), self.pid),
                    );
                }
            }
            let mut main = None;
            for r in launch::reap() {
                if let Some(s) = self.sampler.as_mut() {
                    let fallback = (r.pid == self.pid).then_some(self.command);
                    let _ = s.reaped(r.pid, r.max_rss, fallback);
                }
                if r.pid == self.pid {
                    launch::clear_child();
                    main = Some(r);
                }
            }
            if let Some(m) = main {
                return m;
            }
            waiter.wait_until(next);
        }
    }

    /// Imports what the tracer wrote since the last import and commits it, so the recording
    /// holds the trace up to now even if memlens is killed. A failure to write stops the
    /// recording, as a failed tick does; a file that cannot be read is said at the end.
    fn import_traces(&mut self) {
        let (Some(s), Some(live)) = (self.sampler.as_mut(), self.trace.as_mut()) else {
            return;
        };
        let cpu = || memlens_recording::trace_live::thread_cpu_ns() as f64 / 1e6;
        let (began, cpu0) = (Instant::now(), cpu());
        let mut read = (began, cpu0);
        let r = live.import(s.writer()).and_then(|st| {
            read = (Instant::now(), cpu());
            if st.wrote() {
                s.writer().commit()?;
            }
            Ok(st)
        });
        match r {
            Ok(st) if st.wrote() => {
                log::debug!(
                    "trace import: {} bytes of {} files, {} snapshots, {} sites: {:.1} ms ({:.1} ms CPU), commit {:.1} ms{}",
                    st.bytes,
                    st.files,
                    st.snaps,
                    st.sites,
                    (read.0 - began).as_secs_f64() * 1e3,
                    read.1 - cpu0,
                    read.0.elapsed().as_secs_f64() * 1e3,
                    if live.behind() { " (behind: the rest next time)" } else { "" }
                );
                if log::log_enabled!(log::Level::Trace) {
                    for (file, at) in live.offsets() {
                        log::trace!("trace import: {file} read to byte {at}");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                let e = Error::from(e);
                self.recording_stopped(&e);
                self.orphan_cgroup = self.sampler.take().and_then(Sampler::abandon);
            }
        }
    }

    /// Finishes the recording (a failure is said, and the file keeps what was written).
    fn finish(&mut self, fin: &Finish) {
        if let (Some(s), Some(live)) = (self.sampler.as_mut(), self.trace.take()) {
            // The rest: the tracer's files are complete (or cut off by a kill).
            self.trace_report = Some(live.finish(s.writer()).map_err(Error::from));
        }
        if let Some(s) = self.sampler.take() {
            if let Err(e) = s.finish(fin) {
                self.recording_stopped(&e);
            }
        }
    }
}

/// How often `run --trace` imports the tracer's files while the program runs (the tracer
/// appends a snapshot a second).
const IMPORT_INTERVAL: Duration = Duration::from_millis(500);

/// What `memlens record` asks for.
#[derive(Debug, Clone)]
pub struct RecordRequest {
    /// The root of the tree.
    pub pid: u32,
    /// The sampler's configuration.
    pub config: Config,
    /// Read the Python view of the processes.
    pub python: bool,
    /// Stop after this long (otherwise at a stop signal or when the tree is gone).
    pub duration: Option<Duration>,
    /// The trace files to import at the end, after [`Notice::Stopping`] (`record --trace`:
    /// the tracer attached to the running root just before the recording started).
    pub trace: Option<TraceFiles>,
    /// What the recording says of the trace (an event at its start), e.g. what was not traced.
    pub trace_note: Option<String>,
}

/// The root of a recorded tree, as the recording's metadata names it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name (`comm`).
    pub name: String,
    /// Its command line.
    pub command: String,
}

/// How a recording of a running tree ended.
#[derive(Debug)]
pub struct RecordOutcome {
    /// The recording.
    pub path: PathBuf,
    /// The error that stopped it early, and when (s): the file keeps what came before.
    pub failure: Option<(f64, Error)>,
    /// What the import of the trace files did (`--trace`), or why it failed.
    pub trace: Option<Result<ImportReport, Error>>,
}

/// `memlens record`: follows the running tree of `pid` until a stop signal (SIGINT, SIGTERM,
/// SIGHUP, caught before the file exists), the duration, or the end of the tree, and finishes
/// the recording. `prepare` creates the recording for the target.
pub fn record_tree<E: From<StartError>>(
    req: &RecordRequest,
    prepare: impl FnOnce(&Target) -> Result<RecordingWriter, E>,
    notify: &mut dyn FnMut(Notice<'_>),
) -> Result<RecordOutcome, E> {
    let proc = Process::new(req.pid).map_err(|e| StartError::Recording(e.into()))?;
    let name = proc
        .status()
        .map(|s| String::from_utf8_lossy(&s.name).into_owned())
        .map_err(|e| StartError::Recording(e.into()))?;
    let command = memlens_ledger::process::cmdline_string(&proc.cmdline().unwrap_or_default());
    let mut waiter = Waiter::new().map_err(StartError::Pipe)?;
    launch::stop_on_signals();
    let writer = prepare(&Target { name, command })?;
    let path = writer.path().to_path_buf();
    let start = Instant::now();
    // The trace files' clock at t = 0 (Instant is CLOCK_MONOTONIC too: read back to back).
    let start_ns = monotonic_ns();
    let mut sampler =
        Sampler::new(req.config.clone(), writer, req.pid, start).map_err(StartError::from)?;
    if req.python {
        sampler.set_python_view(Box::new(LiveView::default()));
    }
    sampler
        .track_existing_descendants()
        .map_err(StartError::from)?;
    if let Some(note) = &req.trace_note {
        sampler
            .writer()
            .event(0.0, "trace", Some(i64::from(req.pid)), note)
            .map_err(|e| StartError::Recording(Error::from(e)))?;
    }
    notify(Notice::Recording {
        pid: req.pid,
        path: &path,
    });
    let end = req.duration.map(|d| start + d);
    let failure = follow(&mut sampler, &mut waiter, start, req.config.interval, end).err();
    notify(Notice::Stopping {
        running: running(req.pid),
    });
    let mut trace = None;
    if let (None, Some(files)) = (&failure, &req.trace) {
        trace = Some(
            import_dir(sampler.writer(), files, start_ns, Limits::default()).map_err(Error::from),
        );
    }
    let finished = match failure {
        None => sampler.finish(&Finish::default()),
        Some(e) => {
            drop(sampler.abandon());
            Err(e)
        }
    };
    let failure = finished.err().map(|e| (start.elapsed().as_secs_f64(), e));
    Ok(RecordOutcome {
        path,
        failure,
        trace,
    })
}

/// Ticks until a stop signal, the end of the tree or `end`.
fn follow(
    sampler: &mut Sampler,
    waiter: &mut Waiter,
    start: Instant,
    interval: Duration,
    end: Option<Instant>,
) -> crate::Result<()> {
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        // A tick when one is due, and at once when a signal came or a watched process exited
        // (to see whether the tree has ended).
        sampler.tick()?;
        if launch::stop_requested() || sampler.live_count() == 0 || end.is_some_and(|e| now >= e) {
            return Ok(());
        }
        if now >= next {
            // The sampler's schedule: later than the interval when the budget spaces ticks.
            next = launch::next_tick(start, interval).max(sampler.next_tick());
        }
        waiter.watch(&sampler.live_pids());
        let deadline = end.map_or(next, |e| e.min(next));
        while !waiter.wait_until(deadline) {
            if Instant::now() >= deadline {
                break;
            }
        }
    }
}
