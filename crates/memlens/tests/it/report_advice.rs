//! Advice in a recording's report (docs/advice.md, "In `memlens report`"): a recorded program
//! whose pymalloc heap is fragmented by construction (tests/targets/advice.py `fragment`) gets
//! the `fragmentation` advice in `report --json`, with a saving within 25% of the saving
//! measured in the target (its RSS from the kernel before and after releasing the survivors and
//! allocating as many compactly, as `it/advice.rs` measures it); a program without that waste
//! gets none.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    cow_freeze_tree, kill, memlens, pythons, report_json, rollup_field, start_recording, stderr,
    target_script, u, Python, Target, TempDir,
};

fn interpreters() -> Vec<Python> {
    let mut out: Vec<Python> = Vec::new();
    for py in pythons() {
        if matches!(py.version, (3, 8) | (3, 12) | (3, 13))
            && !out.iter().any(|p| p.version == py.version)
        {
            out.push(py);
        }
    }
    assert!(!out.is_empty(), "no CPython to test with");
    out
}

fn step(t: &mut Target, cmd: &str, answer: &str) -> u64 {
    t.send(cmd);
    assert_eq!(t.read_line().as_deref(), Some(answer), "answer to {cmd}");
    rollup_field(t.pid(), "Rss")
}

/// Sends "mark" (a full collection): the oldest generation's collections the target then
/// counts. A reading of the Python view with as many was read after the command.
fn mark(t: &mut Target) -> u64 {
    t.send("mark");
    let line = t.read_line().unwrap_or_default();
    line.strip_prefix("MARKED ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("answer to mark: {line:?}"))
}

/// The recording (still being written) so far, as `report --json` gives it; `None` while it
/// cannot be reported yet.
fn report_so_far(db: &Path) -> Option<Value> {
    let out = memlens()
        .args(["report", "--json"])
        .arg(db)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The Python view's readings of `pid` in a report.
fn readings_of(j: &Value, pid: u32) -> Vec<Value> {
    j["python"].as_array().map_or_else(Vec::new, |p| {
        p.iter()
            .filter(|r| u(&r["pid"]) == u64::from(pid))
            .cloned()
            .collect()
    })
}

/// Whether a reading saw the target's heap as built: at least `arenas` arenas and, for
/// `fragment`, mostly free.
fn built_heap(r: &Value, arenas: u64, fragment: bool) -> bool {
    r["pymalloc_arenas"].as_u64().is_some_and(|a| a >= arenas)
        && (!fragment || r["pymalloc_free"].as_u64() >= r["pymalloc_used"].as_u64())
}

/// Polls the recording (one report a poll) until `done` holds of its report, for at most 60 s.
fn wait_for(db: &Path, rec: &Child, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(j) = report_so_far(db).filter(|j| done(j)) {
            return j;
        }
        if Instant::now() > until {
            kill(rec.id(), "-INT");
            panic!("{what}: not in the recording after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100)); // polling the recording, not a wait on the target
    }
}

/// The arenas the build of `n` objects of `kind` needs at least (a block of 16 bytes per
/// object kept or not, and 1 MiB arenas from 3.10, 256 KiB before).
fn least_arenas(py: &Python, kind: &str, n: u64) -> u64 {
    let arena = if py.version >= (3, 10) {
        1 << 20
    } else {
        256 << 10
    };
    if kind == "fragment" {
        n * 16 / arena
    } else {
        1
    }
}

/// Records `kind` of advice.py from before "build"; once the Python view has read the built
/// heap (a reading after "mark"), grows it by 32 MiB outside pymalloc (the peak), and stops
/// once a reading follows the ledger shown for that peak. The readings on either side of that
/// ledger then both read the heap as built: the one before it was taken after the mark (or is
/// that one), the one after it once nothing changes pymalloc any more. Returns the report, the
/// target and its RSS after the growth.
fn record(py: &Python, dir: &TempDir, kind: &str, n: u64) -> (Value, Target, u64) {
    let mut cmd = Command::new(&py.path);
    cmd.arg("-S")
        .arg(target_script("advice.py"))
        .arg(kind)
        .arg(n.to_string());
    let mut t = Target::spawn(cmd);
    let db = dir.join(&format!("{kind}-{}.db", py.label));
    let pid = t.pid().to_string();
    let args = ["--interval", "100ms", pid.as_str(), "-o"].map(std::ffi::OsStr::new);
    let rec = start_recording(&[&args[..], &[db.as_os_str()]].concat());
    step(&mut t, "build", "BUILT");
    let arenas = least_arenas(py, kind, n);
    let fragment = kind == "fragment";
    let marked = mark(&mut t);
    let after_mark = |r: &Value| {
        r["gc_collections"]
            .as_array()
            .and_then(|c| c.get(2))
            .and_then(Value::as_u64)
            .is_some_and(|c| c >= marked)
    };
    let j = wait_for(
        &db,
        &rec,
        &format!("{}: a reading after the mark", py.label),
        |j| readings_of(j, t.pid()).iter().any(after_mark),
    );
    // The collector is read before pymalloc: this reading's pymalloc is the heap as built.
    let seen = readings_of(&j, t.pid());
    let first = seen.iter().find(|r| after_mark(r)).unwrap();
    assert!(
        built_heap(first, arenas, fragment),
        "{}: the first reading after the mark did not find the heap built: {first}",
        py.label
    );
    // the peak after the build (32 MiB outside pymalloc, kept when the advice is applied)
    let grown = step(&mut t, "grow", "GROWN");
    wait_for(
        &db,
        &rec,
        &format!("{}: a reading after the peak's ledger", py.label),
        |j| {
            // The peak seen is the grown one (VmHWM at least the RSS read after the growth, give
            // or take the kernel's per-CPU counter batches), its ledger holds 90% of it, and a
            // reading follows that ledger.
            let peak = j["peak"]["bytes"].as_u64().unwrap_or(0);
            let share = j["breakdown"]["share_of_peak"].as_f64().unwrap_or(0.0);
            let Some(at) = j["ledger_at_peak_seconds"].as_f64() else {
                return false;
            };
            peak + (8 << 20) >= grown
                && share >= 0.9
                && readings_of(j, t.pid())
                    .iter()
                    .any(|r| r["t_seconds"].as_f64().is_some_and(|rt| rt > at))
        },
    );
    kill(rec.id(), "-INT");
    let out = rec.wait_with_output().unwrap();
    assert!(out.status.success(), "{}: {}", py.label, stderr(&out));
    (report_json(&db), t, grown)
}

/// The readings of `pid` nearest the ledger shown for the peak at or before it and after it.
fn bracket(j: &Value, pid: u32) -> (Option<Value>, Option<Value>) {
    let at = j["ledger_at_peak_seconds"].as_f64().unwrap();
    let t = |r: &Value| r["t_seconds"].as_f64().unwrap();
    let all = readings_of(j, pid);
    let before = all
        .iter()
        .filter(|r| t(r) <= at)
        .max_by(|a, b| t(a).total_cmp(&t(b)))
        .cloned();
    let after = all
        .iter()
        .filter(|r| t(r) > at)
        .min_by(|a, b| t(a).total_cmp(&t(b)))
        .cloned();
    (before, after)
}

fn advice(j: &Value) -> Vec<Value> {
    j["advice"]
        .as_array()
        .unwrap_or_else(|| panic!("no advice array in the report"))
        .clone()
}

#[test]
fn a_recorded_fragmented_heap_gets_fragmentation_advice() {
    let dir = TempDir::new("report-advice");
    let mut bad = Vec::new();
    for py in interpreters() {
        let n = 400_000;
        let (j, mut t, built) = record(&py, &dir, "fragment", n);
        // As record() arranged: both readings around the peak's ledger read the heap as built.
        let arenas = least_arenas(&py, "fragment", n);
        let (before, after) = bracket(&j, t.pid());
        for r in [&before, &after] {
            assert!(
                r.as_ref().is_some_and(|r| built_heap(r, arenas, true)),
                "{}: around the peak's ledger at {}: {before:?}, {after:?}",
                py.label,
                j["ledger_at_peak_seconds"]
            );
        }
        let applied = step(&mut t, "apply", "APPLIED");
        t.send("quit");
        assert!(built > applied, "{}: applying freed nothing", py.label);
        let measured = built - applied;
        let from = &j["advice_from"];
        assert!(
            from["at_seconds"].as_f64().is_some(),
            "{}: {from}",
            py.label
        );
        assert!(from["note"]
            .as_str()
            .is_some_and(|n| n.contains("snapshot PID --advice")));
        let a = advice(&j);
        let Some(frag) = a.iter().find(|a| a["id"] == "fragmentation") else {
            bad.push(format!(
                "{}: no fragmentation advice: {a:?}; {from}",
                py.label
            ));
            continue;
        };
        assert_eq!(u(&frag["pid"]), u64::from(t.pid()));
        assert_eq!(frag["estimated"], true);
        assert_eq!(frag["subject"], "pymalloc arenas");
        assert!(frag["method"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(
            frag["text"]
                .as_str()
                .is_some_and(|x| x.contains("on either side of the ledger")),
            "{frag}"
        );
        let est = u(&frag["saving_bytes"]);
        let at = |r: &Option<Value>| {
            r.as_ref()
                .map_or(f64::NAN, |r| r["t_seconds"].as_f64().unwrap())
        };
        eprintln!(
            "{}: fragmentation advised {est}, measured {measured} (readings at {:.2} s and {:.2} s \
             around the peak's ledger at {:.2} s)",
            py.label,
            at(&before),
            at(&after),
            from["at_seconds"].as_f64().unwrap()
        );
        if (est as f64 - measured as f64).abs() > measured as f64 * 0.25 {
            bad.push(format!(
                "{}: saving {est} not within 25% of the measured {measured}",
                py.label
            ));
        }
        // the text report and the HTML page carry it too
        let db = dir.join(&format!("fragment-{}.db", py.label));
        let text = memlens().arg("report").arg(&db).output().unwrap();
        let text = String::from_utf8_lossy(&text.stdout).to_string();
        assert!(text.contains("[fragmentation] PID"), "{text}");
        let page = dir.join(&format!("fragment-{}.html", py.label));
        let o = memlens()
            .arg("report")
            .arg(&db)
            .arg("--html")
            .arg(&page)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(html.contains("<td>fragmentation</td>"), "{}", py.label);
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn a_recorded_compact_heap_gets_no_advice() {
    let dir = TempDir::new("report-advice-none");
    for py in interpreters() {
        for kind in ["clean-fragment", "clean-plain"] {
            let (j, mut t, _) = record(&py, &dir, kind, 400_000);
            t.send("quit");
            assert!(j["advice_from"]["at_seconds"].as_f64().is_some());
            assert_eq!(advice(&j), Vec::<Value>::new(), "{} {kind}", py.label);
            // nothing withheld either: no reading showed a heap to advise on
            assert_eq!(
                j["advice_from"]["skipped"],
                serde_json::json!([]),
                "{} {kind}",
                py.label
            );
        }
    }
}

/// The forked tree of cow_freeze.py (parent and `WORKERS` workers, collected and waiting).
fn cow(py: &Python, freeze: bool) -> (Target, Vec<u32>) {
    cow_freeze_tree(py, 300_000, WORKERS, freeze)
}

const WORKERS: usize = 2;

/// Whether a report holds, for every worker, a copy-on-write measurement of its python heap
/// and a Python view reading with the collector's frozen count, each taken after `after` (s).
fn cow_read(j: &Value, workers: &[u32], after: f64) -> bool {
    let empty = Vec::new();
    let python = j["python"].as_array().unwrap_or(&empty);
    let sharing = j["sharing"]["workers"].as_array().unwrap_or(&empty);
    let later = |v: &Value| v.as_f64().is_some_and(|t| t > after);
    workers.iter().all(|&w| {
        python.iter().any(|p| {
            u(&p["pid"]) == u64::from(w) && p["gc_frozen"].is_u64() && later(&p["t_seconds"])
        }) && sharing.iter().any(|s| {
            u(&s["pid"]) == u64::from(w)
                && s["points"].as_array().is_some_and(|p| {
                    p.iter().any(|p| {
                        p["measured"] == true
                            && later(&p["t"])
                            && p["by_category"]
                                .as_array()
                                .is_some_and(|c| c.iter().any(|c| c["category"] == "python-heap"))
                    })
                })
        })
    })
}

/// Polls the recording (one report a poll) until `done` holds of its report, for at most
/// 240 s: alone a copy-on-write pass comes within about a second; in the whole suite on two
/// cores, once, over 60 s (the recorder's pass waits for its budget): a generous limit, the
/// cause open.
fn wait_for_cow(db: &Path, rec: &Child, what: &str, mut done: impl FnMut(&Value) -> bool) {
    let until = Instant::now() + Duration::from_secs(240);
    let mut last = None;
    while !last.as_ref().is_some_and(&mut done) {
        if Instant::now() > until {
            kill(rec.id(), "-INT");
            let j = last.unwrap_or_default();
            panic!(
                "{what}: not in the recording after 240 s (peak {}, breakdown {}, ledger at {}, \
                 latest reading at {})",
                j["peak"]["bytes"],
                j["breakdown"],
                j["ledger_at_peak_seconds"],
                latest_reading(&j)
            );
        }
        std::thread::sleep(Duration::from_millis(200)); // polling the recording
        last = report_so_far(db);
    }
}

/// The latest copy-on-write measurement or Python view reading in a report (s).
fn latest_reading(j: &Value) -> f64 {
    let empty = Vec::new();
    let python = j["python"].as_array().unwrap_or(&empty).iter();
    let sharing = j["sharing"]["workers"].as_array().unwrap_or(&empty).iter();
    let points = sharing.flat_map(|w| w["points"].as_array().unwrap_or(&empty).iter());
    python
        .map(|p| &p["t_seconds"])
        .chain(points.map(|p| &p["t"]))
        .filter_map(Value::as_f64)
        .fold(f64::NEG_INFINITY, f64::max)
}

/// The peak of a report (bytes).
fn peak(j: &Value) -> u64 {
    j["peak"]["bytes"].as_u64().unwrap_or(0)
}

/// Records the tree until every worker's copy-on-write and frozen count were read; then grows
/// the parent by 32 MiB and, once the ledger shown for the peak holds the growth, frees it: the
/// peak lies between, after those readings, and no later read can pass it (a tree's PSS moves
/// by KiB with what other processes share with it). Stops once every worker's were read again
/// after that ledger. The cow-freeze advice stands only on a measurement and a reading on either
/// side of it (docs/advice.md): those before it were taken before the growth, those after it
/// once nothing changes the workers any more.
fn record_cow(py: &Python, dir: &TempDir, freeze: bool) -> (Value, Vec<u32>, u64) {
    let (mut t, workers) = cow(py, freeze);
    let uss: u64 = workers
        .iter()
        .map(|&w| rollup_field(w, "Private_Clean") + rollup_field(w, "Private_Dirty"))
        .sum();
    let db = dir.join(&format!("cow-{}-{freeze}.db", py.label));
    // a budget that affords a copy-on-write pass soon after the Python view found the heap
    let rec = memlens()
        .args(["record", &t.pid().to_string(), "--interval", "100ms"])
        .args(["--cpu-budget", "20", "--sharing-every", "500ms", "-o"])
        .arg(&db)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let what = format!(
        "{}: every worker's copy-on-write and frozen count",
        py.label
    );
    let mut before = (0, 0.0);
    wait_for_cow(&db, &rec, &what, |j| {
        before = (peak(j), latest_reading(j));
        cow_read(j, &workers, f64::NEG_INFINITY)
    });
    let (low, read) = before;
    // The peak holds the growth (give or take the kernel's per-CPU counter batches), and so does
    // the ledger shown for it (90% of it, as a breakdown at the peak does), taken after the
    // readings before the growth.
    let holds_growth = |j: &Value| {
        let at = j["ledger_at_peak_seconds"]
            .as_f64()
            .unwrap_or(f64::NEG_INFINITY);
        let share = j["breakdown"]["share_of_peak"].as_f64().unwrap_or(0.0);
        (peak(j) >= low + (24 << 20) && share >= 0.9 && at > read).then_some(at)
    };
    t.send("grow");
    assert_eq!(t.read_line().as_deref(), Some("GROWN"), "answer to grow");
    let what = format!("{}: the peak's ledger after the growth", py.label);
    wait_for_cow(&db, &rec, &what, |j| holds_growth(j).is_some());
    t.send("shrink");
    assert_eq!(t.read_line().as_deref(), Some("SHRUNK"), "answer to shrink");
    let what = format!("{}: both read again after the peak's ledger", py.label);
    wait_for_cow(&db, &rec, &what, |j| {
        holds_growth(j).is_some_and(|at| cow_read(j, &workers, at))
    });
    kill(rec.id(), "-INT");
    let out = rec.wait_with_output().unwrap();
    assert!(out.status.success(), "{}: {}", py.label, stderr(&out));
    drop(t);
    (report_json(&db), workers, uss)
}

#[test]
fn a_recorded_forked_tree_gets_cow_freeze_advice() {
    let dir = TempDir::new("report-advice-cow");
    let mut bad = Vec::new();
    for py in interpreters() {
        let (j, workers, copied) = record_cow(&py, &dir, false);
        let (frozen_j, _, frozen) = record_cow(&py, &dir, true);
        let measured = copied.saturating_sub(frozen);
        assert!(measured > 20 << 20, "{}: the GC copied little", py.label);
        let cow: Vec<Value> = advice(&j)
            .into_iter()
            .filter(|a| a["id"] == "cow-freeze")
            .collect();
        let est: u64 = cow.iter().map(|a| u(&a["saving_bytes"])).sum();
        eprintln!(
            "{}: cow-freeze advised {est} in {} items, measured {measured}",
            py.label,
            cow.len()
        );
        if cow.len() != WORKERS {
            bad.push(format!(
                "{}: cow-freeze advice {cow:?}; {}",
                py.label, j["advice_from"]
            ));
            continue;
        }
        for a in &cow {
            assert_eq!(a["estimated"], true);
            let text = a["text"].as_str().unwrap_or_default();
            assert!(text.contains("on either side of the ledger at"), "{text}");
            assert!(workers.iter().any(|&w| u64::from(w) == u(&a["pid"])));
        }
        if (est as f64 - measured as f64).abs() > measured as f64 * 0.25 {
            bad.push(format!(
                "{}: saving {est} not within 25% of the measured {measured}",
                py.label
            ));
        }
        let frozen_advice: Vec<Value> = advice(&frozen_j)
            .into_iter()
            .filter(|a| a["id"] == "cow-freeze")
            .collect();
        if !frozen_advice.is_empty() {
            bad.push(format!(
                "{}: frozen tree advised {frozen_advice:?}",
                py.label
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
