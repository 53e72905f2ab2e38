//! The Python view against real interpreters: every installed CPython 3.8-3.13 and the static,
//! stripped Debian 3.11, each compared with ground truth computed inside the target.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{memlens, memlens_json, proc_state, target_script, u, Python, Target};
use serde_json::Value;

/// The supported interpreters (`crate::support::pythons()`: every pyenv 3.8-3.13 and Debian's static
/// 3.11) plus any listed in `MEMLENS_TEST_EXTRA_PYTHONS` as `label:minor:path`, comma-separated
/// (how 3.14 was tested: Debian sid's 3.14.10 run through its own ld.so).
fn pythons() -> Vec<Python> {
    let mut out = crate::support::pythons();
    if let Ok(extra) = std::env::var("MEMLENS_TEST_EXTRA_PYTHONS") {
        for e in extra.split(',').filter(|e| !e.is_empty()) {
            let mut it = e.splitn(3, ':');
            let (Some(label), Some(minor), Some(path)) = (it.next(), it.next(), it.next()) else {
                panic!("MEMLENS_TEST_EXTRA_PYTHONS entry {e:?} is not label:minor:path");
            };
            out.push(Python {
                label: label.into(),
                path: PathBuf::from(path),
                version: (3, minor.parse().expect("minor")),
            });
        }
    }
    out
}

fn start(py: &Python, script: &str) -> (Target, Value) {
    let mut cmd = Command::new(&py.path);
    cmd.arg(target_script(script));
    let t = Target::spawn(cmd);
    let truth = t
        .lines
        .iter()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{}: no JSON from {script}: {:?}", py.label, t.lines));
    let v: Value = serde_json::from_str(truth).expect("target JSON");
    (t, v)
}

#[test]
fn census_matches_in_target_traversal() {
    for py in pythons() {
        let (t, truth) = start(&py, "census.py");
        let pid = t.pid().to_string();
        let census = memlens_json(&["census", &pid, "--top", "0", "--json"]);
        assert_eq!(
            census["python"]["version"]
                .as_str()
                .map(|v| v.starts_with(&format!("3.{}", py.version.1))),
            Some(true),
            "{}: {}",
            py.label,
            census["python"]
        );
        let counts = truth["counts"].as_object().expect("counts");
        let bytes = truth["bytes"].as_object().expect("bytes");
        let frozen = u(&truth["frozen"]);
        let mine = |name: &str, field: &str| -> u64 {
            census["types"]
                .as_array()
                .expect("types")
                .iter()
                .find(|t| t["type"] == name)
                .map_or(0, |t| u(&t[field]))
        };
        let mut top: Vec<(&String, u64)> = counts.iter().map(|(k, v)| (k, u(v))).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (name, want) in top.iter().take(10) {
            let got = mine(name, "count");
            // 2%, plus what the permanent generation holds after gc.unfreeze() (3.12 moves
            // immortal tracked objects there; gc.get_objects() cannot list them)
            let slack = *want as f64 * 0.02 + frozen as f64;
            assert!(
                (got as f64 - *want as f64).abs() <= slack,
                "{}: {name}: memlens counts {got}, the target {want} (frozen {frozen})",
                py.label
            );
        }
        for class in ["MemlensTestThing", "MemlensPlain"] {
            assert_eq!(
                mine(class, "count"),
                u(&counts[class]),
                "{}: {class} count",
                py.label
            );
            assert_eq!(
                mine(class, "bytes"),
                u(&bytes[class]),
                "{}: {class} bytes",
                py.label
            );
        }
        for name in ["str", "int", "float", "tuple", "bytes", "list"] {
            let (got, want) = (mine(name, "bytes"), u(&bytes[name]));
            let slack = want as f64 * 0.02 + frozen as f64 * 64.0;
            assert!(
                (got as f64 - want as f64).abs() <= slack,
                "{}: {name}: memlens sizes {got} bytes, sys.getsizeof {want}",
                py.label
            );
        }
        assert_eq!(
            u(&census["objects"]),
            census["types"]
                .as_array()
                .map_or(0, |a| a.iter().map(|t| u(&t["count"])).sum()),
            "{}: objects is the sum of the types",
            py.label
        );
    }
}

