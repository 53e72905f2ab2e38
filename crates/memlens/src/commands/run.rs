//! `memlens run`: runs a program transparently (stdio inherited, signals forwarded, its exit
//! status returned), records its whole process tree, and explains its memory at exit.
//!
//! Output: the program owns stdout, so the text summary goes to stderr; `--json` prints the JSON
//! report on stdout after the program has exited, `--json-out FILE` writes it to a file;
//! `--html OUT` writes the page. Every output file is checked (and the recording created) before
//! the program runs: a destination memlens may not write is exit 8 with the program not run.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use memlens_ledger::units::format_bytes;
use memlens_record::cgroup::OwnCgroup;
use memlens_record::launch::{self, Reaped, SpawnError, Waiter};
use memlens_record::{Finish, RecordingWriter, Sampler};
use memlens_report::Model;

use crate::exit::{CliError, CliResult, Code};
use crate::flags;
use crate::output::{self, Global};
use crate::recording::{self, emit, Outputs, SamplingArgs, Summary};

/// Arguments of `memlens run`.
#[derive(Debug, clap::Args)]
#[command(override_usage = "memlens run [OPTIONS] -- <CMD> [ARGS]...")]
pub struct Args {
    /// Print the JSON report on stdout when the program has exited, after the program's own
    /// output (instead of the summary on stderr); `--json-out FILE` keeps it apart.
    #[arg(long)]
    pub json: bool,
    /// No summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Fail (exit 7) when the tree's peak exceeds SIZE (from 1B to 8EiB, e.g. `512M`, `2GiB`).
    #[arg(long, value_name = "SIZE", value_parser = flags::size)]
    pub max_peak: Option<u64>,
    /// Do not place the program in a memory cgroup of its own (peaks of the tree are then
    /// sampled; each process's VmHWM stays exact).
    #[arg(long)]
    pub no_cgroup: bool,
    /// Sampling and output options.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The program and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// Why the recording stopped before the program did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    /// It could not be written (a full disk, an I/O error): exit 8 where that matters.
    WriteFailed,
    /// Another failure (reading `/proc`).
    Failed,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let program = args.command[0].clone();
    let command_text = args
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let cgroup = if args.no_cgroup {
        Err("disabled with --no-cgroup".to_string())
    } else {
        OwnCgroup::create()
    };
    if let Err(why) = &cgroup {
        log::info!("no memory cgroup for the run: {why}");
    }
    let drop_cgroup = |cg: Result<OwnCgroup, String>| {
        if let Ok(cg) = cg {
            cg.remove();
        }
    };
    let mut waiter = match Waiter::new() {
        Ok(w) => w,
        Err(e) => {
            drop_cgroup(cgroup);
            return Err(CliError::new(
                Code::Failure,
                format!("cannot create a pipe: {e}"),
            ));
        }
    };
    launch::forward_signals();
    waiter.wake_on_child_exit();
    launch::become_subreaper();

    // The program is forked now and joins its cgroup while the files are prepared (a cgroup
    // move takes milliseconds); it runs only once they are.
    let procs = cgroup.as_ref().ok().map(OwnCgroup::procs_file);
    let held = match launch::hold(&program, &args.command[1..], procs) {
        Ok(h) => h,
        Err(e) => {
            drop_cgroup(cgroup);
            return Err(spawn_error(e));
        }
    };
    let prepared = args.sampling.reserve_outputs().and_then(|outputs| {
        let meta = recording_meta(&args.sampling, &command_text, &cgroup);
        let name = recording::program_name(&program);
        Ok((outputs, args.sampling.create_recording(&name, &meta)?))
    });
    let (mut outputs, writer) = match prepared {
        Ok(p) => p,
        Err(e) => {
            held.cancel();
            drop_cgroup(cgroup);
            return Err(e);
        }
    };
    let path = writer.path().to_path_buf();
    let start = Instant::now();
    let pid = match held.release() {
        Ok(pid) => pid,
        Err(e) => {
            writer.discard();
            drop_cgroup(cgroup);
            return Err(spawn_error(e));
        }
    };
    launch::set_child(pid);

