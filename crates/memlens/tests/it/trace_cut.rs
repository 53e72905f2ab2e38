//! A peak block of stacks cut short, for real: the traced program (trace_cut.py) limits its own
//! file size so that its tracer's write of a new peak's block stops inside the block (as a
//! tracer killed while writing it leaves it), and says where. The report must then show the
//! last whole block as the peak, say that its breakdown is complete (JSON `breakdown`), and
//! give apart the higher figure the snapshots saw (`highest_seen_bytes`), in JSON, text and
//! HTML; with memlens SIGKILLed right after importing the cut write, and with a memlens that
//! finishes (which counts the cut block and says so).
//!
//! Ground truth: the sizes the program made by construction (`sys.getsizeof` of its blocks:
//! N held at N lines of their own, then PAD freed and BIG made: a new high BIG - PAD above
//! the one before), and the program's own reading of its trace file (where the cut lies, and
//! the `peak_live_bytes` written with it).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde_json::Value;

use crate::support::{kill, memlens, report_json, u, TempDir};
use crate::support_trace::{markers, stacks_bytes, LiveRun};

/// Held blocks, each at its own line: the peak block has at least this many lines.
const N: u64 = 4000;
const SIZE: u64 = 4096;
const PAD: u64 = 1 << 20;
const BIG: u64 = 64 << 20;
/// Bytes the tracer may still write after the limit is set: less than the block of N lines
/// (about 40 bytes each), more than the lines before it.
const MARGIN: u64 = 48 << 10;

/// What trace_cut.py printed on its `CUT` line.
#[derive(Debug)]
struct Cut {
    /// Where the cut block's `peak` line starts.
    offset: u64,
    /// Its `sites=` and the `peaksite` lines written whole.
    want: u64,
    lines: u64,
    /// `peak_live_bytes` of the snapshot written with it.
    peak_live: u64,
    /// `sys.getsizeof` sums.
    hold: u64,
    big: u64,
    pad: u64,
}

/// Starts `memlens -vvv run --trace=all` of trace_cut.py (with `--json-out` when given).
fn start(rec: &Path, tmp: &Path, json_out: Option<&Path>) -> LiveRun {
    let mut extra: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(j) = json_out {
        extra.push("--json-out".as_ref());
        extra.push(j.as_os_str());
    }
    let args = [N, SIZE, PAD, BIG, MARGIN].map(|v| v.to_string());
    LiveRun::start(rec, tmp, &extra, "trace_cut.py", &args)
}

/// Waits for the program's `CUT` line.
fn cut(run: &mut LiveRun) -> Cut {
    let line = run.line();
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 8 || f[0] != "CUT" {
        while run.next_said().is_some() {}
        panic!("expected CUT, got {line:?}; memlens said {:?}", run.said);
    }
    let n: Vec<u64> = f[1..]
        .iter()
        .map(|v| v.parse().expect("a number"))
        .collect();
    Cut {
        offset: n[0],
        want: n[1],
        lines: n[2],
        peak_live: n[3],
        hold: n[4],
        big: n[5],
        pad: n[6],
    }
}

/// The line of a `# @NAME` marker in trace_cut.py.
fn marker(name: &str) -> u64 {
    *markers("trace_cut.py")
        .get(name)
        .unwrap_or_else(|| panic!("no @{name} in trace_cut.py"))
}

/// Bytes of rows of `by_line` whose file ends with `file` and whose line passes `line`.
fn bytes_at(rows: &Value, file: &str, line: impl Fn(u64) -> bool) -> u64 {
    rows.as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["file"].as_str().is_some_and(|f| f.ends_with(file)) && line(u(&r["line"])))
        .map(|r| u(&r["bytes"]))
        .sum()
}

fn within(what: &str, got: u64, want: u64, pct: f64) {
    let err = (got as f64 - want as f64).abs() / want as f64 * 100.0;
    eprintln!("{what}: {got} vs {want} by construction ({err:.3}%)");
    assert!(err <= pct, "{what}: {got} vs {want} ({err:.3}% > {pct}%)");
}

