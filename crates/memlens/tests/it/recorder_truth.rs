//! The recorder against the kernel's truth: the tree's peak PSS read, the breakdown taken at
//! the peak, a `--max-peak` verdict that does not depend on the page cache, loud warnings for
//! processes memlens may not read, cut-off recordings, and the CPU budget as a ceiling with
//! 2,000 threads. Ground truth comes from the kernel (`smaps_rollup`, `/proc/PID/stat`,
//! `VmHWM`) and from construction, never from memlens; the tests wait on the targets' own
//! signals (lines on a pipe), not on sleeps.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    f, kill_if_alive, memlens, pythons, report_json, rollup_field, stderr, target_script, u,
    Python, Target, TempDir,
};
use serde_json::Value;

/// A CPython with a shared libpython (the newest pyenv one) and Debian's static, stripped 3.11
/// (whose arena table is found by scanning `.bss`) when there.
fn two_pythons() -> Vec<Python> {
    let all = pythons();
    let mut out: Vec<Python> = all
        .iter()
        .filter(|p| !p.label.starts_with("debian"))
        .max_by_key(|p| p.version)
        .cloned()
        .into_iter()
        .collect();
    out.extend(all.into_iter().filter(|p| p.label == "debian-3.11-static"));
    assert!(!out.is_empty(), "no CPython to test with");
    out
}

