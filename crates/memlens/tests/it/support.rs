//! Shared support for the integration tests: the CPythons to test against, real target
//! processes that are killed and reaped when the test ends, temporary directories removed when
//! it ends, and the small readers of memlens's output every module uses.
#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The memlens binary built for these tests.
pub fn memlens() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_memlens"));
    c.env("NO_COLOR", "1");
    c
}

/// Runs memlens with arguments and returns its output.
pub fn memlens_output(args: &[&str]) -> Output {
    memlens().args(args).output().expect("memlens runs")
}

/// Runs memlens with `--json` output and parses it; panics with stderr on failure.
pub fn memlens_json(args: &[&str]) -> serde_json::Value {
    let out = memlens_output(args);
    assert!(
        out.status.success(),
        "memlens {args:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "memlens {args:?} printed invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// An interpreter to test against.
#[derive(Debug, Clone)]
pub struct Python {
    /// Label, e.g. `3.11.7` or `debian-3.11-static`.
    pub label: String,
    /// The executable.
    pub path: PathBuf,
    /// `(major, minor)`.
    pub version: (u32, u32),
}

/// Where `scripts/test-pythons.sh` installs what the tests need beyond pyenv and Debian
/// (`$MEMLENS_TEST_CACHE`, default `~/.cache/memlens-test`).
pub fn test_cache() -> PathBuf {
    match std::env::var_os("MEMLENS_TEST_CACHE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/memlens-test")
        }
    }
}

/// The CPythons the project supports and that tests must cover: every pyenv 3.8-3.13, the
/// static, stripped `/usr/bin/python3.11`, and Debian sid's static 3.14 and 3.15 as
/// `scripts/test-pythons.sh` installs them. Under CI (`CI` set) a missing one fails the test;
/// elsewhere it is reported and left out.
pub fn pythons() -> Vec<Python> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pyenv")
        });
    let installed: Vec<String> = std::fs::read_dir(root.join("versions"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    for minor in 8..=13u32 {
        let prefix = format!("3.{minor}.");
        let mut found: Vec<&String> = installed
            .iter()
            .filter(|v| {
                v.starts_with(&prefix) && v[prefix.len()..].chars().all(|c| c.is_ascii_digit())
            })
            .collect();
        found.sort();
        match found.last() {
            Some(v) => out.push(Python {
                label: (*v).clone(),
                path: root
                    .join("versions")
                    .join(v)
                    .join("bin")
                    .join(format!("python3.{minor}")),
                version: (3, minor),
            }),
            None => missing.push(format!("pyenv 3.{minor}")),
        }
    }
    let debian = PathBuf::from("/usr/bin/python3.11");
    if debian.exists() {
        out.push(Python {
            label: "debian-3.11-static".into(),
            path: debian,
            version: (3, 11),
        });
    } else {
        missing.push("/usr/bin/python3.11".into());
    }
    for minor in [14u32, 15] {
        let dest = test_cache().join(format!("sid/python3.{minor}"));
        let exe = dest.join(format!("root/usr/bin/python3.{minor}"));
        let done = std::fs::read_dir(&dest).ok().and_then(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .find_map(|n| n.strip_prefix(".done-").map(str::to_string))
        });
        match done {
            Some(version) if exe.exists() => out.push(Python {
                label: format!("debian-sid-{version}-static"),
                path: exe,
                version: (3, minor),
            }),
            _ => missing.push(format!(
                "Debian sid 3.{minor} in {} (scripts/test-pythons.sh)",
                dest.display()
            )),
        }
    }
    if !missing.is_empty() {
        if std::env::var_os("CI").is_some() {
            panic!("expected interpreters missing in CI: {missing:?}");
        }
        eprintln!("warning: interpreters not installed, not tested: {missing:?}");
    }
    out
}

/// An unsupported interpreter (Python 2.7 from pyenv), for the "unsupported" paths.
pub fn python27() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".pyenv/versions/2.7.18/bin/python2.7");
    if p.exists() {
        Some(p)
    } else if std::env::var_os("CI").is_some() {
        panic!("expected pyenv 2.7.18 in CI");
    } else {
        None
    }
}

/// A running target process, killed and reaped on drop.
pub struct Target {
    pub child: Child,
    stdout: BufReader<ChildStdout>,
    /// Lines the target printed before `READY` (and any read later with [`Target::read_line`]).
    pub lines: Vec<String>,
}

impl Target {
    /// Starts `python -c script` (the script prints `READY` when set up, then waits) and waits
    /// up to 60 s for the `READY` line.
    pub fn python(python: &Path, script: &str) -> Target {
        let mut cmd = Command::new(python);
        cmd.arg("-c").arg(script);
        Self::spawn(cmd)
    }

