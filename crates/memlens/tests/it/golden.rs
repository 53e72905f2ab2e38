//! Golden files: every text, JSON and HTML rendering that can be produced without a live
//! process, compared byte for byte with `tests/golden/*` (STYLE habit 10). The inputs are fixed:
//! recordings made by real runs and checked in (`tests/golden/fixtures/*.db`, described in
//! `tests/golden/README.md`), and the procfs files of a captured process
//! (`memlens-procfs/tests/fixtures`). No renderer iterates a hash map, and memlens runs here with
//! its clock fixed (`MEMLENS_FIXED_CLOCK`, [`golden_memlens`]): a time printed through
//! `memlens_model::clock` is the fixed one, and a renderer that reads the system's clock
//! directly fails here.
//!
//! After an intended change of output: `MEMLENS_BLESS=1 cargo test -p memlens --test it golden`
//! rewrites the files; review them with `git diff` before committing.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use memlens_ledger::distribution::DistributionResolver;
use memlens_ledger::{build, Hints, ProcessParts, TreeLedger};
use memlens_procfs::{smaps, status, syscall};

use crate::support::{memlens, stderr, TempDir};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub(crate) fn fixtures() -> PathBuf {
    golden_dir().join("fixtures")
}

/// Compares `actual` with the golden file `name`, or writes it under `MEMLENS_BLESS=1`.
/// A mismatch fails with the lines that differ.
pub(crate) fn check(name: &str, actual: &[u8]) {
    let path = golden_dir().join(name);
    if std::env::var_os("MEMLENS_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with MEMLENS_BLESS=1 cargo test -p memlens --test it golden",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "{name} differs from the golden file (MEMLENS_BLESS=1 rewrites it if the change is \
             intended):\n{}",
            diff(
                &String::from_utf8_lossy(&expected),
                &String::from_utf8_lossy(actual)
            )
        );
    }
}

/// The lines between the common head and tail of two texts, `-` expected and `+` actual, with
/// two lines of context (a whole-file LCS is not needed to see what changed).
fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.split_inclusive('\n').collect();
    let a: Vec<&str> = actual.split_inclusive('\n').collect();
    let head = e.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let tail = e[head..]
        .iter()
        .rev()
        .zip(a[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = format!("@@ line {} @@\n", head + 1);
    let context = |l: &str| format!("  {}", l.trim_end_matches('\n'));
    for l in &e[head.saturating_sub(2)..head] {
        out += &context(l);
        out.push('\n');
    }
    let shown = |lines: &[&str], sign: char, out: &mut String| {
        for l in lines.iter().take(40) {
            out.push(sign);
            out.push(' ');
            out.push_str(l.trim_end_matches('\n'));
            out.push('\n');
        }
        if lines.len() > 40 {
            *out += &format!("{sign} ... {} more lines\n", lines.len() - 40);
        }
    };
    shown(&e[head..e.len() - tail], '-', &mut out);
    shown(&a[head..a.len() - tail], '+', &mut out);
    for l in e[e.len() - tail..].iter().take(2) {
        out += &context(l);
        out.push('\n');
    }
    out
}

/// memlens with its clock fixed, as every golden output is made.
fn golden_memlens() -> std::process::Command {
    let mut c = memlens();
    c.env("MEMLENS_FIXED_CLOCK", "1700000000");
    c
}

/// `memlens report ARGS FIXTURE` run in the fixtures' directory (so the recording's name in
/// the output is the same on every checkout); stdout.
pub(crate) fn report(fixture: &str, args: &[&str]) -> Vec<u8> {
    let out = golden_memlens()
        .arg("report")
        .args(args)
        .arg(fixture)
        .current_dir(fixtures())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report {args:?} {fixture}: {}",
        stderr(&out)
    );
    out.stdout
}

/// The HTML report of a fixture, written into a temporary directory.
fn report_html(fixture: &str) -> Vec<u8> {
    let dir = TempDir::new("golden-html");
    let page = dir.join("report.html");
    let out = golden_memlens()
        .args(["report", "--html"])
        .arg(&page)
        .arg(fixture)
        .current_dir(fixtures())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report --html {fixture}: {}",
        stderr(&out)
    );
    std::fs::read(&page).unwrap()
}

#[test]
fn report_text_of_recordings() {
    for fixture in ["run", "record"] {
        let db = format!("{fixture}.db");
        check(&format!("report-{fixture}.txt"), &report(&db, &[]));
        check(
            &format!("report-{fixture}-bytes.txt"),
            &report(&db, &["--bytes"]),
        );
    }
}

#[test]
fn report_json_of_recordings() {
    for fixture in ["run", "record"] {
        let db = format!("{fixture}.db");
        check(&format!("report-{fixture}.json"), &report(&db, &["--json"]));
    }
}

#[test]
fn report_html_of_recordings() {
    for fixture in ["run", "record"] {
        check(
            &format!("report-{fixture}.html"),
            &report_html(&format!("{fixture}.db")),
        );
    }
}

#[test]
fn reporting_leaves_the_fixture_recordings_untouched() {
    // The golden reports read the checked-in recordings: reading must not write them (nor
    // leave -journal, -wal or -shm files beside them).
    let before: Vec<(String, Vec<u8>)> = fixture_files();
    for fixture in ["run.db", "record.db"] {
        report(fixture, &["--json"]);
    }
    assert_eq!(fixture_files(), before);
}

