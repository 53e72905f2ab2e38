//! A census that can be trusted unattended (issue 7): large containers counted in full, a
//! target that exits mid-census reported as gone, busy targets (reference-cycle churn, asyncio)
//! censused without failure inside memlens's memory cap, and growth ranked by bytes and counts.
//! Every check runs on every supported CPython, over several launches so ASLR varies.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{memlens, proc_state, pythons, target_script, u, Python, Target};
use serde_json::Value;

/// Launches per interpreter where the layout of the heap matters (ASLR varies per launch).
const LAUNCHES: usize = 3;

/// The documented hard cap on memlens's own memory during a census (docs/cli.md), plus what
/// the binary itself needs (code, allocator, the interpreter's ELF symbols).
const MEMORY_CAP_KIB: u64 = (256 + 64) * 1024;

fn start(py: &Python, script: &str) -> Target {
    start_with(py, script, &[])
}

fn start_with(py: &Python, script: &str, args: &[&str]) -> Target {
    let mut cmd = Command::new(&py.path);
    cmd.arg(target_script(script)).args(args);
    Target::spawn(cmd)
}

fn count_of(census: &Value, name: &str) -> u64 {
    census["types"]
        .as_array()
        .expect("types")
        .iter()
        .find(|t| t["type"] == name)
        .map_or(0, |t| u(&t["count"]))
}

fn bytes_of(census: &Value, name: &str) -> u64 {
    census["types"]
        .as_array()
        .expect("types")
        .iter()
        .find(|t| t["type"] == name)
        .map_or(0, |t| u(&t["bytes"]))
}

