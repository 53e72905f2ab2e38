//! Advice for idle threads (issue 12 item 1, docs/advice.md): `thread-stacks`. A program with
//! 200 threads waiting on an `Event` gets the advice to run at most 8 idle threads; its saving
//! is checked within 25% of the saving measured by applying it: the same program run again
//! with 8 threads, the anonymous memory and RSS of both runs read from the kernel
//! (smaps_rollup), never from memlens's output. Anonymous memory is the figure compared: the
//! file-backed pages of a static interpreter move when other processes map the same binary.
//! A program with 4 threads gets no `thread-stacks` advice.

use serde_json::Value;

use crate::advice::advice_of;
use crate::support::{rollup_field, u, Python, Target};

/// 3.8, 3.11, 3.12, 3.13, 3.14 (where installed), one build each.
fn interpreters() -> Vec<Python> {
    crate::advice::layouts()
}

/// Idle threads of the wasteful program; the applied form runs the 8 the advice leaves.
const THREADS: u32 = 200;
const KEPT: u32 = 8;

/// Starts `arenas.py idle N` (N threads waiting on an Event), ready.
fn start(py: &Python, n: u32) -> Target {
    crate::advice_threads::start(py, "idle", n, false)
}

/// The target's anonymous memory and RSS (kernel) and its thread-stacks advice.
fn read(t: &Target) -> (u64, u64, Vec<Value>) {
    let anon = rollup_field(t.pid(), "Anonymous");
    let rss = rollup_field(t.pid(), "Rss");
    let advice = advice_of(t.pid())
        .into_iter()
        .filter(|a| a["id"] == "thread-stacks")
        .collect();
    (anon, rss, advice)
}

#[test]
fn thread_stacks_saving_matches_running_fewer_threads() {
    let mut bad = Vec::new();
    for py in interpreters() {
        let mut t = start(&py, THREADS);
        let (anon, rss, advice) = read(&t);
        t.send("quit");
        drop(t);
        let mut t = start(&py, KEPT);
        let (applied_anon, applied_rss, applied_advice) = read(&t);
        t.send("quit");
        drop(t);
        let measured = anon.saturating_sub(applied_anon);
        let est: u64 = advice.iter().map(|a| u(&a["saving_bytes"])).sum();
        eprintln!(
            "{}: anonymous {anon} / RSS {rss} with {THREADS} threads, {applied_anon} / \
             {applied_rss} with {KEPT}: measured {measured} anonymous ({} RSS), advised {est} \
             ({:.2})",
            py.label,
            rss.saturating_sub(applied_rss),
            est as f64 / measured.max(1) as f64
        );
        assert!(measured > 2 << 20, "{}: the threads cost little", py.label);
        if advice.len() != 1 {
            bad.push(format!("{}: thread-stacks advice {advice:?}", py.label));
            continue;
        }
        let a = &advice[0];
        assert_eq!(a["estimated"], true);
        assert!(a["method"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(a["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("{THREADS} of")) && t.contains("wait")));
        if (est as f64 - measured as f64).abs() > measured as f64 * 0.25 {
            bad.push(format!(
                "{}: thread-stacks saving {est} not within 25% of the measured {measured}",
                py.label
            ));
        }
        if !applied_advice.is_empty() {
            bad.push(format!(
                "{}: thread-stacks advised with {KEPT} threads: {applied_advice:?}",
                py.label
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// A program with 4 idle threads gets no thread-stacks advice.
#[test]
fn no_thread_stacks_advice_for_a_few_threads() {
    let mut bad = Vec::new();
    for py in interpreters() {
        let mut t = start(&py, 4);
        let (_, _, advice) = read(&t);
        t.send("quit");
        if !advice.is_empty() {
            bad.push(format!("{}: false advice {advice:?}", py.label));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
