//! `memlens diff A B`: what changed between two snapshots (`snapshot --json` files) or two
//! recordings (`.db`: each summarised by its peak ledger and its last ledger).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use memlens_model::diff::{self, Diff, Snapshot, TypeIn};
use memlens_recording::destination::{Kind, PendingFile};
use memlens_recording::Recording;
use memlens_report::{diff_html, diff_text};
use serde::Serialize;

use crate::exit::{CliError, CliResult, Code};
use crate::output::{print_json, write_error, Global};
use crate::recording::output_error;

/// Arguments of `memlens diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The earlier side: a `memlens snapshot --json` file, or a recording (`.db`).
    pub a: PathBuf,
    /// The later side, of the same kind as A.
    pub b: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write the self-contained HTML page here (a new file, or one memlens wrote with
    /// `--force`).
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
    /// Replace an HTML file that memlens itself wrote; other files are never replaced.
    #[arg(long)]
    pub force: bool,
}

/// A snapshot JSON file is read whole; larger than this is refused (memlens bounds its memory).
const MAX_SNAPSHOT_BYTES: u64 = 512 << 20;

/// One compared point: its name and the diff.
#[derive(Debug, Serialize)]
struct Point {
    point: &'static str,
    #[serde(flatten)]
    diff: Diff,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Document<'a> {
    compared: &'static str,
    a: &'a str,
    b: &'a str,
    diffs: Vec<Point>,
}

/// What a file turned out to be.
enum Side {
    Snapshot(Box<Snapshot>),
    Recording {
        peak: Box<Snapshot>,
        end: Box<Snapshot>,
    },
}

/// Runs the command.
pub fn run(args: Args, global: &Global) -> CliResult<ExitCode> {
    let html = reserve_html(args.html.as_deref(), args.force)?;
    let (a, b) = (load(&args.a)?, load(&args.b)?);
    let (compared, points) =
        match (a, b) {
            (Side::Snapshot(a), Side::Snapshot(b)) => (
                "snapshots",
                vec![Point {
                    point: "snapshot",
                    diff: diff::diff(&a, &b),
                }],
            ),
            (Side::Recording { peak: pa, end: ea }, Side::Recording { peak: pb, end: eb }) => (
                "recordings",
                vec![
                    Point {
                        point: "peak",
                        diff: diff::diff(&pa, &pb),
                    },
                    Point {
                        point: "end",
                        diff: diff::diff(&ea, &eb),
                    },
                ],
            ),
            (Side::Snapshot(_), Side::Recording { .. })
            | (Side::Recording { .. }, Side::Snapshot(_)) => return Err(not_comparable(
                "A and B cannot be compared: one is a snapshot (JSON), the other a recording (.db)",
            )),
        };
    let (la, lb) = (args.a.display().to_string(), args.b.display().to_string());
    write_page(html, |w| {
        let page: Vec<_> = points
            .iter()
            .map(|pt| (sides(compared, pt.point, &la, &lb), &pt.diff))
            .collect();
        diff_html::render(
            &page,
            &diff_html::Options {
                bytes: global.bytes,
            },
            w,
        )
    })?;
    if args.json {
        print_json(&Document {
            compared,
            a: &la,
            b: &lb,
            diffs: points,
        })?;
        return Ok(Code::Ok.into());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let opts = diff_text::Options {
        bytes: global.bytes,
    };
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            writeln!(out).map_err(write_error)?;
        }
        diff_text::render(
            &p.diff,
            &sides(compared, p.point, &la, &lb),
            &opts,
            &mut out,
        )
        .map_err(write_error)?;
    }
    out.flush().map_err(write_error)?;
    Ok(Code::Ok.into())
}

fn sides(compared: &str, point: &str, a: &str, b: &str) -> diff_text::Sides {
    let what = match (compared, point) {
        ("recordings", "peak") => "two recordings at their peaks (the ledger nearest each peak)",
        ("recordings", _) => "two recordings at their ends (the last ledger of each)",
        _ => "two snapshots",
    };
    diff_text::Sides {
        what: what.into(),
        a: a.into(),
        b: b.into(),
    }
}

/// Reserves an HTML page's destination before anything is read (the output-file rules of
/// `memlens_recording::destination`: a new file, or with `force` one memlens wrote; never a
/// link, a device, or a file memlens did not write).
pub fn reserve_html(path: Option<&Path>, force: bool) -> CliResult<Option<PendingFile>> {
    path.map(|p| PendingFile::reserve(p, Kind::Html, force))
        .transpose()
        .map_err(output_error)
}

