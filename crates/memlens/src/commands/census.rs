//! `memlens census`: objects by type, read from outside; `--growth` shows what grew.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use memlens_cpython::census::{Consistency, Method, Unreadable};
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
    /// grew, by bytes and by count, like objgraph.show_growth() but from outside.
    #[arg(long, value_parser = parse_growth)]
    pub growth: Option<Duration>,
    /// Read without stopping the target (figures may be inexact).
    #[arg(long)]
    pub nonblocking: bool,
    /// The most memory memlens may use for the census (e.g. `512M`, `2GiB`); a census that
    /// needs more fails with exit 8. About 2.5% of the heap walked, plus 32 MiB of copies.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory, default_value = "256MiB")]
    pub max_memory: u64,
}

/// `--max-memory`: a size of at least 4 MiB.
fn parse_memory(s: &str) -> Result<u64, String> {
    match memlens_ledger::units::parse_size(s) {
        Some(b) if b >= 4 << 20 => Ok(b),
        Some(_) => Err(format!("`{s}` is too small for a census (at least 4MiB)")),
        None => Err(format!("`{s}` is not a size (e.g. 256M, 1GiB)")),
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h` or a plain number of seconds, from 1ms to 24h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::flags::growth(s)
}

/// `--growth`: a duration above zero (two censuses at the same instant show nothing).
fn parse_growth(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("the growth interval must be longer than 0 (try 10s)".into());
    }
    Ok(d)
}

#[derive(Serialize)]
struct Report<'a> {
    python: PythonVersion,
    objects: u64,
    bytes: u64,
    types: &'a [TypeCount],
    unreadable: Unreadable,
    consistency: Consistency,
    #[serde(skip_serializing_if = "Option::is_none")]
    growth: Option<Grown>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    inexact: bool,
}

/// A type that grew between two censuses, in count or in bytes.
#[derive(Debug, Clone, Serialize)]
struct Growth {
    #[serde(rename = "type")]
    type_name: String,
    count: u64,
    delta: i64,
    bytes: u64,
    bytes_delta: i64,
}

/// The types that grew, ranked two ways.
#[derive(Debug, Serialize)]
struct Grown {
    /// Types whose bytes grew, most bytes first.
    by_bytes: Vec<Growth>,
    /// Types whose count grew, most objects first.
    by_count: Vec<Growth>,
}

fn growth(before: &Census, after: &Census, top: usize) -> Grown {
    let old: HashMap<&str, &TypeCount> = before
        .types
        .iter()
        .map(|t| (t.type_name.as_str(), t))
        .collect();
    let all: Vec<Growth> = after
        .types
        .iter()
        .map(|t| {
            let (c0, b0) = old
                .get(t.type_name.as_str())
                .map_or((0, 0), |o| (o.count, o.bytes));
            Growth {
                type_name: t.type_name.clone(),
                count: t.count,
                delta: t.count as i64 - c0 as i64,
                bytes: t.bytes,
                bytes_delta: t.bytes as i64 - b0 as i64,
            }
        })
        .collect();
    let mut by_bytes: Vec<Growth> = all.iter().filter(|g| g.bytes_delta > 0).cloned().collect();
    by_bytes.sort_by(|a, b| {
        b.bytes_delta
            .cmp(&a.bytes_delta)
            .then(a.type_name.cmp(&b.type_name))
    });
    let mut by_count: Vec<Growth> = all.into_iter().filter(|g| g.delta > 0).collect();
    by_count.sort_by(|a, b| b.delta.cmp(&a.delta).then(a.type_name.cmp(&b.type_name)));
    by_bytes.truncate(top);
    by_count.truncate(top);
    Grown { by_bytes, by_count }
}

/// How the census was read, for the text header.
fn how(c: &Consistency, elapsed: Duration) -> String {
    let ms = |us: u64| us as f64 / 1e3;
    let total = elapsed.as_secs_f64() * 1e3;
    let walks = |n: u32| {
        if n == 1 {
            "1 walk".to_string()
        } else {
            format!("{n} walks")
        }
    };
    match c.method {
        Method::Verified => format!(
            "consistent as of a {:.1} ms pause after {} of the running target, {total:.0} ms in all",
            ms(c.pause_us),
            walks(c.attempts)
        ),
        Method::Paused => format!(
            "walked while stopped: the heap kept changing under {}; target paused {:.1} ms, {total:.0} ms in all",
            walks(c.attempts),
            ms(c.pause_us)
        ),
        Method::Nonblocking => "read without stopping the target: figures may be inexact".into(),
    }
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let session = attach(args.pid)?;
    let read_mode = mode(args.nonblocking);
    let take = || {
        session
            .census_capped(read_mode, args.max_memory)
            .map_err(|e| cli_error(args.pid, e))
    };
    let (first, stats) = take()?;
    let top = if args.top == 0 { usize::MAX } else { args.top };
    let (census, grown, stats) = match args.growth {
        Some(d) => {
            std::thread::sleep(d);
            let (second, stats2) = take()?;
            let g = growth(&first, &second, top);
            (second, Some(g), stats2)
        }
        None => (first, None, stats),
    };
    let shown = top.min(census.types.len());
    let version = session.interpreter.version.to_string();
    if args.json {
        print_json(&Report {
            python: PythonVersion { version },
            objects: census.objects,
            bytes: census.bytes,
            types: &census.types[..shown],
            unreadable: census.unreadable,
            consistency: census.consistency,
            growth: grown,
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
    let signed = |b: i64| {
        let s = size(b.unsigned_abs());
        if b < 0 {
            format!("-{s}")
        } else {
            format!("+{s}")
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        "Process {} (Python {version}): {} objects, {} ({})",
        args.pid,
        census.objects,
        size(census.bytes),
        how(&census.consistency, stats.elapsed)
    )
    .map_err(write_error)?;
    if census.unreadable.objects > 0 {
        writeln!(
            out,
            "{} objects could not be read ({} of reads failed) and are not counted",
            census.unreadable.objects,
            size(census.unreadable.bytes)
        )
        .map_err(write_error)?;
    }
    match grown {
        Some(g) => {
            writeln!(
                out,
                "\ngrown by bytes:\n{:<32} {:>12} {:>12} {:>12} {:>10}",
                "type", "bytes", "growth", "count", "growth"
            )
            .map_err(write_error)?;
            if g.by_bytes.is_empty() {
                writeln!(out, "(no type grew in bytes)").map_err(write_error)?;
            }
            for r in &g.by_bytes {
                writeln!(
                    out,
                    "{:<32} {:>12} {:>12} {:>12} {:>+10}",
                    terminal_safe(&r.type_name),
                    size(r.bytes),
                    signed(r.bytes_delta),
                    r.count,
                    r.delta
                )
                .map_err(write_error)?;
            }
            writeln!(
                out,
                "\ngrown by count:\n{:<32} {:>12} {:>10} {:>12} {:>12}",
                "type", "count", "growth", "bytes", "growth"
            )
            .map_err(write_error)?;
            if g.by_count.is_empty() {
                writeln!(out, "(no type grew in count)").map_err(write_error)?;
            }
            for r in &g.by_count {
                writeln!(
                    out,
                    "{:<32} {:>12} {:>+10} {:>12} {:>12}",
                    terminal_safe(&r.type_name),
                    r.count,
                    r.delta,
                    size(r.bytes),
                    signed(r.bytes_delta)
                )
                .map_err(write_error)?;
            }
        }
        None => {
            writeln!(out, "\n{:<32} {:>12} {:>12}", "type", "count", "bytes")
                .map_err(write_error)?;
            for t in &census.types[..shown] {
                writeln!(
                    out,
                    "{:<32} {:>12} {:>12}{}",
                    terminal_safe(&t.type_name),
                    t.count,
                    size(t.bytes),
                    if t.estimated > 0 { " ~" } else { "" }
                )
                .map_err(write_error)?;
            }
            for t in census.types[..shown]
                .iter()
                .filter(|t| t.data_owned > 0 || t.data_viewed > 0)
            {
                writeln!(
                    out,
                    "{}: data buffers {} owned (inside its bytes), {} viewed (another object's)",
                    terminal_safe(&t.type_name),
                    size(t.data_owned),
                    size(t.data_viewed)
                )
                .map_err(write_error)?;
            }
            if census.types[..shown].iter().any(|t| t.estimated > 0) {
                writeln!(
                    out,
                    "~ estimated: the type defines a __sizeof__ memlens does not model; its \
                     bytes are tp_basicsize + items * tp_itemsize"
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
        assert!(parse_growth("0").is_err() && parse_growth("0ms").is_err());
        assert_eq!(parse_growth("1ms"), Ok(Duration::from_millis(1)));
    }

    fn census(types: &[(&str, u64, u64)]) -> Census {
        Census {
            objects: types.iter().map(|t| t.1).sum(),
            bytes: types.iter().map(|t| t.2).sum(),
            types: types
                .iter()
                .map(|(n, c, b)| TypeCount {
                    type_name: (*n).into(),
                    count: *c,
                    bytes: *b,
                    estimated: 0,
                    data_owned: 0,
                    data_viewed: 0,
                })
                .collect(),
            unreadable: Unreadable::default(),
            consistency: Consistency::default(),
        }
    }

    #[test]
    fn growth_ranks_by_bytes_and_by_count() {
        let before = census(&[("bytearray", 1, 100), ("str", 10, 500), ("int", 5, 140)]);
        let after = census(&[
            ("bytearray", 1, 10_000_100),
            ("str", 30, 1500),
            ("int", 4, 112),
            ("dict", 2, 464),
        ]);
        let g = growth(&before, &after, usize::MAX);
        let names = |v: &[Growth]| v.iter().map(|g| g.type_name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&g.by_bytes), ["bytearray", "str", "dict"]);
        assert_eq!(names(&g.by_count), ["str", "dict"]);
        assert_eq!(g.by_bytes[0].delta, 0);
        assert_eq!(g.by_bytes[0].bytes_delta, 10_000_000);
        let g = growth(&before, &after, 1);
        assert_eq!(names(&g.by_bytes), ["bytearray"]);
        assert_eq!(names(&g.by_count), ["str"]);
    }
}
