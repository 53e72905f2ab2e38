//! Memory per Python package (issue 7 item 4): `snapshot --packages` attributes code objects,
//! functions, classes and modules to their packages as the target itself computes it (from
//! `gc.get_objects()`, `gc.get_referents` and `sys.getsizeof`), on every supported CPython,
//! several launches each; the figures sit beside the package's extension modules and change
//! no total of the ledger.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{pythons, u, Python, Target};
use serde_json::Value;

const LAUNCHES: usize = 3;
const KINDS: [&str; 4] = ["code", "functions", "classes", "modules"];

fn start(py: &Python) -> (Target, Value) {
    start_with(py, &[])
}

fn start_with(py: &Python, args: &[&str]) -> (Target, Value) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/targets/package_memory.py");
    let mut cmd = Command::new(&py.path);
    cmd.arg("-S").arg(script).args(args);
    let t = Target::spawn(cmd);
    let truth: Value = serde_json::from_str(
        t.lines
            .iter()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("{}: no ground truth: {:?}", py.label, t.lines)),
    )
    .expect("target JSON");
    (t, truth)
}

fn snapshot(pid: u32, packages: bool) -> Value {
    let pid = pid.to_string();
    let mut args = vec!["snapshot", pid.as_str(), "--json"];
    if packages {
        args.push("--packages");
    }
    crate::support::memlens_json(&args)
}

/// The process's `(category, rss, uss)` rows.
fn rows(snap: &Value) -> Vec<(String, u64, u64)> {
    let mut v: Vec<(String, u64, u64)> = snap["processes"][0]["ledger"]
        .as_array()
        .expect("ledger rows")
        .iter()
        .map(|r| {
            (
                r["category"].as_str().unwrap_or("?").to_string(),
                u(&r["rss"]),
                u(&r["uss"]),
            )
        })
        .collect();
    v.sort();
    v
}

/// Compares memlens's packages with the target's; returns the differences.
fn compare(label: &str, truth: &Value, got: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    eprintln!(
        "{label}: {} packages compared",
        truth["packages"].as_object().map_or(0, |o| o.len())
    );
    let theirs = truth["packages"].as_object().expect("truth packages");
    let mine = got["packages"].as_array().expect("packages");
    let find = |name: &str| mine.iter().find(|p| p["name"] == name);
    for (name, kinds) in theirs {
        let Some(p) = find(name) else {
            bad.push(format!("{label}: package {name} missing"));
            continue;
        };
        for kind in KINDS {
            let (count, bytes) = match kinds.get(kind) {
                Some(c) => (u(&c[0]), u(&c[1])),
                None => (0, 0),
            };
            let (gc, gb) = (u(&p[kind]["count"]), u(&p[kind]["bytes"]));
            if gb != bytes || gc != count {
                eprintln!(
                    "{label}: {name} {kind}: memlens {gc} objects {gb} B, target {count} objects {bytes} B"
                );
            }
            let tolerance = bytes / 100;
            if gb.abs_diff(bytes) > tolerance || gc.abs_diff(count) > count / 100 {
                bad.push(format!(
                    "{label}: {name} {kind}: memlens {gc} objects {gb} B, target {count} objects {bytes} B"
                ));
            }
        }
    }
    for p in mine {
        let name = p["name"].as_str().unwrap_or("?");
        if !theirs.contains_key(name) {
            bad.push(format!("{label}: package {name} not in the target's: {p}"));
        }
    }
    bad
}

