//! `memlens run --trace` imports the trace files while the program runs: a memlens killed
//! with SIGKILL leaves a recording whose report shows the allocation sites up to its last
//! import; a SIGINT (forwarded to the program, which leaves) gives the whole trace; and the
//! live bytes of two stacks over time (JSON `over_time`, the HTML chart) follow the phases
//! the program stepped through. Ground truth: the blocks allocated by construction
//! (trace_phases.py: 8 then 16 blocks of SIZE bytes at two known lines), and the program's own
//! reading of its trace file (it says up to which byte a snapshot covering each phase lies;
//! memlens's trace-level log says up to which byte it imported and committed).

#![allow(clippy::unwrap_used)]

use std::io::BufRead;
use std::path::Path;

use serde_json::Value;

use crate::support::{kill, memlens, report_json, target_script, u, TempDir};
use crate::support_trace::{stacks_bytes, LiveRun};

/// One block (a bytearray of SIZE bytes is a malloc of SIZE + 1).
const SIZE: u64 = 1 << 20;

/// Starts `memlens -vvv run --trace=all` of trace_phases.py.
fn start(rec: &Path, tmp: &Path) -> LiveRun {
    LiveRun::start(rec, tmp, &[], "trace_phases.py", &[SIZE.to_string()])
}

/// Waits for the program's `PHASE k OFFSET` line: OFFSET is where a snapshot after phase k
/// ends in its trace file.
fn phase(run: &mut LiveRun, k: u32) -> u64 {
    let line = run.line();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert!(
        f.len() == 3 && f[0] == "PHASE" && f[1] == k.to_string(),
        "expected PHASE {k}, got {line:?}; memlens said {:?}",
        run.said
    );
    f[2].parse().expect("an offset")
}

/// The innermost lines of trace_phases.py's `# @A` and `# @B` markers.
fn marker_lines() -> (u32, u32) {
    let text = std::fs::read_to_string(target_script("trace_phases.py")).unwrap();
    let at = |m: &str| {
        text.lines()
            .position(|l| l.trim_end().ends_with(m))
            .map(|i| i as u32 + 1)
            .unwrap_or_else(|| panic!("no {m} in trace_phases.py"))
    };
    (at("# @A"), at("# @B"))
}

/// Bytes of one line of trace_phases.py in a list of `{"file", "line", "bytes"}` rows.
fn line_bytes(rows: &Value, line: u32) -> u64 {
    rows.as_array()
        .expect("rows")
        .iter()
        .filter(|r| {
            r["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("trace_phases.py"))
                && u(&r["line"]) == u64::from(line)
        })
        .map(|r| u(&r["bytes"]))
        .sum()
}

fn within(what: &str, got: u64, want: u64, pct: f64) {
    let err = (got as f64 - want as f64).abs() / want as f64 * 100.0;
    eprintln!("{what}: {got} vs {want} by construction ({err:.2}%)");
    assert!(err <= pct, "{what}: {got} vs {want} ({err:.2}% > {pct}%)");
}

#[test]
fn a_sigkilled_run_keeps_the_trace_up_to_its_last_import() {
    let dir = TempDir::new("trace-live-kill");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let rec = dir.join("run.db");
    let (a_line, b_line) = marker_lines();
    let mut run = start(&rec, &tmp);
    let offset = phase(&mut run, 1);
    run.go();
    let offset2 = phase(&mut run, 2);
    assert!(offset2 > offset);
    run.imported(offset2);
    kill(run.child.id(), "-KILL");
    // memlens is gone: the program reads EOF on stdin and leaves (its end line is never
    // imported).
    let (status, said) = run.wait();
    assert_eq!(status.code(), None, "killed");
    // The private directory was named at the start, and is still there, unimported.
    let named = said
        .iter()
        .find_map(|l| {
            l.split_once("--trace: the tracer writes into ")
                .map(|(_, r)| r)
        })
        .and_then(|r| r.split(" (").next())
        .unwrap_or_else(|| panic!("the trace directory was not named: {said:?}"));
    assert!(named.starts_with(tmp.to_str().unwrap()), "{named}");
    assert!(Path::new(named).join("trace").is_file(), "{named} left");
    // The recording holds the trace up to phase 2: A's 8 blocks and B's 16 live.
    let j = report_json(&rec);
    let a = &j["allocations"];
    assert_eq!(a["mode"], "all", "{a}");
    assert!(
        u(&a["lost"]["unfinished_traces"]) >= 1,
        "no end line was imported"
    );
    // The peak block is whole (memlens may have been killed while the tracer wrote a newer
    // one, which was then held back): its stacks sum to its total, exact in `all` mode.
    let p = &a["at_peak"];
    let stacks = stacks_bytes(p);
    assert_eq!(stacks, u(&p["bytes"]), "a part of a peak block: {p}");
    let by_line = &p["by_line"];
    within(
        "A at the peak",
        line_bytes(by_line, a_line),
        8 * (SIZE + 1),
        2.0,
    );
    within(
        "B at the peak",
        line_bytes(by_line, b_line),
        16 * (SIZE + 1),
        2.0,
    );
}

#[test]
fn a_sigint_gives_the_whole_trace() {
    let dir = TempDir::new("trace-live-int");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let rec = dir.join("run.db");
    let (a_line, _) = marker_lines();
    let mut run = start(&rec, &tmp);
    phase(&mut run, 1);
    // memlens forwards SIGINT to the program, which leaves through exit (its end line
    // written); memlens imports the rest, then exits with the program's status.
    kill(run.child.id(), "-INT");
    let mut line = String::new();
    run.stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "INTERRUPTED");
    let (status, said) = run.wait();
    assert_eq!(status.code(), Some(0), "{said:?}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "the private directory is removed: {left:?}"
    );
    let j = report_json(&rec);
    let a = &j["allocations"];
    assert_eq!(u(&a["lost"]["unfinished_traces"]), 0, "{}", a["lost"]);
    // The program is gone (reaped by memlens), not left stopped or running.
    let pid = u(&a["at_peak"]["stacks"][0]["pid"]) as u32;
    assert_eq!(
        crate::support::proc_state(pid),
        None,
        "pid {pid} left behind"
    );
    within(
        "A at the peak",
        line_bytes(&a["at_peak"]["by_line"], a_line),
        8 * (SIZE + 1),
        2.0,
    );
    // Its allocated total over the run, from the last site lines (those after `end`).
    let totals = a["totals_by_line"].as_array().unwrap();
    let row = totals
        .iter()
        .find(|r| u(&r["line"]) == u64::from(a_line))
        .unwrap_or_else(|| panic!("no totals for line {a_line}"));
    within(
        "A allocated",
        u(&row["allocated_bytes"]),
        8 * (SIZE + 1),
        2.0,
    );
}

