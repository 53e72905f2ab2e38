//! `memlens stacks`: the Python stack of every thread, read from outside.

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;

use crate::exit::CliResult;
use crate::output::{print_json, write_error, Global};
use crate::python_view::PythonVersion;
use crate::python_view::{attach, cli_error, mode};
use memlens_report::escape::terminal as terminal_safe;

/// Arguments of `memlens stacks`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process.
    pub pid: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read without stopping the target (stacks may be inexact).
    #[arg(long)]
    pub nonblocking: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    python: PythonVersion,
    threads: &'a [memlens_cpython::Thread],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    inexact: bool,
}

/// Runs the command.
pub fn run(args: Args, _global: &Global) -> CliResult<ExitCode> {
    let session = attach(args.pid)?;
    let (threads, stats) = session
        .stacks(mode(args.nonblocking))
        .map_err(|e| cli_error(args.pid, e))?;
    let version = session.interpreter.version.to_string();
    if args.json {
        print_json(&Report {
            python: PythonVersion { version },
            threads: &threads,
            inexact: args.nonblocking,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let pause = match stats.paused {
        Some(p) => format!("target paused {:.1} ms", p.as_secs_f64() * 1e3),
        None => "read without stopping the target: stacks may be inexact".into(),
    };
    writeln!(
        out,
        "Process {} (Python {version}): {} threads ({pause})",
        args.pid,
        threads.len()
    )
    .map_err(write_error)?;
    for t in &threads {
        let native = t
            .native_thread_id
            .map_or_else(|| "?".to_string(), |n| n.to_string());
        let name = t
            .name
            .as_ref()
            .map_or_else(String::new, |n| format!(" \"{}\"", terminal_safe(n)));
        writeln!(out, "\nThread {:#x}{name} (native {native})", t.thread_id)
            .map_err(write_error)?;
        if t.frames.is_empty() {
            writeln!(out, "    (no Python frames)").map_err(write_error)?;
        }
        for f in &t.frames {
            let line = f.line.map_or_else(|| "?".to_string(), |n| n.to_string());
            writeln!(
                out,
                "    {} ({}:{line})",
                terminal_safe(&f.function),
                terminal_safe(&f.file)
            )
            .map_err(write_error)?;
        }
        if t.frames_omitted > 0 {
            writeln!(
                out,
                "    ... {} more frames left out (the outermost; {} shown)",
                t.frames_omitted,
                t.frames.len()
            )
            .map_err(write_error)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
