//! The one Python-view path (issue 7 item 5, issue 9 item 5) against real interpreters: every
//! CPython of `crate::support::pythons()` (pyenv 3.8-3.13 and Debian's static, stripped 3.11).
//! Ground truth comes from the targets themselves (`sys._debugmallocstats()`, `threading`,
//! their own frame chains) and from the kernel; recordings are read back with Python's own
//! `sqlite3`, not with memlens.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{memlens, memlens_json, pythons, target_script, u, Python, Target};
use memlens_cpython::{Attacher, ReadMode};
use serde_json::Value;

/// Starts `tree.py` with `workers` forked workers; returns the target and each process's
/// own pymalloc figures by pid.
fn start_tree(py: &Python, workers: usize) -> (Target, Vec<(u32, u64, u64)>) {
    let mut cmd = Command::new(&py.path);
    cmd.arg(target_script("tree.py")).arg(workers.to_string());
    let t = Target::spawn(cmd);
    let reports: Value = serde_json::from_str(t.lines.last().expect("report line")).unwrap();
    let truth = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (u(&r["pid"]) as u32, u(&r["arenas"]), u(&r["blocks"])))
        .collect();
    (t, truth)
}

/// Whether the kernel shows page frame numbers to this process (root with CAP_SYS_ADMIN): the
/// condition for forked workers to reuse pages another process read.
fn frames_visible() -> bool {
    let page = vec![7u8; 4096 * 2];
    let addr = (page.as_ptr() as u64).div_ceil(4096);
    let Ok(map) = memlens_procfs::pagemap::Pagemap::open(std::process::id()) else {
        return false;
    };
    let e = map.read(addr, 1).unwrap_or_default();
    std::hint::black_box(&page);
    e.first().and_then(|e| e.frame()).is_some()
}

