//! `memlens census`: objects by type, read from outside; `--growth` shows what grew.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use memlens_cpython::{Census, TypeCount};
use memlens_ledger::units::format_bytes;

use crate::exit::{CliError, CliResult, Code};
use crate::output::{print_json, write_error, Global};
use crate::python_view::PythonVersion;
use crate::python_view::{attach, cli_error, mode};
use memlens_report::escape::terminal as terminal_safe;

/// Arguments of `memlens census`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process.
    pub pid: u32,
    /// Types to show (0 for all).
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Take two censuses this far apart (e.g. `10s`, `500ms`, `2m`) and show the types that
    /// grew, like objgraph.show_growth() but from outside.
    #[arg(long, value_parser = parse_duration)]
    pub growth: Option<Duration>,
    /// Read without stopping the target (figures may be inexact).
    #[arg(long)]
    pub nonblocking: bool,
}

/// Parses `500ms`, `10s`, `2m`, `1h` or a plain number of seconds, from 1ms to 24h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::flags::growth(s)
}

#[derive(Serialize)]
struct Report<'a> {
    python: PythonVersion,
    objects: u64,
    bytes: u64,
    types: &'a [TypeCount],
    #[serde(skip_serializing_if = "Option::is_none")]
    growth: Option<Vec<Growth>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    inexact: bool,
}

/// A type that grew between two censuses.
#[derive(Debug, Serialize)]
struct Growth {
    #[serde(rename = "type")]
    type_name: String,
    count: u64,
    delta: i64,
    bytes: u64,
    bytes_delta: i64,
}

fn growth(before: &Census, after: &Census) -> Vec<Growth> {
    let old: HashMap<&str, &TypeCount> = before
        .types
        .iter()
        .map(|t| (t.type_name.as_str(), t))
        .collect();
    let mut out: Vec<Growth> = after
        .types
        .iter()
        .filter_map(|t| {
            let (c0, b0) = old
                .get(t.type_name.as_str())
                .map_or((0, 0), |o| (o.count, o.bytes));
            (t.count > c0).then(|| Growth {
                type_name: t.type_name.clone(),
                count: t.count,
                delta: t.count as i64 - c0 as i64,
                bytes: t.bytes,
                bytes_delta: t.bytes as i64 - b0 as i64,
            })
        })
        .collect();
    out.sort_by(|a, b| b.delta.cmp(&a.delta).then(a.type_name.cmp(&b.type_name)));
    out
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let session = attach(args.pid)?;
    let read_mode = mode(args.nonblocking);
    let take = || {
        session
            .census(read_mode)
            .map_err(|e| cli_error(args.pid, e))
    };
    let (first, stats) = take()?;
    let (census, grown, stats) = match args.growth {
        Some(d) => {
            std::thread::sleep(d);
            let (second, stats2) = take()?;
            let g = growth(&first, &second);
            (second, Some(g), stats2)
        }
        None => (first, None, stats),
    };
    let top = if args.top == 0 {
        census.types.len()
    } else {
        args.top.min(census.types.len())
    };
    let version = session.interpreter.version.to_string();
    if args.json {
        print_json(&Report {
            python: PythonVersion { version },
            objects: census.objects,
            bytes: census.bytes,
            types: &census.types[..top],
            growth: grown.map(|mut g| {
                if args.top != 0 {
                    g.truncate(args.top);
                }
                g
            }),
            inexact: args.nonblocking,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let size = |b: u64| {
        if global.bytes {
            b.to_string()
        } else {
            format_bytes(b)
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let how = match stats.paused {
        Some(p) => format!(
            "target paused {:.1} ms, {:.0} ms in all",
            p.as_secs_f64() * 1e3,
            stats.elapsed.as_secs_f64() * 1e3
        ),
        None => "read without stopping the target: figures may be inexact".into(),
    };
    writeln!(
        out,
        "Process {} (Python {version}): {} objects, {} ({how})",
        args.pid,
        census.objects,
        size(census.bytes)
    )
    .map_err(write_error)?;
    match grown {
        Some(g) => {
            writeln!(out, "\n{:<32} {:>12} {:>10}", "type", "count", "growth")
                .map_err(write_error)?;
            if g.is_empty() {
                writeln!(out, "(no type grew)").map_err(write_error)?;
            }
            for r in g
                .iter()
                .take(if args.top == 0 { usize::MAX } else { args.top })
            {
                writeln!(
                    out,
                    "{:<32} {:>12} {:>+10}",
                    terminal_safe(&r.type_name),
                    r.count,
                    r.delta
                )
                .map_err(write_error)?;
            }
        }
        None => {
            writeln!(out, "\n{:<32} {:>12} {:>12}", "type", "count", "bytes")
                .map_err(write_error)?;
            for t in &census.types[..top] {
                writeln!(
                    out,
                    "{:<32} {:>12} {:>12}",
                    terminal_safe(&t.type_name),
                    t.count,
                    size(t.bytes)
                )
                .map_err(write_error)?;
            }
        }
    }
    if census.objects == 0 {
        return Err(CliError::new(Code::Failure, "the census found no objects"));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