fn fixture_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn procfs_fixture(name: &str) -> Vec<u8> {
    let p: &Path = env!("CARGO_MANIFEST_DIR").as_ref();
    let p = p.join("../memlens-procfs/tests/fixtures").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The parts of the captured process `python_threads` (4 threads, an 8 MiB bytearray), as
/// `snapshot` reads them, under `pid` and `ppid` with `cmdline`.
fn fixture_parts(pid: u32, ppid: u32, cmdline: &[u8]) -> ProcessParts {
    let st = status::parse(&procfs_fixture("python_threads.status")).unwrap();
    let stack_pointers = procfs_fixture("python_threads.task_syscall")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| syscall::parse(l).unwrap().stack_pointer())
        .collect();
    ProcessParts {
        pid,
        ppid,
        name: st.name.clone(),
        cmdline: cmdline.to_vec(),
        exe: FIXTURE_EXE.to_vec(),
        threads: st.threads,
        vm_hwm: st.vm_hwm,
        mappings: smaps::parse(&procfs_fixture("python_threads.smaps")).unwrap(),
        stack_pointers,
    }
}

const FIXTURE_EXE: &[u8] = b"/root/.pyenv/versions/3.11.7/bin/python3.11";
const FIXTURE_CMDLINE: &[u8] = b"python3\0-c\0import threading <b>&\x1b[31m";

/// The ledgers of `parts`, assembled as `snapshot` assembles a tree rooted at the first.
fn assembled(parts: &[ProcessParts]) -> TreeLedger {
    let ledgers = parts
        .iter()
        .map(|p| {
            build(
                p,
                &Hints::default(),
                &mut DistributionResolver::new("/nonexistent"),
            )
        })
        .collect();
    memlens_ledger::tree::assemble(parts[0].pid, ledgers, None)
}

/// The ledger of the captured process alone, as `snapshot PID` shows it.
pub(crate) fn fixture_ledger() -> TreeLedger {
    let st = status::parse(&procfs_fixture("python_threads.status")).unwrap();
    assembled(&[fixture_parts(st.tgid, st.ppid, FIXTURE_CMDLINE)])
}

/// A tree as `snapshot --tree` shows it, made of the one captured process: the process and
/// two workers with its very mappings (so each figure is the captured one; the shared pages'
/// PSS is counted once per copy, as no real fork would show it: the input is constructed, the
/// rendering is what is pinned).
fn fixture_tree_parts() -> Vec<ProcessParts> {
    let st = status::parse(&procfs_fixture("python_threads.status")).unwrap();
    vec![
        fixture_parts(st.tgid, st.ppid, FIXTURE_CMDLINE),
        fixture_parts(st.tgid + 1, st.tgid, b"python3\0worker.py\0--id=1"),
        fixture_parts(st.tgid + 2, st.tgid, b"python3\0worker.py\0--id=2"),
    ]
}

#[test]
fn ledger_text_and_json_of_a_captured_process() {
    let tree = fixture_ledger();
    for (name, bytes) in [("ledger.txt", false), ("ledger-bytes.txt", true)] {
        let mut text = Vec::new();
        let opts = memlens_report::ledger_text::Options {
            bytes,
            ..Default::default()
        };
        memlens_report::ledger_text::render_snapshot(&tree, &opts, &mut text).unwrap();
        check(name, &text);
    }
    let mut json = serde_json::to_vec_pretty(&tree).unwrap();
    json.push(b'\n');
    check("ledger.json", &json);
}

#[test]
fn the_diff_shows_the_lines_that_changed() {
    let d = diff("a\nb\nc\nd\n", "a\nb\nX\nd\n");
    assert_eq!(d, "@@ line 3 @@\n  a\n  b\n- c\n+ X\n  d\n");
}

#[test]
fn tree_text_of_a_captured_process_and_two_copies() {
    let tree = assembled(&fixture_tree_parts());
    let mut text = Vec::new();
    memlens_report::ledger_text::render_snapshot(&tree, &Default::default(), &mut text).unwrap();
    check("tree.txt", &text);
}

/// The `ps` rows of `parts` (`smaps_rollup` and `maps` of the captured process, the Python
/// found as `ps` finds it), grouped as `ps` groups them.
fn fixture_ps(parts: &[ProcessParts], unreadable: u32) -> memlens_ledger::host::PsReport {
    use memlens_ledger::process::{cmdline_string, detect_python, AmountsOf};
    let rollup =
        memlens_procfs::smaps::parse_rollup(&procfs_fixture("python_threads.smaps_rollup"))
            .unwrap();
    let maps = memlens_procfs::maps::parse(&procfs_fixture("python_threads.maps")).unwrap();
    let rows = parts
        .iter()
        .map(|p| memlens_ledger::host::PsProcess {
            pid: p.pid,
            ppid: p.ppid,
            name: String::from_utf8_lossy(&p.name).into_owned(),
            cmdline: cmdline_string(&p.cmdline),
            python: detect_python(&p.exe, maps.iter().map(|m| m.path.as_slice())),
            threads: p.threads,
            vm_hwm: p.vm_hwm,
            totals: memlens_ledger::Amounts::of(&rollup),
            depth: 0,
            sharing: None,
        })
        .collect();
    memlens_ledger::host::group(rows, false, unreadable)
}

#[test]
fn ps_text_and_json_of_a_captured_process_and_two_copies() {
    let report = fixture_ps(&fixture_tree_parts(), 1);
    for (name, bytes) in [("ps.txt", false), ("ps-bytes.txt", true)] {
        let mut text = Vec::new();
        let opts = memlens_report::ledger_text::Options {
            bytes,
            ..Default::default()
        };
        memlens_report::ledger_text::render_ps(&report, &opts, &mut text).unwrap();
        check(name, &text);
    }
    // As `ps --json` prints it.
    let mut json = serde_json::to_vec_pretty(&report).unwrap();
    json.push(b'\n');
    check("ps.json", &json);
}
