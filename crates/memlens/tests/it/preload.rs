//! memlens-preload, the LD_PRELOAD allocation tracer, on real CPython processes: figures
//! against allocations made by construction (baseline: the same program allocating nothing),
//! sampled estimates, threads, fork, unchanged program output, and a trace file that is never
//! overwritten.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::{pythons, target_script, Python, TempDir};
use crate::support_trace::{close, tagged_pid};

/// The cdylib, built once per test run with cargo into its own target directory (the outer
/// cargo holds the lock of the main one while tests run).
pub(crate) fn preload_so() -> &'static Path {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = root.join("target/preload-it");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "-q", "-p", "memlens-preload", "--target-dir"])
            .arg(&target)
            .status()
            .expect("cargo runs");
        assert!(st.success(), "building memlens-preload failed");
        let so = target.join("debug/libmemlens_preload.so");
        assert!(so.exists(), "{} missing", so.display());
        so
    })
}

/// A command running `python script args` under the preload, tracing into `out`.
pub(crate) fn traced(
    py: &Path,
    script: &str,
    args: &[&str],
    out: &Path,
    env: &[(&str, &str)],
) -> Command {
    let mut c = Command::new(py);
    c.arg(target_script(script))
        .args(args)
        .env("LD_PRELOAD", preload_so())
        .env("MEMLENS_TRACE_OUT", out)
        .env("MEMLENS_TRACE_PERIOD_MS", "10")
        .env_remove("MEMLENS_TRACE_ROOT_PID")
        .env_remove("MEMLENS_TRACE")
        .env_remove("MEMLENS_SAMPLE_BYTES");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// The fields of a record line (`snap`/`end`/header) as numbers where they are numbers.
fn fields(line: &str) -> HashMap<String, u64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// `python script` under the preload in `all` mode, tracing into `out`, which must succeed.
fn traced_all_ok(py: &Path, script: &str, out: &Path) -> Output {
    let o = traced(py, script, &[], out, &[("MEMLENS_TRACE", "all")])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

pub(crate) fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub(crate) fn header(path: &Path) -> String {
    lines(path).into_iter().next().expect("a header line")
}

fn end(path: &Path) -> HashMap<String, u64> {
    let l = lines(path);
    // Version 2: the end line is followed by its site and peak lines.
    let last = l
        .iter()
        .rev()
        .find(|x| !x.starts_with("site ") && !x.starts_with("peak"))
        .expect("lines");
    assert!(last.starts_with("end "), "no end line: {l:?}");
    fields(last)
}

/// The oldest pyenv CPython and the static Debian one (a libpython linked into the executable).
fn two_pythons() -> Vec<Python> {
    let all = pythons();
    let mut v: Vec<Python> = all.iter().take(1).cloned().collect();
    v.extend(all.into_iter().filter(|p| p.label == "debian-3.11-static"));
    v
}

/// The hold program's `end` line (it leaves by os._exit with half its buffers held).
fn run_hold(
    py: &Python,
    kind: &str,
    n: usize,
    size: usize,
    dir: &TempDir,
    env: &[(&str, &str)],
) -> HashMap<String, u64> {
    let out = dir.join(&format!("{}-{kind}-{n}-{}", py.label, env.len()));
    let o = traced(
        &py.path,
        "preload_hold.py",
        &[&n.to_string(), &size.to_string(), kind],
        &out,
        env,
    )
    .output()
    .expect("python runs");
    assert!(
        o.status.success(),
        "{}: {}",
        py.label,
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "DONE");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    end(&out)
}

/// `MEMLENS_TRACE=all`: live bytes with 25 of 50 bytearrays of 4 MiB held, and the peak (50),
/// within 2% of the construction above the interpreter's own baseline, on every CPython.
#[test]
fn all_mode_matches_construction() {
    let dir = TempDir::new("preload-all");
    for py in pythons() {
        check_hold(&py, "bytearray", &dir);
    }
}

/// The same with anonymous mmaps (`mmap.mmap(-1, n)`: mmap, then munmap when freed).
#[test]
fn all_mode_anonymous_mmap() {
    let dir = TempDir::new("preload-mmap");
    for py in two_pythons() {
        check_hold(&py, "mmap", &dir);
    }
}

/// The same with numpy arrays (numpy's data allocator: malloc/calloc), on pyenv's 3.11 (numpy
/// 1.26) and 3.12 (numpy 2.4) only: every run imports numpy in `all` mode (tens of seconds of
/// CPU in this debug build); it::trace_truth's `all` mode has numpy on 3.8, the static 3.11
/// and 3.15, and its sampled modes on every CPython.
#[test]
fn all_mode_numpy_arrays() {
    let dir = TempDir::new("preload-numpy");
    let two = crate::support::numpy_pythons()
        .into_iter()
        .filter(|p| matches!(p.version, (3, 11) | (3, 12)) && !p.label.starts_with("debian"));
    for py in two {
        check_hold(&py, "numpy", &dir);
    }
}

fn check_hold(py: &Python, kind: &str, dir: &TempDir) {
    let size = 4 << 20;
    {
        let env = [("MEMLENS_TRACE", "all")];
        let base = run_hold(py, kind, 0, size, dir, &env);
        let held = run_hold(py, kind, 50, size, dir, &env);
        let v = |h: &HashMap<String, u64>, k: &str| h[k] as f64;
        let label = &format!("{} {kind}", py.label);
        close(
            &format!("{label} live with 25 held"),
            v(&held, "live_bytes") - v(&base, "live_bytes"),
            (25 * size) as f64,
            2.0,
        );
        close(
            &format!("{label} peak"),
            v(&held, "peak_live_bytes") - v(&base, "peak_live_bytes"),
            (50 * size) as f64,
            2.0,
        );
        if kind == "mmap" {
            // Counted as anonymous mmap, and freed by munmap.
            close(
                &format!("{label} live mmap with 25 held"),
                v(&held, "live_mmap_bytes") - v(&base, "live_mmap_bytes"),
                (25 * size) as f64,
                2.0,
            );
        }
        assert_eq!(held["dropped_allocs"], 0, "{label}");
        assert_eq!(held["dropped_frees"], 0, "{label}");
        assert_eq!(held["table_full"], 0, "{label}");
        // Exact mode: every allocation is a sample of weight = its size.
        assert!(held["alloc_samples"] >= 50, "{label}");
    }
}

/// Sampled at 64 KiB: 400 MiB allocated in 4 KiB-1 MiB pieces, a quarter kept; the estimates
/// of bytes allocated and live are within 10% of the construction (the interpreter's own
/// bytes measured exactly, in `all` mode, on the same program allocating nothing).
#[test]
fn sampled_estimates_within_ten_percent() {
    let dir = TempDir::new("preload-sampled");
    for py in pythons() {
        let label = &py.label;
        let run = |total: u64, env: &[(&str, &str)], name: &str| {
            let out = dir.join(name);
            let o = traced(
                &py.path,
                "preload_sampled.py",
                &[&total.to_string()],
                &out,
                env,
            )
            .output()
            .expect("python runs");
            assert!(o.status.success(), "{label}");
            let truth = fields(String::from_utf8_lossy(&o.stdout).trim());
            (truth, end(&out))
        };
        let (_, base) = run(0, &[("MEMLENS_TRACE", "all")], &format!("{label}-base"));
        let (truth, s) = run(
            400 << 20,
            &[("MEMLENS_SAMPLE_BYTES", "65536")],
            &format!("{label}-sampled"),
        );
        assert!(header(&dir.join(&format!("{label}-sampled")))
            .contains("mode=sampled sample_bytes=65536"));
        let v = |h: &HashMap<String, u64>, k: &str| h[k] as f64;
        close(
            &format!("{label} total allocated (sampled)"),
            v(&s, "total_bytes"),
            v(&truth, "total") + v(&base, "total_bytes"),
            10.0,
        );
        close(
            &format!("{label} live (sampled)"),
            v(&s, "live_bytes"),
            v(&truth, "kept") + v(&base, "live_bytes"),
            10.0,
        );
        assert_eq!(
            s["dropped_allocs"] + s["dropped_frees"] + s["table_full"],
            0
        );
        assert!(s["alloc_samples"] > 0, "{label}");
    }
}

/// Eight threads allocating at once, every allocation recorded: nothing is lost, or what was
/// dropped is counted.
#[test]
fn threads_lose_nothing_uncounted() {
    let dir = TempDir::new("preload-threads");
    let py = &pythons()[0];
    let out = dir.join("trace");
    let o = traced(
        &py.path,
        "preload_threads.py",
        &["2000"],
        &out,
        &[("MEMLENS_TRACE", "all")],
    )
    .output()
    .expect("runs");
    assert!(o.status.success());
    let truth = fields(String::from_utf8_lossy(&o.stdout).trim());
    let e = end(&out);
    let dropped = e["dropped_allocs"] + e["table_full"];
    assert!(
        e["alloc_samples"] + dropped >= truth["count"],
        "{e:?} vs {truth:?}"
    );
    let counted = e["total_bytes"] + dropped * (64 * 1024 + 64);
    assert!(counted >= truth["bytes"], "{e:?} vs {truth:?}");
    // And nothing far beyond the truth: the interpreter's own allocations are a few MiB.
    assert!(e["total_bytes"] < truth["bytes"] + (64 << 20), "{e:?}");
}

/// The same with a 16-cell queue, drained by whichever hook finds it a quarter full, under
/// eight threads' contention: every event is applied (a hook that finds it full waits and
/// drains: `hooks::deliver_full`; the queue's refusals themselves are counted in the ring's
/// unit test).
#[test]
fn tiny_queue_loses_nothing() {
    let dir = TempDir::new("preload-drops");
    let py = &pythons()[0];
    let out = dir.join("trace");
    let env = [("MEMLENS_TRACE", "all"), ("MEMLENS_TRACE_RING_CELLS", "16")];
    let o = traced(&py.path, "preload_threads.py", &["5000"], &out, &env)
        .output()
        .expect("runs");
    assert!(o.status.success());
    let truth = fields(String::from_utf8_lossy(&o.stdout).trim());
    let e = end(&out);
    eprintln!("16-cell queue, 8 threads: {e:?}");
    assert_eq!((e["dropped_allocs"], e["dropped_frees"]), (0, 0), "{e:?}");
    let dropped = e["table_full"];
    assert!(
        e["alloc_samples"] + dropped >= truth["count"],
        "{e:?} vs {truth:?}"
    );
    assert!(
        e["total_bytes"] + dropped * (64 * 1024 + 64) >= truth["bytes"],
        "{e:?}"
    );
}

/// A forked child traces into its own file (`OUT.PID`), starting from what it inherited.
#[test]
fn fork_child_writes_its_own_file() {
    let dir = TempDir::new("preload-fork");
    for py in pythons() {
        let out = dir.join(&format!("{}-trace", py.label));
        let o = traced_all_ok(&py.path, "preload_fork.py", &out);
        // No tracer thread: CPython 3.12+ has no "multi-threaded fork" warning to print.
        assert!(
            o.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = String::from_utf8_lossy(&o.stdout);
        let (child, parent) = (tagged_pid(&text, "CHILD"), tagged_pid(&text, "PARENT"));
        let cfile = PathBuf::from(format!("{}.{child}", out.display()));
        let h = header(&cfile);
        assert!(h.contains(&format!("pid={child} ")), "{h}");
        assert!(h.contains(&format!("forked_from={parent} ")), "{h}");
        let inherited = fields(&h)["inherited_live_bytes"];
        let ce = end(&cfile);
        // Its own peak: what it allocated, without what it inherited (format 3).
        close(
            &format!("{} child's own peak", py.label),
            ce["peak_live_bytes"] as f64,
            (20 * (4 << 20)) as f64,
            2.0,
        );
        assert!(
            inherited > 0 && ce["inherited_live_bytes"] <= inherited,
            "{ce:?}"
        );
        let pe = end(&out);
        assert!(header(&out).contains(&format!("pid={parent} ")));
        assert!(
            pe["peak_live_bytes"] < 40 << 20,
            "the child's 80 MiB is not the parent's: {pe:?}"
        );
    }
}

/// A program under the preload prints the same and exits with the same status.
#[test]
fn program_output_and_status_unchanged() {
    let dir = TempDir::new("preload-output");
    for py in two_pythons() {
        let plain = Command::new(&py.path)
            .arg(target_script("preload_output.py"))
            .output()
            .expect("runs");
        assert_eq!(plain.status.code(), Some(3));
        for (i, env) in [vec![], vec![("MEMLENS_TRACE", "all")]].iter().enumerate() {
            let out = dir.join(&format!("{}-{i}", py.label));
            let o = traced(&py.path, "preload_output.py", &[], &out, env)
                .output()
                .expect("runs");
            assert_eq!(o.status.code(), Some(3), "{}", py.label);
            assert_eq!(o.stdout, plain.stdout, "{}", py.label);
            assert_eq!(o.stderr, plain.stderr, "{}", py.label);
            end(&out);
        }
    }
}

/// An existing file, or a link, at MEMLENS_TRACE_OUT is never written: the program runs
/// untraced, the library says why on stderr.
#[test]
fn existing_output_is_refused() {
    let dir = TempDir::new("preload-exists");
    let py = &pythons()[0];
    let out = dir.join("trace");
    std::fs::write(&out, "precious\n").expect("write");
    let victim = dir.join("victim");
    std::fs::write(&victim, "victim\n").expect("write");
    let link = dir.join("link");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    for path in [&out, &link] {
        let o = traced(&py.path, "preload_output.py", &[], path, &[])
            .output()
            .expect("runs");
        assert_eq!(o.status.code(), Some(3));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("memlens-preload: MEMLENS_TRACE_OUT already exists"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "precious\n");
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "victim\n");
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
}

/// An image exec'd by a traced process (same PID, LD_PRELOAD still set) is traced again, into
/// `OUT.PID`, with its own figures; the first image's file is left as it was at exec.
#[test]
fn exec_image_traced_again() {
    let dir = TempDir::new("preload-exec");
    for py in two_pythons() {
        let out = dir.join(&format!("{}-trace", py.label));
        let o = traced_all_ok(&py.path, "preload_exec.py", &out);
        let text = String::from_utf8_lossy(&o.stdout);
        let pid: u32 = text
            .trim()
            .strip_prefix("EXECED ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        assert!(header(&out).contains(&format!("pid={pid} ")));
        let second = PathBuf::from(format!("{}.{pid}", out.display()));
        let h = header(&second);
        assert!(h.contains(&format!("pid={pid} ")), "{h}");
        assert!(!h.contains("forked_from"), "{h}");
        let e = end(&second);
        // The new image's peak holds its 40 MiB; the first image's 8 MiB went with it.
        let peak = e["peak_live_bytes"] as f64;
        assert!(
            peak >= (40 << 20) as f64 && peak < (40 << 20) as f64 * 1.15,
            "{e:?}"
        );
    }
}

/// A program that closes the tracer's descriptor and gets its number back for a file of its
/// own never finds trace lines in that file: the tracer checks the file is still its own
/// before each write, says so on stderr and stops.
#[test]
fn reused_descriptor_never_written() {
    let dir = TempDir::new("preload-fds");
    let py = &pythons()[0];
    let out = dir.join("trace");
    let theirs = dir.join("theirs");
    let mut child = traced(
        &py.path,
        "preload_fds.py",
        &[theirs.to_str().expect("utf-8")],
        &out,
        &[("MEMLENS_TRACE", "all")],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("python starts");
    // A tracer that never notices would leave the program waiting: killed after 60 s, so the
    // test fails instead of hanging.
    let pid = child.id();
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(Duration::from_secs(60)).is_err() {
            crate::support::kill_if_alive(pid, "-KILL");
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut l = String::new();
    stdout.read_line(&mut l).expect("read");
    assert!(l.starts_with("READY"), "{l}");
    // The program holds its file open until told; the tracer's next snapshot (10 ms) finds
    // the descriptor is not its file any more.
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut err = String::new();
    stderr.read_line(&mut err).expect("stderr");
    let _ = done.send(());
    watchdog.join().expect("watchdog");
    assert!(err.contains("closed the trace file's descriptor"), "{err}");
    writeln!(child.stdin.take().expect("piped")).expect("write");
    assert!(child.wait().expect("wait").success());
    assert_eq!(std::fs::read_to_string(&theirs).expect("read"), "mine\n");
    assert!(header(&out).starts_with("memlens-trace 3 "));
}