    /// Starts a command that prints `READY` when set up.
    pub fn spawn(mut cmd: Command) -> Target {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("target starts");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut t = Target {
            child,
            stdout,
            lines: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = t
                .read_line()
                .unwrap_or_else(|| panic!("target exited before READY: {:?}", t.lines));
            if line.trim() == "READY" {
                break;
            }
            t.lines.push(line);
            assert!(Instant::now() < deadline, "target not ready in 60 s");
        }
        t
    }

    /// A non-Python process: `sleep 600`, ready once the kernel shows it asleep with libc
    /// mapped (so the dynamic loader is done and nothing changes while it is read).
    pub fn sleeper() -> Target {
        let mut child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sleep starts");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let asleep = state
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('S'));
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            if asleep && maps.contains("libc") {
                break;
            }
            assert!(Instant::now() < deadline, "sleep not asleep in 30 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Target {
            child,
            stdout,
            lines: Vec::new(),
        }
    }

    /// The target's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads one line of the target's stdout (blocking), `None` at EOF.
    pub fn read_line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.stdout.read_line(&mut s) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(s.trim_end().to_string()),
        }
    }

    /// Sends a line to the target's stdin (targets use it as a "go on" signal).
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("write to target");
        stdin.flush().expect("flush");
    }

    /// Reads the rest of stdout after the target exits.
    pub fn rest(&mut self) -> String {
        let mut s = String::new();
        let _ = self.stdout.read_to_string(&mut s);
        s
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // Once reaped, its PID may belong to another process (PIDs wrap at 32768 on a busy
        // machine): only a child still running (or a zombie not yet reaped) is ours to look at.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.child.id();
        // Kill the whole process group is not ours to do; kill the children we can see first,
        // with the target stopped: it then forks no more children and reaps none, so each one
        // listed is still its child (running, or a zombie the signal reaches too), its PID not
        // another process's. (Running, a target forking short-lived workers reaped one between
        // the list and its kill, and `kill` said "No such process" in the suite's output.)
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            for c in t.split_whitespace() {
                let _ = Command::new("kill").arg("-9").arg(c).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `/proc/PID/smaps_rollup` field in bytes (ground truth from the kernel).
pub fn rollup_field(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == field)
                .then(|| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .flatten()
        })
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in smaps_rollup of {pid}"))
}

/// Asserts `a` is within `pct` percent of `b`.
pub fn assert_close(what: &str, a: u64, b: u64, pct: f64) {
    let diff = (a as f64 - b as f64).abs();
    assert!(
        diff <= b as f64 * pct / 100.0,
        "{what}: {a} is not within {pct}% of {b} (diff {diff})"
    );
}

/// Every CPython of [`pythons`] run from the virtualenv with numpy that
/// `scripts/test-pythons.sh` makes for it (the same executable, with numpy importable; wheels
/// pinned per minor there: numpy 1.24 on 3.8, 1.26 on 3.11 (pyenv's and the static Debian
/// one), 2.x elsewhere, 3.15 included). Labelled `LABEL+numpy-VERSION`. Under CI a missing one
/// fails; elsewhere it is reported and left out.
pub fn numpy_pythons() -> Vec<Python> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for py in pythons() {
        let minor = py.version.1;
        let name = if py.label == "debian-3.11-static" {
            "debian-3.11".to_string()
        } else if py.label.starts_with("debian-sid-") {
            format!("sid-3.{minor}")
        } else {
            format!("python3.{minor}")
        };
        let venv = test_cache().join("numpy").join(name);
        let python = venv.join("bin/python");
        let done = std::fs::read_dir(&venv).ok().and_then(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .find_map(|n| n.strip_prefix(".done-").map(str::to_string))
        });
        match done {
            Some(v) if python.exists() => out.push(Python {
                label: format!("{}+numpy-{v}", py.label),
                path: python,
                version: py.version,
            }),
            _ => missing.push(format!(
                "numpy for {} in {} (scripts/test-pythons.sh)",
                py.label,
                venv.display()
            )),
        }
    }
    if !missing.is_empty() {
        if std::env::var_os("CI").is_some() {
            panic!("expected numpy missing in CI: {missing:?}");
        }
        eprintln!("warning: numpy not installed, not tested: {missing:?}");
    }
    out
}

