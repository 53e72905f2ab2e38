//! `memlens record PID --trace`: the tracer attached to a running CPython 3.14+ through PEP 768
//! (trace_attach.py). The bytes attributed to the two allocating lines are compared with the
//! target's own `sys.getsizeof` of what it keeps; the target keeps running and prints what it
//! prints without memlens. Refusals (exit 5, with the reason, nothing loaded, no directory
//! left): CPython 3.13, a 3.14+ started with `-X disable-remote-debug` or `PYTHON_DISABLE_REMOTE_DEBUG=1`, and a target whose main
//! thread is blocked in a read when the request comes (withdrawn: `ctypes` never imported).
//!
//! Tolerance of the per-line figures: 0.1 %. `--trace=all` records every request of CPython's
//! allocator domains with its exact size, and every object of those lines is allocated after
//! the attach and alive at the detach; `sys.getsizeof` of a bytearray and of a str is the size
//! requested (header and buffer), and the lists' item arrays are requested at their capacity,
//! which `getsizeof` counts. Measured: the traced figure is `getsizeof`'s less 56 bytes on
//! each line (3.14.10, 3.15.2), the list object itself, which CPython takes from its list
//! freelist without an allocator call; 0.003 % of the smaller line. A figure off by a whole
//! domain (the bytearray buffers are `malloc`, their headers `pymalloc`: 5 % of the line) or
//! by a sampling weight fails.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::preload::preload_so;
use crate::support::{
    kill, memlens, no_panic, pythons, report_json, rollup_field, stderr, target_script, u, Python,
    Target, TempDir,
};
use crate::support_trace::markers;

fn sid_pythons() -> Vec<Python> {
    pythons()
        .into_iter()
        .filter(|p| p.version >= (3, 14))
        .collect()
}

const SCRIPT: &str = "trace_attach.py";

/// The line of the target marked `# @MARK`.
fn line_of(mark: &str) -> u64 {
    markers(SCRIPT)[mark]
}

fn start(py: &Path, args: &[&str]) -> Target {
    let mut cmd = Command::new(py);
    cmd.args(args).arg(target_script(SCRIPT));
    Target::spawn(cmd)
}

/// As [`start`], the target's stderr going to `err` (through `sh -c 'exec ...'`: same PID), to
/// check that nothing memlens made it run printed anything.
fn start_capturing(py: &Path, err: &Path) -> Target {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("exec \"$0\" \"$1\" 2>\"$2\"")
        .arg(py)
        .arg(target_script(SCRIPT))
        .arg(err);
    Target::spawn(cmd)
}

fn ask(t: &mut Target, line: &str) -> String {
    t.send(line);
    t.read_line().expect("the target answers")
}