fn parse(what: &str, out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{what}: memlens failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs memlens under `rusage.py`: its address space limited (so a runaway cannot exhaust the
/// host) and its peak RSS reported. Returns the output and the peak RSS in KiB.
fn memlens_capped(py: &Path, args: &[&str]) -> (Output, u64) {
    let out = Command::new(py)
        .arg(target_script("rusage.py"))
        .arg((4u64 << 30).to_string())
        .arg(env!("CARGO_BIN_EXE_memlens"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("rusage.py runs");
    let err = String::from_utf8_lossy(&out.stderr);
    let rss = err
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MAXRSS line: {err}"));
    (out, rss)
}

#[test]
fn large_containers_are_counted_in_full() {
    for py in pythons() {
        for launch in 0..LAUNCHES {
            let t = start(&py, "census_large.py");
            let truth: Value = t
                .lines
                .iter()
                .rev()
                .find(|l| l.starts_with('{'))
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_else(|| panic!("{}: no JSON truth: {:?}", py.label, t.lines));
            let pid = t.pid().to_string();
            let census = parse(
                &py.label,
                &crate::support::memlens_output(&["census", &pid, "--top", "0", "--json"]),
            );
            let what = format!("{} launch {launch}", py.label);
            let frozen = u(&truth["frozen"]) as f64;
            let counts = truth["counts"].as_object().expect("counts");
            let want_total: u64 = counts.values().map(u).sum();
            let got_total = u(&census["objects"]);
            assert!(
                (got_total as f64 - want_total as f64).abs() <= want_total as f64 * 0.01 + frozen,
                "{what}: memlens counts {got_total} objects, the target reaches {want_total}"
            );
            for name in ["str", "dict", "float", "set", "list", "tuple", "int"] {
                let want = counts.get(name).map_or(0, u);
                let got = count_of(&census, name);
                assert!(
                    (got as f64 - want as f64).abs() <= want as f64 * 0.01 + frozen,
                    "{what}: {name}: memlens counts {got}, the target reaches {want}"
                );
            }
            // sizes are sys.getsizeof's, buffers outside the objects included (issue 7 item 2)
            let bytes = truth["bytes"].as_object().expect("bytes");
            for name in [
                "str",
                "dict",
                "float",
                "set",
                "list",
                "tuple",
                "int",
                "bytearray",
                "array",
                "deque",
                "OrderedDict",
                "BytesIO",
            ] {
                let want = bytes.get(name).map_or(0, u);
                let got = bytes_of(&census, name);
                assert!(
                    (got as f64 - want as f64).abs() <= want as f64 * 0.01 + frozen * 64.0,
                    "{what}: {name}: memlens sizes {got} bytes, sys.getsizeof sums {want}"
                );
            }
            assert_eq!(
                u(&census["unreadable"]["objects"]),
                0,
                "{what}: a quiet target is read in full: {}",
                census["unreadable"]
            );
            assert_eq!(
                census["consistency"]["method"], "verified",
                "{what}: a quiet target needs no long pause: {}",
                census["consistency"]
            );
        }
    }
}

/// SIGKILLs the target and waits until the kernel has torn it down (a zombie: its memory is
/// gone, the test still holds it unreaped).
fn kill_target(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(proc_state(pid), Some('Z') | Some('X') | None) {
        assert!(Instant::now() < deadline, "target {pid} did not die");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_gone_exit(what: &str, out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{what}: exit code; stderr: {err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: no partial census: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The target dies while the census holds its pause (`MEMLENS_TEST_HOLD_PAUSE_MS`), and while
/// the census walks the running target (`MEMLENS_TEST_HOLD_WALK_MS`): exit 3, nothing printed.
#[test]
fn target_exiting_mid_census_exits_3() {
    for py in pythons() {
        for launch in 0..2 {
            let what = format!("{} launch {launch}, killed in the pause", py.label);
            let t = start_with(&py, "census_large.py", &["--no-truth"]);
            let pid = t.pid();
            let m = memlens()
                .args(["census", &pid.to_string(), "--json"])
                .env("MEMLENS_TEST_HOLD_PAUSE_MS", "1500")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("memlens starts");
            let deadline = Instant::now() + Duration::from_secs(60);
            while proc_state(pid) != Some('t') {
                assert!(Instant::now() < deadline, "{what}: never paused");
                std::thread::sleep(Duration::from_millis(5));
            }
            kill_target(pid);
            let out = m.wait_with_output().expect("memlens exits");
            assert_gone_exit(&what, &out);
            drop(t);

            let what = format!("{} launch {launch}, killed in the walk", py.label);
            let t = start_with(&py, "census_large.py", &["--no-truth"]);
            let pid = t.pid();
            let mut m = memlens()
                .args(["-v", "census", &pid.to_string(), "--json"])
                .env("MEMLENS_TEST_HOLD_WALK_MS", "1500")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("memlens starts");
            let mut err = BufReader::new(m.stderr.take().expect("piped"));
            let mut seen = String::new();
            loop {
                let mut line = String::new();
                let n = err.read_line(&mut line).expect("stderr");
                assert!(n > 0, "{what}: memlens never held its walk: {seen}");
                seen.push_str(&line);
                if line.contains("holding the walk") {
                    break;
                }
            }
            kill_target(pid);
            let mut rest = Vec::new();
            std::io::Read::read_to_end(&mut err, &mut rest).expect("stderr");
            let mut out = m.wait_with_output().expect("memlens exits");
            out.stderr = rest;
            assert_gone_exit(&what, &out);
            drop(t);
        }
    }
}

/// Censuses per interpreter and busy workload: 8 on each of the 7 supported builds, so each
/// workload is censused more than 50 times.
const BUSY_CENSUSES: usize = 8;

#[test]
fn busy_targets_are_censused_every_time_within_the_memory_cap() {
    for py in pythons() {
        for (script, stable) in [("census_churn.py", 20_000), ("census_asyncio.py", 20_000)] {
            let t = start(&py, script);
            let pid = t.pid().to_string();
            for i in 0..BUSY_CENSUSES {
                let what = format!("{} {script} census {i}", py.label);
                let (out, rss) =
                    memlens_capped(&py.path, &["census", &pid, "--top", "0", "--json"]);
                let census = parse(&what, &out);
                assert!(
                    count_of(&census, "dict") >= stable,
                    "{what}: the stable heap is counted: {} dicts",
                    count_of(&census, "dict")
                );
                assert!(
                    rss <= MEMORY_CAP_KIB,
                    "{what}: memlens peaked at {rss} KiB, over its cap"
                );
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!err.contains("process 0"), "{what}: {err}");
            }
        }
    }
}

#[test]
fn growth_ranks_types_by_bytes_and_by_count() {
    for py in pythons() {
        let t = start(&py, "census_growth.py");
        let pid = t.pid().to_string();
        let what = py.label.clone();
        let out = crate::support::memlens_output(&[
            "census", &pid, "--growth", "2s", "--top", "0", "--json",
        ]);
        let j = parse(&what, &out);
        let by_bytes = j["growth"]["by_bytes"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no growth by bytes: {}", j["growth"]));
        let by_count = j["growth"]["by_count"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no growth by count: {}", j["growth"]));
        let find = |rows: &[Value], name: &str| rows.iter().find(|r| r["type"] == name).cloned();
        let s = find(by_bytes, "str").unwrap_or_else(|| panic!("{what}: str in {by_bytes:?}"));
        let delta = s["delta"].as_i64().expect("delta");
        let bytes = s["bytes_delta"].as_i64().expect("bytes_delta");
        assert!(delta >= 50, "{what}: the target added strs: {s}");
        // each new str is 1,024 ASCII characters: sys.getsizeof is at least 1,065
        assert!(bytes >= delta * 1000, "{what}: bytes follow the strs: {s}");
        assert_eq!(
            by_bytes.first().map(|r| &r["type"]),
            Some(&Value::from("str")),
            "{what}: str grew most in bytes: {by_bytes:?}"
        );
        let l = find(by_bytes, "list")
            .unwrap_or_else(|| panic!("{what}: the growing list's table: {by_bytes:?}"));
        assert!(l["bytes_delta"].as_i64() > Some(0), "{what}: {l}");
        assert!(
            find(by_count, "str").is_some(),
            "{what}: str grew in count: {by_count:?}"
        );
        for rows in [by_bytes, by_count] {
            for r in rows {
                assert!(
                    r["delta"].as_i64() > Some(0) || r["bytes_delta"].as_i64() > Some(0),
                    "{what}: only types that grew: {r}"
                );
            }
        }
        let out = crate::support::memlens_output(&["census", &pid, "--growth", "1s"]);
        assert!(
            out.status.success(),
            "{what}: {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("(no type grew)"), "{what}: {text}");
        assert!(
            text.contains("by bytes") && text.contains("by count"),
            "{what}: {text}"
        );
    }
}

#[test]
fn growth_of_zero_is_a_usage_error() {
    let py = pythons().into_iter().next().expect("a Python");
    let t = Target::python(
        &py.path,
        "import sys; print('READY', flush=True); sys.stdin.readline()",
    );
    for d in ["0", "0s", "0ms"] {
        let out = crate::support::memlens_output(&["census", &t.pid().to_string(), "--growth", d]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--growth {d}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The memory cap is hard: a census that needs more fails cleanly (exit 9, nothing printed,
/// the target running), and one within it stays under it.
#[test]
fn the_memory_cap_fails_cleanly_when_reached() {
    for py in pythons() {
        let t = start_with(&py, "census_large.py", &["--no-truth"]);
        let pid = t.pid().to_string();
        let (out, rss) = memlens_capped(&py.path, &["census", &pid, "--max-memory", "6MiB"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(9), "{}: {err}", py.label);
        assert!(err.contains("memory cap of 6 MiB"), "{}: {err}", py.label);
        assert!(out.stdout.is_empty(), "{}: no partial census", py.label);
        assert!(
            rss <= (6 + 64) << 10,
            "{}: memlens peaked at {rss} KiB",
            py.label
        );
        assert_ne!(
            proc_state(t.pid()),
            Some('t'),
            "{}: target left stopped",
            py.label
        );
        let (out, rss) = memlens_capped(
            &py.path,
            &["census", &pid, "--max-memory", "64MiB", "--json"],
        );
        let j = parse(&py.label, &out);
        assert!(u(&j["objects"]) > 500_000, "{}: {}", py.label, j["objects"]);
        assert!(
            rss <= (64 + 64) << 10,
            "{}: memlens peaked at {rss} KiB",
            py.label
        );
    }
}

/// `--nonblocking` never stops the target: it reads one that another tracer holds (strace),
/// which a pausing census cannot (exit 4), and says its figures may be inexact.
#[test]
fn nonblocking_reads_a_target_it_cannot_stop() {
    if Command::new("strace").arg("-V").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "strace is needed in CI");
        eprintln!("strace not installed: not tested");
        return;
    }
    for py in pythons() {
        let mut cmd = Command::new("strace");
        cmd.args([
            "-f",
            "--seccomp-bpf",
            "-e",
            "trace=exit_group",
            "-o",
            "/dev/null",
        ])
        .arg(&py.path)
        .arg(target_script("census_large.py"))
        .arg("--no-truth");
        let t = Target::spawn(cmd);
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", t.pid()))
            .expect("strace's children");
        let pid = children
            .split_whitespace()
            .next()
            .expect("the traced Python")
            .to_string();
        let out = crate::support::memlens_output(&["census", &pid]);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{}: a traced target cannot be paused: {}",
            py.label,
            String::from_utf8_lossy(&out.stderr)
        );
        let j = parse(
            &py.label,
            &crate::support::memlens_output(&[
                "census",
                &pid,
                "--nonblocking",
                "--top",
                "0",
                "--json",
            ]),
        );
        assert_eq!(j["inexact"], true, "{}", py.label);
        assert_eq!(j["consistency"]["method"], "nonblocking", "{}", py.label);
        assert_eq!(u(&j["consistency"]["pause_us"]), 0, "{}", py.label);
        assert!(
            count_of(&j, "str") >= 200_000,
            "{}: {}",
            py.label,
            j["types"]
        );
        assert!(
            count_of(&j, "dict") >= 120_000,
            "{}: {}",
            py.label,
            j["types"]
        );
    }
}