#[test]
fn python_objects_by_package_match_the_target() {
    let mut failures = Vec::new();
    for py in pythons() {
        for launch in 0..LAUNCHES {
            let label = format!("{} launch {launch}", py.label);
            let (t, truth) = start(&py);
            let pid = t.pid();
            let plain = snapshot(pid, false);
            let snap = snapshot(pid, true);
            let process = &snap["processes"][0];
            let got = &process["python"]["packages"];
            assert!(got.is_object(), "{label}: no packages in {process}");
            assert_eq!(
                got["method"], "verified",
                "{label}: census not verified: {got}"
            );
            assert_eq!(u(&got["unreadable_objects"]), 0, "{label}");
            assert_eq!(u(&got["unreadable_names"]), 0, "{label}");
            failures.extend(compare(&label, &truth, got));

            // the distribution and its ".so" side by side
            let dist = got["packages"]
                .as_array()
                .and_then(|a| a.iter().find(|p| p["name"] == "memlens_fake_dist"))
                .unwrap_or_else(|| panic!("{label}: no memlens_fake_dist in {got}"));
            assert_eq!(dist["kind"], "distribution", "{label}");
            assert!(u(&dist["code"]["count"]) >= 40 * 5, "{label}: {dist}");
            assert!(u(&dist["classes"]["count"]) >= 40, "{label}: {dist}");
            let ext = &dist["extension"];
            assert!(
                u(&ext["rss"]) >= 4096 && u(&ext["size"]) == 64 * 1024,
                "{label}: the .so beside the package: {dist}"
            );
            let ext_item = process["ledger"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["category"] == "extensions"))
                .and_then(|r| r["items"].as_array())
                .and_then(|i| i.iter().find(|i| i["name"] == "memlens_fake_dist"))
                .unwrap_or_else(|| panic!("{label}: no extensions item"));
            assert_eq!(u(&ext_item["pss"]), u(&ext["pss"]), "{label}");
            for name in ["mlpkg_beta", "stdlib", "(program)", "(unknown)"] {
                let p = got["packages"]
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p["name"] == name));
                assert!(p.is_some(), "{label}: no package {name}: {got}");
            }

            // an attribution of bytes already counted: no total, no row changes
            let total: u64 = got["packages"]
                .as_array()
                .map(|a| a.iter().map(|p| u(&p["object_bytes"])).sum())
                .unwrap_or(0);
            assert_eq!(total, u(&got["object_bytes"]), "{label}");
            // The rows of the heaps (anonymous memory) are the same with and without the
            // attribution, and each snapshot's totals are the sum of its rows. (File-backed rows
            // may grow between two snapshots: the target faults in code as it blocks, and the
            // census's reads of file-backed mappings fault their pages into the target.)
            let heap_rows = |s: &Value| -> Vec<(String, u64, u64)> {
                rows(s)
                    .into_iter()
                    .filter(|r| r.0 == "python-heap" || r.0 == "native-heap")
                    .collect()
            };
            assert_eq!(
                heap_rows(&plain),
                heap_rows(&snap),
                "{label}: heap rows changed"
            );
            for s in [&plain, &snap] {
                let row_sum: u64 = rows(s).iter().map(|r| r.1).sum();
                assert_eq!(row_sum, u(&s["totals"]["rss"]), "{label}: totals");
                let cats: Vec<String> = rows(s).into_iter().map(|r| r.0).collect();
                assert_eq!(
                    cats,
                    rows(&plain).into_iter().map(|r| r.0).collect::<Vec<_>>()
                );
            }
            let heaps: u64 = rows(&snap)
                .iter()
                .filter(|r| r.0 == "python-heap" || r.0 == "native-heap")
                .map(|r| r.1)
                .sum();
            assert!(
                total <= heaps,
                "{label}: {total} B of objects outside the heap rows ({heaps} B)"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn text_says_the_bytes_are_already_in_the_heap_rows() {
    let Some(py) = pythons().into_iter().next() else {
        return;
    };
    let (t, _) = start(&py);
    let out = crate::support::memlens_output(&["snapshot", &t.pid().to_string(), "--packages"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Python objects by package"), "{text}");
    assert!(
        text.contains("already inside the python-heap and native-heap rows"),
        "{text}"
    );
    assert!(text.contains("memlens_fake_dist"), "{text}");
    let plain = crate::support::memlens_output(&["snapshot", &t.pid().to_string()]);
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("Python objects by package"),
        "the census is only taken with --packages"
    );
}

/// More distinct module names than memlens keeps apart (`census::MAX_ORIGINS`): the census
/// still succeeds within its memory cap, nothing is lost (the packages sum to the target's
/// total), and what passed the bound is counted as `(unknown)`, never given to a package it
/// does not belong to.
#[test]
fn more_module_names_than_the_bound_are_pooled_as_unknown() {
    let names = (memlens_cpython::census::MAX_ORIGINS + 5_000).to_string();
    let all = pythons();
    for py in all
        .iter()
        .take(1)
        .chain(all.iter().filter(|p| p.label.contains("debian-3.11")))
    {
        for launch in 0..2 {
            let label = format!("{} launch {launch}", py.label);
            let (t, truth) = start_with(py, &["--many-names", &names]);
            let snap = snapshot(t.pid(), true);
            let got = &snap["processes"][0]["python"]["packages"];
            let theirs = truth["packages"].as_object().expect("truth packages");
            let total_theirs: u64 = theirs
                .values()
                .flat_map(|k| KINDS.iter().filter_map(move |kind| k.get(*kind)))
                .map(|c| u(&c[1]))
                .sum();
            // the named kinds (the target does not compute what they hold)
            let named = |p: &Value| -> u64 { KINDS.iter().map(|kind| u(&p[*kind]["bytes"])).sum() };
            let packages = got["packages"].as_array().expect("packages");
            let total: u64 = packages.iter().map(named).sum();
            assert_eq!(total, total_theirs, "{label}: bytes lost");
            for p in packages {
                let name = p["name"].as_str().unwrap_or("?");
                let want: u64 = theirs.get(name).map_or(0, |k| {
                    KINDS
                        .iter()
                        .filter_map(|kind| k.get(*kind))
                        .map(|c| u(&c[1]))
                        .sum()
                });
                let have = named(p);
                if name == "(unknown)" {
                    assert!(have >= want, "{label}: (unknown) {have} < {want}");
                } else {
                    assert!(have <= want, "{label}: {name} {have} > {want}");
                }
            }
        }
    }
}
