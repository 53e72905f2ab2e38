//! Advice for threads (issue 12 item 1, docs/advice.md): `malloc-arenas`, free memory spread
//! over glibc's per-thread arenas. The saving is checked within 25% of the saving measured by
//! applying the advice: the same program run again with `MALLOC_ARENA_MAX=2`, the RSS of both
//! runs read from the kernel (smaps_rollup), never from memlens's output. Idle threads, one
//! thread, and the applied form get no `malloc-arenas` advice.

use std::process::Command;

use serde_json::Value;

use crate::advice::advice_of;
use crate::support::{rollup_field, target_script, u, Python, Target};

/// The glibc behind each interpreter (pyenv's on the host's glibc; sid's 3.14 on its own
/// glibc 2.43, whose arenas have no fast bins) across 3.8, 3.11, 3.12, 3.13, 3.14.
fn interpreters() -> Vec<Python> {
    crate::advice::layouts()
}

/// Threads of the churn program: more than the arenas a 2-core host allows (16), so every
/// arena holds a thread's freed 15 MiB.
const THREADS: u32 = 16;

/// Starts `arenas.py KIND N`, with `MALLOC_ARENA_MAX=2` when `applied`, ready.
pub(crate) fn start(py: &Python, kind: &str, n: u32, applied: bool) -> Target {
    let mut cmd = Command::new(&py.path);
    cmd.arg("-S")
        .arg(target_script("arenas.py"))
        .arg(kind)
        .arg(n.to_string())
        .env_remove("MALLOC_ARENA_MAX");
    if applied {
        cmd.env("MALLOC_ARENA_MAX", "2");
    }
    Target::spawn(cmd)
}

/// The target's RSS (kernel) and its malloc-arenas advice.
fn read(t: &Target) -> (u64, Vec<Value>) {
    let rss = rollup_field(t.pid(), "Rss");
    let advice = advice_of(t.pid())
        .into_iter()
        .filter(|a| a["id"] == "malloc-arenas")
        .collect();
    (rss, advice)
}

#[test]
fn malloc_arenas_saving_matches_malloc_arena_max_2() {
    let mut bad = Vec::new();
    for py in interpreters() {
        let mut t = start(&py, "churn", THREADS, false);
        let (rss, advice) = read(&t);
        t.send("quit");
        drop(t);
        let mut t = start(&py, "churn", THREADS, true);
        let (applied_rss, applied_advice) = read(&t);
        t.send("quit");
        drop(t);
        let measured = rss.saturating_sub(applied_rss);
        let est: u64 = advice.iter().map(|a| u(&a["saving_bytes"])).sum();
        eprintln!(
            "{}: RSS {rss} with an arena per thread, {applied_rss} with MALLOC_ARENA_MAX=2: \
             measured {measured}, advised {est}",
            py.label
        );
        assert!(measured > 100 << 20, "{}: the arenas kept little", py.label);
        if advice.len() != 1 {
            bad.push(format!("{}: malloc-arenas advice {advice:?}", py.label));
            continue;
        }
        let a = &advice[0];
        assert_eq!(a["estimated"], true);
        assert!(a["method"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(a["text"]
            .as_str()
            .is_some_and(|t| t.contains("MALLOC_ARENA_MAX=2")));
        if (est as f64 - measured as f64).abs() > measured as f64 * 0.25 {
            bad.push(format!(
                "{}: malloc-arenas saving {est} not within 25% of the measured {measured}",
                py.label
            ));
        }
        if !applied_advice.is_empty() {
            bad.push(format!(
                "{}: malloc-arenas advised with MALLOC_ARENA_MAX=2: {applied_advice:?}",
                py.label
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// 200 idle threads (an arena each up to the limit, nearly empty) and one thread that churns
/// (one arena: nothing to share) get no malloc-arenas advice.
#[test]
fn no_malloc_arenas_advice_without_spread_free_memory() {
    let mut bad = Vec::new();
    for py in interpreters() {
        for (kind, n) in [("idle", 200), ("churn", 1)] {
            let mut t = start(&py, kind, n, false);
            let (_, advice) = read(&t);
            t.send("quit");
            if !advice.is_empty() {
                bad.push(format!("{} {kind} {n}: false advice {advice:?}", py.label));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
