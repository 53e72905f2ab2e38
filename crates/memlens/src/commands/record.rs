//! `memlens record PID`: records a running process tree until Ctrl-C, `--duration`, or until
//! every process of the tree has exited; then prints the summary on stdout.

use std::process::ExitCode;
use std::time::Instant;

use memlens_procfs::Process;
use memlens_record::launch;
use memlens_record::{Finish, RecordingWriter, Sampler};

use crate::exit::{CliResult, Code};
use crate::output::Global;
use crate::recording::{self, emit, parse_duration, SamplingArgs, Summary};

/// Arguments of `memlens record`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process whose tree to record.
    pub pid: u32,
    /// Stop after this long (e.g. `30s`, `5m`); otherwise at Ctrl-C or when the tree is gone.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Print the JSON report on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Sampling and output options.
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let proc = Process::new(args.pid)?;
    let name = proc
        .status()
        .map(|s| String::from_utf8_lossy(&s.name).into_owned())?;
    let command = memlens_ledger::process::cmdline_string(&proc.cmdline().unwrap_or_default());
    let path = args.sampling.output_path(&name);
    launch::stop_on_signals();
    let meta = args.sampling.meta("record", &command, args.pid);
    let writer = RecordingWriter::create(&path, &meta).map_err(recording::recording_error)?;
    let start = Instant::now();
    let mut sampler = Sampler::new(args.sampling.config(), writer, args.pid, start, None)
        .map_err(recording::recording_error)?;
    args.sampling.attach_python(&mut sampler);
    sampler
        .track_existing_descendants()
        .map_err(recording::recording_error)?;
    eprintln!(
        "memlens: recording pid {} into {} (Ctrl-C to stop)",
        args.pid,
        path.display()
    );
    loop {
        sampler.tick().map_err(recording::recording_error)?;
        if launch::stop_requested() || sampler.live_count() == 0 {
            break;
        }
        if args.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        sampler.sleep_until_next();
    }
    let path = sampler
        .finish(&Finish::default())
        .map_err(recording::recording_error)?;
    let (_, model) = recording::open(&path)?;
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
        args.sampling.html.as_deref(),
    )?;
    Ok(Code::Ok.into())
}