#[test]
fn gc_pymalloc_and_modules_match_the_target() {
    for py in pythons() {
        let (t, truth) = start(&py, "gc.py");
        let (view, hints) = memlens_cpython::views::inspect(t.pid(), false);
        let view = view.unwrap_or_else(|| panic!("{}: no Python view", py.label));
        let gc = view
            .gc
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no GC state", py.label));
        let th: Vec<u64> = truth["threshold"]
            .as_array()
            .expect("threshold")
            .iter()
            .map(u)
            .collect();
        let count: Vec<u64> = t
            .lines
            .iter()
            .find_map(|l| l.strip_prefix("COUNT "))
            .expect("COUNT line")
            .split(' ')
            .map(|v| v.parse().expect("count"))
            .collect();
        assert_eq!(
            gc.generations
                .iter()
                .map(|g| g.threshold as u64)
                .collect::<Vec<_>>(),
            th,
            "{}: thresholds",
            py.label
        );
        assert_eq!(
            gc.generations
                .iter()
                .map(|g| g.count as u64)
                .collect::<Vec<_>>(),
            count,
            "{}: counts",
            py.label
        );
        assert_eq!(gc.frozen, u(&truth["frozen"]), "{}: frozen", py.label);
        assert!(gc.frozen > 3000, "{}: the target froze objects", py.label);
        assert!(!gc.collecting, "{}: no collection is running", py.label);
        for (i, s) in truth["stats"].as_array().expect("stats").iter().enumerate() {
            let g = &gc.generations[i];
            assert_eq!(
                [g.collections, g.collected, g.uncollectable]
                    .map(|v| v as u64)
                    .to_vec(),
                s.as_array()
                    .expect("stat")
                    .iter()
                    .map(u)
                    .collect::<Vec<_>>(),
                "{}: stats of generation {i}",
                py.label
            );
        }
        let pm = view
            .pymalloc
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no pymalloc", py.label));
        assert_eq!(pm.arenas, u(&truth["arenas"]), "{}: arenas", py.label);
        crate::support::assert_close(
            &format!("{}: bytes in allocated blocks", py.label),
            pm.used_bytes,
            u(&truth["blocks"]),
            1.0,
        );
        assert_eq!(pm.used_bytes + pm.free_bytes, pm.arenas * pm.arena_size);
        assert_eq!(hints.len() as u64, pm.arenas, "{}: hints", py.label);
        let modules = view
            .modules
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no modules", py.label));
        let names: Vec<String> = truth["modules"]
            .as_array()
            .expect("modules")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            modules.count,
            names.len() as u64,
            "{}: module count",
            py.label
        );
        assert_eq!(modules.names, names, "{}: module names", py.label);
        drop(t);
    }
}