/// A tree of forked workers: one discovery for all, each worker read in its own memory (its
/// figures are its own, though most of its pool headers come from pages its parent read), and
/// the snapshot's per-process figures match what each process says of itself. Several
/// launches, so addresses vary.
#[test]
fn a_forked_tree_costs_one_discovery_and_each_worker_gets_its_own_figures() {
    let reuse_expected = frames_visible();
    for py in pythons() {
        for launch in 0..2 {
            let (t, truth) = start_tree(&py, 4);
            let root = t.pid();
            let attacher = Attacher::for_tree();
            let mut order: Vec<u32> = truth.iter().map(|r| r.0).collect();
            order.rotate_right(1); // the root (last in the report) first, as snapshot does
            for pid in order {
                let s = attacher
                    .attach(pid)
                    .unwrap_or_else(|e| panic!("{}: {pid}: {e}", py.label));
                let (view, _) = s.view(ReadMode::Paused).unwrap();
                let (_, arenas, blocks) = *truth.iter().find(|r| r.0 == pid).unwrap();
                let pm = view
                    .pymalloc
                    .unwrap_or_else(|| panic!("{}: no pymalloc", py.label));
                assert_eq!(
                    pm.arenas, arenas,
                    "{} launch {launch}: arenas of {pid}",
                    py.label
                );
                crate::support::assert_close(
                    &format!("{} launch {launch}: used bytes of {pid}", py.label),
                    pm.used_bytes,
                    blocks,
                    1.0,
                );
            }
            let c = attacher.counts();
            assert_eq!(c.discoveries, 1, "{}: {c:?}", py.label);
            assert_eq!(
                c.twin_reuses, 4,
                "{}: the workers are twins of the root: {c:?}",
                py.label
            );
            let reused = attacher.shared_pages().map_or(0, |p| p.reused());
            if reuse_expected {
                assert!(
                    reused > 0,
                    "{}: no page reused between forked workers",
                    py.label
                );
            }
            // the snapshot of the tree says the same, process by process
            let snap = memlens_json(&["snapshot", &root.to_string(), "--tree", "--json"]);
            for (pid, arenas, blocks) in &truth {
                let p = snap["processes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| u(&p["pid"]) == u64::from(*pid))
                    .unwrap_or_else(|| panic!("{}: {pid} missing from the snapshot", py.label));
                let pm = &p["python"]["pymalloc"];
                assert_eq!(
                    u(&pm["arenas"]),
                    *arenas,
                    "{}: snapshot arenas of {pid}",
                    py.label
                );
                crate::support::assert_close(
                    &format!("{}: snapshot used bytes of {pid}", py.label),
                    u(&pm["used_bytes"]),
                    *blocks,
                    1.0,
                );
            }
        }
    }
}

/// Separate processes of one Python binary (not forked from each other): one discovery, then
/// a reuse of the binary's findings for each.
#[test]
fn processes_of_one_binary_cost_one_discovery() {
    for py in pythons() {
        let targets: Vec<Target> = (0..3)
            .map(|_| {
                Target::python(
                    &py.path,
                    "import sys; keep = [str(i) for i in range(20000)]; print('READY', flush=True); sys.stdin.readline()",
                )
            })
            .collect();
        let attacher = Attacher::new();
        for t in &targets {
            let s = attacher
                .attach(t.pid())
                .unwrap_or_else(|e| panic!("{}: {e}", py.label));
            assert_eq!(
                s.interpreter.version.minor as u32, py.version.1,
                "{}",
                py.label
            );
            let (view, _) = s.view(ReadMode::Paused).unwrap();
            assert!(view.pymalloc.is_some_and(|p| p.arenas > 0), "{}", py.label);
        }
        let c = attacher.counts();
        assert_eq!(
            (c.discoveries, c.binary_reuses, c.twin_reuses),
            (1, 2, 0),
            "{}: {c:?}",
            py.label
        );
    }
}

/// `stacks` names every thread as `threading` does (escaped in text), and marks what a deep
/// stack left out: shown plus omitted frames equal the chain the target counted itself.
#[test]
fn stacks_name_threads_and_count_the_frames_they_leave_out() {
    for py in pythons() {
        let depth = 6000; // deeper than the 4,096 frames shown
        let mut cmd = Command::new(&py.path);
        cmd.arg(target_script("stacks.py"))
            .args(["40", &depth.to_string()]);
        let t = Target::spawn(cmd);
        let truth: Value = serde_json::from_str(t.lines.last().unwrap()).unwrap();
        let pid = t.pid().to_string();
        let out = memlens_json(&["stacks", &pid, "--json"]);
        let threads = out["threads"].as_array().unwrap();
        let names = truth["names"].as_object().unwrap();
        assert_eq!(threads.len(), names.len(), "{}: thread count", py.label);
        for th in threads {
            let id = u(&th["thread_id"]).to_string();
            assert_eq!(
                th["name"].as_str(),
                names[&id].as_str(),
                "{}: name of thread {id}",
                py.label
            );
        }
        let main = threads
            .iter()
            .find(|th| u(&th["thread_id"]) == u(&truth["main"]))
            .unwrap();
        let shown = main["frames"].as_array().unwrap().len() as u64;
        assert_eq!(shown, 4096, "{}: frames shown", py.label);
        assert_eq!(
            shown + u(&main["frames_omitted"]),
            u(&truth["chain"]),
            "{}: shown + omitted = the target's own chain",
            py.label
        );
        assert_eq!(u(&main["native_thread_id"]), u(&truth["native"]));
        for th in threads
            .iter()
            .filter(|th| th["thread_id"] != main["thread_id"])
        {
            assert_eq!(u(&th["frames_omitted"]), 0, "{}", py.label);
        }
        // text: names escaped, the omission said
        let text = memlens().args(["stacks", &pid]).output().unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            !text.contains('\x1b'),
            "{}: raw escape in the text",
            py.label
        );
        assert!(
            text.contains("\"<b>\\u{1b}[31m-3\""),
            "{}: {text:.2000}",
            py.label
        );
        assert!(text.contains("\"w\u{e9}rker-1\""), "{}", py.label);
        let omitted = u(&truth["chain"]) - 4096;
        assert!(
            text.contains(&format!("... {omitted} more frames left out")),
            "{}: no mark of the frames left out",
            py.label
        );
    }
}