/// A fresh directory for one test under the system's temporary directory, removed on drop.
/// Its name carries this process's PID and a counter, so that tests running in parallel in
/// this one binary never share one.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("memlens-it-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    /// A fresh directory that every user may write into (unprivileged runs write there).
    pub fn world_writable(name: &str) -> TempDir {
        let d = TempDir::new(name);
        let mut perms = std::fs::metadata(&d.0).expect("temp dir").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
        std::fs::set_permissions(&d.0, perms).expect("chmod temp dir");
        d
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A script of `crates/memlens/tests/targets`.
pub fn target_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/targets")
        .join(name)
}

/// The first CPython of [`pythons`], for tests that need any one.
pub fn python() -> PathBuf {
    pythons()
        .into_iter()
        .next()
        .expect("a CPython to test with")
        .path
}

/// stderr of a finished command, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts memlens did not panic (Rust's exit code 101, or a panic message on stderr).
pub fn no_panic(o: &Output) {
    assert_ne!(
        o.status.code(),
        Some(101),
        "memlens panicked: {}",
        stderr(o)
    );
    assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
}

/// A JSON value that must be an unsigned integer.
pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// A JSON value that must be a number.
pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// `memlens report --json FILE`, which must succeed.
pub fn report_json(file: &Path) -> Value {
    let out = memlens()
        .args(["report", "--json"])
        .arg(file)
        .output()
        .expect("memlens runs");
    assert!(out.status.success(), "report failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

/// Sends `sig` (e.g. `-TERM`) to `pid`, which must be delivered.
pub fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(st.success(), "kill {sig} {pid} failed");
}

/// Sends `sig` to `pid`, which may have exited already.
pub fn kill_if_alive(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `Z` ...), `None` once the PID is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.chars().next()
}

/// Starts `memlens record ARGS` (stdin and stdout closed, stderr piped) and returns it once it
/// says `memlens: recording pid ...` on stderr: from then on it is sampling.
pub fn start_recording(args: &[&std::ffi::OsStr]) -> std::process::Child {
    use std::io::BufRead;
    let mut rec = memlens()
        .arg("record")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("memlens record starts");
    let stderr = rec.stderr.take().expect("piped");
    let mut err = BufReader::new(stderr);
    let mut line = String::new();
    while !line.contains("recording pid") {
        line.clear();
        let n = err.read_line(&mut line).expect("read record's stderr");
        assert!(n > 0, "memlens record ended before recording");
    }
    rec.stderr = Some(err.into_inner());
    rec
}

/// The forked tree of `cow_freeze.py`: a parent holding `n` lists, `workers` forked workers
/// that each ran a collection (after `gc.freeze()` in the parent with `freeze`), all waiting;
/// the parent and its workers' pids.
pub fn cow_freeze_tree(py: &Python, n: u64, workers: usize, freeze: bool) -> (Target, Vec<u32>) {
    let mut cmd = Command::new(&py.path);
    cmd.arg("-S")
        .arg(target_script("cow_freeze.py"))
        .arg(n.to_string())
        .arg(workers.to_string())
        .arg(if freeze { "1" } else { "0" });
    let t = Target::spawn(cmd);
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", t.pid()))
        .expect("children of the parent");
    let pids: Vec<u32> = children
        .split_whitespace()
        .map(|c| c.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), workers, "workers of {}", t.pid());
    (t, pids)
}

/// Headless Chromium (Debian's `chromium`), or `None` outside CI when it is not installed.
pub fn chromium() -> Option<PathBuf> {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium is not installed (apt-get install -y chromium)"
    );
    eprintln!("warning: chromium not installed, HTML pages not loaded in a browser");
    None
}

/// Runs headless Chromium on the file `page` with a fresh profile in `profile` (no network
/// services, its log on stderr) and `flags` (`--dump-dom`, `--screenshot=PATH`, a window
/// size); it must succeed: (stdout, stderr).
pub fn chromium_on(
    chromium: &Path,
    page: &Path,
    profile: &Path,
    flags: &[&str],
) -> (String, String) {
    let _ = std::fs::remove_dir_all(profile);
    std::fs::create_dir_all(profile).expect("profile directory");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(flags)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

/// Asserts Chromium's log of a page has no console message and no network error.
pub fn chromium_log_clean(log: &str) {
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    assert!(!log.contains("net::ERR"), "network errors: {log}");
}

/// The DOM Chromium builds from `page`; the page must load without console messages or
/// network errors.
pub fn chromium_dom(chromium: &Path, page: &Path, profile: &Path) -> String {
    let (dom, log) = chromium_on(chromium, page, profile, &["--dump-dom"]);
    chromium_log_clean(&log);
    dom
}