/// One value from a recording, read with the `sqlite3` shell (not through memlens).
fn sql(db: &Path, query: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(query)
        .output()
        .expect("the sqlite3 shell is installed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The kernel's PSS of a set of processes, summed.
fn kernel_pss(pids: &[u32]) -> u64 {
    for p in pids {
        let state = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        assert!(
            !state.is_empty() && !state.contains(") Z "),
            "process {p} of the tree is gone: {state:?}"
        );
    }
    pids.iter().map(|&p| rollup_field(p, "Pss")).sum()
}

/// CPU seconds (user + system) the kernel has charged to a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = stat.rsplit_once(") ").expect("stat shape").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    let hz: f64 = String::from_utf8_lossy(&hz.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK");
    ticks as f64 / hz
}

/// A parent holding 120 MiB that forks three workers, each adding 40 MiB of its own, and
/// prints their PIDs when all of them hold it. The tree's PSS at that plateau is about
/// 120 + 3 x 40 MiB whatever RSS says (RSS counts the parent's 120 MiB in every worker).
const FORKED_TREE: &str = r#"
import os, sys, time
shared = bytearray(120 << 20)
for i in range(0, len(shared), 4096):
    shared[i] = 1
hold_r, hold_w = os.pipe()
pids = []
for k in range(3):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(hold_w)
        own = bytearray(40 << 20)
        for i in range(0, len(own), 4096):
            own[i] = 2
        os.write(w, b'x')
        os.read(hold_r, 1)   # until the parent exits
        os._exit(0)
    os.read(r, 1)
    pids.append(pid)
print('PIDS', os.getpid(), *pids, flush=True)
print('READY', flush=True)
sys.stdin.readline()
"#;

/// The pids of a target's first line, `PIDS ...`.
fn pids_of(t: &Target) -> Vec<u32> {
    t.lines[0]
        .strip_prefix("PIDS ")
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// `memlens run -q -o DB -- PYTHON -c SCRIPT` of a script that prints `PIDS ...`, then READY:
/// the run, ready, and those pids.
fn run_script(db: &Path, py: &Path, script: &str) -> (Target, Vec<u32>) {
    let mut cmd = memlens();
    cmd.args(["run", "-q", "-o"])
        .arg(db)
        .arg("--")
        .arg(py)
        .args(["-c", script]);
    let t = Target::spawn(cmd);
    let pids = pids_of(&t);
    (t, pids)
}

#[test]
fn a_recorded_forked_tree_peaks_at_the_pss_the_kernel_reads() {
    // `record` of a tree already at its plateau: the first sample cannot read PSS yet, and
    // must not stand in for it (it used to: the peak was the RSS sum, about twice the PSS).
    let dir = TempDir::world_writable("forked-record");
    for py in two_pythons() {
        let mut t = Target::python(&py.path, FORKED_TREE);
        let pids = pids_of(&t);
        let before = kernel_pss(&pids);
        let db = dir.join(&format!("tree-{}.db", py.label));
        let out = memlens()
            .args([
                "record",
                &t.pid().to_string(),
                "--duration",
                "1.5s",
                "--json",
                "-o",
            ])
            .arg(&db)
            .output()
            .unwrap();
        let after = kernel_pss(&pids);
        let rss_sum: u64 = pids.iter().map(|&p| rollup_field(p, "Rss")).sum();
        assert!(out.status.success(), "{}", stderr(&out));
        t.send("done");
        // The plateau held while memlens recorded (the tree's share of libraries other
        // processes map too, other tests' interpreters, moves a little as they come and go).
        crate::support::assert_close("kernel PSS before/after", after, before, 3.0);
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        let peak = &j["peak"];
        let within = |what: &str, v: u64| {
            let (lo, hi) = (before.min(after) as f64, before.max(after) as f64);
            assert!(
                v as f64 >= lo * 0.97 && v as f64 <= hi * 1.03,
                "{} {what}: {v} is not within 3 % of the kernel's {before}..{after}",
                py.label
            );
        };
        within("peak", u(&peak["bytes"]));
        within("recorded tree PSS", u(&peak["pss"]));
        assert_eq!(peak["source"], "pss", "{}: {peak}", py.label);
        assert!(
            rss_sum > after * 3 / 2,
            "the tree shares too little to tell RSS from PSS: {rss_sum} vs {after}"
        );
    }
}

#[test]
fn a_running_forked_tree_peaks_at_the_pss_the_kernel_reads() {
    // The same tree started by `run`: once it is at its plateau, the test reads the kernel's
    // PSS, then waits (on the recording, read with the sqlite3 shell) for memlens to have read
    // the tree's PSS after that moment, then lets the program end.
    let dir = TempDir::world_writable("forked-run");
    let py = &two_pythons()[0];
    let db = dir.join("run.db");
    let (mut t, pids) = run_script(&db, &py.path, FORKED_TREE);
    let truth = kernel_pss(&pids);
    // Recording time now, from the recording's own origin.
    let started: f64 = sql(&db, "SELECT value FROM meta WHERE key = 'started_unix'")
        .parse()
        .unwrap();
    let plateau = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - started;
    let pid_list = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let read_since = |db: &Path| {
        sql(
            db,
            &format!(
                "SELECT count(DISTINCT p.pid) FROM pss JOIN processes p ON p.id = pss.process \
                 WHERE pss.t >= {plateau} AND p.pid IN ({pid_list})"
            ),
        )
        .parse::<usize>()
        .unwrap_or(0)
    };
    // Every process's PSS read since the plateau (so the recording saw it).
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_since(&db) < pids.len() {
        assert!(
            Instant::now() < deadline,
            "no PSS read of every process at the plateau"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.send("done");
    let status = t.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let j = report_json(&db);
    let peak = &j["peak"];
    crate::support::assert_close("recorded tree PSS", u(&peak["pss"]), truth, 3.0);
    assert_eq!(peak["source"], "pss", "{peak}");
}

/// Builds about 400 MiB of small objects (pymalloc's, so `python-heap`) over 6 s, prints the
/// wall-clock time when it is done, and exits at once (no teardown).
const BUILD_400: &str = r#"
import os, sys, time
per = 144   # bytes(100): 133 bytes, pymalloc's 144-byte class
n = (400 << 20) // per
steps = 60
keep = []
t0 = time.monotonic()
for k in range(steps):
    keep.extend([b'%100d' % i for i in range(n // steps)])
    time.sleep(max(0.0, t0 + (k + 1) * 0.1 - time.monotonic()))
print('PEAK_UNIX %.6f' % time.time(), flush=True)
os._exit(0)
"#;

/// The PSS per ledger category of a ledger's JSON (summed over its processes).
fn categories(ledger: &Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for p in ledger["processes"].as_array().unwrap() {
        for row in p["ledger"].as_array().unwrap() {
            let name = row["category"].as_str().unwrap().to_string();
            let pss = u(&row["pss"]);
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => *v += pss,
                None => out.push((name, pss)),
            }
        }
    }
    out.sort_by_key(|(_, v)| std::cmp::Reverse(*v));
    out
}

#[test]
fn a_program_that_builds_400_mib_gets_its_breakdown_at_its_peak() {
    // A ledger of 400 MiB walks 100,000 page-table entries in the kernel: 5 ms on a quiet
    // machine, 8-10 ms on this shared 2-core one. With the counters paid, the default 2 % buys
    // one every 0.6-1 s here (every 0.3 s on a quiet machine: bench/peak_breakdown.sh), so the
    // 0.5 s bound is checked at 8 %. Before, the budget starved the peak's ledger at any
    // budget up to 4 % (the interpreter's attach and the pool walk were charged to it). At 4 %
    // under the whole suite's load (CI, debug build) the last ledger once came 1.0 s before
    // the peak (static 3.11: ledgers every 0.3 s up to 363 MiB, then none for 1 s): a ledger
    // of ~400 MiB then costs ~40 ms of CPU, a second of a 4 % budget (closing note, stop 18).
    let dir = TempDir::world_writable("build400");
    for py in two_pythons() {
        for launch in 0..2 {
            let db = dir.join(&format!("b-{}-{launch}.db", py.label));
            let out = memlens()
                .args(["run", "--json", "--cpu-budget", "8", "-o"])
                .arg(&db)
                .arg("--")
                .arg(&py.path)
                .args(["-c", BUILD_400])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            let what = format!("{} launch {launch}", py.label);
            let text = String::from_utf8_lossy(&out.stdout);
            let peak_unix: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("PEAK_UNIX "))
                .unwrap_or_else(|| panic!("{what}: no PEAK_UNIX in {text}"))
                .parse()
                .unwrap();
            let started: f64 = sql(&db, "SELECT value FROM meta WHERE key = 'started_unix'")
                .parse()
                .unwrap();
            let peak_t = peak_unix - started;
            let j = report_json(&db);
            let at = f(&j["ledger_at_peak_seconds"]);
            assert!(
                (at - peak_t).abs() <= 0.5,
                "{what}: the breakdown is at {at:.2} s, the program peaked at {peak_t:.2} s; \
                 the last ledgers (t, reason, RSS): {}",
                sql(
                    &db,
                    "SELECT group_concat(printf('%.2f %s %d', t, reason, rss >> 20), ', ') \
                     FROM (SELECT * FROM ledgers ORDER BY t DESC LIMIT 8)"
                )
            );
            assert_eq!(
                j["breakdown"]["at_peak"], true,
                "{what}: {}",
                j["breakdown"]
            );
            let cats = categories(&j["ledger_at_peak"]);
            assert_eq!(cats[0].0, "python-heap", "{what}: {cats:?}");
            // By construction: 400 MiB of pymalloc blocks, all but the last half second's.
            assert!(cats[0].1 >= 300 << 20, "{what}: {cats:?}");
        }
    }
}

/// Reads a file through the page cache (never mapping it), holds 64 MiB of its own, and prints
/// its own VmHWM at the end.
const READS_A_FILE: &str = r#"
import sys
with open(sys.argv[1], 'rb') as fh:
    while fh.read(1 << 20):
        pass
own = bytearray(64 << 20)
for i in range(0, len(own), 4096):
    own[i] = 1
for line in open('/proc/self/status'):
    if line.startswith('VmHWM:'):
        print('VMHWM', int(line.split()[1]) * 1024, flush=True)
"#;

/// Drops a file's pages from the page cache (they are clean: the kernel can always drop them).
fn evict(path: &Path, py: &Path) {
    let st = Command::new(py)
        .args([
            "-c",
            "import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); \
             os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)",
        ])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Brings a file into the page cache.
fn warm(path: &Path) {
    let st = Command::new("cat")
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn max_peak_gives_the_same_verdict_whatever_the_page_cache_holds() {
    let dir = TempDir::world_writable("pagecache");
    let py = &two_pythons()[0];
    let data = dir.join("data.bin");
    std::fs::write(&data, vec![7u8; 192 << 20]).unwrap();
    let runs = std::cell::Cell::new(0);
    let run = |max: &str| {
        runs.set(runs.get() + 1);
        let out = memlens()
            .args(["run", "--json", "--max-peak", max, "-o"])
            .arg(dir.join(&format!("p{}.db", runs.get())))
            .arg("--")
            .arg(&py.path)
            .args(["-c", READS_A_FILE])
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let hwm: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("VMHWM "))
            .unwrap_or_else(|| panic!("no VMHWM: {text} {}", stderr(&out)))
            .parse()
            .unwrap();
        let start = text.find('{').expect("JSON report");
        let j: Value = serde_json::from_str(&text[start..]).unwrap();
        (out.status.code(), hwm, j)
    };
    let mut cgroups = Vec::new();
    for cold in [true, false, true] {
        if cold {
            evict(&data, &py.path);
        } else {
            warm(&data);
        }
        // 64 MiB and an interpreter: well under 160 MiB, whatever the cache held; the cgroup's
        // charge is over it when the run brings the file into the cache (192 MiB).
        let (code, hwm, j) = run("160M");
        let state = if cold { "cold" } else { "warm" };
        assert_eq!(code, Some(0), "{state} cache: {}", j["peak"]);
        // The kernel's RSS counters are per-CPU and approximate (VmHWM read by the program at
        // its end and wait4's ru_maxrss just after can differ by a few hundred KiB): "never
        // below" within that.
        let bytes = u(&j["peak"]["bytes"]);
        assert!(
            bytes + (1 << 20) >= hwm,
            "{state}: peak {bytes} below the program's VmHWM {hwm}"
        );
        crate::support::assert_close(&format!("{state} peak"), bytes, hwm, 5.0);
        cgroups.push(j["peak"]["cgroup"].as_u64());
        // And a budget below the program's own peak fails in either state.
        let (code, hwm, j) = run("40M");
        assert!(hwm > 40 << 20);
        assert_eq!(code, Some(7), "{state} cache: {}", j["peak"]);
    }
    // The setup did what it meant to: with a cgroup, the cold runs were charged the file.
    if let [Some(cold), Some(warm), Some(_)] = cgroups[..] {
        assert!(cold > warm + (100 << 20), "cold {cold}, warm {warm}");
    }
}

#[test]
fn recording_another_users_process_without_privilege_warns_loudly() {
    let Some(py) = pythons().into_iter().next() else {
        return;
    };
    if !Path::new("/usr/bin/setpriv").exists() {
        assert!(std::env::var_os("CI").is_none(), "setpriv missing in CI");
        return;
    }
    let dir = TempDir::world_writable("unprivileged");
    // A root-owned process: nobody (65534) may read its smaps.
    let t = Target::python(
        &py.path,
        "import time; x = bytearray(30 << 20); print('READY', flush=True); time.sleep(60)",
    );
    let record = |json: bool, db: &str| {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_memlens"),
            "record",
            &t.pid().to_string(),
            "--duration",
            "0.5s",
            "-o",
        ])
        .arg(dir.join(db))
        .current_dir(&dir.0);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let out = record(true, "j.db");
    if out.status.success() {
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        let warnings = j["warnings"].to_string();
        assert!(
            warnings.contains(&format!("pid {}", t.pid())) && warnings.contains("permission"),
            "no warning about pid {}: {warnings}",
            t.pid()
        );
        assert_ne!(j["peak"]["source"], "pss", "{}", j["peak"]);
        let out = record(false, "t.db");
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines()
                .any(|l| l.starts_with("warning:") && l.contains("permission")),
            "{text}"
        );
    } else {
        assert!(
            stderr(&out).contains("permission"),
            "failed without saying why: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_cut_off_recording_keeps_lifetimes_and_the_peak_its_samples_show() {
    let dir = TempDir::world_writable("cutoff");
    let py = &two_pythons()[0];
    let db = dir.join("c.db");
    let script = r#"
import os, sys
big = bytearray(64 << 20)
for i in range(0, len(big), 4096):
    big[i] = 1
hold_r, hold_w = os.pipe()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(hold_w)
    own = bytearray(32 << 20)
    for i in range(0, len(own), 4096):
        own[i] = 2
    os.write(w, b'x')
    os.read(hold_r, 1)   # until the parent exits
    os._exit(0)
os.read(r, 1)
print('PIDS', os.getpid(), pid, flush=True)
print('READY', flush=True)
sys.stdin.readline()
"#;
    let (mut t, pids) = run_script(&db, &py.path, script);
    // Wait until the recording holds more than a second of both processes alive, PSS read.
    let ready = |db: &Path| {
        let out = sql(
            db,
            &format!(
                "SELECT (SELECT max(t) FROM ticks), (SELECT count(DISTINCT process) FROM pss), \
                 (SELECT max(first_t) FROM processes WHERE pid IN ({}, {}))",
                pids[0], pids[1]
            ),
        );
        let v: Vec<f64> = out.split('|').map(|x| x.parse().unwrap_or(-1.0)).collect();
        (v[0], v[1], v[2])
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen_until = loop {
        let (t_max, n, born) = ready(&db);
        if n >= 2.0 && born >= 0.0 && t_max >= born + 1.0 {
            break t_max;
        }
        assert!(Instant::now() < deadline, "the recording did not grow");
        std::thread::sleep(Duration::from_millis(50));
    };
    kill_if_alive(t.pid(), "-KILL");
    let _ = t.child.wait();
    for &p in &pids {
        kill_if_alive(p, "-KILL");
    }
    let j = report_json(&db);
    assert_eq!(j["complete"], false);
    for &pid in &pids {
        let p = j["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| u(&p["pid"]) == u64::from(pid))
            .unwrap_or_else(|| panic!("pid {pid} missing: {}", j["processes"]));
        assert!(
            f(&p["last_seconds"]) >= seen_until - 1e-6,
            "pid {pid} alive until {} in the report, {seen_until} in the recording",
            p["last_seconds"]
        );
        assert!(
            f(&p["last_seconds"]) - f(&p["first_seconds"]) >= 1.0,
            "pid {pid} lived over a second: {p}"
        );
        assert!(p["exit_seconds"].is_null(), "{p}");
        assert!(u(&p["peak_pss"]) > 0, "{p}");
    }
    let parent = &j["processes"][0];
    assert!(u(&parent["vm_hwm"]) >= 64 << 20, "{parent}");
    let peak = &j["peak"];
    assert!(u(&peak["bytes"]) >= 96 << 20, "{peak}");
    assert!(
        f(&peak["at_seconds"]) <= f(&j["duration_seconds"]) + 1e-6,
        "{peak}"
    );
}

#[test]
fn two_thousand_threads_stay_within_the_cpu_budget() {
    let dir = TempDir::world_writable("threads");
    let py = &two_pythons()[0];
    for extra in [&[][..], &["--no-cgroup"][..]] {
        let mut cmd = memlens();
        cmd.args(["run", "-q", "--cpu-budget", "2"])
            .args(extra)
            .arg("-o")
            .arg(dir.join(&format!("t{}.db", extra.len())))
            .arg("--")
            .arg(&py.path)
            .arg(target_script("threads_2000.py"));
        let mut t = Target::spawn(cmd);
        let (c0, w0) = (cpu_seconds(t.pid()), Instant::now());
        let done = t.read_line();
        let (c1, w1) = (cpu_seconds(t.pid()), Instant::now());
        assert_eq!(done.as_deref(), Some("DONE"));
        t.send("exit");
        assert!(t.child.wait().unwrap().success());
        // The kernel's accounting of memlens's own CPU over the window, as a share of it. The
        // budget caps the average over a recording; over 8 s a burst of what the bucket saved
        // (at most 1.25 times a 2,000-thread ledger, about 90 ms here) can add a point: so
        // within twice the budget (before: 12 %).
        let share = (c1 - c0) / (w1 - w0).as_secs_f64();
        eprintln!("{extra:?}: memlens used {:.2} % of a core", share * 100.0);
        assert!(
            share <= 0.04,
            "{extra:?}: memlens used {:.1} % of a core with 2,000 threads",
            share * 100.0
        );
    }
}
