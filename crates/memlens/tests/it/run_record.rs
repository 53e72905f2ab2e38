//! `memlens run`, `record` and `report` against real programs. Ground truth comes from the
//! kernel (the program's own `ru_maxrss` and `VmHWM`, PIDs it prints) or from construction
//! (bytes allocated, leak rates), never from memlens.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::{
    chromium, chromium_log_clean, chromium_on, kill, memlens, no_panic, python, pythons,
    report_json, stderr, u, Target, TempDir,
};
use serde_json::Value;

fn run_memlens(args: &[&str], cwd: &Path) -> Output {
    memlens()
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("memlens runs")
}

/// `memlens run FLAGS -o DB -- python -c SCRIPT` in `dir`.
fn run_python(dir: &Path, flags: &[&str], db: &Path, script: &str) -> Output {
    let py = python();
    let mut args: Vec<&str> = vec!["run"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[
        "-o",
        db.to_str().unwrap(),
        "--",
        py.to_str().unwrap(),
        "-c",
        script,
    ]);
    run_memlens(&args, dir)
}

/// Records a Python that sleeps 0.3 s into `db`.
fn record_short_program(dir: &Path, db: &Path) {
    let out = run_python(dir, &["-q"], db, "import time; time.sleep(0.3)");
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Splits `run --json` stdout into the program's lines before the JSON and the JSON.
fn split_json(stdout: &[u8]) -> (Vec<String>, Value) {
    let text = String::from_utf8_lossy(stdout);
    let start = text.find("\n{").map(|i| i + 1).unwrap_or_else(|| {
        assert!(text.starts_with('{'), "no JSON in: {text}");
        0
    });
    let lines = text[..start].lines().map(str::to_string).collect();
    let json = serde_json::from_str(&text[start..])
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", &text[start..]));
    (lines, json)
}

fn close(what: &str, a: f64, b: f64, pct: f64) {
    assert!(
        (a - b).abs() <= b.abs() * pct / 100.0,
        "{what}: {a} not within {pct}% of {b}"
    );
}

const TRUTH_AT_EXIT: &str = r#"
def truth():
    import resource, json
    hwm = 0
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            hwm = int(line.split()[1]) * 1024
    print('TRUTH ' + json.dumps({'ru_maxrss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'vm_hwm': hwm}), flush=True)
"#;

#[test]
fn short_spike_peak_matches_the_kernel() {
    let dir = TempDir::new("spike");
    let mut pys = pythons();
    pys.truncate(1);
    if let Some(debian) = pythons()
        .into_iter()
        .find(|p| p.label.starts_with("debian"))
    {
        pys.push(debian);
    }
    for py in pys {
        // 300 MiB touched and freed 5 ms later, sampled every 0.5 s: only the kernel's own
        // peaks (VmHWM, the cgroup's) can be relied on to see it.
        let script = format!(
            "{TRUTH_AT_EXIT}\nimport time\ntime.sleep(0.2)\nb = b'\\x01' * (300 << 20)\ntime.sleep(0.005)\ndel b\ntime.sleep(0.3)\ntruth()\n"
        );
        let db = dir.join(&format!("spike-{}.db", py.label));
        let out = run_memlens(
            &[
                "run",
                "--json",
                "--interval",
                "500ms",
                "-o",
                db.to_str().unwrap(),
                "--",
                py.path.to_str().unwrap(),
                "-c",
                &script,
            ],
            &dir.0,
        );
        assert!(out.status.success(), "{}: {}", py.label, stderr(&out));
        let (lines, j) = split_json(&out.stdout);
        let truth: Value = serde_json::from_str(
            lines
                .iter()
                .find_map(|l| l.strip_prefix("TRUTH "))
                .expect("program printed its truth"),
        )
        .unwrap();
        let kernel_peak = u(&truth["vm_hwm"]).max(u(&truth["ru_maxrss"])) as f64;
        assert!(kernel_peak > (300u64 << 20) as f64);
        let procs = j["processes"].as_array().unwrap();
        assert_eq!(procs.len(), 1, "{}: {procs:?}", py.label);
        close(
            &format!("{} process vm_hwm", py.label),
            u(&procs[0]["vm_hwm"]) as f64,
            kernel_peak,
            2.0,
        );
        close(
            &format!("{} peak.rss", py.label),
            u(&j["peak"]["rss"]) as f64,
            kernel_peak,
            2.0,
        );
        // The tree's peak figure sees the spike too (cgroup charge: anonymous pages, no file cache).
        let bytes = u(&j["peak"]["bytes"]) as f64;
        assert!(
            bytes >= (300u64 << 20) as f64,
            "{}: peak.bytes {bytes}",
            py.label
        );
        assert!(
            bytes <= kernel_peak * 1.10,
            "{}: peak.bytes {bytes} vs {kernel_peak}",
            py.label
        );
        let at = j["peak"]["at_seconds"].as_f64().unwrap();
        assert!(
            at >= 0.2 && at <= j["duration_seconds"].as_f64().unwrap(),
            "peak at {at}"
        );
        assert_ne!(j["peak"]["source"], "sampled", "{}", j["peak"]);
        // With memlens's own cgroup, growth is found on its exact total.
        if j["peak"]["source"] == "cgroup" {
            assert_eq!(j["growth_series"], "cgroup");
        }
        assert_eq!(j["exit_code"], 0);
    }
}

#[test]
fn a_forking_program_shows_every_process() {
    let dir = TempDir::new("fork");
    let script = r#"
import os, time
pids = []
for i in range(3):
    pid = os.fork()
    if pid == 0:
        gpid = os.fork()
        if gpid == 0:
            x = b'g' * (8 << 20)
            time.sleep(0.4)
            os._exit(0)
        x = b'w' * (20 << 20)
        time.sleep(0.4)
        os.waitpid(gpid, 0)
        os._exit(0)
    pids.append(pid)
time.sleep(0.05)
print('PIDS', os.getpid(), ' '.join(map(str, pids)), flush=True)
for p in pids:
    os.waitpid(p, 0)
"#;
    let db = dir.join("fork.db");
    let out = run_python(&dir.0, &["-q"], &db, script);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("PIDS "))
        .expect("PIDS line");
    let expected: Vec<u64> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let j = report_json(&db);
    let seen: Vec<u64> = j["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| u(&p["pid"]))
        .collect();
    for pid in &expected {
        assert!(seen.contains(pid), "pid {pid} missing from {seen:?}");
    }
    // Three grandchildren too: 1 + 3 + 3.
    assert!(seen.len() >= 7, "{seen:?}");
    let workers: Vec<&Value> = j["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| expected[1..].contains(&u(&p["pid"])))
        .collect();
    for w in workers {
        assert!(u(&w["vm_hwm"]) >= 20 << 20, "worker {w}");
    }
}

#[test]
fn a_steady_leak_is_found_with_its_rate() {
    let dir = TempDir::new("leak");
    // 256 KiB every 10 ms for 3 s on a fixed schedule: 25 MiB/s by construction; the program
    // also measures what it actually did.
    let script = r#"
import time
time.sleep(0.5)
keep = []
chunk = 256 << 10
t0 = time.monotonic()
n = 0
while True:
    now = time.monotonic()
    if now - t0 >= 3.0:
        break
    keep.append(b'L' * chunk)
    n += 1
    time.sleep(max(0.0, t0 + n * 0.01 - time.monotonic()))
t1 = time.monotonic()
print('RATE', n * chunk / (t1 - t0), flush=True)
time.sleep(0.5)
"#;
    let db = dir.join("leak.db");
    let out = run_python(&dir.0, &["--json"], &db, script);
    assert!(out.status.success(), "{}", stderr(&out));
    let (lines, j) = split_json(&out.stdout);
    let truth: f64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("RATE "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let growth = j["growth"].as_array().unwrap();
    let biggest = growth
        .iter()
        .max_by_key(|g| {
            ((g["end_seconds"].as_f64().unwrap() - g["start_seconds"].as_f64().unwrap()) * 1000.0)
                as u64
        })
        .unwrap_or_else(|| panic!("no growth phase: {j}"));
    close(
        "leak rate",
        biggest["rate_bytes_per_second"].as_f64().unwrap(),
        truth,
        20.0,
    );
    let len = biggest["end_seconds"].as_f64().unwrap() - biggest["start_seconds"].as_f64().unwrap();
    assert!(len > 2.0, "phase too short: {biggest}");
    // The same from the recording.
    let again = report_json(&db);
    assert_eq!(again["growth"], j["growth"]);
}

#[test]
fn exit_status_and_stdio_pass_through() {
    let dir = TempDir::new("stdio");
    let mut child = memlens()
        .args(["run", "-q", "-o"])
        .arg(dir.join("s.db"))
        .args(["--", python().to_str().unwrap(), "-c"])
        .arg("import sys; d = sys.stdin.read(); sys.stdout.write(d.upper()); sys.stderr.write('to-stderr'); sys.exit(42)")
        .current_dir(&dir.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED IN\n");
    assert!(stderr(&out).contains("to-stderr"));
    // Quiet: nothing of memlens's own on stderr.
    assert!(!stderr(&out).contains("memlens"), "{}", stderr(&out));
}

#[test]
fn a_program_killed_by_a_signal_gives_128_plus_the_signal() {
    let dir = TempDir::new("sigkill");
    let db = dir.join("k.db");
    let out = run_python(
        &dir.0,
        &["-q"],
        &db,
        "import os, signal; x = b'k' * (40 << 20); os.kill(os.getpid(), signal.SIGKILL)",
    );
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    let j = report_json(&db);
    assert_eq!(j["exit_code"], 137);
    assert_eq!(j["exit_signal"], 9);
    assert!(u(&j["peak"]["rss"]) >= 40 << 20);
}

#[test]
fn sigterm_to_memlens_reaches_the_program() {
    let dir = TempDir::new("sigterm");
    let script = r#"
import signal, sys, time
def on_term(sig, frame):
    print('GOT SIGTERM', flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
print('READY', flush=True)
while True:
    time.sleep(0.05)
"#;
    let mut cmd = memlens();
    cmd.args(["run", "-q", "-o"])
        .arg(dir.join("t.db"))
        .args(["--", python().to_str().unwrap(), "-c", script])
        .current_dir(&dir.0);
    let mut t = Target::spawn(cmd);
    kill(t.pid(), "-TERM");
    let status = t.child.wait().unwrap();
    assert_eq!(t.rest().trim(), "GOT SIGTERM");
    assert_eq!(status.code(), Some(3));

    // Without a handler the program dies of it, and memlens reports 128 + 15.
    let mut cmd = memlens();
    cmd.args(["run", "-q", "-o"])
        .arg(dir.join("t2.db"))
        .args([
            "--",
            python().to_str().unwrap(),
            "-c",
            "import time; print('READY', flush=True); time.sleep(60)",
        ])
        .current_dir(&dir.0);
    let mut t = Target::spawn(cmd);
    kill(t.pid(), "-TERM");
    assert_eq!(t.child.wait().unwrap().code(), Some(143));
    let j = report_json(&dir.join("t2.db"));
    assert_eq!(j["exit_signal"], 15);
    assert!(j["complete"].as_bool().unwrap());
}

#[test]
fn a_recording_whose_writer_was_killed_opens_and_reports() {
    let dir = TempDir::new("killed");
    let db = dir.join("w.db");
    let script = "import os, time\nx = b'a' * (64 << 20)\nprint('PID', os.getpid(), flush=True)\nprint('READY', flush=True)\ntime.sleep(60)\n";
    let mut cmd = memlens();
    cmd.args(["run", "-q", "-o"])
        .arg(&db)
        .args(["--", python().to_str().unwrap(), "-c", script])
        .current_dir(&dir.0);
    let mut t = Target::spawn(cmd);
    let py_pid: u32 = t
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("PID "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // memlens commits every 0.5 s: after 1.5 s the allocation is on disk.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    kill(t.pid(), "-KILL");
    let _ = t.child.wait();
    kill(py_pid, "-KILL");
    let j = report_json(&db);
    assert_eq!(j["complete"], false);
    let procs = j["processes"].as_array().unwrap();
    assert!(
        procs.iter().any(|p| u(&p["pid"]) == u64::from(py_pid)),
        "{procs:?}"
    );
    assert!(u(&j["peak"]["rss"]) >= 64 << 20, "{}", j["peak"]);
    assert!(u(&j["samples"]) > 10);
    // Text and HTML reports work on it too.
    let out = memlens()
        .arg("report")
        .arg(&db)
        .arg("--html")
        .arg(dir.join("w.html"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cut off"));
}

#[test]
fn corrupt_and_truncated_recordings_give_exit_6() {
    let dir = TempDir::new("corrupt");
    let good = dir.join("good.db");
    record_short_program(&dir.0, &good);
    let bytes = std::fs::read(&good).unwrap();
    assert!(bytes.len() > 8192);

    let truncated = dir.join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let damaged = dir.join("damaged.db");
    let mut d = bytes.clone();
    let page = u16::from_be_bytes([d[16], d[17]]) as usize;
    for p in (page..d.len()).step_by(page) {
        for b in &mut d[p..(p + 24).min(bytes.len())] {
            *b = 0xAB;
        }
    }
    std::fs::write(&damaged, &d).unwrap();
    let text = dir.join("text.db");
    std::fs::write(&text, "this is not a recording\n").unwrap();
    let empty = dir.join("empty.db");
    std::fs::write(&empty, "").unwrap();
    let other = dir.join("other.db");
    let st = Command::new("sqlite3")
        .arg(&other)
        .arg("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .status();
    let cases: Vec<(PathBuf, &str)> = vec![
        (truncated, "truncated"),
        (damaged, "corrupt"),
        (text, "not a memlens recording"),
        (empty, "not a memlens recording"),
        (dir.join("missing.db"), "no such recording"),
    ]
    .into_iter()
    .chain(
        st.ok()
            .filter(|s| s.success())
            .map(|_| (other, "not a memlens recording")),
    )
    .collect();
    for (file, msg) in cases {
        for extra in [&[][..], &["--json"][..]] {
            let out = memlens()
                .arg("report")
                .arg(&file)
                .args(extra)
                .output()
                .unwrap();
            no_panic(&out);
            assert_eq!(
                out.status.code(),
                Some(6),
                "{}: {}",
                file.display(),
                stderr(&out)
            );
            assert!(
                stderr(&out).contains(msg),
                "{}: expected `{msg}` in: {}",
                file.display(),
                stderr(&out)
            );
            assert!(out.stdout.is_empty());
        }
    }
}

#[test]
fn a_missing_or_unexecutable_program_gives_127_or_126() {
    let dir = TempDir::new("missing");
    let out = run_memlens(
        &["run", "--", "/nonexistent/memlens-no-such-program", "x"],
        &dir.0,
    );
    no_panic(&out);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("command not found"),
        "{}",
        stderr(&out)
    );
    let out = run_memlens(&["run", "--", "memlens-no-such-program-on-path"], &dir.0);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    let plain = dir.join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\necho hi\n").unwrap();
    let out = run_memlens(&["run", "--", plain.to_str().unwrap()], &dir.0);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot execute"), "{}", stderr(&out));
    // No recording is left behind for a program that never ran.
    let left: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".db"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn max_peak_fails_the_run_with_7() {
    let dir = TempDir::new("budget");
    let script = "import time; x = b'm' * (100 << 20); time.sleep(0.1)";
    let out = run_python(
        &dir.0,
        &["-q", "--max-peak", "50M"],
        &dir.join("b.db"),
        script,
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exceeds --max-peak"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("pid "), "{}", stderr(&out));
    let out = run_python(
        &dir.0,
        &["-q", "--max-peak", "10G"],
        &dir.join("c.db"),
        script,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn record_a_running_tree_until_duration_and_until_ctrl_c() {
    let dir = TempDir::new("record");
    let py = python();
    let t = Target::python(
        &py,
        "import time; x = b'r' * (50 << 20); print('READY', flush=True); time.sleep(60)",
    );
    let db = dir.join("r.db");
    let out = memlens()
        .args([
            "record",
            &t.pid().to_string(),
            "--duration",
            "0.5s",
            "--json",
            "-o",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["mode"], "record");
    assert!(j["processes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| u(&p["pid"]) == u64::from(t.pid())));
    assert!(u(&j["peak"]["rss"]) >= 50 << 20);
    assert!(
        j["ledger_at_peak"]["processes"].is_array(),
        "{}",
        j["ledger_at_peak"]
    );

    // Ctrl-C (SIGINT) ends the recording cleanly.
    let db2 = dir.join("r2.db");
    let rec = memlens()
        .args(["record", &t.pid().to_string(), "-o"])
        .arg(&db2)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // memlens installs its handler before it creates the file: wait for the file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !db2.exists() {
        assert!(std::time::Instant::now() < deadline, "no recording file");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    kill(rec.id(), "-INT");
    let out = rec.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("peak:"));
    let j = report_json(&db2);
    assert_eq!(j["complete"], true);
    // Not a PID: exit 3.
    let out = memlens().args(["record", "999999999"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn the_recording_is_plain_sqlite() {
    let dir = TempDir::new("sqlite");
    let db = dir.join("p.db");
    record_short_program(&dir.0, &db);
    // Python's sqlite3 reads it: a single file (no -wal left), schema version 5 (docs/recording.md), samples.
    assert!(!dir.join("p.db-wal").exists());
    let check = Command::new(python())
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print(c.execute(\"select value from meta where key='schema_version'\").fetchone()[0], c.execute('select count(*) from ticks').fetchone()[0])")
        .arg(&db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    let mut f = text.split_whitespace();
    assert_eq!(f.next(), Some("5"), "{text} {}", stderr(&check));
    assert!(f.next().unwrap().parse::<u64>().unwrap() > 5);
    // And the sqlite3 shell.
    let shell = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT count(*) FROM processes; SELECT value FROM meta WHERE key = 'mode';")
        .output()
        .expect("the sqlite3 shell is installed");
    assert!(shell.status.success(), "{}", stderr(&shell));
    assert_eq!(String::from_utf8_lossy(&shell.stdout), "1\nrun\n");
}

/// The window the page is drawn in (the screenshot's pixels are counted in it), and no QUIC.
const WINDOW: &str = "--window-size=1100,1400";
const QUIC: &str = "--disable-quic";

#[test]
fn html_report_renders_offline_in_chromium_with_target_strings_escaped() {
    let dir = TempDir::new("html");
    // The program's path carries markup and quotes; so does a name it gives its worker.
    let evil_dir = dir.join("x<script>alert(\"p\")</script>");
    std::fs::create_dir_all(&evil_dir).unwrap();
    let prog = evil_dir.join("prog<script>\".py");
    std::fs::write(
        &prog,
        "import os, time\nb = b'h' * (60 << 20)\npid = os.fork()\nif pid == 0:\n    c = b'c' * (30 << 20)\n    time.sleep(0.6)\n    os._exit(0)\ntime.sleep(1.2)\nos.waitpid(pid, 0)\n",
    )
    .unwrap();
    let page = dir.join("report.html");
    let out = run_memlens(
        &[
            "run",
            "-q",
            "--html",
            page.to_str().unwrap(),
            "-o",
            dir.join("h.db").to_str().unwrap(),
            "--",
            python().to_str().unwrap(),
            prog.to_str().unwrap(),
        ],
        &dir.0,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();

    // Escaped, and nothing that could fetch or run anything.
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "unescaped <script> in the page");
    assert!(html.contains(
        "x&lt;script&gt;alert(&quot;p&quot;)&lt;/script&gt;/prog&lt;script&gt;&quot;.py"
    ));
    for bad in [
        "http://", "https://", "src=", "href=", "url(", "@import", "<link", "<img", "<iframe",
        "<object", "<embed",
    ] {
        assert!(!lower.contains(bad), "the page contains `{bad}`");
    }
    assert!(html.contains("default-src 'none'"), "no CSP");

    let Some(chromium) = chromium() else {
        return;
    };
    let profile = dir.join("profile");
    let (dom, log) = chromium_on(&chromium, &page, &profile, &[WINDOW, QUIC, "--dump-dom"]);
    chromium_log_clean(&log);
    assert!(dom.contains("<svg class=\"chart\""), "no chart in the DOM");
    assert!(dom.matches("<polygon").count() >= 2, "no stacked areas");
    assert!(
        dom.contains("&lt;script&gt;"),
        "escaped text missing from the DOM"
    );
    assert!(
        !dom.to_lowercase().contains("<script"),
        "a script element in the DOM"
    );

    let shot = dir.join("shot.png");
    let (_, log) = chromium_on(
        &chromium,
        &page,
        &profile,
        &[WINDOW, QUIC, &format!("--screenshot={}", shot.display())],
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let px = &buf[..info.buffer_size()];
    let (mut ink, mut orange, mut total) = (0u64, 0u64, 0u64);
    for p in px.chunks(channels) {
        total += 1;
        if p[0] < 235 || p[1] < 235 || p[2] < 235 {
            ink += 1;
        }
        // native-heap's fill (#f28e2b at 85 % opacity on white).
        if (p[0] as i32 - 0xf3).abs() < 20
            && (p[1] as i32 - 0x99).abs() < 25
            && (p[2] as i32 - 0x44).abs() < 35
        {
            orange += 1;
        }
    }
    assert!(
        ink * 100 / total >= 5,
        "screenshot mostly blank: {ink} of {total} pixels"
    );
    assert!(
        orange >= 2000,
        "the stacked area is not drawn: {orange} native-heap pixels"
    );
}

#[test]
fn an_exec_is_followed_and_no_double_dash_is_needed() {
    let dir = TempDir::new("exec");
    let db = dir.join("e.db");
    // sh replaces itself with Python: same PID, new program.
    let inner = format!(
        "exec {} -c 'import time; x = bytes(16 << 20); time.sleep(0.5)'",
        python().display()
    );
    let out = memlens()
        .args(["run", "-q", "-o"])
        .arg(&db)
        .args(["sh", "-c", &inner])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let j = report_json(&db);
    let procs = j["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{procs:?}");
    let cmd = procs[0]["cmdline"].as_str().unwrap();
    assert!(cmd.contains("import time"), "{cmd}");
    assert!(
        procs[0]["name"].as_str().unwrap().starts_with("python"),
        "{}",
        procs[0]
    );
}

#[test]
fn without_a_cgroup_the_report_says_which_peaks_are_sampled() {
    // An unprivileged user cannot create a memory cgroup: VmHWM stays exact, the tree sum is
    // sampled, and the report says so.
    let Some(py) = pythons()
        .into_iter()
        .find(|p| p.label.starts_with("debian"))
    else {
        return;
    };
    if !Path::new("/usr/bin/setpriv").exists() {
        assert!(std::env::var_os("CI").is_none(), "setpriv missing in CI");
        return;
    }
    let dir = TempDir::new("nocgroup");
    let mut perms = std::fs::metadata(&dir.0).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    std::fs::set_permissions(&dir.0, perms).unwrap();
    let db = dir.join("n.db");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_memlens"),
            "run",
            "--json",
            "-o",
        ])
        .arg(&db)
        .args([
            "--",
            py.path.to_str().unwrap(),
            "-c",
            "x = b'n' * (50 << 20)",
        ])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, j) = split_json(&out.stdout);
    assert_eq!(j["peak"]["source"], "vm_hwm", "{}", j["peak"]);
    assert!(j["peak"]["cgroup"].is_null());
    assert_eq!(j["growth_series"], "pss");
    let notes = j["peak"]["sampled"].to_string();
    assert!(
        notes.contains("cgroup") && notes.contains("sampled"),
        "{notes}"
    );
    assert!(u(&j["processes"][0]["vm_hwm"]) >= 50 << 20);
}

#[test]
fn the_python_view_and_a_census_join_the_recording() {
    let dir = TempDir::new("pyview");
    // 5000 instances of a class whose name carries markup, made before READY.
    let t = Target::python(
        &python(),
        "import time\nM = type('<script>\"M', (), {})\nkeep = [M() for _ in range(5000)]\nprint('READY', flush=True)\ntime.sleep(60)\n",
    );
    let db = dir.join("p.db");
    let html = dir.join("p.html");
    let out = memlens()
        .args([
            "record",
            &t.pid().to_string(),
            "--duration",
            "1s",
            "--census-every",
            "0.2s",
            "--cpu-budget",
            "50",
            "--json",
            "-o",
        ])
        .arg(&db)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let py = j["python"].as_array().unwrap();
    assert!(!py.is_empty(), "no Python view samples");
    assert!(py.iter().all(|p| u(&p["pid"]) == u64::from(t.pid())));
    assert!(u(&py[0]["pymalloc_used"]) > 0, "{}", py[0]);
    assert_eq!(py[0]["gc_collections"].as_array().unwrap().len(), 3);
    let census = j["census"].as_array().unwrap();
    assert_eq!(census.len(), 1, "{census:?}");
    let m = census[0]["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "<script>\"M")
        .unwrap_or_else(|| panic!("class missing from the census: {}", census[0]));
    assert_eq!(u(&m["count"]), 5000);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("&lt;script&gt;&quot;M"));
    assert!(!page.to_lowercase().contains("<script"));
}

#[test]
fn forked_workers_get_their_own_python_view() {
    let dir = TempDir::new("pyfork");
    // Worker 2 allocates 60000 small objects after the fork (about 2.9 MiB in pymalloc);
    // worker 1 none. Each must be read in its own process.
    let t = Target::python(
        &python(),
        "import os, sys, time\n\
         M = type('M', (), {})\n\
         pids = []\n\
         for n in (0, 60000):\n\
         \x20   r, w = os.pipe()\n\
         \x20   pid = os.fork()\n\
         \x20   if pid == 0:\n\
         \x20       keep = [M() for _ in range(n)]\n\
         \x20       os.write(w, b'x')\n\
         \x20       time.sleep(60)\n\
         \x20       os._exit(0)\n\
         \x20   os.read(r, 1)\n\
         \x20   pids.append(pid)\n\
         print('PIDS', *pids, flush=True)\n\
         print('READY', flush=True)\n\
         time.sleep(60)\n",
    );
    let pids: Vec<u64> = t
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("PIDS "))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let db = dir.join("f.db");
    let out = memlens()
        .args([
            "record",
            &t.pid().to_string(),
            "--duration",
            "0.5s",
            "--cpu-budget",
            "50",
            "--json",
            "-o",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let used = |pid: u64| {
        j["python"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| u(&p["pid"]) == pid)
            .map(|p| u(&p["pymalloc_used"]))
            .unwrap_or_else(|| panic!("no Python view of {pid}: {}", j["python"]))
    };
    let (w1, w2) = (used(pids[0]), used(pids[1]));
    assert!(w2 >= w1 + (2 << 20), "worker 1 {w1}, worker 2 {w2}");
    used(u64::from(t.pid()));
}

#[test]
fn python_behind_a_shim_gets_its_view_once_it_execs() {
    // pyenv's `python3` is a bash script that execs the interpreter; `sh -c 'exec python'` is
    // the same shape. The root is no Python when first seen, and must be read once it execs,
    // not after a retry delay longer than a short program.
    let dir = TempDir::new("shim");
    let db = dir.join("s.db");
    let script = format!(
        "sleep 0.3; exec {} -c 'import time; keep = [object() for _ in range(50000)]; time.sleep(1.2)'",
        python().display()
    );
    let out = memlens()
        .args(["run", "-q", "--json", "--cpu-budget", "50", "-o"])
        .arg(&db)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = u(&j["processes"][0]["pid"]);
    let views = j["python"].as_array().unwrap();
    assert!(
        views
            .iter()
            .any(|p| u(&p["pid"]) == root && u(&p["pymalloc_used"]) > 0),
        "no Python view of the root {root} after its exec: {views:?}"
    );
}

#[test]
fn a_parents_last_moment_peak_is_reported_or_bounded() {
    // A process that reaped a child, then peaks just before it exits: its VmHWM may not be read
    // in time, and wait4's ru_maxrss counts the child too. Either memlens caught the peak, or
    // the report says between which figures the process's own peak lies.
    let script = "import subprocess, sys\n\
                  subprocess.run(['true'])\n\
                  x = bytearray(120 << 20)\n";
    // Without -o, each run writes its recording in the current directory: a temporary one,
    // never the source tree the tests run from.
    let dir = TempDir::new("lastpeak");
    for run in 1..=3 {
        let out = memlens()
            .args([
                "run",
                "-q",
                "--json",
                "--",
                python().to_str().unwrap(),
                "-c",
                script,
            ])
            .current_dir(&dir.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        let root = &j["processes"][0];
        let notes = j["peak"]["sampled"].to_string();
        let caught = u(&root["vm_hwm"]) >= 120 << 20;
        let bounded = notes.contains(&format!("vm_hwm of pid {}", u(&root["pid"])));
        assert!(caught || bounded, "{root} / {notes}");
        let recordings = std::fs::read_dir(&dir.0)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".db"))
            .count();
        assert_eq!(
            recordings, run,
            "each run leaves its recording in its own directory"
        );
    }
}