    let cgroup = placed_cgroup(cgroup, pid);
    let mut sup = Supervision {
        pid,
        command: &command_text,
        path: &path,
        start,
        interval: args.sampling.interval,
        sampler: None,
        orphan_cgroup: None,
        stopped: None,
    };
    sup.start(&args.sampling, writer, cgroup);
    let main = sup.run(&mut waiter);
    if let Some(cg) = sup.orphan_cgroup.take() {
        cg.remove();
    }
    let status = main.shell_status();
    // With nothing to print or check (`-q`, no report file), the recording is not read back.
    let wanted = !args.quiet || args.json || args.max_peak.is_some() || outputs.any();
    let (model, stopped) = sup.conclude(
        &Finish {
            exit_code: Some(status),
            exit_signal: main.signal,
        },
        wanted,
    );
    report(&args, global, model.as_ref(), stopped, &mut outputs, status)
}

/// The metadata of a run's recording.
fn recording_meta(
    sampling: &SamplingArgs,
    command: &str,
    cgroup: &Result<OwnCgroup, String>,
) -> memlens_recording::Meta {
    let mut meta = sampling.meta(memlens_recording::Mode::Run, command, 0);
    match cgroup {
        Ok(cg) => {
            meta.cgroup_version = Some(cg.version());
            meta.cgroup_path = Some(cg.path().to_string());
        }
        Err(why) => meta.cgroup_error = Some(why.clone()),
    }
    meta
}

/// The cgroup if the program landed in it (the child wrote itself into it before exec; a
/// program that has already exited has left every cgroup: nothing to check), with the reason
/// otherwise.
fn placed_cgroup(
    cgroup: Result<OwnCgroup, String>,
    pid: u32,
) -> (Option<OwnCgroup>, Option<String>) {
    match cgroup {
        Ok(cg) if cg.contains(pid) || !running(pid) => (Some(cg), None),
        Ok(cg) => {
            let why = format!("the program could not be moved into {}", cg.dir().display());
            log::info!("{why}");
            cg.remove();
            (None, Some(why))
        }
        Err(_) => (None, None),
    }
}

fn spawn_error(e: SpawnError) -> CliError {
    match e {
        SpawnError::NotFound { .. } => CliError::new(Code::CommandNotFound, e.to_string())
            .with_hint("check the program name and PATH; `memlens run -- CMD ARGS...`"),
        SpawnError::NotExecutable { .. } => CliError::new(Code::CannotExecute, e.to_string())
            .with_hint("the file must be an executable program or a script with a #! line and execute permission"),
        SpawnError::Other { .. } => CliError::new(Code::Failure, e.to_string()),
    }
}

/// The sampling of a running program.
struct Supervision<'a> {
    pid: u32,
    command: &'a str,
    path: &'a Path,
    start: Instant,
    interval: std::time::Duration,
    sampler: Option<Sampler>,
    /// A cgroup whose sampler failed, to be removed once the program has ended.
    orphan_cgroup: Option<OwnCgroup>,
    stopped: Option<Stopped>,
}

