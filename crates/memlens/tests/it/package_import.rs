//! The `package-import` advice (issue 12, docs/advice.md#package-import): a generated
//! package whose import costs many MiB by construction (3,000 classes with three methods each
//! and 3,000 functions, compiled to .pyc) is advised with a saving within 25% of what its
//! import measurably costs: the RSS and the anonymous memory (smaps_rollup `Rss` and
//! `Anonymous`, the kernel's figures; the program does not fork, so its anonymous pages are
//! its own: its heaps' USS) of the same program run without the import are that much smaller.
//! (The whole USS is not compared: its file-backed part moves with other processes mapping
//! the same interpreter binary, by megabytes for the static builds.) A program importing only a
//! small package (20 functions), or none, gets no `package-import` advice. CPython 3.8, 3.11,
//! 3.12, 3.13 and sid's 3.14.

use std::process::Command;

use crate::support::{memlens_json, pythons, rollup_field, target_script, u, Python, TempDir};
use serde_json::Value;

/// Classes and functions of the generated package.
const N: &str = "3000";

/// The rules of docs/advice.md: within 25% of the measured saving.
const TOLERANCE: f64 = 0.25;

struct Run {
    rss: u64,
    anon: u64,
    snapshot: Value,
}

/// Runs the program importing `what` (`heavy`, `small`, `none`) from `site`, reads its RSS and
/// anonymous memory from the kernel, then takes `snapshot --advice --packages --json` of it.
fn run(py: &Python, site: &std::path::Path, what: &str) -> Run {
    let mut cmd = Command::new(&py.path);
    cmd.arg("-S")
        .arg(target_script("package_import.py"))
        .arg("run")
        .arg(site)
        .arg(what);
    let t = crate::support::Target::spawn(cmd);
    let pid = t.pid();
    // before memlens reads it: the census's reads may fault file pages in
    let rss = rollup_field(pid, "Rss");
    let anon = rollup_field(pid, "Anonymous");
    let pid = pid.to_string();
    let snapshot = memlens_json(&["snapshot", &pid, "--advice", "--packages", "--json"]);
    Run {
        rss,
        anon,
        snapshot,
    }
}

fn package_import(snap: &Value) -> Vec<&Value> {
    snap["advice"]
        .as_array()
        .expect("advice array")
        .iter()
        .filter(|a| a["id"] == "package-import")
        .collect()
}

fn tested() -> Vec<Python> {
    pythons()
        .into_iter()
        .filter(|p| matches!(p.version, (3, 8) | (3, 11) | (3, 12) | (3, 13) | (3, 14)))
        .collect()
}

#[test]
fn advised_saving_is_the_measured_cost_of_the_import() {
    let mut failures = Vec::new();
    for py in tested() {
        let dir = TempDir::new("pkgimp");
        let site = dir.join("lib/site-packages");
        std::fs::create_dir_all(&site).expect("site folder");
        let status = Command::new(&py.path)
            .arg(target_script("package_import.py"))
            .arg("generate")
            .arg(&site)
            .arg(N)
            .status()
            .expect("generate");
        assert!(status.success(), "{}: generating the package", py.label);

        let heavy = run(&py, &site, "heavy");
        let none = run(&py, &site, "none");
        let small = run(&py, &site, "small");
        let label = &py.label;

        let items = package_import(&heavy.snapshot);
        let item = items
            .iter()
            .find(|a| a["subject"] == "mlgen_heavy")
            .unwrap_or_else(|| {
                panic!("{label}: no package-import advice for mlgen_heavy: {items:?}")
            });
        assert_eq!(item["estimated"], true, "{label}");
        assert_eq!(u(&item["pid"]), u(&heavy.snapshot["root"]), "{label}");
        assert!(
            item["text"].as_str().is_some_and(|t| t.contains("lazily")),
            "{label}: {item}"
        );
        assert!(item["method"].as_str().is_some_and(|m| !m.is_empty()));
        // nothing else is advised as an import: the standard library and the program are not
        assert_eq!(items.len(), 1, "{label}: {items:?}");
        let advised = u(&item["saving_bytes"]);
        // the figures it comes from: the package's objects as allocated
        let pkg = heavy.snapshot["processes"][0]["python"]["packages"]["packages"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == "mlgen_heavy"))
            .unwrap_or_else(|| panic!("{label}: mlgen_heavy not among the packages"))
            .clone();
        assert_eq!(pkg["kind"], "distribution", "{label}");
        assert_eq!(u(&pkg["allocated_bytes"]), advised, "{label}: {pkg}");
        assert!(u(&pkg["classes"]["count"]) >= 3000, "{label}: {pkg}");
        assert!(u(&pkg["functions"]["count"]) >= 4 * 3000, "{label}: {pkg}");

        let rss = heavy.rss.saturating_sub(none.rss);
        let anon = heavy.anon.saturating_sub(none.anon);
        eprintln!(
            "{label}: package-import advised {advised} B; measured RSS {rss} B, anonymous {anon} B ({:.2}, {:.2})",
            advised as f64 / rss.max(1) as f64,
            advised as f64 / anon.max(1) as f64
        );
        assert!(
            rss >= 4 << 20,
            "{label}: the import cost only {rss} B of RSS"
        );
        for (what, measured) in [("RSS", rss), ("anonymous memory", anon)] {
            let off = (advised as f64 - measured as f64).abs() / measured as f64;
            if off > TOLERANCE {
                failures.push(format!(
                    "{label}: advised {advised} B, measured {what} saving {measured} B ({:.0}% off)",
                    off * 100.0
                ));
            }
        }

        // no false advice: nothing heavy imported
        for (what, r) in [("none", &none), ("small", &small)] {
            let items = package_import(&r.snapshot);
            assert!(items.is_empty(), "{label}: {what}: {items:?}");
        }
        // the small package is there, under the threshold
        let small_pkg = small.snapshot["processes"][0]["python"]["packages"]["packages"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == "mlgen_small"))
            .unwrap_or_else(|| panic!("{label}: mlgen_small not among the packages"))
            .clone();
        let bytes = u(&small_pkg["allocated_bytes"]);
        assert!(bytes > 0 && bytes < 1 << 20, "{label}: {small_pkg}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