/// The checks of `allocations` common to both runs: the peak shown is the last whole block
/// (the N held lines and PAD in it, BIG not), complete; the highest seen is the cut write's
/// snapshot, BIG - PAD above it.
fn check_allocations(a: &Value, cut: &Cut) {
    assert_eq!(a["mode"], "all", "{a}");
    let p = &a["at_peak"];
    assert_eq!(p["breakdown"], "complete", "{p}");
    let stacks = stacks_bytes(p);
    assert_eq!(stacks, u(&p["bytes"]), "the stacks hold the whole peak");
    let by_line = &p["by_line"];
    within(
        "the N held lines at the peak shown",
        bytes_at(by_line, "<cut-lines>", |_| true),
        cut.hold,
        0.5,
    );
    within(
        "PAD at the peak shown",
        bytes_at(by_line, "trace_cut.py", |l| l == marker("PAD")),
        cut.pad,
        0.5,
    );
    assert_eq!(
        bytes_at(by_line, "trace_cut.py", |l| l == marker("BIG")),
        0,
        "BIG was made after the last whole block"
    );
    let (bytes, seen) = (u(&p["bytes"]), u(&p["highest_seen_bytes"]));
    assert_eq!(
        seen, cut.peak_live,
        "the highest seen is the cut write's peak_live_bytes"
    );
    within(
        "the highest seen above the peak shown",
        seen - bytes,
        cut.big - cut.pad,
        0.5,
    );
    assert!(
        p["highest_seen_t"].as_f64().unwrap() > p["t"].as_f64().unwrap(),
        "{p}"
    );
    assert!(u(&a["lost"]["unfinished_traces"]) >= 1, "{}", a["lost"]);
}

/// The text and HTML reports say the higher figure, as a lower bound (no end line).
fn check_reports(rec: &Path, dir: &Path) {
    let out = memlens().arg("report").arg(rec).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let w = text
        .lines()
        .find(|l| l.starts_with("warning: traced live bytes reached at least "))
        .unwrap_or_else(|| panic!("no warning of the higher peak:\n{text}"));
    assert!(
        w.contains("a lower bound of the run's traced peak")
            && w.contains("exactly what was live then"),
        "{w}"
    );
    assert!(!text.contains("no breakdown by line or stack"), "{text}");
    let html = dir.join("report.html");
    let out = memlens()
        .arg("report")
        .arg(rec)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<p class=\"warning\">warning: traced live bytes reached at least "),
        "no warning in the HTML report"
    );
}

#[test]
fn a_sigkilled_run_shows_the_last_whole_block_and_the_higher_peak_seen() {
    let dir = TempDir::new("trace-cut-kill");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let rec = dir.join("run.db");
    let mut run = start(&rec, &tmp, None);
    let cut = cut(&mut run);
    eprintln!("{cut:?}");
    assert!(cut.lines < cut.want && cut.want >= N, "{cut:?}");
    // The cut write's snapshot and sites are committed (they lie before the block's peak
    // line); the block is held back, unfinished.
    run.imported(cut.offset);
    kill(run.child.id(), "-KILL");
    let (status, _) = run.wait();
    assert_eq!(status.code(), None, "killed");
    let j = report_json(&rec);
    check_allocations(&j["allocations"], &cut);
    check_reports(&rec, &dir.0);
}

#[test]
fn a_finished_run_counts_the_cut_block_and_says_so() {
    let dir = TempDir::new("trace-cut-end");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let rec = dir.join("run.db");
    let json = dir.join("run.json");
    let mut run = start(&rec, &tmp, Some(&json));
    let cut = cut(&mut run);
    run.go();
    let (status, said) = run.wait();
    assert_eq!(status.code(), Some(0), "{said:?}");
    assert!(
        said.iter()
            .any(|l| l.contains("peak_cut: 1") && l.contains("its newest peak block was cut")),
        "the cut block is counted and said: {said:?}"
    );
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_allocations(&j["allocations"], &cut);
    // `report --json` of the recording says the same.
    assert_eq!(report_json(&rec)["allocations"], j["allocations"]);
}
