//! Shared support for the tracer's tests (it::preload*, trace_*, pymem_served_raw): the lines
//! a target marks `# @NAME`, a figure held to its construction, `memlens run --trace` of a
//! target with this test run's tracer library, what such a run leaves in its TMPDIR, and the
//! `key=value` lines of a trace file.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use serde_json::Value;

use crate::support::{memlens, no_panic, report_json, stderr, target_script, u, TempDir};

/// The line numbers of the `# @NAME` markers of a script of `tests/targets` (found in the
/// script, not written down twice).
pub fn markers(script: &str) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(target_script(script)).expect("script");
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let m = l.split("# @").nth(1)?;
            Some((m.trim().to_string(), i as u64 + 1))
        })
        .collect()
}

/// Asserts `got` is within `pct` percent of `want`, what construction made (and says both).
pub fn close(what: &str, got: f64, want: f64, pct: f64) {
    let err = (got - want).abs() / want * 100.0;
    eprintln!("{what}: {got:.0} vs {want:.0} ({err:.2}%)");
    assert!(
        err <= pct,
        "{what}: {got:.0} vs {want:.0} by construction ({err:.2}% > {pct}%)"
    );
}

/// Whether a frame or `by_line` row is in the script of `tests/targets` named `script`.
pub fn in_script(v: &Value, script: &str) -> bool {
    v["file"].as_str().is_some_and(|f| f.ends_with(script))
}

/// The bytes of a report's `by_line` list at line `line` of `script` (summed over functions).
pub fn at_line(list: &Value, script: &str, line: u64) -> f64 {
    list.as_array()
        .unwrap_or_else(|| panic!("not a by_line list: {list}"))
        .iter()
        .filter(|x| in_script(x, script) && u(&x["line"]) == line)
        .map(|x| u(&x["bytes"]) as f64)
        .sum()
}

/// `memlens run -q --no-python --no-sharing TRACE_ARGS -o REC --` with the tracer library
/// `lib` (`MEMLENS_PRELOAD`; `None`: the one memlens carries), its private directory under
/// `tmp` (TMPDIR), and the environment's LD_PRELOAD, PYTHONMALLOC and PYTHONTRACEMALLOC
/// removed: the caller adds the program and its arguments (and any other environment).
pub fn memlens_run_traced(
    lib: Option<&Path>,
    tmp: &Path,
    trace_args: &[&str],
    rec: &Path,
) -> Command {
    let mut c = memlens();
    match lib {
        Some(l) => c.env("MEMLENS_PRELOAD", l),
        None => c.env_remove("MEMLENS_PRELOAD"),
    };
    c.env("TMPDIR", tmp)
        .env_remove("LD_PRELOAD")
        .env_remove("PYTHONMALLOC")
        .env_remove("PYTHONTRACEMALLOC")
        .args(["run", "-q", "--no-python", "--no-sharing"])
        .args(trace_args)
        .arg("-o")
        .arg(rec)
        .arg("--");
    c
}

/// The report's `"allocations"` of a traced recording, which must be there with nothing lost
/// (every count of `lost` 0).
pub fn allocations_none_lost(rec: &Path, who: &str) -> Value {
    let a = report_json(rec)["allocations"].clone();
    assert!(a.is_object(), "{who}: no allocations in the report");
    for (k, v) in a["lost"].as_object().expect("lost") {
        assert_eq!(u(v), 0, "{who}: lost.{k}: {}", a["lost"]);
    }
    a
}

/// The JSON file a target wrote its truth to.
pub fn read_truth(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("the target's truth")).expect("truth JSON")
}

/// The `memlens-trace-*` private directories left in `tmp`.
pub fn leftovers(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("memlens-trace-"))
                .collect()
        })
        .unwrap_or_default()
}

/// `memlens run --trace -o DIR/r.db -- PYTHON -c "open(DIR/ran, 'w')"`, `memlens` set up with
/// its library and TMPDIR by the caller, must be refused before the program runs: exit `code`
/// with `says` on stderr, no file made by the program, no recording, no private directory
/// left in `tmp`.
pub fn refused_before_the_program(
    mut memlens: Command,
    python: &Path,
    dir: &TempDir,
    tmp: &Path,
    code: i32,
    says: &str,
) {
    let marker = dir.join("ran");
    let rec = dir.join("r.db");
    let o = memlens
        .args(["run", "--trace", "-o"])
        .arg(&rec)
        .arg("--")
        .arg(python)
        .args(["-c", "import sys; open(sys.argv[1], 'w')"])
        .arg(&marker)
        .output()
        .expect("memlens runs");
    no_panic(&o);
    assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
    assert!(stderr(&o).contains(says), "{}", stderr(&o));
    assert!(!marker.exists(), "the program did not run");
    assert!(!rec.exists(), "no recording");
    assert!(leftovers(tmp).is_empty(), "{:?}", leftovers(tmp));
}

/// The pid a target printed on a line `TAG PID` (e.g. `CHILD 1234`).
pub fn tagged_pid(text: &str, tag: &str) -> u32 {
    text.lines()
        .find_map(|l| l.strip_prefix(tag)?.strip_prefix(' '))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {tag} PID in {text}"))
}

