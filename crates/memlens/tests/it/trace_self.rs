//! The tracer's own memory (`tracer_bytes`): under `run --trace=all` its pointer table, filter,
//! queue and stack tables are resident in the program's anonymous memory, which the ledger
//! counts as `native-heap`. The report must set that part apart: `reconciliation[].tracer_bytes`
//! against the kernel's own figure, the program's anonymous memory traced less the same program
//! run plain (smaps_rollup `Anonymous`, read at the same point of the program). That figure is
//! also bounded against the live heap, known by construction: the tracer's table grows with
//! the live blocks instead of making a page resident per block.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::preload::preload_so;
use crate::support::{
    memlens, pythons, report_json, rollup_field, stderr, target_script, u, TempDir,
};

const N: u64 = 60_000;
const SIZE: u64 = 1000;

/// Waits for `READY <pid>` on the child's stdout; the pid.
fn ready(child: &mut Child) -> u32 {
    let out = child.stdout.as_mut().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("reads READY");
    let pid = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("expected READY <pid>, got {line:?}"));
    pid
}

/// Anonymous memory of the program held at READY, then lets it exit.
fn anonymous_at_ready(mut child: Child) -> (u32, u64, Child) {
    let pid = ready(&mut child);
    let anon = rollup_field(pid, "Anonymous");
    child
        .stdin
        .as_mut()
        .expect("piped stdin")
        .write_all(b"\n")
        .expect("releases the program");
    (pid, anon, child)
}

/// `tracer_bytes` of the recording's end line (one traced process).
fn end_tracer_bytes(rec: &Path) -> u64 {
    let o = Command::new(crate::support::python())
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print(c.execute('select tracer_bytes from trace_snaps where at_end = 1').fetchone()[0])",
        )
        .arg(rec)
        .output()
        .expect("python runs");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no end line: {}", stderr(&o)))
}

fn plain(py: &Path) -> u64 {
    let child = Command::new(py)
        .arg(target_script("trace_self.py"))
        .args([N.to_string(), SIZE.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let (_, anon, mut child) = anonymous_at_ready(child);
    assert!(child.wait().expect("exits").success());
    anon
}

#[test]
fn the_tracers_own_memory_is_set_apart_in_the_reconciliation() {
    let dir = TempDir::new("trace-self");
    let pys: Vec<_> = pythons()
        .into_iter()
        .filter(|p| matches!(p.version, (3, 12)) || p.label.contains("static"))
        .collect();
    assert!(!pys.is_empty(), "no 3.12 nor static 3.11");
    for py in &pys {
        for launch in 0..2 {
            let rec = dir.path().join(format!("{}-{launch}.db", py.label));
            let child = memlens()
                .env("MEMLENS_PRELOAD", preload_so())
                .env("TMPDIR", dir.path())
                .env_remove("LD_PRELOAD")
                .args(["run", "-q", "--no-sharing", "--trace=all", "-o"])
                .arg(&rec)
                .arg("--")
                .arg(&py.path)
                .arg(target_script("trace_self.py"))
                .args([N.to_string(), SIZE.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("memlens runs");
            let (_, traced_anon, child) = anonymous_at_ready(child);
            let o = child.wait_with_output().expect("memlens exits");
            assert!(o.status.success(), "{}: {}", py.label, stderr(&o));
            let plain_anon = plain(&py.path);
            let kernel = traced_anon.saturating_sub(plain_anon);
            let j = report_json(&rec);
            let rows = j["allocations"]["reconciliation"]
                .as_array()
                .unwrap_or_else(|| panic!("no reconciliation: {}", j["allocations"]));
            let native = rows
                .iter()
                .find(|r| r["category"] == "native-heap")
                .expect("a native-heap row");
            let tracer = u(&native["tracer_bytes"]);
            let python = rows
                .iter()
                .find(|r| r["category"] == "python-heap")
                .expect("a python-heap row");
            assert_eq!(u(&python["tracer_bytes"]), 0);
            // The tracer's figure at its end line (nothing allocated between READY and exit)
            // against the kernel's at READY; the reconciliation's (read at the ledger nearest
            // the peak, which may come before READY) is at most that and not nothing.
            let at_end = end_tracer_bytes(&rec);
            assert!(
                tracer > 0 && tracer <= at_end,
                "{}: reconciliation {tracer}, end line {at_end}",
                py.label
            );
            let err = (at_end as f64 - kernel as f64).abs();
            eprintln!(
                "{} launch {launch}: tracer_bytes at end {at_end} (reconciliation {tracer}), \
                 kernel (traced - plain anonymous) {kernel} ({:.1}%), traced live {}, \
                 kernel / live heap {:.3}",
                py.label,
                err / kernel.max(1) as f64 * 100.0,
                u(&native["traced_bytes"]),
                kernel as f64 / (N * SIZE) as f64
            );
            // The traced program's extra anonymous memory is the tracer's mappings plus a
            // little of its own (glibc's arena for the aggregate, the trace text it formats).
            // Its pointer table grows with the live blocks (table.rs): the tracer holds at most
            // 0.4x the live heap's bytes (N * SIZE, by construction) for 1,000-byte blocks,
            // its stack tables included. (One fixed table of 16 Mi slots held ~6x: a page per
            // block.)
            let live = N * SIZE;
            assert!(
                kernel <= live * 4 / 10,
                "{}: the traced program holds {kernel} more bytes for {live} live",
                py.label
            );
            // Not nothing: the levels in use are dense, at least a 32-byte slot per block, and
            // the queue has cycled through 60,000 events.
            assert!(
                at_end >= N * 32,
                "{}: tracer_bytes {at_end} for {N} live blocks",
                py.label
            );
            assert!(
                err <= kernel as f64 * 0.10 + (2 << 20) as f64,
                "{}: tracer_bytes {at_end} against {kernel} measured by the kernel",
                py.label
            );
        }
    }
}
