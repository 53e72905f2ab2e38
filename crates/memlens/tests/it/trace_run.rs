//! `memlens run --trace`: the tracer preloaded into the program, its trace files imported into
//! the recording, and `"allocations"` in the report, against allocations made by construction
//! (4 MiB bytearrays; baseline: the same program allocating nothing). The program's output and
//! exit status are those of a plain run; a missing library is exit 5 before the program runs;
//! the private directory of trace files is gone afterwards, and nothing memlens did not create
//! is deleted or followed.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::preload::preload_so;
use crate::support::{memlens, no_panic, pythons, report_json, stderr, target_script, u, TempDir};
use crate::support_trace::{
    close, in_script, leftovers, memlens_run_traced, refused_before_the_program,
};

const SIZE: u64 = 4 << 20;

/// `memlens run --trace=all` of preload_hold.py (N buffers, half freed, os._exit), with TMPDIR
/// set to `tmp` (where the private directory goes).
fn run_traced(py: &Path, n: u64, rec: &Path, tmp: &Path, extra: &[&str]) -> Output {
    memlens_run_traced(Some(preload_so()), tmp, extra, rec)
        .arg(py)
        .arg(target_script("preload_hold.py"))
        .args([n.to_string(), SIZE.to_string()])
        .output()
        .expect("memlens runs")
}

/// Rows of the recording's trace tables: (traces, version of the first, python of the first,
/// snaps).
fn stored(rec: &Path) -> (u64, u64, String, u64) {
    let o = Command::new(crate::support::python())
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             t = c.execute('select count(*), min(version), coalesce(min(python), \"none\") from traces').fetchone(); \
             s = c.execute('select count(*) from trace_snaps').fetchone()[0]; \
             print(t[0], t[1], t[2], s)",
        )
        .arg(rec)
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 4, "{text} {}", stderr(&o));
    (
        f[0].parse().unwrap_or(0),
        f[1].parse().unwrap_or(0),
        f[2].to_string(),
        f[3].parse().unwrap_or(0),
    )
}

/// The peak (50 held) and what is alive at exit (25 held) within 2% of the construction above
/// the baseline, on every CPython; the recording holds the trace; output and status are the
/// plain run's; the private directory is gone. With trace format 2 and a Python layout the
/// tracer knows, the bytes at the peak are also attributed to the script's line.
#[test]
fn trace_all_matches_construction() {
    let dir = TempDir::new("trace-run");
    for py in pythons() {
        let label = &py.label;
        let plain = Command::new(&py.path)
            .arg(target_script("preload_hold.py"))
            .args(["50", &SIZE.to_string()])
            .output()
            .expect("python runs");
        let mut figures = Vec::new();
        for n in [0, 50] {
            let rec = dir.join(&format!("{label}-{n}.db"));
            let o = run_traced(&py.path, n, &rec, dir.path(), &["--trace=all"]);
            no_panic(&o);
            if n == 50 {
                assert_eq!(o.status.code(), plain.status.code(), "{label}");
                assert_eq!(o.stdout, plain.stdout, "{label}: the program's stdout");
                assert_eq!(
                    String::from_utf8_lossy(&o.stdout),
                    "DONE\n",
                    "{label}: {}",
                    stderr(&o)
                );
            }
            assert!(o.status.success(), "{label}: {}", stderr(&o));
            assert!(
                leftovers(dir.path()).is_empty(),
                "{label}: {:?}",
                leftovers(dir.path())
            );
            let (traces, version, python, snaps) = stored(&rec);
            assert_eq!(traces, 1, "{label}: one traced process");
            assert!(snaps >= 1, "{label}: its snapshots are stored");
            let j = report_json(&rec);
            let a = j["allocations"].clone();
            assert!(a.is_object(), "{label}: {j}");
            assert_eq!(a["mode"], "all");
            assert_eq!(u(&a["sample_interval_bytes"]), 1);
            assert_eq!(u(&a["lost"]["unfinished_traces"]), 0, "{label}: end line");
            for k in ["dropped_allocs", "dropped_frees", "table_full"] {
                assert_eq!(u(&a["lost"][k]), 0, "{label}: {k}");
            }
            figures.push((a, version, python));
        }
        let v = |a: &Value, p: &[&str]| -> f64 {
            p.iter().fold(a, |x, k| &x[*k]).as_u64().unwrap_or(0) as f64
        };
        let (base, held) = (&figures[0].0, &figures[1].0);
        close(
            &format!("{label} at_peak"),
            v(held, &["at_peak", "bytes"]) - v(base, &["at_peak", "bytes"]),
            (50 * SIZE) as f64,
            2.0,
        );
        close(
            &format!("{label} leaked (25 held at os._exit)"),
            v(held, &["leaked", "bytes"]) - v(base, &["leaked", "bytes"]),
            (25 * SIZE) as f64,
            2.0,
        );
        let native = held["reconciliation"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["category"] == "native-heap"))
            .unwrap_or_else(|| panic!("{label}: no native-heap reconciliation: {held}"));
        assert!(u(&native["pss"]) > 0, "{label}: the ledger's native-heap");
        // Stacks come with trace format 2 (and a layout the tracer knows): then the peak's
        // bytes are on the script's lines.
        let (_, version, python) = &figures[1];
        if *version >= 2 && python != "none" {
            let on_script: f64 = held["at_peak"]["by_line"]
                .as_array()
                .expect("by_line")
                .iter()
                .filter(|l| in_script(l, "preload_hold.py"))
                .map(|l| u(&l["bytes"]) as f64)
                .sum();
            close(
                &format!("{label} at_peak on preload_hold.py's lines"),
                on_script,
                (50 * SIZE) as f64,
                2.0,
            );
            let stacks = held["at_peak"]["stacks"].as_array().expect("stacks");
            assert!(
                stacks.iter().all(|s| u(&s["pid"]) > 0),
                "{label}: stacks carry the pid"
            );
        } else {
            eprintln!("{label}: trace format {version}, python {python}: no stacks to check");
        }
    }
}