#[test]
fn live_bytes_by_stack_follow_the_phases_in_json_and_html() {
    let dir = TempDir::new("trace-live-series");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let rec = dir.join("run.db");
    let (a_line, b_line) = marker_lines();
    let mut run = start(&rec, &tmp);
    for k in 1..=4 {
        phase(&mut run, k);
        run.go();
    }
    let (status, said) = run.wait();
    assert_eq!(status.code(), Some(0), "{said:?}");
    let j = report_json(&rec);
    let o = &j["allocations"]["over_time"];
    let t: Vec<f64> = o["t"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]), "times in order: {t:?}");
    let series = |line: u32| -> (Vec<u64>, &Value) {
        let s = o["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| u(&s["frames"][0]["line"]) == u64::from(line))
            .unwrap_or_else(|| panic!("no series for line {line}: {o}"));
        (s["bytes"].as_array().unwrap().iter().map(u).collect(), s)
    };
    let (a, a_s) = series(a_line);
    let (b, b_s) = series(b_line);
    assert_eq!(a.len(), t.len());
    // Each snapshot's (A, B) in blocks, rounded; consecutive repeats folded.
    let blocks = |v: u64| (v as f64 / (SIZE + 1) as f64).round() as u64;
    let mut steps: Vec<(u64, u64)> = Vec::new();
    for k in 0..t.len() {
        let s = (blocks(a[k]), blocks(b[k]));
        if steps.last() != Some(&s) {
            steps.push(s);
        }
    }
    // Phases 1-4 in order, each seen (the program waited for two snapshots in each).
    let want = [(8, 0), (8, 16), (0, 16), (0, 0)];
    let mut at = 0;
    for s in &steps {
        if at < want.len() && *s == want[at] {
            at += 1;
        }
    }
    assert_eq!(
        at,
        want.len(),
        "phases {want:?} not all in order in {steps:?}"
    );
    // Magnitudes: within 2% of construction where held.
    within("A highest", u(&a_s["max_bytes"]), 8 * (SIZE + 1), 2.0);
    within("B highest", u(&b_s["max_bytes"]), 16 * (SIZE + 1), 2.0);
    assert!(a_s["max_t"].as_f64().unwrap() < b_s["max_t"].as_f64().unwrap());
    // The whole: never below the two stacks together.
    let live: Vec<u64> = o["live_bytes"].as_array().unwrap().iter().map(u).collect();
    for k in 0..t.len() {
        assert!(
            live[k] >= a[k] + b[k],
            "at {}: {} < {} + {}",
            t[k],
            live[k],
            a[k],
            b[k]
        );
    }

    // The HTML chart: a band per stack, named, escaped, and the page loads under its CSP.
    let html = dir.join("report.html");
    let out = memlens()
        .arg("report")
        .arg(&rec)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Live traced bytes over time, by stack"));
    // (The innermost function is `make_a`, or its list comprehension's code before 3.12.)
    let title = |line: u32| {
        format!(
            " ({}:{line}, malloc): highest",
            target_script("trace_phases.py").display()
        )
    };
    let (ta, tb) = (title(a_line), title(b_line));
    assert!(page.contains(&ta), "no band for A ({ta})");
    assert!(page.contains(&tb), "no band for B ({tb})");
    assert!(page.matches("class=\"alloc-band\"").count() >= 2);
    if let Some(chromium) = crate::trace_report::chromium() {
        let dom = crate::trace_report::load(&chromium, &html, &dir.join("profile"));
        assert!(dom.contains("class=\"alloc-band\""), "no chart in the DOM");
    }
}