impl Supervision<'_> {
    fn start(
        &mut self,
        sampling: &SamplingArgs,
        writer: RecordingWriter,
        (cgroup, placement_error): (Option<OwnCgroup>, Option<String>),
    ) {
        match Sampler::new(sampling.config(), writer, self.pid, self.start, cgroup) {
            Ok(mut s) => {
                sampling.attach_python(&mut s);
                s.adopt_children_of(std::process::id());
                let _ = s.update_meta(|m| {
                    m.root_pid = Some(self.pid);
                    if placement_error.is_some() {
                        m.cgroup_error = placement_error;
                    }
                });
                self.sampler = Some(s);
            }
            Err(e) => self.recording_stopped(&e),
        }
    }

    /// Says why the recording stopped; the program keeps running.
    fn recording_stopped(&mut self, e: &memlens_record::Error) {
        let t = self.start.elapsed().as_secs_f64();
        let kept = format!(
            "what was recorded until then is kept in {} (`memlens report` reads it); the program keeps running",
            self.path.display()
        );
        if e.is_disk_full() {
            output::message(
                "error",
                &format!("the recording stopped at {t:.2} s: the disk is full ({e}); {kept}"),
            );
        } else {
            output::message(
                "error",
                &format!("the recording stopped at {t:.2} s: {e}; {kept}"),
            );
        }
        self.stopped = Some(if e.is_write_failure() {
            Stopped::WriteFailed
        } else {
            Stopped::Failed
        });
    }

    /// Samples until the program exits, reaping it and any orphan handed to memlens. Between
    /// ticks it waits on the [`Waiter`]: the program's exit or a signal ends the wait at once.
    fn run(&mut self, waiter: &mut Waiter) -> Reaped {
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

    /// Finishes the recording and reads it back. A recording that stopped early (a full disk)
    /// is still read: the report shows what it holds and says it was cut off.
    fn conclude(&mut self, fin: &Finish, wanted: bool) -> (Option<Model>, Option<Stopped>) {
        if let Some(s) = self.sampler.take() {
            match s.finish(fin) {
                Ok(_) if !wanted => return (None, self.stopped),
                Ok(p) => match recording::open(&p) {
                    Ok((_, m)) => return (Some(m), self.stopped),
                    Err(e) => {
                        e.print();
                        return (None, Some(Stopped::Failed));
                    }
                },
                Err(e) => self.recording_stopped(&e),
            }
        }
        if !wanted {
            return (None, self.stopped);
        }
        match recording::open(self.path) {
            Ok((_, m)) => (Some(m), self.stopped),
            Err(e) => {
                e.print();
                (None, self.stopped.or(Some(Stopped::Failed)))
            }
        }
    }
}

/// Prints the report and decides the exit status: the program's, unless `--max-peak` was
/// exceeded (7) or could not be checked (8 when the recording could not be written, else 1).
/// A report that cannot be written is said on stderr; the program's status still stands.
fn report(
    args: &Args,
    global: &Global,
    model: Option<&Model>,
    stopped: Option<Stopped>,
    outputs: &mut Outputs,
    status: i32,
) -> CliResult<ExitCode> {
    let summary = if args.quiet || args.json {
        Summary::Off
    } else {
        Summary::Stderr
    };
    if let Some(m) = model {
        if let Err(e) = emit(m, global, args.json, summary, outputs) {
            e.print();
        }
    }
    let Some(max) = args.max_peak else {
        return Ok(exit_code(status));
    };
    if let Some(p) = model.map(|m| &m.peak).filter(|p| p.bytes > max) {
        output::message(
            "error",
            &format!(
                "peak {} exceeds --max-peak {} ({}, at {:.2} s{})",
                format_bytes(p.bytes),
                format_bytes(max),
                p.source.name(),
                p.at_seconds,
                match (p.pid, &p.cmdline) {
                    (Some(pid), Some(c)) => format!(", mostly pid {pid} {c}"),
                    _ => String::new(),
                }
            ),
        );
        return Ok(Code::BudgetExceeded.into());
    }
    match (model, stopped) {
        (Some(_), None) => Ok(exit_code(status)),
        (_, why) => {
            let code = if why == Some(Stopped::WriteFailed) {
                Code::Output
            } else {
                Code::Failure
            };
            output::message(
                "error",
                "--max-peak cannot be checked: the recording is incomplete",
            );
            Ok(code.into())
        }
    }
}

/// Whether a process is running (not exited, not a zombie).
fn running(pid: u32) -> bool {
    memlens_procfs::Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state != b'Z' && s.state != b'X')
}

fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status.clamp(0, 255)).unwrap_or(1))
}