/// Renders into a reserved page and moves it into place (nothing when none was reserved).
pub fn write_page(
    page: Option<PendingFile>,
    render: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> CliResult<()> {
    let Some(mut p) = page else { return Ok(()) };
    let dest = p.path().to_path_buf();
    let fail = |e: std::io::Error| {
        let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
        CliError::new(
            Code::Output,
            format!(
                "cannot write {}: {e}{}",
                dest.display(),
                if full { " (the disk is full)" } else { "" }
            ),
        )
    };
    if let Some(f) = p.file() {
        let mut w = std::io::BufWriter::new(f);
        render(&mut w).map_err(fail)?;
        w.flush().map_err(fail)?;
    }
    let placed = p.commit().map_err(output_error)?;
    crate::messages::note(&format!("wrote {}", placed.display()));
    Ok(())
}

fn not_comparable(msg: impl Into<String>) -> CliError {
    CliError::new(Code::NotComparable, msg)
}

/// Reads a file as a snapshot or a recording, by its first bytes.
fn load(path: &Path) -> CliResult<Side> {
    let shown = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| not_comparable(format!("cannot read {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(not_comparable(format!("{shown} is not a regular file")));
    }
    let mut f = std::fs::File::open(path)
        .map_err(|e| not_comparable(format!("cannot read {shown}: {e}")))?;
    let mut head = [0u8; 16];
    let n = read_up_to(&mut f, &mut head)
        .map_err(|e| not_comparable(format!("cannot read {shown}: {e}")))?;
    if &head[..n] == b"SQLite format 3\0" {
        drop(f);
        return load_recording(path);
    }
    if meta.len() > MAX_SNAPSHOT_BYTES {
        return Err(not_comparable(format!(
            "{shown} is larger than {} MiB: not a snapshot memlens wrote",
            MAX_SNAPSHOT_BYTES >> 20
        )));
    }
    let mut text = head[..n].to_vec();
    f.take(MAX_SNAPSHOT_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| not_comparable(format!("cannot read {shown}: {e}")))?;
    let snap: Snapshot = serde_json::from_slice(&text).map_err(|e| {
        not_comparable(format!(
            "{shown} is not a memlens snapshot (memlens snapshot --json) nor a recording: {e}"
        ))
    })?;
    Ok(Side::Snapshot(Box::new(snap)))
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A recording's peak ledger and last ledger, each with the census of each process taken at
/// or before it.
fn load_recording(path: &Path) -> CliResult<Side> {
    let (rec, model) = crate::recording::open(path)?;
    let shown = path.display();
    let peak_json = model.ledger_at_peak.as_ref().map(|l| (l.t, l.json.clone()));
    let last = rec.ledgers.iter().rev().find(|l| l.has_json);
    let (Some((peak_t, peak_json)), Some(last)) = (peak_json, last) else {
        return Err(CliError::new(
            Code::BadRecording,
            format!("{shown} holds no ledger of the tree: there is nothing to compare"),
        ));
    };
    let end_json = rec
        .ledger_json(last.id)
        .map_err(crate::recording::recording_error)?;
    let parse = |v: serde_json::Value, t: f64| -> CliResult<Box<Snapshot>> {
        let mut s: Snapshot = serde_json::from_value(v).map_err(|e| {
            CliError::new(
                Code::BadRecording,
                format!("{shown}: a stored ledger does not read back: {e}"),
            )
        })?;
        match census_at(&rec, t) {
            Some(types) => {
                s.census = Some(types);
                s.census_top_only = true;
            }
            None => {
                s.census_absent =
                    Some("no census at or before this point (record with --census-every)".into())
            }
        }
        Ok(Box::new(s))
    };
    Ok(Side::Recording {
        peak: parse(peak_json, peak_t)?,
        end: parse(end_json, last.t)?,
    })
}

/// The tree's census at `t`: each process's last census taken at or before `t`, summed by
/// type; `None` when no process had one yet.
fn census_at(rec: &Recording, t: f64) -> Option<Vec<TypeIn>> {
    let mut last: std::collections::BTreeMap<i64, &[memlens_recording::CensusEntry]> =
        std::collections::BTreeMap::new();
    for r in rec
        .python
        .iter()
        .filter(|r| r.t <= t && !r.sample.census.is_empty())
    {
        last.insert(r.process, &r.sample.census);
    }
    if last.is_empty() {
        return None;
    }
    Some(
        last.values()
            .flat_map(|types| types.iter())
            .map(|e| TypeIn {
                type_name: e.type_name.clone(),
                count: e.count,
                bytes: e.bytes,
            })
            .collect(),
    )
}
