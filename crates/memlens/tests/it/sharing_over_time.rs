//! Copy-on-write beyond snapshots (DESIGN §6, §7): `ps` and recordings. A parent maps a known
//! region and forks workers that copy a known part of it step by step; the target itself
//! reads its own and its workers' `/proc/PID/pagemap` after each step (`TRUTH` lines), and
//! memlens's figures must match the construction within 3 % at every step the target
//! confirmed. `--no-sharing` must say "not measured", never print figures.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::*;
use serde_json::Value;

const HEAP_MIB: u64 = 64;
const STEP_MIB: u64 = 8;
const WORKERS: usize = 2;
const ZERO_MIB: u64 = 16;

/// `(pid, shared, copied)` per worker from a `TRUTH k ...` line.
fn truth(line: &str, k: u64) -> Vec<(u32, u64, u64)> {
    let rest = line
        .strip_prefix(&format!("TRUTH {k} "))
        .unwrap_or_else(|| panic!("TRUTH {k} line, got {line:?}"));
    rest.split_whitespace()
        .map(|w| {
            let f: Vec<u64> = w.split(':').map(|x| x.parse().expect("number")).collect();
            (f[0] as u32, f[1], f[2])
        })
        .collect()
}

fn line_after<'a>(t: &'a Target, prefix: &str) -> &'a str {
    t.lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{prefix} line in {:?}", t.lines))
}

fn steps_target(cmd: &mut std::process::Command, py: &Python) {
    cmd.arg(&py.path)
        .arg(target_script("cow_steps.py"))
        .args([HEAP_MIB, STEP_MIB, WORKERS as u64, ZERO_MIB].map(|v| v.to_string()));
}

/// The target's own ground truth agrees with the construction (else the test proves nothing).
fn check_truth(what: &str, truths: &[(u32, u64, u64)], k: u64) {
    for &(pid, shared, copied) in truths {
        let (s, c) = ((HEAP_MIB - k * STEP_MIB) << 20, (k * STEP_MIB) << 20);
        assert_close(&format!("{what} pid {pid}: kernel shared"), shared, s, 3.0);
        if k == 0 {
            assert!(
                copied < 1 << 20,
                "{what} pid {pid}: copied {copied} at step 0"
            );
        } else {
            assert_close(&format!("{what} pid {pid}: kernel copied"), copied, c, 3.0);
        }
    }
}

fn category<'a>(rows: &'a Value, name: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r["category"] == name)
}

fn ps_tree(j: &Value, root: u32) -> &Value {
    j["trees"]
        .as_array()
        .expect("trees")
        .iter()
        .find(|t| u(&t["root"]) == u64::from(root))
        .unwrap_or_else(|| panic!("tree of {root} in ps"))
}