/// `python SCRIPT` of `tests/targets` with a fixed hash seed (the interpreter's own start-up,
/// and so a baseline, the same run to run) and none of the environment's allocator or tracer
/// variables (PYTHONMALLOC, PYTHONTRACEMALLOC, LD_PRELOAD, MEMLENS_TRACE*,
/// MEMLENS_SAMPLE_BYTES): the caller adds what its run needs.
pub fn python_plain(py: &Path, script: &str) -> Command {
    let mut c = Command::new(py);
    c.arg(target_script(script))
        .env("PYTHONHASHSEED", "0")
        .env_remove("PYTHONMALLOC")
        .env_remove("PYTHONTRACEMALLOC")
        .env_remove("LD_PRELOAD")
        .env_remove("MEMLENS_TRACE_OUT")
        .env_remove("MEMLENS_TRACE_ROOT_PID")
        .env_remove("MEMLENS_TRACE")
        .env_remove("MEMLENS_SAMPLE_BYTES");
    c
}

/// The numeric `key=value` fields of a line.
pub fn fields(line: &str) -> HashMap<String, f64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// The fields of a trace file's `end` line, which must be its last `end` or `snap` line (the
/// `site` and `peak` lines of format 2 follow it).
pub fn end_fields(path: &Path) -> HashMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let last = text
        .lines()
        .rev()
        .find(|l| l.starts_with("end ") || l.starts_with("snap "))
        .unwrap_or_default();
    assert!(
        last.starts_with("end "),
        "no end line in {}: {text}",
        path.display()
    );
    fields(last)
}

/// A running `memlens -vvv run -q --no-python --no-sharing --trace=all` of a target script, its
/// stderr read on a thread so a test can wait on what memlens says (trace_live, trace_cut).
pub struct LiveRun {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
    stderr: Receiver<String>,
    /// Every stderr line read so far.
    pub said: Vec<String>,
}

impl LiveRun {
    /// Starts it with this test run's tracer, TMPDIR `tmp`, a snapshot every 100 ms, the
    /// recording `rec`, `extra` arguments of `run`, then `-- python SCRIPT ARGS`.
    pub fn start(
        rec: &Path,
        tmp: &Path,
        extra: &[&std::ffi::OsStr],
        script: &str,
        args: &[String],
    ) -> LiveRun {
        // Through `env --default-signal=INT`, as from a terminal: a SIGINT the test sends is
        // forwarded to the program, which a test run started in the background (a shell
        // without job control ignores SIGINT there, and so memlens and the program would)
        // never sees: a_sigint_gives_the_whole_trace waited forever.
        let base = memlens();
        let mut child = Command::new("env")
            .arg("--default-signal=INT")
            .arg(base.get_program())
            .envs(base.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env("MEMLENS_PRELOAD", crate::preload::preload_so())
            .env("TMPDIR", tmp)
            .env("MEMLENS_TRACE_PERIOD_MS", "100")
            .env_remove("LD_PRELOAD")
            .args([
                "-vvv",
                "run",
                "-q",
                "--no-python",
                "--no-sharing",
                "--trace=all",
            ])
            .arg("-o")
            .arg(rec)
            .args(extra)
            .arg("--")
            .arg(crate::support::python())
            .arg(target_script(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("memlens starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let err = BufReader::new(child.stderr.take().expect("piped"));
        let (tx, stderr) = channel();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LiveRun {
            child,
            stdin,
            stdout,
            stderr,
            said: Vec::new(),
        }
    }

    /// The program's next stdout line.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("stdout");
        line
    }

    /// Tells the program to go on (a `go` line on its stdin).
    pub fn go(&mut self) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"go\n").expect("write");
        stdin.flush().expect("flush");
    }

    /// memlens's next stderr line (None once it closed, or after 120 s of silence).
    pub fn next_said(&mut self) -> Option<String> {
        let line = self.stderr.recv_timeout(Duration::from_secs(120)).ok()?;
        self.said.push(line.clone());
        Some(line)
    }

    /// Waits until memlens says it imported (and committed) the root's trace file up to
    /// `offset` bytes.
    pub fn imported(&mut self, offset: u64) {
        loop {
            let line = self
                .next_said()
                .unwrap_or_else(|| panic!("memlens never imported byte {offset}: {:?}", self.said));
            let at = line
                .split_once("trace import: trace read to byte ")
                .and_then(|(_, n)| n.trim().parse::<u64>().ok());
            if at.is_some_and(|n| n >= offset) {
                return;
            }
        }
    }

    /// Closes the program's stdin (it leaves), drains stderr to its end and waits for memlens.
    pub fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait");
        while self.next_said().is_some() {}
        (status, std::mem::take(&mut self.said))
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes of an `at_peak`'s stacks, summed (a whole peak block's equal its `bytes`).
pub fn stacks_bytes(at_peak: &Value) -> u64 {
    at_peak["stacks"]
        .as_array()
        .expect("stacks is a list")
        .iter()
        .map(|s| u(&s["bytes"]))
        .sum()
}
