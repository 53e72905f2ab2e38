//! `MEMLENS_FIXED_CLOCK` (docs/cli.md, `memlens_model::clock`): the times memlens reports come
//! from one clock that the variable fixes, so outputs do not depend on when or how fast they
//! were made. Each test also runs without it, to show the figure it fixes does vary.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use crate::support::{memlens, python, stderr, u, Target, TempDir};

/// 2023-11-14 22:13:20.25 UTC.
const FIXED: &str = "1700000000.25";

/// `memlens run -q -- python -c pass` in `dir`, the clock fixed or not; the recording's name.
fn run_in(dir: &TempDir, fixed: bool) -> String {
    let before = recordings(dir.path());
    let mut cmd = memlens();
    cmd.args(["run", "-q", "--", python().to_str().unwrap(), "-c", "pass"])
        .current_dir(dir.path());
    if fixed {
        cmd.env("MEMLENS_FIXED_CLOCK", FIXED);
    } else {
        cmd.env_remove("MEMLENS_FIXED_CLOCK");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let made: Vec<String> = recordings(dir.path())
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert_eq!(made.len(), 1, "one new recording: {made:?}");
    made[0].clone()
}

fn recordings(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("memlens-") && n.ends_with(".db"))
        .collect()
}

/// The recording's `started_unix` metadata, as stored (read with the target's own sqlite3).
fn started_unix(db: &Path) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print(c.execute(\"select value from meta where key='started_unix'\").fetchone()[0])")
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_fixed_clock_names_and_stamps_recordings() {
    let dir = TempDir::new("fixed-clock-run");
    let name = run_in(&dir, true);
    // memlens-<program>-<YYYYmmdd-HHMMSS.mmm>-<memlens's PID>.db: the PID stays real.
    assert!(
        name.contains("-20231114-221320.250-"),
        "the default name carries the fixed time: {name}"
    );
    assert_eq!(started_unix(&dir.join(&name)), "1700000000.250000");
    // The same run made later gets the same time (only the PID part differs).
    let again = run_in(&dir, true);
    assert!(again.contains("-20231114-221320.250-"), "{again}");
    assert_eq!(started_unix(&dir.join(&again)), "1700000000.250000");

    let real = run_in(&dir, false);
    assert!(!real.contains("-20231114-"), "{real}");
    let started: f64 = started_unix(&dir.join(&real)).parse().unwrap();
    assert!(started > 1_700_000_001.0, "the system clock: {started}");
}

/// `census --json` of a live Python: the method and the microseconds it was paused.
fn census_pause(pid: u32, fixed: bool) -> (String, u64) {
    let mut cmd = memlens();
    cmd.args(["census", "--json", &pid.to_string()]);
    if fixed {
        cmd.env("MEMLENS_FIXED_CLOCK", FIXED);
    } else {
        cmd.env_remove("MEMLENS_FIXED_CLOCK");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &j["consistency"];
    (c["method"].as_str().unwrap().to_string(), u(&c["pause_us"]))
}

#[test]
fn a_fixed_clock_reports_zero_pauses() {
    let t = Target::python(
        &python(),
        "import sys; print('READY', flush=True); sys.stdin.readline()",
    );
    // Stopping a process and re-reading what the walk used takes microseconds at least.
    let (method, real) = census_pause(t.pid(), false);
    assert!(method == "verified" || method == "paused", "{method}");
    assert!(real > 0, "a real pause is measured");
    let (method, fixed) = census_pause(t.pid(), true);
    assert!(method == "verified" || method == "paused", "{method}");
    assert_eq!(fixed, 0, "a fixed clock reports no pause time");

    // The text of `stacks` and `census` prints durations the same way.
    let text = |args: &[&str]| {
        let out = memlens()
            .args(args)
            .arg(t.pid().to_string())
            .env("MEMLENS_FIXED_CLOCK", FIXED)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stacks = text(&["stacks"]);
    assert!(stacks.contains("(target paused 0.0 ms)"), "{stacks}");
    let census = text(&["census"]);
    let header = census.lines().next().unwrap();
    assert!(
        header.contains("0 ms in all") && header.contains(" 0.0 ms"),
        "{header}"
    );
}
