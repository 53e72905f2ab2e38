//! The leak verdict (issue 12, docs/leaks.md): a server that keeps a fixed amount per request
//! (driven through its stdin) is called a leak by `report` and by `census --growth`, with the
//! category and the type that grew; one whose cache is bounded (it grew for its first 100
//! requests of 420, then stopped) is not.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    kill, memlens, python, report_json, stderr, target_script, u, Target, TempDir,
};

/// Starts the server, records it with `memlens record` (a census every 500 ms; a CPU budget
/// of 25 % lets them all run) while it handles `requests` requests (sent once the recording
/// file exists: the recorder is sampling), stops the recording with SIGINT once the server
/// says `DONE` (so the recording spans the requests however slow a loaded machine makes
/// them: the leak verdict's window is the last half of the span, which for a plateau of 100
/// growing requests in 420 stays flat), and returns the report. The server stays alive past
/// the recording, so its exit is not in it.
fn recorded(mode: &str, requests: u32, dir: &TempDir) -> Value {
    let db = dir.join(&format!("{mode}.db"));
    let mut cmd = Command::new(python());
    cmd.arg(target_script("leak_server.py")).arg(mode);
    let mut t = Target::spawn(cmd);
    let rec = memlens()
        .args(["record", &t.pid().to_string()])
        .args([
            "--interval",
            "20ms",
            "--ledger-every",
            "250ms",
            "--census-every",
            "500ms",
        ])
        .args(["--cpu-budget", "25"])
        .arg("-o")
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("memlens record starts");
    // memlens installs its SIGINT handler before it creates the file.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !db.exists() {
        assert!(Instant::now() < deadline, "no recording file");
        std::thread::sleep(Duration::from_millis(5));
    }
    t.send(&format!("requests {requests}"));
    assert_eq!(
        t.read_line().as_deref(),
        Some(format!("DONE {requests}").as_str())
    );
    kill(rec.id(), "-INT");
    let out = rec.wait_with_output().expect("memlens record ends");
    assert!(out.status.success(), "memlens record: {}", stderr(&out));
    report_json(&db)
}

#[test]
fn a_steadily_leaking_server_is_a_leak_in_its_recording() {
    let dir = TempDir::new("leak-rec");
    let j = recorded("leak", 420, &dir);
    let l = leak_verdict(&j, "leak");
    // 256 KiB per ~10 ms request: at least 5 MiB/s, and R² of a steady line
    assert!(
        l["slope_bytes_per_s"].as_f64().expect("number") > 5.0 * 1048576.0,
        "{l}"
    );
    assert!(l["r2"].as_f64().expect("number") >= 0.9, "{l}");
    assert!(l["category"].is_string(), "{l}");
    let types = l["types"].as_array().expect("types");
    assert_eq!(
        types.first().map(|t| &t["type"]),
        Some(&Value::from("bytes")),
        "{l}"
    );
    // the text says it too
    let out = memlens()
        .args(["report"])
        .arg(dir.join("leak.db"))
        .output()
        .expect("memlens runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("LEAK"), "{text}");
}

#[test]
fn a_plateaued_server_is_not_a_leak_in_its_recording() {
    let dir = TempDir::new("plateau-rec");
    let j = recorded("plateau", 420, &dir);
    leak_verdict(&j, "no-leak");
    // it did grow (a growth phase at the start), then stopped
    assert!(
        !j["growth"].as_array().expect("growth").is_empty(),
        "{}",
        j["growth"]
    );
}

/// The `leak` object of a report or census, whose verdict must be `want`.
fn leak_verdict<'a>(j: &'a Value, want: &str) -> &'a Value {
    let l = &j["leak"];
    assert_eq!(
        l["verdict"],
        want,
        "{}",
        serde_json::to_string_pretty(l).expect("json")
    );
    l
}

fn census_growth(pid: u32, d: &str) -> std::process::Child {
    memlens()
        .args(["census", &pid.to_string(), "--growth", d, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("memlens starts")
}

fn finish(c: std::process::Child) -> Value {
    let out = c.wait_with_output().expect("memlens ends");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn census_growth_calls_a_steady_leak_a_leak_and_a_plateau_not() {
    let start = |mode: &str| {
        let mut cmd = Command::new(python());
        cmd.arg(target_script("leak_server.py")).arg(mode);
        Target::spawn(cmd)
    };
    // leaking through the whole interval: 400 requests take about 4 s, the interval 2.5 s
    let mut t = start("leak");
    t.send("requests 400");
    let c = census_growth(t.pid(), "2500ms");
    let j = finish(c);
    let l = leak_verdict(&j, "leak");
    assert_eq!(u(&l["pid"]), u64::from(t.pid()));
    assert_eq!(l["types"][0]["type"], "bytes", "{l}");
    assert!(
        l["types"][0]["bytes_delta"].as_i64().expect("number") > 10 << 20,
        "{l}"
    );
    assert_eq!(t.read_line().as_deref(), Some("DONE 400"));

    // a plateau: the cache filled before the interval
    let mut t = start("plateau");
    t.send("requests 150");
    assert_eq!(t.read_line().as_deref(), Some("DONE 150"));
    // busy through the interval, but keeping no more
    let c = census_growth(t.pid(), "2s");
    t.send("requests 200");
    let j = finish(c);
    assert_eq!(j["leak"]["verdict"], "no-leak", "{}", j["leak"]);
    assert_eq!(t.read_line().as_deref(), Some("DONE 200"));
}