/// 2,000 threads: every one is read (the thread list is not cut), with its name; the pause is
/// printed for the record (no timed assertion).
#[test]
fn a_process_with_2000_threads_is_read_whole() {
    let py = pythons().into_iter().next().expect("a Python");
    let mut cmd = Command::new(&py.path);
    cmd.arg(target_script("stacks.py")).args(["2000", "1"]);
    let t = Target::spawn(cmd);
    let truth: Value = serde_json::from_str(t.lines.last().unwrap()).unwrap();
    let out = memlens_json(&["stacks", &t.pid().to_string(), "--json"]);
    let threads = out["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 2001);
    let names = truth["names"].as_object().unwrap();
    assert!(threads
        .iter()
        .all(|th| th["name"].as_str() == names[&u(&th["thread_id"]).to_string()].as_str()));
    let text = memlens()
        .args(["stacks", &t.pid().to_string()])
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&text.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    eprintln!("{}: {first}", py.label);
}

/// A program run under `memlens run` for `seconds`: it allocates objects at once, notes when
/// and what `sys._debugmallocstats()` says, then sleeps.
/// `env` is added to the program's environment (and memlens's). Returns the recording, the
/// program's figures and memlens's `-vv` log (for failures).
fn run_program(
    py: &Python,
    dir: &Path,
    seconds: f64,
    env: &[(&str, &std::ffi::OsStr)],
) -> (PathBuf, Value, String) {
    let db = dir.join(format!("r-{seconds}.db"));
    let truth = dir.join(format!("truth-{seconds}.json"));
    let script = format!(
        "import time\n\
         t0 = time.monotonic()\n\
         import json, os, re, sys, tempfile\n\
         keep = [str(i) * 3 for i in range(150000)]\n\
         t = time.monotonic()\n\
         fd, path = tempfile.mkstemp()\n\
         saved = os.dup(2); os.dup2(fd, 2); sys._debugmallocstats(); os.dup2(saved, 2); os.close(fd)\n\
         text = open(path).read(); os.unlink(path)\n\
         blocks = int(re.search(r'# bytes in allocated blocks\\s*=\\s*([\\d,]+)', text).group(1).replace(',', ''))\n\
         open({truth:?}, 'w').write(json.dumps({{'after_start': t - t0, 'blocks': blocks}}))\n\
         time.sleep(max(0.0, {seconds} - (time.monotonic() - t)))\n",
        truth = truth.to_str().unwrap()
    );
    let out = memlens()
        .args(["run", "-vv", "--cpu-budget", "50", "-o"])
        .arg(&db)
        .arg("--")
        .arg(&py.path)
        .args(["-c", &script])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}: {log}", py.label);
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(&truth).unwrap()).unwrap();
    (db, truth, log)
}

