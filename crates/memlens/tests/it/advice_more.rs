//! More advice with figures (issue 12 item 1, docs/advice.md): `cow-freeze` for forked
//! workers. The saving is checked within 25% of the saving measured by applying the advice:
//! the same program run again with gc.freeze() before its fork, the workers' USS read from the
//! kernel (smaps_rollup) in both runs, never from memlens's output.

use serde_json::Value;

use crate::support::{cow_freeze_tree, memlens_json, pythons, rollup_field, u, Python, Target};

/// Interpreters whose GC differs (3.8; 3.12; 3.13; 3.14 and 3.15 when installed).
fn gcs() -> Vec<Python> {
    let mut out: Vec<Python> = Vec::new();
    for py in pythons() {
        let wanted = matches!(py.version, (3, 8) | (3, 12) | (3, 13) | (3, 14) | (3, 15));
        if wanted && !out.iter().any(|p| p.version == py.version) {
            out.push(py);
        }
    }
    assert!(!out.is_empty(), "no CPython to test advice with");
    out
}

const WORKERS: usize = 2;

/// The parent (forked workers collected and waiting) and its workers' pids.
fn cow(py: &Python, n: u64, freeze: bool) -> (Target, Vec<u32>) {
    cow_freeze_tree(py, n, WORKERS, freeze)
}

/// The workers' USS (private pages), from the kernel.
fn uss(workers: &[u32]) -> u64 {
    workers
        .iter()
        .map(|&w| rollup_field(w, "Private_Clean") + rollup_field(w, "Private_Dirty"))
        .sum()
}

#[test]
fn cow_freeze_saving_is_what_gc_freeze_keeps_shared() {
    let mut bad = Vec::new();
    for py in gcs() {
        let (t, workers) = cow(&py, 300_000, false);
        let copied = uss(&workers);
        let snap = memlens_json(&["snapshot", &t.pid().to_string(), "--tree", "--json"]);
        drop(t);
        let (t, frozen_workers) = cow(&py, 300_000, true);
        let frozen = uss(&frozen_workers);
        // with gc.freeze() before the fork, the tree gets no cow-freeze advice
        let frozen_snap = memlens_json(&["snapshot", &t.pid().to_string(), "--tree", "--json"]);
        drop(t);
        let advice: Vec<&Value> = snap["advice"]
            .as_array()
            .expect("advice array")
            .iter()
            .filter(|a| a["id"] == "cow-freeze")
            .collect();
        let measured = copied.saturating_sub(frozen);
        let est: u64 = advice.iter().map(|a| u(&a["saving_bytes"])).sum();
        eprintln!(
            "{}: workers' USS {copied} without gc.freeze, {frozen} with: measured {measured}, \
             advised {est} in {} items",
            py.label,
            advice.len()
        );
        assert!(measured > 20 << 20, "{}: the GC copied little", py.label);
        if advice.len() != WORKERS {
            bad.push(format!("{}: cow-freeze advice {advice:?}", py.label));
        }
        for a in &advice {
            assert_eq!(a["estimated"], true);
            assert!(a["method"].as_str().is_some_and(|m| !m.is_empty()));
            let pid = a["pid"].as_u64().expect("pid") as u32;
            assert!(workers.contains(&pid), "advice for {pid}, not a worker");
        }
        if (est as f64 - measured as f64).abs() > measured as f64 * 0.25 {
            bad.push(format!(
                "{}: cow-freeze saving {est} not within 25% of the measured {measured}",
                py.label
            ));
        }
        let after = frozen_snap["advice"].as_array().expect("advice array");
        if after.iter().any(|a| a["id"] == "cow-freeze") {
            bad.push(format!(
                "{}: cow-freeze advised after gc.freeze: {after:?}",
                py.label
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
