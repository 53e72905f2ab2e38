//! `memlens record PID`: records a running process tree until Ctrl-C, `--duration`, or until
//! every process of the tree has exited; then prints the summary on stdout. Between ticks it
//! waits on signals and on the exit of each process (pidfds), so it stops at once whatever the
//! interval.

use std::process::ExitCode;
use std::time::Duration;

use memlens_record::supervise::{record_tree, Notice, RecordRequest};

use crate::exit::{CliError, CliResult, Code};
use crate::flags;
use crate::messages;
use crate::output::Global;
use crate::recording::{self, emit, SamplingArgs, Summary};

/// Arguments of `memlens record`.
#[derive(Debug, clap::Args)]
#[command(mut_arg("trace", |a| a.help(super::record_trace::TRACE_HELP)))]
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
    /// `--trace`: the allocation tracer attached to the running program (CPython 3.14+); the
    /// options of `run --trace`, with their own help.
    #[command(flatten)]
    pub tracing: super::run_trace::TraceArgs,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    if let Some(e) = crate::exit::target_state_error(args.pid) {
        return Err(e);
    }
    let mut attached = super::record_trace::attach(args.pid, &args.tracing)?;
    let req = RecordRequest {
        pid: args.pid,
        config: args.sampling.config(),
        python: !args.sampling.no_python,
        duration: args.duration,
        trace: attached.as_ref().map(super::record_trace::Attached::files),
        trace_note: attached
            .as_ref()
            .map(|_| super::record_trace::NOTE.to_string()),
    };
    let mut outputs = None;
    let recorded = record_tree(
        &req,
        |target| {
            outputs = Some(args.sampling.reserve_outputs()?);
            let meta =
                args.sampling
                    .meta(memlens_recording::Mode::Record, &target.command, args.pid);
            args.sampling.create_recording(&target.name, &meta)
        },
        &mut |notice| match notice {
            Notice::Recording { pid, path } => messages::note(&format!(
                "recording pid {pid} into {} (Ctrl-C to stop)",
                path.display()
            )),
            Notice::Stopping { running } => {
                if let Some(a) = attached.as_mut() {
                    super::record_trace::detach(a, running);
                }
            }
            _ => {}
        },
    );
    let outcome = match recorded {
        Ok(o) => o,
        Err(e) => {
            // The recording never started: the tracer is detached before memlens says why.
            if let Some(a) = attached {
                super::record_trace::abandon(a, args.pid);
            }
            return Err(e);
        }
    };
    if let Some(a) = attached {
        super::record_trace::finish(a, outcome.trace.as_ref());
    }
    let write_failed = outcome.failure.map(|(t, e)| {
        let full = if e.is_disk_full() {
            " (the disk is full)"
        } else {
            ""
        };
        messages::error(&format!(
                "the recording stopped at {t:.2} s: {e}{full}; what was recorded until then is kept in {}",
                outcome.path.display()
        ));
        recording::recorder_error(e)
    });
    let (_, model) = recording::open(&outcome.path)?;
    let summary = if args.json {
        Summary::Off
    } else {
        Summary::Stdout
    };
    emit(
        &model,
        global,
        args.json,
        summary,
        &mut outputs.unwrap_or_default(),
    )?;
    match write_failed {
        // The report of what was kept is printed and the failure was said: the exit code still
        // tells scripts the recording is incomplete.
        Some(e) => Err(CliError::new(e.code, "")),
        None => Ok(Code::Ok.into()),
    }
}
