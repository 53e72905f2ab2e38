//! memlens run by the process it reads, as the memlens Python package runs it
//! (`memlens.snapshot()`, `memlens.limit()`: python/memlens): memlens is then a descendant of
//! its target, and must leave itself out of the tree it reads; `record`'s READY line on stderr
//! (`memlens: recording pid N into PATH`) is followed by a clean stop at SIGINT.

use serde_json::Value;

use crate::support::{python, target_script, u, Target, TempDir};

/// Runs `reads_itself.py MODE` and returns what it printed.
fn reads_itself(mode: &str, extra: &[&str]) -> Value {
    let mut cmd = std::process::Command::new(python());
    cmd.arg(target_script("reads_itself.py"))
        .arg(env!("CARGO_BIN_EXE_memlens"))
        .arg(mode)
        .args(extra);
    let t = Target::spawn(cmd);
    let line = t.lines.last().expect("the result line").clone();
    serde_json::from_str(&line).expect("the result is JSON")
}

fn pids(processes: &Value) -> Vec<u64> {
    let mut v: Vec<u64> = processes
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| u(&p["pid"]))
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn record_of_its_own_ancestor_leaves_itself_out() {
    let dir = TempDir::new("reads-itself");
    let db = dir.join("self.db");
    let got = reads_itself("record", &[db.to_str().expect("utf-8 path")]);
    assert_eq!(got["exit"], 0, "{}", got["stderr"]);
    let report = &got["report"];
    assert_eq!(report["complete"], true);
    let mut expected = vec![u(&got["self"]), u(&got["child"])];
    expected.sort_unstable();
    // The program and its child, never the recorder (a child of the program too).
    assert_eq!(pids(&report["processes"]), expected, "{report}");
    assert!(u(&report["peak"]["bytes"]) > 0);
}

#[test]
fn snapshot_tree_of_its_own_ancestor_leaves_itself_out() {
    let got = reads_itself("snapshot", &[]);
    assert_eq!(got["exit"], 0, "{}", got["stderr"]);
    let snap = &got["report"];
    let mut expected = vec![u(&got["self"]), u(&got["child"])];
    expected.sort_unstable();
    assert_eq!(pids(&snap["processes"]), expected, "{snap}");
    let sum: u64 = snap["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| u(&p["totals"]["pss"]))
        .sum();
    assert_eq!(u(&snap["totals"]["pss"]), sum);
}
