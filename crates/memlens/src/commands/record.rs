//! `memlens record PID`: records a running process tree until Ctrl-C, `--duration`, or until
//! every process of the tree has exited; then prints the summary on stdout. Between ticks it
//! waits on signals and on the exit of each process (pidfds), so it stops at once whatever the
//! interval.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use memlens_procfs::Process;
use memlens_record::launch::{self, Waiter};
use memlens_record::{Finish, Sampler};

use crate::exit::{CliError, CliResult, Code};
use crate::flags;
use crate::output::{self, Global};
use crate::recording::{self, emit, SamplingArgs, Summary};

/// Arguments of `memlens record`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process whose tree to record.
    pub pid: u32,
    /// Stop after this long (1ms to 30d, e.g. `30s`, `5m`); otherwise at Ctrl-C or when the
    /// tree is gone.
    #[arg(long, value_name = "D", value_parser = flags::record_duration)]
    pub duration: Option<Duration>,
    /// Print the JSON report on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Sampling and output options.
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    if let Some(e) = crate::exit::target_state_error(args.pid) {
        return Err(e);
    }
    let proc = Process::new(args.pid)?;
    let name = proc
        .status()
        .map(|s| String::from_utf8_lossy(&s.name).into_owned())?;
    let command = memlens_ledger::process::cmdline_string(&proc.cmdline().unwrap_or_default());
    // Ctrl-C is caught from here on: before the file exists, so that it always ends cleanly.
    let mut waiter = Waiter::new()
        .map_err(|e| CliError::new(Code::Failure, format!("cannot create a pipe: {e}")))?;
    launch::stop_on_signals();
    let mut outputs = args.sampling.reserve_outputs()?;
    let meta = args
        .sampling
        .meta(memlens_recording::Mode::Record, &command, args.pid);
    let writer = args.sampling.create_recording(&name, &meta)?;
    let path = writer.path().to_path_buf();
    let start = Instant::now();
    let mut sampler = Sampler::new(args.sampling.config(), writer, args.pid, start, None)
        .map_err(recording::recorder_error)?;
    args.sampling.attach_python(&mut sampler);
    sampler
        .track_existing_descendants()
        .map_err(recording::recorder_error)?;
    output::say(&format!(
        "recording pid {} into {} (Ctrl-C to stop)",
        args.pid,
        path.display()
    ));
    let end = args.duration.map(|d| start + d);
    let failure = sample(
        &mut sampler,
        &mut waiter,
        start,
        args.sampling.interval,
        end,
    )
    .err();
    let finished = match failure {
        None => sampler.finish(&Finish::default()),
        Some(e) => {
            drop(sampler.abandon());
            Err(e)
        }
    };
    let write_failed = match finished {
        Ok(_) => None,
        Err(e) => {
            let t = start.elapsed().as_secs_f64();
            let full = if e.is_disk_full() {
                " (the disk is full)"
            } else {
                ""
            };
            output::message(
                "error",
                &format!(
                    "the recording stopped at {t:.2} s: {e}{full}; what was recorded until then is kept in {}",
                    path.display()
                ),
            );
            Some(recording::recorder_error(e))
        }
    };
    let (_, model) = recording::open(&path)?;
    let summary = if args.json {
        Summary::Off
    } else {
        Summary::Stdout
    };
    emit(&model, global, args.json, summary, &mut outputs)?;
    match write_failed {
        // The report of what was kept is printed and the failure was said: the exit code still
        // tells scripts the recording is incomplete.
        Some(e) => Err(CliError::new(e.code, "")),
        None => Ok(Code::Ok.into()),
    }
}

/// Ticks until a stop signal, the end of the tree or `end`.
fn sample(
    sampler: &mut Sampler,
    waiter: &mut Waiter,
    start: Instant,
    interval: Duration,
    end: Option<Instant>,
) -> memlens_record::Result<()> {
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