#[test]
fn stacks_match_threading_and_current_frames() {
    for py in pythons() {
        let (t, truth) = start(&py, "threads.py");
        // READY is written from inside report(): wait until the main thread has returned from
        // it and blocks in read(2), where the frames the target reported are the true ones.
        wait_in_read(t.pid());
        let pid = t.pid().to_string();
        let out = memlens_json(&["stacks", &pid, "--json"]);
        let threads = out["threads"].as_array().expect("threads");
        let mut mine: Vec<(u64, u64)> = threads
            .iter()
            .map(|t| (u(&t["thread_id"]), u(&t["native_thread_id"])))
            .collect();
        let mut want: Vec<(u64, u64)> = truth["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .map(|p| (u(&p[0]), u(&p[1])))
            .collect();
        mine.sort();
        want.sort();
        assert_eq!(mine, want, "{}: threads and native ids", py.label);
        for t in threads {
            let id = u(&t["thread_id"]).to_string();
            let frames: Vec<(String, String, u64)> = t["frames"]
                .as_array()
                .expect("frames")
                .iter()
                .map(|f| {
                    (
                        f["function"].as_str().unwrap_or_default().into(),
                        f["file"].as_str().unwrap_or_default().into(),
                        u(&f["line"]),
                    )
                })
                .collect();
            let expected: Vec<(String, String, u64)> = truth["frames"][&id]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no truth for thread {id}", py.label))
                .iter()
                .map(|f| {
                    (
                        f[0].as_str().unwrap_or_default().into(),
                        f[1].as_str().unwrap_or_default().into(),
                        u(&f[2]),
                    )
                })
                .collect();
            assert_eq!(frames, expected, "{}: frames of thread {id}", py.label);
        }
    }
}

/// Waits until the main thread of `pid` sleeps in the `read` system call (the kernel's
/// `/proc/PID/syscall`), polling that file.
fn wait_in_read(pid: u32) {
    let read_nr = if cfg!(target_arch = "aarch64") {
        "63"
    } else {
        "0"
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        if s.split_whitespace().next() == Some(read_nr) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pid} never blocked in read: {s}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn python_2_7_is_unsupported_with_exit_code_5() {
    let Some(py27) = crate::support::python27() else {
        eprintln!("python 2.7 not installed");
        return;
    };
    let t = Target::python(
        &py27,
        "import sys; sys.stdout.write('READY\\n'); sys.stdout.flush(); sys.stdin.readline()",
    );
    let pid = t.pid().to_string();
    for cmd in ["census", "stacks"] {
        let out = memlens().args([cmd, &pid]).output().expect("memlens runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{cmd}: {err}");
        assert!(err.contains("unsupported: CPython 2.7"), "{cmd}: {err}");
        assert!(
            err.contains("3.8 to 3.15"),
            "{cmd} names what is supported: {err}"
        );
    }
    let (view, hints) = memlens_cpython::views::inspect(t.pid(), false);
    assert!(view.is_none() && hints.is_empty());
    // 3.6 and 3.7 when pyenv has them (not part of the supported set, so not required)
    let root = PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pyenv/versions");
    for (v, minor) in [("3.6.15", 6), ("3.7.16", 7)] {
        let exe = root.join(v).join("bin").join(format!("python3.{minor}"));
        if !exe.exists() {
            continue;
        }
        let t = Target::python(
            &exe,
            "import sys; print('READY', flush=True); sys.stdin.readline()",
        );
        let out = memlens()
            .args(["stacks", &t.pid().to_string()])
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{v}: {err}");
        assert!(
            err.contains(&format!("unsupported: CPython 3.{minor};")),
            "{v}: {err}"
        );
    }
}

/// Starts a census that holds its pause, waits until the target is stopped by it, delivers
/// `signal` to memlens, and checks that the target runs on and answers.
fn killed_mid_census_leaves_target_running(signal: &str) {
    let py = pythons().into_iter().next().expect("a Python");
    let mut cmd = Command::new(&py.path);
    cmd.arg(target_script("echo.py"));
    let mut t = Target::spawn(cmd);
    let pid = t.pid();
    let mut m = memlens()
        .args(["census", &pid.to_string()])
        .env("MEMLENS_TEST_HOLD_PAUSE_MS", "60000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("memlens starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while proc_state(pid) != Some('t') {
        assert!(
            Instant::now() < deadline,
            "the census never paused the target"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args([signal, &m.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    m.wait().expect("memlens exits");
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(proc_state(pid), Some('t') | Some('T')) {
        assert!(
            Instant::now() < deadline,
            "target still stopped after memlens died"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    t.send("ping");
    assert_eq!(
        t.read_line().as_deref(),
        Some("echo ping"),
        "the target answers"
    );
    assert!(t.is_running());
}

#[test]
fn sigkill_mid_census_leaves_the_target_running() {
    killed_mid_census_leaves_target_running("-KILL");
}

#[test]
fn sigterm_and_sigint_mid_census_leave_the_target_running() {
    killed_mid_census_leaves_target_running("-TERM");
    killed_mid_census_leaves_target_running("-INT");
}

#[test]
fn missing_process_and_non_python_have_documented_codes() {
    let out = memlens()
        .args(["stacks", "4194305"])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
    let out = memlens()
        .args(["census", &sleeper.id().to_string()])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn snapshot_shows_the_python_view_and_fills_python_heap() {
    for py in pythons() {
        let (t, truth) = start(&py, "gc.py");
        let pid = t.pid().to_string();
        let snap = memlens_json(&["snapshot", &pid, "--json"]);
        let p = &snap["processes"][0];
        let pyv = &p["python"];
        assert!(
            pyv["version"]
                .as_str()
                .is_some_and(|v| v.starts_with(&format!("3.{}.", py.version.1))),
            "{}: exact version {}",
            py.label,
            pyv["version"]
        );
        assert_eq!(
            u(&pyv["gc"]["frozen"]),
            u(&truth["frozen"]),
            "{}: frozen",
            py.label
        );
        assert_eq!(pyv["gc"]["generations"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            u(&pyv["pymalloc"]["arenas"]),
            u(&truth["arenas"]),
            "{}: arenas",
            py.label
        );
        assert_eq!(
            u(&pyv["modules"]["count"]),
            truth["modules"].as_array().map_or(0, |m| m.len() as u64),
            "{}: modules",
            py.label
        );
        let heap = p["ledger"]
            .as_array()
            .expect("ledger")
            .iter()
            .find(|r| r["category"] == "python-heap")
            .unwrap_or_else(|| panic!("{}: no python-heap row", py.label));
        assert!(u(&heap["rss"]) > 0, "{}: python-heap is resident", py.label);
        assert_eq!(
            u(&heap["pymalloc"]["used_bytes"]) + u(&heap["pymalloc"]["free_bytes"]),
            u(&pyv["pymalloc"]["arenas"]) * u(&pyv["pymalloc"]["arena_size"]),
            "{}: used + free = arena bytes",
            py.label
        );
        let rows: u64 = p["ledger"]
            .as_array()
            .map_or(0, |r| r.iter().map(|r| u(&r["pss"])).sum());
        assert_eq!(
            rows,
            u(&p["totals"]["pss"]),
            "{}: rows still sum to the total",
            py.label
        );
    }
    if let Some(py27) = crate::support::python27() {
        let t = Target::python(
            &py27,
            "import sys; sys.stdout.write('READY\\n'); sys.stdout.flush(); sys.stdin.readline()",
        );
        let snap = memlens_json(&["snapshot", &t.pid().to_string(), "--json"]);
        let pyv = &snap["processes"][0]["python"];
        assert_eq!(
            pyv["version"], "2.7",
            "the OS ledger still names the version: {pyv}"
        );
        assert!(pyv.get("gc").is_none());
    }
}

/// Reading must not copy a forked worker's shared pages (process_vm_readv would: since Linux
/// 5.19 its read-only page pins unshare copy-on-write anonymous pages).
#[test]
fn census_leaves_forked_workers_shared() {
    let py = pythons().into_iter().next().expect("a Python");
    let t = Target::python(
        &py.path,
        "import os, sys\n\
         data = [str(i) * 20 for i in range(300000)]\n\
         r, w = os.pipe()\n\
         pid = os.fork()\n\
         if pid == 0:\n    os.read(r, 1)\n    os._exit(0)\n\
         print('CHILD', pid)\nprint('READY', flush=True)\nsys.stdin.readline()\n",
    );
    let child: u32 = t.lines[0]
        .strip_prefix("CHILD ")
        .and_then(|p| p.parse().ok())
        .expect("child pid");
    let before = crate::support::rollup_field(child, "Pss");
    memlens_json(&["census", &child.to_string(), "--json"]);
    memlens_json(&["stacks", &child.to_string(), "--json"]);
    let after = crate::support::rollup_field(child, "Pss");
    assert!(
        after < before + before / 10,
        "reading the child unshared its memory: PSS {before} -> {after}"
    );
    let _ = Command::new("kill")
        .args(["-9", &child.to_string()])
        .status();
}