/// Sampled (the default) at 64 KiB: the peak above the baseline within 10%, the mode and
/// interval said; LD_PRELOAD set for memlens is kept after the tracer.
#[test]
fn sampled_and_preload_prepended() {
    let dir = TempDir::new("trace-sampled");
    let py = &pythons()[0];
    let rec = dir.join("s.db");
    let out = memlens()
        .env("MEMLENS_PRELOAD", preload_so())
        .env("TMPDIR", dir.path())
        .env("LD_PRELOAD", "libc.so.6")
        .args(["run", "-q", "--no-sharing", "--trace", "--sample-bytes", "64KiB"])
        .arg("-o")
        .arg(&rec)
        .arg("--")
        .arg(&py.path)
        .args([
            "-c",
            "import os; x = [bytearray(4 << 20) for _ in range(50)]; print(os.environ['LD_PRELOAD'])",
        ])
        .output()
        .expect("memlens runs");
    no_panic(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{}:libc.so.6", preload_so().display())
    );
    let a = report_json(&rec)["allocations"].clone();
    assert_eq!(a["mode"], "sampled");
    assert_eq!(u(&a["sample_interval_bytes"]), 64 << 10);
    let peak = u(&a["at_peak"]["bytes"]) as f64;
    assert!(
        peak >= 0.9 * (50 * SIZE) as f64 && peak <= 1.1 * (50 * SIZE) as f64 + (16 << 20) as f64,
        "sampled peak {peak} for 200 MiB held (+ the interpreter's own)"
    );
    assert!(leftovers(dir.path()).is_empty());
}

/// Without `--trace`, `"allocations"` is null; a recording without trace tables reads.
#[test]
fn no_trace_is_null() {
    let dir = TempDir::new("trace-none");
    let rec = dir.join("n.db");
    let o = memlens()
        .args(["run", "-q", "--no-sharing", "-o"])
        .arg(&rec)
        .arg("--")
        .arg(&pythons()[0].path)
        .args(["-c", "pass"])
        .output()
        .expect("memlens runs");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(report_json(&rec)["allocations"].is_null());
}

/// A missing library: exit 5 with a message naming it, before the program runs (it would
/// create a file) and before the recording is created.
#[test]
fn missing_library_exits_5() {
    let dir = TempDir::new("trace-nolib");
    let mut memlens = memlens();
    memlens
        .env("MEMLENS_PRELOAD", dir.join("nowhere/libmemlens_preload.so"))
        .env("TMPDIR", dir.path());
    refused_before_the_program(
        memlens,
        &pythons()[0].path,
        &dir,
        dir.path(),
        5,
        "libmemlens_preload.so",
    );
}

/// What the program puts in the private directory besides the tracer's files (a file of its
/// own, a link named like a trace file pointing outside) is neither deleted nor followed:
/// memlens removes only its files, leaves the directory with the rest, and says so.
#[test]
fn only_its_own_files_are_removed() {
    let dir = TempDir::new("trace-own");
    let victim = dir.join("victim");
    std::fs::write(&victim, b"not memlens's").expect("write");
    let rec = dir.join("r.db");
    let script = "import os, sys; d = os.path.dirname(os.environ['MEMLENS_TRACE_OUT']); \
                  open(os.path.join(d, 'mine.txt'), 'w').write('x'); \
                  os.symlink(sys.argv[1], os.path.join(d, 'trace.999')); print('ok')";
    let o = memlens()
        .env("MEMLENS_PRELOAD", preload_so())
        .env("TMPDIR", dir.path())
        .args(["run", "-q", "--no-sharing", "--trace=all", "-o"])
        .arg(&rec)
        .arg("--")
        .arg(&pythons()[0].path)
        .args(["-c", script])
        .arg(&victim)
        .output()
        .expect("memlens runs");
    no_panic(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ok\n");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"not memlens's");
    let left = leftovers(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    let private = dir.join(&left[0]);
    let mut names: Vec<String> = std::fs::read_dir(&private)
        .expect("left")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["mine.txt", "trace.999"],
        "its own trace file removed"
    );
    assert!(
        stderr(&o).contains("removes only the files it knows"),
        "{}",
        stderr(&o)
    );
    let a = report_json(&rec)["allocations"].clone();
    assert!(
        a.is_object(),
        "the trace was imported; the link was not read"
    );
}