/// `ps` compares each worker with its parent: shared and copied within 3 % of construction
/// (the memfd region's category), and the zero page is counted apart, not as shared.
#[test]
fn ps_shows_shared_and_copied_per_worker() {
    for py in pythons()
        .iter()
        .filter(|p| p.version >= (3, 8) && p.version <= (3, 13))
    {
        for launch in 0..2 {
            let mut cmd = std::process::Command::new(&py.path);
            cmd.arg(target_script("cow_steps.py"))
                .args([HEAP_MIB, STEP_MIB, WORKERS as u64, ZERO_MIB].map(|v| v.to_string()));
            let mut t = Target::spawn(cmd);
            t.send("step");
            let line = t.read_line().expect("TRUTH 1");
            let what = format!("{} launch {launch}", py.label);
            let truths = truth(&line, 1);
            check_truth(&what, &truths, 1);
            let j = memlens_json(&["ps", "--json"]);
            let tree = ps_tree(&j, t.pid());
            assert_eq!(tree["exclusive"]["measured"], true, "{}", tree["exclusive"]);
            for &(pid, _, _) in &truths {
                let p = tree["processes"]
                    .as_array()
                    .expect("processes")
                    .iter()
                    .find(|p| u(&p["pid"]) == u64::from(pid))
                    .unwrap_or_else(|| panic!("{what}: worker {pid} in ps"));
                let s = &p["sharing"];
                assert_eq!(s["measured"], true, "{what}: {s}");
                assert_eq!(u(&s["parent"]), u64::from(t.pid()));
                let r = category(&s["by_category"], "shared-memory").expect("shared-memory row");
                let (shared, copied) = ((HEAP_MIB - STEP_MIB) << 20, STEP_MIB << 20);
                eprintln!("{what}: ps worker {pid}: {r}; zero page {}", s["zero_page"]);
                assert_close(
                    &format!("{what}: ps shared"),
                    u(&r["shared_with_parent"]),
                    shared,
                    3.0,
                );
                assert_close(&format!("{what}: ps copied"), u(&r["copied"]), copied, 3.0);
                // The half of the anonymous region only read maps the zero page: not shared.
                assert!(
                    u(&s["zero_page"]) >= (ZERO_MIB / 2) << 20,
                    "{what}: zero page {} (the read-only half is {} MiB)",
                    s["zero_page"],
                    ZERO_MIB / 2
                );
            }
            let root = tree["processes"]
                .as_array()
                .expect("processes")
                .iter()
                .find(|p| u(&p["pid"]) == u64::from(t.pid()))
                .expect("root");
            assert!(
                root.get("sharing").is_none(),
                "the root has no parent in its tree"
            );
            // The text shows the columns.
            let out = memlens_output(&["ps"]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("shared") && text.contains("copied"), "{text}");
            // --no-sharing: not measured, and why; no figure that reads like zero.
            let j = memlens_json(&["ps", "--json", "--no-sharing"]);
            let tree = ps_tree(&j, t.pid());
            assert_eq!(tree["exclusive"]["measured"], false);
            assert!(tree["exclusive"].get("bytes").is_none());
            for p in tree["processes"].as_array().expect("processes") {
                if u(&p["pid"]) == u64::from(t.pid()) {
                    continue;
                }
                let s = &p["sharing"];
                assert_eq!(s["measured"], false, "{s}");
                assert!(
                    s["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("--no-sharing")),
                    "{s}"
                );
                for k in ["shared_with_parent", "copied", "own", "by_category"] {
                    assert!(s.get(k).is_none(), "{k} printed though not measured: {s}");
                }
            }
        }
    }
}

/// `snapshot --tree` counts the zero page apart from what is shared with the parent (before,
/// the read-only half of a region counted as shared: every process maps the zero page).
#[test]
fn snapshot_counts_the_zero_page_apart() {
    for py in pythons()
        .iter()
        .filter(|p| p.version >= (3, 8) && p.version <= (3, 13))
    {
        let mut cmd = std::process::Command::new(&py.path);
        cmd.arg(target_script("cow_steps.py"))
            .args([HEAP_MIB, STEP_MIB, WORKERS as u64, ZERO_MIB].map(|v| v.to_string()));
        let t = Target::spawn(cmd);
        let first = t
            .lines
            .iter()
            .find(|l| l.starts_with("TRUTH 0 "))
            .expect("TRUTH 0");
        check_truth(&py.label, &truth(first, 0), 0);
        let j = memlens_json(&["snapshot", &t.pid().to_string(), "--tree", "--json"]);
        for p in j["processes"].as_array().expect("processes") {
            if u(&p["pid"]) == u64::from(t.pid()) {
                continue;
            }
            let s = &p["sharing"];
            assert_eq!(s["measured"], true, "{s}");
            let z = u(&s["zero_page"]);
            assert!(
                ((ZERO_MIB / 2) << 20..((ZERO_MIB / 2) + 2) << 20).contains(&z),
                "{}: zero page {z}",
                py.label
            );
        }
        let j = memlens_json(&[
            "snapshot",
            &t.pid().to_string(),
            "--tree",
            "--json",
            "--no-sharing",
        ]);
        assert_eq!(j["exclusive"]["measured"], false);
        for p in j["processes"].as_array().expect("processes") {
            if u(&p["pid"]) != u64::from(t.pid()) {
                assert_eq!(p["sharing"]["measured"], false);
                assert!(p["sharing"].get("shared_with_parent").is_none());
            }
        }
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// `(pid, t)` of the sharing rows committed so far (a read-only look at the live recording).
fn sharing_rows(db: &std::path::Path) -> Vec<(u32, f64)> {
    let out = std::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg("SELECT p.pid, s.t FROM sharing s JOIN processes p ON p.id = s.process WHERE s.measured = 1")
        .output()
        .expect("sqlite3 runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (p, t) = l.split_once('|')?;
            Some((p.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

fn started_unix(db: &std::path::Path) -> Option<f64> {
    let out = std::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg("SELECT value FROM meta WHERE key = 'started_unix'")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Waits until every worker has a sharing measurement that started after `after` (wall
/// clock), committed to the recording (the recorder commits every half second).
fn wait_for_rows(db: &std::path::Path, workers: &[u32], after: f64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(origin) = started_unix(db) {
            let rows = sharing_rows(db);
            if workers
                .iter()
                .all(|w| rows.iter().any(|&(p, t)| p == *w && origin + t >= after))
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no sharing row after {after} in 180 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The recording shows each worker's copied bytes growing step by step: every measurement
/// taken wholly between the target's confirmation of step k and the next step matches the
/// construction within 3 %; `--no-sharing` records none and the report says why.
#[test]
fn recording_shows_copied_share_growing_per_worker() {
    const STEPS: u64 = 3;
    let chosen: Vec<Python> = pythons()
        .into_iter()
        .filter(|p| p.version == (3, 8) || p.version == (3, 13) || p.label == "debian-3.11-static")
        .collect();
    for py in &chosen {
        let dir = TempDir::new("sharing-over-time");
        let db = dir.join("r.db");
        let mut cmd = memlens();
        cmd.args([
            "run",
            "-q",
            "--cpu-budget",
            "100",
            "--sharing-every",
            "100ms",
            "-o",
        ])
        .arg(&db)
        .arg("--");
        steps_target(&mut cmd, py);
        let mut t = Target::spawn(cmd);
        let parent: u32 = line_after(&t, "PARENT ").parse().expect("pid");
        let workers: Vec<u32> = line_after(&t, "WORKERS ")
            .split_whitespace()
            .map(|p| p.parse().expect("pid"))
            .collect();
        let first = t
            .lines
            .iter()
            .find(|l| l.starts_with("TRUTH 0 "))
            .expect("TRUTH 0")
            .clone();
        check_truth(&py.label, &truth(&first, 0), 0);
        // Window k: from the target's confirmation of step k to the next step's command.
        let mut windows: Vec<(f64, f64)> = Vec::new();
        let mut confirmed = now_unix();
        for k in 1..=STEPS + 1 {
            wait_for_rows(&db, &workers, confirmed + 0.02);
            let sent = now_unix();
            windows.push((confirmed + 0.02, sent));
            if k > STEPS {
                break;
            }
            t.send("step");
            let line = t.read_line().expect("TRUTH line");
            check_truth(&py.label, &truth(&line, k), k);
            confirmed = now_unix();
        }
        drop(t.child.stdin.take()); // EOF: everyone exits, memlens writes the report
        let status = t.child.wait().expect("memlens run ends");
        assert!(status.success(), "{}: {status}", py.label);
        let out = memlens_output(&["report", db.to_str().expect("utf-8"), "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let j: Value = serde_json::from_slice(&out.stdout).expect("json");
        let s = &j["sharing"];
        assert_eq!(s["measured"], true, "{s}");
        let origin = started_unix(&db).expect("started_unix");
        for &w in &workers {
            let wk = s["workers"]
                .as_array()
                .expect("workers")
                .iter()
                .find(|x| u(&x["pid"]) == u64::from(w))
                .unwrap_or_else(|| panic!("worker {w} in {s}"));
            assert_eq!(u(&wk["parent_pid"]), u64::from(parent));
            let mut checked = vec![0u32; windows.len()];
            for p in wk["points"].as_array().expect("points") {
                if p["measured"] != true {
                    continue;
                }
                let (a, b) = (
                    origin + f(&p["t"]),
                    origin + f(&p["t"]) + f(&p["duration_seconds"]),
                );
                let Some(k) = windows.iter().position(|&(s, e)| a >= s && b <= e) else {
                    continue; // taken while a step ran: no construction to compare with
                };
                let r = category(&p["by_category"], "shared-memory").expect("shared-memory");
                let k64 = k as u64;
                let what = format!("{} worker {w} step {k}", py.label);
                let copied = u(&r["copied"]);
                eprintln!(
                    "{what}: copied {copied} shared {}",
                    u(&r["shared_with_parent"])
                );
                assert_close(
                    &format!("{what}: shared"),
                    u(&r["shared_with_parent"]),
                    (HEAP_MIB - k64 * STEP_MIB) << 20,
                    3.0,
                );
                if k == 0 {
                    assert!(copied < 1 << 20, "{what}: copied {copied}");
                } else {
                    assert_close(
                        &format!("{what}: copied"),
                        copied,
                        (k64 * STEP_MIB) << 20,
                        3.0,
                    );
                }
                checked[k] += 1;
            }
            assert!(
                checked.iter().all(|&n| n > 0),
                "{}: worker {w}: measurements per step {checked:?}",
                py.label
            );
        }
        let out = memlens_output(&["report", db.to_str().expect("utf-8")]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("copy-on-write (each worker's pages"),
            "{text}"
        );
    }
}

/// `run --no-sharing` records no sharing and its report says why.
#[test]
fn recording_without_sharing_says_not_measured() {
    let py = pythons()
        .into_iter()
        .find(|p| p.version >= (3, 8))
        .expect("a python");
    let dir = TempDir::new("sharing-off");
    let db = dir.join("r.db");
    let mut cmd = memlens();
    cmd.args(["run", "-q", "--no-sharing", "--sharing-every", "10ms", "-o"])
        .arg(&db)
        .arg("--");
    steps_target(&mut cmd, &py);
    let mut t = Target::spawn(cmd);
    t.send("step");
    let line = t.read_line().expect("TRUTH 1");
    check_truth(&py.label, &truth(&line, 1), 1);
    drop(t.child.stdin.take());
    assert!(t.child.wait().expect("memlens run ends").success());
    assert!(sharing_rows(&db).is_empty());
    let out = memlens_output(&["report", db.to_str().expect("utf-8"), "--json"]);
    let j: Value = serde_json::from_slice(&out.stdout).expect("json");
    let s = &j["sharing"];
    assert_eq!(s["measured"], false, "{s}");
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("--no-sharing")),
        "{s}"
    );
    assert!(s["workers"].as_array().is_some_and(|w| w.is_empty()), "{s}");
    let out = memlens_output(&["report", db.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("copy-on-write: not measured: turned off (--no-sharing)"),
        "{text}"
    );
}
