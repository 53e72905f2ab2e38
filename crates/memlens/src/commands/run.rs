//! `memlens run`: runs a program transparently (stdio inherited, signals forwarded, its exit
//! status returned), records its whole process tree, and explains its memory at exit.
//!
//! Output: the program owns stdout, so the text summary goes to stderr; `--json` prints the JSON
//! report on stdout after the program has exited, `--json-out FILE` writes it to a file;
//! `--html OUT` writes the page. Every output file is checked (and the recording created) before
//! the program runs: a destination memlens may not write is exit 8 with the program not run.

use std::ffi::OsString;
use std::process::ExitCode;

use memlens_ledger::units::SizeStyle;
use memlens_record::supervise::{run_program, CgroupError, Notice, OwnCgroup, RunRequest, Stopped};
use memlens_report::Model;

use crate::exit::{CliResult, Code};
use crate::flags;
use crate::messages;
use crate::output::Global;
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
    /// Allocation tracing (`--trace`).
    #[command(flatten)]
    pub tracing: super::run_trace::TraceArgs,
    /// The program and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let command_text = args
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let trace = super::run_trace::prepare(&args.tracing)?;
    let req = RunRequest {
        command: &args.command,
        command_text: &command_text,
        config: args.sampling.config(),
        python: !args.sampling.no_python,
        cgroup: !args.no_cgroup,
        env: trace.as_ref().map(|t| t.env.clone()).unwrap_or_default(),
        trace: trace.as_ref().map(|t| t.dir.files().clone()),
    };
    let mut outputs = None;
    let outcome = run_program(
        &req,
        |cgroup| {
            outputs = Some(args.sampling.reserve_outputs()?);
            let meta = recording_meta(&args.sampling, &command_text, cgroup);
            let name = recording::program_name(&args.command[0]);
            args.sampling.create_recording(&name, &meta)
        },
        &mut say_stopped,
    );
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            super::run_trace::clean_up(trace);
            return Err(e);
        }
    };
    super::run_trace::finish(trace, outcome.trace.as_ref());
    let mut outputs = outputs.unwrap_or_default();
    let status = outcome.exit.shell_status();
    // With nothing to print or check (`-q`, no report file), the recording is not read back.
    let wanted = !args.quiet || args.json || args.max_peak.is_some() || outputs.any();
    let mut stopped = outcome.stopped;
    let model = match wanted.then(|| recording::open(&outcome.path)) {
        Some(Ok((_, m))) => Some(m),
        Some(Err(e)) => {
            e.print();
            stopped = stopped.or(Some(Stopped::Failed));
            None
        }
        None => None,
    };
    report(&args, global, model.as_ref(), stopped, &mut outputs, status)
}

/// The metadata of a run's recording.
fn recording_meta(
    sampling: &SamplingArgs,
    command: &str,
    cgroup: Result<&OwnCgroup, &CgroupError>,
) -> memlens_recording::Meta {
    let mut meta = sampling.meta(memlens_recording::Mode::Run, command, 0);
    match cgroup {
        Ok(cg) => {
            meta.cgroup_version = Some(cg.version());
            meta.cgroup_path = Some(cg.path().to_string());
        }
        Err(why) => meta.cgroup_error = Some(why.to_string()),
    }
    meta
}

/// Says that the recording stopped; the program keeps running.
fn say_stopped(notice: Notice<'_>) {
    let Notice::Stopped { at, error, path } = notice else {
        return;
    };
    let kept = format!(
        "what was recorded until then is kept in {} (`memlens report` reads it); the program keeps running",
        path.display()
    );
    if error.is_disk_full() {
        messages::error(&format!(
            "the recording stopped at {at:.2} s: the disk is full ({error}); {kept}"
        ));
    } else {
        messages::error(&format!(
            "the recording stopped at {at:.2} s: {error}; {kept}"
        ));
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
        messages::error(&format!(
            "peak {} exceeds --max-peak {} ({}, at {:.2} s{})",
            SizeStyle::exact(global.bytes).size(p.bytes),
            SizeStyle::exact(global.bytes).size(max),
            p.source.name(),
            p.at_seconds,
            match (p.pid, &p.cmdline) {
                (Some(pid), Some(c)) => format!(", mostly pid {pid} {c}"),
                _ => String::new(),
            }
        ));
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
            messages::error("--max-peak cannot be checked: the recording is incomplete");
            Ok(code.into())
        }
    }
}

fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status.clamp(0, 255)).unwrap_or(1))
}