fn leftovers(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes of `leaked.by_line` (alive at the detach) at the target's `line`.
fn at_line(allocs: &Value, line: u64) -> u64 {
    crate::support_trace::at_line(&allocs["leaked"]["by_line"], SCRIPT, line) as u64
}

/// Starts `memlens record PID --trace=all -o REC` (private directory under `tmp`) and returns
/// it once it says `recording pid` on stderr (the tracer is attached by then).
fn record_traced(pid: &str, rec: &Path, tmp: &Path, mode: &[&str]) -> Child {
    let mut r = memlens()
        .env("MEMLENS_PRELOAD", preload_so())
        .env("TMPDIR", tmp)
        .args(["record", pid])
        .args(mode)
        .arg("-o")
        .arg(rec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("memlens record starts");
    let mut err = BufReader::new(r.stderr.take().expect("piped"));
    let mut said = String::new();
    while !said.contains("recording pid") {
        let n = err.read_line(&mut said).expect("read record's stderr");
        assert!(n > 0, "memlens record ended before recording: {said}");
    }
    assert!(said.contains("tracer attached"), "{said}");
    r.stderr = Some(err.into_inner());
    r
}

fn close(what: &str, got: u64, want: u64, pct: f64) {
    let err = (got as f64 - want as f64).abs() / want as f64 * 100.0;
    eprintln!("{what}: {got} traced vs {want} by sys.getsizeof ({err:.3}%)");
    assert!(err <= pct, "{what}: {got} vs {want} ({err:.3}% > {pct}%)");
}

#[test]
fn record_trace_all_attributes_python_allocations_and_leaves_the_target_running() {
    let (bytearrays, strings) = (line_of("bytearrays"), line_of("strings"));
    for py in sid_pythons() {
        let tmp = TempDir::new("trace-attach");
        let rec = tmp.join("rec.db");
        let traces = tmp.join("traces");
        std::fs::create_dir(&traces).expect("mkdir");
        let target_err = tmp.join("target.err");
        let mut t = start_capturing(&py.path, &target_err);
        assert_eq!(ask(&mut t, "echo before"), "before");
        let pid = t.pid().to_string();
        let rss_before = rollup_field(t.pid(), "Rss");
        let r = record_traced(&pid, &rec, &traces, &["--trace=all"]);
        let said = ask(&mut t, "alloc");
        let truth: Vec<u64> = said
            .strip_prefix("ALLOCATED ")
            .unwrap_or_else(|| panic!("{}: {said}", py.label))
            .split(' ')
            .map(|v| v.parse().expect("a number"))
            .collect();
        assert_eq!(ask(&mut t, "modules"), "ctypes True", "{}", py.label);
        kill(r.id(), "-INT");
        let out = r.wait_with_output().expect("record ends");
        let err = stderr(&out);
        assert!(out.status.success(), "{}: {err}", py.label);
        assert!(!err.contains("kept"), "{err}");
        // The target runs on, and prints what it prints without memlens.
        assert!(t.is_running(), "{}", py.label);
        // And keeps little of the tracer: its pointer table (a page touched per live block in
        // `all` mode, +150 MiB here before the detach gave it back) is released; what stays is
        // ctypes, the library, the queue and the interned stacks (measured: ~8 MiB).
        let grown = rollup_field(t.pid(), "Rss").saturating_sub(rss_before);
        let kept = truth[0] + truth[1];
        assert!(
            grown < kept + (24 << 20),
            "{}: RSS grew {grown} bytes for {kept} bytes kept",
            py.label
        );
        assert_eq!(ask(&mut t, "echo after"), "after", "{}", py.label);
        assert_eq!(leftovers(&traces), Vec::<String>::new(), "{}", py.label);

        // Attached again (a second copy of the library; the first, detached, stays inert),
        // sampled: only what is allocated after this attach is known.
        let rec2 = tmp.join("rec2.db");
        let r = record_traced(
            &pid,
            &rec2,
            &traces,
            &["--trace", "--sample-bytes", "64KiB"],
        );
        let said = ask(&mut t, "alloc");
        let truth2: Vec<u64> = said
            .strip_prefix("ALLOCATED ")
            .unwrap_or_else(|| panic!("{}: {said}", py.label))
            .split(' ')
            .map(|v| v.parse().expect("a number"))
            .collect();
        kill(r.id(), "-INT");
        let out = r.wait_with_output().expect("record ends");
        assert!(out.status.success(), "{}: {}", py.label, stderr(&out));
        let sampled = &report_json(&rec2)["allocations"];
        assert_eq!(sampled["mode"], "sampled");
        assert_eq!(u(&sampled["sample_interval_bytes"]), 64 * 1024);
        // ~330 samples of 64 KiB on average: a relative standard error of ~5.5 %; 25 % is
        // 4.5 of them. The first allocation's 21 MB (before this attach) must not count.
        close(
            &format!("{} sampled bytearrays", py.label),
            at_line(sampled, bytearrays),
            truth2[0],
            25.0,
        );
        assert_eq!(ask(&mut t, "echo after again"), "after again");
        assert_eq!(ask(&mut t, "exit"), "BYE");
        assert_eq!(t.rest(), "");
        assert!(t.child.wait().expect("exits").success());
        assert_eq!(
            std::fs::read_to_string(&target_err).expect("target.err"),
            "",
            "{}: the target printed nothing on stderr",
            py.label
        );
        assert_eq!(leftovers(&traces), Vec::<String>::new(), "{}", py.label);

        let report = report_json(&rec);
        let allocs = &report["allocations"];
        assert_eq!(allocs["mode"], "all", "{}", py.label);
        for (k, v) in allocs["lost"].as_object().expect("lost") {
            assert_eq!(u(v), 0, "{}: lost.{k}", py.label);
        }
        close(
            &format!("{} bytearrays (line {bytearrays})", py.label),
            at_line(allocs, bytearrays),
            truth[0],
            0.1,
        );
        close(
            &format!("{} strings (line {strings})", py.label),
            at_line(allocs, strings),
            truth[1],
            0.1,
        );
        let events = report.to_string();
        assert!(
            events.contains("only CPython's allocator domains are traced"),
            "the report says what was not traced"
        );
    }
}

/// `memlens record PID --trace=all` expected to be refused with exit 5 and `why` in its
/// message; the target is left as it was (still answering, `ctypes` not imported unless it
/// had been) and no directory is left.
fn refused(t: &mut Target, why: &str, label: &str) {
    let tmp = TempDir::new("trace-attach-refused");
    let out = memlens()
        .env("MEMLENS_PRELOAD", preload_so())
        .env("TMPDIR", tmp.path())
        .env("MEMLENS_ATTACH_TIMEOUT_MS", "500")
        .args([
            "record",
            &t.pid().to_string(),
            "--trace=all",
            "--duration",
            "5s",
        ])
        .arg("-o")
        .arg(tmp.join("rec.db"))
        .stdin(Stdio::null())
        .output()
        .expect("memlens runs");
    no_panic(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{label}: {err}");
    assert!(err.contains(why), "{label}: {err}");
    assert!(!tmp.join("rec.db").exists(), "{label}: no recording");
    assert_eq!(
        leftovers(tmp.path()),
        Vec::<String>::new(),
        "{label}: nothing left"
    );
}

#[test]
fn record_trace_is_refused_before_3_14_where_remote_debugging_is_disabled_and_without_python() {
    for py in pythons().into_iter().filter(|p| p.version == (3, 13)) {
        let mut t = start(&py.path, &[]);
        refused(&mut t, "needs CPython 3.14+", &py.label);
        assert_eq!(ask(&mut t, "modules"), "ctypes False");
        assert_eq!(ask(&mut t, "exit"), "BYE");
    }
    let mut sleeper = Target::sleeper();
    refused(&mut sleeper, "not a Python process", "sleep");
    for py in sid_pythons() {
        let by_option = start(&py.path, &["-X", "disable-remote-debug"]);
        let mut cmd = Command::new(&py.path);
        cmd.env("PYTHON_DISABLE_REMOTE_DEBUG", "1")
            .arg(target_script(SCRIPT));
        let by_env = Target::spawn(cmd);
        for mut t in [by_option, by_env] {
            refused(&mut t, "remote debugging disabled", &py.label);
            assert_eq!(ask(&mut t, "modules"), "ctypes False");
            assert_eq!(ask(&mut t, "exit"), "BYE");
        }
    }
}

#[test]
fn record_trace_withdraws_its_request_from_a_target_blocked_outside_python() {
    for py in sid_pythons() {
        let mut t = start(&py.path, &[]);
        // Blocked in read(2): the main thread runs no Python code until the next line.
        t.send("block");
        // The target takes the line only once it blocks; the kernel says when it sleeps in read.
        let pid = t.pid();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let read = if cfg!(target_arch = "aarch64") {
            "63 0x0 "
        } else {
            "0 0x0 "
        };
        while !std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .unwrap_or_default()
            .starts_with(read)
        {
            assert!(std::time::Instant::now() < deadline, "target never blocked");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        refused(&mut t, "did not reach a safe point", &py.label);
        assert_eq!(ask(&mut t, "go on"), "UNBLOCKED");
        // The request was withdrawn: the interpreter, running again, loads nothing.
        assert_eq!(ask(&mut t, "echo still here"), "still here");
        assert_eq!(ask(&mut t, "modules"), "ctypes False", "{}", py.label);
        assert_eq!(ask(&mut t, "exit"), "BYE");
    }
}

#[test]
fn record_trace_of_a_target_that_exits_imports_what_it_wrote_at_exit() {
    let bytearrays = line_of("bytearrays");
    for py in sid_pythons() {
        let tmp = TempDir::new("trace-attach-exit");
        let rec = tmp.join("rec.db");
        let traces = tmp.join("traces");
        std::fs::create_dir(&traces).expect("mkdir");
        let mut t = start(&py.path, &[]);
        let pid = t.pid().to_string();
        let r = record_traced(&pid, &rec, &traces, &["--trace=all"]);
        let said = ask(&mut t, "alloc");
        let truth: u64 = said
            .split(' ')
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{said}"));
        // The target ends by itself: memlens stops with the tree, no detach to make; the
        // tracer wrote its `end` line from the library's destructor at exit.
        assert_eq!(ask(&mut t, "exit"), "BYE");
        assert!(t.child.wait().expect("exits").success());
        let out = r.wait_with_output().expect("record ends");
        assert!(out.status.success(), "{}: {}", py.label, stderr(&out));
        let allocs = &report_json(&rec)["allocations"];
        let peak =
            crate::support_trace::at_line(&allocs["at_peak"]["by_line"], SCRIPT, bytearrays) as u64;
        close(&format!("{} at the peak", py.label), peak, truth, 0.1);
        assert_eq!(u(&allocs["lost"]["unfinished_traces"]), 0, "the end line");
        assert_eq!(
            leftovers(&traces),
            Vec::<String>::new(),
            "{}: {}",
            py.label,
            stderr(&out)
        );
    }
}

#[test]
fn record_trace_leaves_an_allocator_installed_over_its_own_in_place() {
    for py in sid_pythons() {
        let tmp = TempDir::new("trace-attach-over");
        let traces = tmp.join("traces");
        std::fs::create_dir(&traces).expect("mkdir");
        let target_err = tmp.join("target.err");
        let mut t = start_capturing(&py.path, &target_err);
        let pid = t.pid().to_string();
        let r = record_traced(&pid, &tmp.join("rec.db"), &traces, &["--trace=all"]);
        // tracemalloc wraps the tracer's wrapper: putting the old allocators back at the detach
        // would remove tracemalloc's, so the wrapper stays (forwarding, tracing nothing).
        assert_eq!(ask(&mut t, "tracemalloc"), "TRACEMALLOC");
        kill(r.id(), "-INT");
        let out = r.wait_with_output().expect("record ends");
        let err = stderr(&out);
        assert!(out.status.success(), "{}: {err}", py.label);
        assert!(
            err.contains("another allocator was installed over the tracer's"),
            "{}: {err}",
            py.label
        );
        // Blocks allocated under both wrappers are freed through them, and tracemalloc's stop
        // puts back the allocator it saved (the tracer's wrapper): the target runs on.
        assert_eq!(ask(&mut t, "churn"), "CHURNED 0", "{}", py.label);
        assert_eq!(ask(&mut t, "echo alive"), "alive");
        assert_eq!(ask(&mut t, "exit"), "BYE");
        assert!(t.child.wait().expect("exits").success(), "{}", py.label);
        assert_eq!(
            std::fs::read_to_string(&target_err).expect("target.err"),
            "",
            "{}",
            py.label
        );
        assert_eq!(leftovers(&traces), Vec::<String>::new(), "{}", py.label);
    }
}