/// The recording's Python rows of its root and tick times, read with Python's own sqlite3
/// module.
fn python_rows(db: &Path) -> Value {
    let script = "import json, sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1])\n\
        rows = [[t, json.loads(j)] for t, j in c.execute('select t, json from python where process = (select min(id) from processes) order by t')]\n\
        ticks = [t for (t,) in c.execute('select t from ticks order by t')]\n\
        exit_t = c.execute('select exit_t from processes where id = (select min(id) from processes)').fetchone()[0]\n\
        procs = [list(r) for r in c.execute('select * from processes')]\n\
        print(json.dumps({'rows': rows, 'ticks': ticks, 'exit_t': exit_t, 'processes': procs}))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Recordings of a 2 s and a 0.5 s program carry the Python view (attached at the exec, off
/// the sampler's thread), each row stamped with when it was read and consistent with the
/// program's own figures: never more than it held, and a row stamped before the program could
/// have allocated (it allocated `after_start` seconds after its own first line, which runs
/// after memlens spawned it at time 0) does not show the allocation. When the rows fall
/// depends on the budget and the machine's load, so the figure at rest is checked by
/// [`a_recording_of_a_program_at_rest_matches_its_own_figures`]. The sampler's longest gap between
/// ticks in the first second, and the largest share of the program's blocks a row shows (the
/// reads after the growth's ledgers), are printed (no timed assertion).
#[test]
fn recordings_of_short_programs_carry_the_python_view() {
    for py in pythons() {
        for seconds in [2.0, 0.5] {
            let dir = std::env::temp_dir().join(format!(
                "memlens-pvp-{}-{}-{seconds}",
                std::process::id(),
                py.label
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let run = run_program(&py, &dir, seconds, &[]);
            check_short_recording(&py, &format!("{seconds} s"), run);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The checks of [`recordings_of_short_programs_carry_the_python_view`] on one run of
/// [`run_program`].
fn check_short_recording(py: &Python, what: &str, (db, truth, log): (PathBuf, Value, String)) {
    let rec = python_rows(&db);
    let rows = rec["rows"].as_array().unwrap();
    let exit_t = rec["exit_t"].as_f64().expect("the program's exit time");
    assert!(
        !rows.is_empty(),
        "{} {what}: no Python view in the recording; processes {}; memlens said:\n{log}",
        py.label,
        rec["processes"]
    );
    let blocks = u(&truth["blocks"]) as f64;
    let allocated_at = truth["after_start"].as_f64().unwrap();
    let used = |r: &Value| r[1]["pymalloc_used"].as_f64().unwrap_or(0.0);
    let stamp = |r: &Value| r[0].as_f64().unwrap();
    // a read that races the program (they never stop it) may miss pymalloc: the row
    // then says so (null); most rows have it
    assert!(
        rows.iter().any(|r| used(r) > 0.0),
        "{} {what}: no row with pymalloc: {rows:?}",
        py.label
    );
    for r in rows.iter().filter(|r| !r[1]["pymalloc_used"].is_null()) {
        assert!(
            used(r) <= blocks * 1.02 && used(r) > 0.0,
            "{} {what}: a row shows {} bytes; the program never held more than {blocks}",
            py.label,
            used(r)
        );
        assert!(
            stamp(r) >= 0.0 && stamp(r) <= exit_t,
            "{}: a row stamped {} s, the program exited at {exit_t} s",
            py.label,
            stamp(r)
        );
        if stamp(r) < allocated_at {
            assert!(
                used(r) < blocks * 0.9,
                "{} {what}: a row stamped {:.3} s, before the program could have allocated ({allocated_at:.3} s), shows {} bytes",
                py.label,
                stamp(r),
                used(r)
            );
        }
    }
    let ticks: Vec<f64> = rec["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let gap = ticks
        .windows(2)
        .filter(|w| w[1] < 1.0)
        .map(|w| w[1] - w[0])
        .fold(0.0, f64::max);
    eprintln!(
        "{} {what}: {} Python rows, first at {:.3} s, at most {:.0}% of the blocks; longest tick gap in the first second {:.1} ms",
        py.label,
        rows.len(),
        rows[0][0].as_f64().unwrap(),
        rows.iter().map(used).fold(0.0, f64::max) / blocks * 100.0,
        gap * 1e3
    );
}

/// A program held by the dynamic loader before libpython is mapped (an audit library holds it
/// 0.5 s in `la_version`, as a loaded machine can) and that exits 0.15 s after its first line
/// still gets its view: memlens's first tries find an executable without libpython, which for
/// the root of `memlens run`, just exec'd, means "starting" (tried again quickly), not "not
/// Python" (left alone for 2 s, past the program's end).
#[test]
fn a_program_that_starts_late_still_gets_its_view() {
    let dir = std::env::temp_dir().join(format!("memlens-pvs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lib = dir.join("slow_start.so");
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(target_script("slow_start.c"))
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    for py in pythons() {
        let env = [
            ("LD_AUDIT", lib.as_os_str()),
            ("SLOW_START_MS", std::ffi::OsStr::new("500")),
        ];
        let run_dir = dir.join(&py.label);
        std::fs::create_dir_all(&run_dir).unwrap();
        let run = run_program(&py, &run_dir, 0.15, &env);
        check_short_recording(&py, "held 0.5 s before libpython", run);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `memlens record` of a program at rest (it allocated, read its own figures, and waits):
/// every Python row of a 2 s and a 0.5 s recording shows its figures.
#[test]
fn a_recording_of_a_program_at_rest_matches_its_own_figures() {
    for py in pythons() {
        for seconds in ["2s", "0.5s"] {
            let t = Target::python(
                &py.path,
                "import json, os, re, sys, tempfile\n\
                 keep = [str(i) * 3 for i in range(150000)]\n\
                 spare = [str(i) * 3 for i in range(20000)]; del spare[::2]\n\
                 fd, path = tempfile.mkstemp()\n\
                 saved = os.dup(2); os.dup2(fd, 2); sys._debugmallocstats(); os.dup2(saved, 2); os.close(fd)\n\
                 text = open(path).read(); os.unlink(path)\n\
                 blocks = int(re.search(r'# bytes in allocated blocks\\s*=\\s*([\\d,]+)', text).group(1).replace(',', ''))\n\
                 print(json.dumps({'blocks': blocks}))\n\
                 print('READY', flush=True)\n\
                 os.read(0, 1)\n",
            );
            let truth: Value = serde_json::from_str(t.lines.last().unwrap()).unwrap();
            let blocks = u(&truth["blocks"]) as f64;
            let dir = std::env::temp_dir().join(format!(
                "memlens-pvr-{}-{}-{seconds}",
                std::process::id(),
                py.label
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let db = dir.join("r.db");
            let out = memlens()
                .args(["record", &t.pid().to_string(), "--duration", seconds, "-o"])
                .arg(&db)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rec = python_rows(&db);
            let _ = std::fs::remove_dir_all(&dir);
            let rows = rec["rows"].as_array().unwrap();
            assert!(!rows.is_empty(), "{} {seconds}: no Python view", py.label);
            for r in rows {
                let used = r[1]["pymalloc_used"].as_f64().unwrap_or(0.0);
                assert!(
                    (used - blocks).abs() <= blocks * 0.02,
                    "{} {seconds}: a row shows {used} bytes, the program {blocks}",
                    py.label
                );
                assert_eq!(r[1]["gc_counts"].as_array().map(Vec::len), Some(3));
            }
        }
    }
}

/// A process another tool traces cannot be paused: exit 4, and the hint names the tracer and
/// says `--nonblocking` still reads it (which then works).
#[test]
fn a_traced_process_gets_a_hint_naming_its_tracer() {
    let py = pythons().into_iter().next().expect("a Python");
    let t = Target::python(
        &py.path,
        "import sys; print('READY', flush=True); sys.stdin.readline()",
    );
    // the tracer: PTRACE_SEIZE through ctypes, then wait
    let tracer = Target::python(
        &py.path,
        &format!(
            "import ctypes, sys\n\
             libc = ctypes.CDLL(None, use_errno=True)\n\
             assert libc.ptrace(0x4206, {}, None, None) == 0, ctypes.get_errno()\n\
             print('READY', flush=True)\n\
             sys.stdin.readline()\n",
            t.pid()
        ),
    );
    let pid = t.pid().to_string();
    let out = memlens().args(["stacks", &pid]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("already traced by pid {}", tracer.pid()))
            && err.contains("--nonblocking"),
        "{err}"
    );
    let out = memlens_json(&["stacks", &pid, "--nonblocking", "--json"]);
    assert_eq!(out["threads"].as_array().map(Vec::len), Some(1));
    drop(tracer);
}

/// The check that makes reusing another process's page safe: a worker reuses a piece its
/// parent read from the very same shared page; once the parent writes that page (the kernel
/// gives it a copy), the reuse no longer holds and `confirm` names the worker to read again.
#[test]
fn a_reused_page_that_changed_is_caught_by_the_confirmation() {
    use memlens_cpython::reader::{PageReader, SharedPages};
    use memlens_remote::{ProcessMemory, RemoteMemory};
    if !frames_visible() {
        eprintln!("page frame numbers are hidden here (no CAP_SYS_ADMIN): nothing is reused");
        return;
    }
    let py = pythons().into_iter().next().expect("a Python");
    let mut t = Target::python(
        &py.path,
        "import ctypes, json, os, sys\n\
         buf = bytearray(b'x' * (1 << 20))\n\
         addr = (ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf)) + 8191) // 4096 * 4096\n\
         r, w = os.pipe()\n\
         pid = os.fork()\n\
         if pid == 0:\n    os.read(r, 1)\n    os._exit(0)\n\
         print(json.dumps({'child': pid, 'addr': addr}))\n\
         print('READY', flush=True)\n\
         sys.stdin.readline()\n\
         off = addr - ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))\n\
         buf[off:off + 64] = b'y' * 64\n\
         print('WROTE', flush=True)\n\
         sys.stdin.readline()\n",
    );
    let info: Value = serde_json::from_str(t.lines.last().unwrap()).unwrap();
    let (child, addr) = (u(&info["child"]) as u32, u(&info["addr"]));
    let shared = SharedPages::deferred();
    let read = |pid: u32| {
        let mem = RemoteMemory::open(pid).unwrap();
        let r = PageReader::new(&mem, pid, Some(&shared));
        let mut b = [0u8; 48];
        let mut reqs: Vec<(u64, &mut [u8])> = vec![(addr, &mut b)];
        assert!(r.read_many(&mut reqs)[0].is_ok());
        (b, r.counts().reused)
    };
    let (parent_bytes, _) = read(t.pid());
    let (child_bytes, reused) = read(child);
    assert_eq!(parent_bytes, child_bytes);
    assert_eq!(&parent_bytes[..], &[b'x'; 48][..]);
    assert_eq!(reused, 1, "the child reused the parent's piece");
    assert!(shared.confirm().is_empty(), "nothing changed yet");
    let (_, reused) = read(child);
    assert_eq!(reused, 1);
    t.send("write");
    assert_eq!(t.read_line().as_deref(), Some("WROTE"));
    let again = shared.confirm();
    assert!(
        again.contains(&child),
        "the parent's page changed under the child's reuse, unnoticed: {again:?}"
    );
    let _ = Command::new("kill")
        .args(["-9", &child.to_string()])
        .status();
}
