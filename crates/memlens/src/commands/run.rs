//! `memlens run`: runs a program transparently (stdio inherited, signals forwarded, its exit
//! status returned), records its whole process tree, and explains its memory at exit.
//!
//! Output: the program owns stdout, so the text summary goes to stderr; `--json` prints the JSON
//! report on stdout after the program has exited; `--html OUT` writes the page.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Instant;

use memlens_ledger::units::{format_bytes, parse_size};
use memlens_record::cgroup::OwnCgroup;
use memlens_record::launch::{self, Reaped, SpawnError};
use memlens_record::{Finish, RecordingWriter, Sampler};

use crate::exit::{CliError, CliResult, Code};
use crate::output::Global;
use crate::recording::{self, emit, SamplingArgs, Summary};

/// Arguments of `memlens run`.
#[derive(Debug, clap::Args)]
#[command(override_usage = "memlens run [OPTIONS] -- <CMD> [ARGS]...")]
pub struct Args {
    /// Print the JSON report on stdout when the program has exited (instead of the summary on
    /// stderr).
    #[arg(long)]
    pub json: bool,
    /// No summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Fail (exit 7) when the tree's peak exceeds SIZE (e.g. `512M`, `2GiB`).
    #[arg(long, value_name = "SIZE", value_parser = parse_budget)]
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

fn parse_budget(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("`{s}` is not a size (e.g. 512M, 1.5GiB)"))
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let program = args.command[0].clone();
    let rest = &args.command[1..];
    let command_text = args
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let path = args
        .sampling
        .output_path(&recording::program_name(&program));

    let cgroup = if args.no_cgroup {
        Err("disabled with --no-cgroup".to_string())
    } else {
        OwnCgroup::create()
    };
    if let Err(why) = &cgroup {
        log::info!("no memory cgroup for the run: {why}");
    }
    launch::forward_signals();
    launch::become_subreaper();

    let mut meta = args.sampling.meta("run", &command_text, 0);
    match &cgroup {
        Ok(cg) => {
            meta.push(("cgroup_version", cg.version().to_string()));
            meta.push(("cgroup_path", cg.path().to_string()));
        }
        Err(why) => meta.push(("cgroup_error", why.clone())),
    }
    let writer = match RecordingWriter::create(&path, &meta) {
        Ok(w) => w,
        Err(e) => {
            if let Ok(cg) = cgroup {
                cg.remove();
            }
            return Err(recording::recording_error(e));
        }
    };
    let start = Instant::now();
    let pid = match launch::spawn(
        &program,
        rest,
        cgroup.as_ref().ok().map(OwnCgroup::procs_file),
    ) {
        Ok(pid) => pid,
        Err(e) => {
            drop(writer);
            remove_recording(&path);
            if let Ok(cg) = cgroup {
                cg.remove();
            }
            return Err(match e {
                SpawnError::NotFound { .. } => CliError::new(Code::CommandNotFound, e.to_string())
                    .with_hint("check the program name and PATH; `memlens run -- CMD ARGS...`"),
                SpawnError::NotExecutable { .. } => CliError::new(Code::CannotExecute, e.to_string())
                    .with_hint("the file must be an executable program or a script with a #! line and execute permission"),
                SpawnError::Other { .. } => CliError::new(Code::Failure, e.to_string()),
            });
        }
    };
    launch::set_child(pid);

    // The child wrote itself into the cgroup before exec; check it landed there (a program
    // that has already exited has left every cgroup: nothing to check).
    let (cgroup, placement_error) = match cgroup {
        Ok(cg) if cg.contains(pid) || !running(pid) => (Some(cg), None),
        Ok(cg) => {
            let why = format!("the program could not be moved into {}", cg.dir().display());
            log::info!("{why}");
            cg.remove();
            (None, Some(why))
        }
        Err(_) => (None, None),
    };

    // A cgroup whose sampler failed is kept here, to be removed once the program has ended.
    let mut orphan_cgroup = None;
    let mut sampler = match Sampler::new(args.sampling.config(), writer, pid, start, cgroup) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("memlens: warning: recording stopped: {e}; the program keeps running");
            None
        }
    };
    if let Some(s) = sampler.as_mut() {
        args.sampling.attach_python(s);
        s.adopt_children_of(std::process::id());
        let _ = s.set_meta("root_pid", &pid.to_string());
        if let Some(why) = placement_error {
            let _ = s.set_meta("cgroup_error", &why);
        }
    }

    let main = supervise(pid, &mut sampler, &mut orphan_cgroup, &command_text);
    if let Some(cg) = orphan_cgroup {
        cg.remove();
    }

    let status = main.shell_status();
    let finished = sampler.map(|s| {
        s.finish(&Finish {
            exit_code: Some(status),
            exit_signal: main.signal,
        })
    });
    let model = match finished {
        Some(Ok(p)) => match recording::open(&p) {
            Ok((_, m)) => Some(m),
            Err(e) => {
                e.print();
                None
            }
        },
        Some(Err(e)) => {
            eprintln!("memlens: error: cannot finish the recording: {e}");
            None
        }
        None => None,
    };
    let Some(model) = model else {
        if args.max_peak.is_some() {
            return Err(CliError::new(
                Code::Failure,
                "no recording: --max-peak cannot be checked",
            ));
        }
        return Ok(exit_code(status));
    };
    let summary = if args.quiet || args.json {
        Summary::Off
    } else {
        Summary::Stderr
    };
    emit(
        &model,
        global,
        args.json,
        summary,
        args.sampling.html.as_deref(),
    )?;
    if let Some(max) = args.max_peak {
        if model.peak.bytes > max {
            let p = &model.peak;
            eprintln!(
                "memlens: peak {} exceeds --max-peak {} ({}, at {:.2} s{})",
                format_bytes(p.bytes),
                format_bytes(max),
                p.source.name(),
                p.at_seconds,
                match (p.pid, &p.cmdline) {
                    (Some(pid), Some(c)) => format!(
                        ", mostly pid {pid} {}",
                        memlens_report::recording_text::escape_terminal(c)
                    ),
                    _ => String::new(),
                }
            );
            return Ok(Code::BudgetExceeded.into());
        }
    }
    Ok(exit_code(status))
}

/// Samples until the program exits, reaping it and any orphan handed to memlens.
fn supervise(
    pid: u32,
    sampler: &mut Option<Sampler>,
    orphan_cgroup: &mut Option<OwnCgroup>,
    command: &str,
) -> Reaped {
    loop {
        if let Some(s) = sampler.as_mut() {
            if let Err(e) = s.tick() {
                eprintln!("memlens: warning: recording stopped: {e}; the program keeps running");
                *orphan_cgroup = sampler.take().and_then(Sampler::abandon);
            }
        }
        for sig in launch::take_forwarded() {
            if let Some(s) = sampler.as_mut() {
                let _ = s.event(
                    "signal",
                    &format!("{} forwarded to pid {pid}", launch::signal_name(sig)),
                );
            }
        }
        let mut main = None;
        for r in launch::reap() {
            if let Some(s) = sampler.as_mut() {
                let fallback = (r.pid == pid).then_some(command);
                let _ = s.reaped(r.pid, r.max_rss, fallback);
            }
            if r.pid == pid {
                launch::clear_child();
                main = Some(r);
            }
        }
        if let Some(m) = main {
            return m;
        }
        match sampler.as_ref() {
            Some(s) => s.sleep_until_next(),
            None => std::thread::sleep(std::time::Duration::from_millis(10)),
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

fn remove_recording(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}
