//! CPython 3.13+ builds that no generated table matches are read through their
//! `_Py_DebugOffsets` alone (exact or refused). Forced here with `MEMLENS_LAYOUT=debug-offsets`
//! on builds that do have a table: the layout built from the live process's debug offsets
//! carries exactly the table's values, stacks read through it equal stacks read through the
//! table, and the views the debug offsets cannot serve exit 5 with a clear message.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{memlens, pythons, Python, Target};
use memlens_cpython::layouts::{self, debug_pairs, LAYOUT_ENV, POISON};
use memlens_cpython::Attacher;
use memlens_remote::vm::RemoteMemory;
use serde_json::Value;

const LAUNCHES: usize = 2;

fn with_debug_offsets() -> Vec<Python> {
    let out: Vec<Python> = pythons()
        .into_iter()
        .filter(|p| p.version.1 >= 13)
        .collect();
    if std::env::var_os("CI").is_some() {
        for minor in [13, 14, 15] {
            assert!(
                out.iter().any(|p| p.version.1 == minor),
                "CPython 3.{minor} missing in CI"
            );
        }
    }
    out
}

fn threads_target(py: &Python) -> Target {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/targets/threads.py");
    let mut cmd = Command::new(&py.path);
    cmd.arg(script);
    Target::spawn(cmd)
}

#[test]
fn layout_from_live_debug_offsets_equals_the_generated_table() {
    for py in with_debug_offsets() {
        for _ in 0..LAUNCHES {
            let t = threads_target(&py);
            let mem = RemoteMemory::open(t.pid()).expect("open memory");
            let session = Attacher::new()
                .attach(t.pid())
                .unwrap_or_else(|e| panic!("{}: attach: {e}", py.label));
            let it = &session.interpreter;
            assert!(
                !it.layout.from_debug_offsets,
                "{}: the table matches",
                py.label
            );
            let built = layouts::read_debug_offsets(&mem, it.runtime, it.layout)
                .unwrap_or_else(|e| panic!("{}: debug offsets: {e}", py.label));
            assert!(built.from_debug_offsets);
            let pairs = debug_pairs(it.layout);
            assert!(pairs.len() >= 30, "{}: {} pairs", py.label, pairs.len());
            // every value the debug offsets carry is the table's; the rest is left unknown
            assert_eq!(debug_pairs(&built), pairs, "{}", py.label);
            assert_eq!(
                built.runtime_interpreters_head,
                it.layout.runtime_interpreters_head
            );
            assert_eq!(built.tstate_thread_id, it.layout.tstate_thread_id);
            assert_eq!(built.code_code_adaptive, it.layout.code_code_adaptive);
            assert_eq!(built.gc_generations, POISON, "{}: not carried", py.label);
            assert_eq!(built.list_allocated, POISON, "{}: not carried", py.label);
            assert_eq!(
                built.tpflags_heaptype, it.layout.tpflags_heaptype,
                "a constant"
            );
        }
    }
}

fn stacks(pid: &str, forced: bool) -> Value {
    let mut cmd = memlens();
    cmd.args(["stacks", pid, "--json"]);
    if forced {
        cmd.env(LAYOUT_ENV, "debug-offsets");
    } else {
        cmd.env_remove(LAYOUT_ENV);
    }
    let out = cmd.output().expect("memlens runs");
    assert!(
        out.status.success(),
        "stacks (forced {forced}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // timing differs between runs
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| k == "threads" || k == "python");
    }
    // thread names come from threading's objects, which _Py_DebugOffsets do not describe:
    // read with the table, null through the debug offsets alone
    for t in v["threads"].as_array_mut().into_iter().flatten() {
        let name = t.as_object_mut().and_then(|o| o.remove("name"));
        assert!(
            forced == name.as_ref().is_none_or(Value::is_null),
            "names only with the table: {name:?}"
        );
    }
    v
}

#[test]
fn stacks_through_debug_offsets_alone_equal_stacks_through_the_table() {
    for py in with_debug_offsets() {
        for _ in 0..LAUNCHES {
            let t = threads_target(&py);
            let pid = t.pid().to_string();
            let table = stacks(&pid, false);
            let forced = stacks(&pid, true);
            assert_eq!(forced, table, "{}", py.label);
            assert!(
                table["threads"].as_array().is_some_and(|a| a.len() == 3),
                "{}: {table}",
                py.label
            );
        }
    }
}

#[test]
fn views_the_debug_offsets_cannot_serve_exit_5() {
    for py in with_debug_offsets() {
        let t = threads_target(&py);
        let pid = t.pid().to_string();
        let out = memlens()
            .args(["census", &pid])
            .env(LAYOUT_ENV, "debug-offsets")
            .output()
            .expect("memlens runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{}: {err}", py.label);
        assert!(
            err.contains("the census") && err.contains("_Py_DebugOffsets"),
            "{}: {err}",
            py.label
        );
        assert!(out.stdout.is_empty(), "{}: no partial census", py.label);
        // the snapshot keeps its ledger and says why it has no Python view
        let out = memlens()
            .args(["snapshot", &pid, "--json"])
            .env(LAYOUT_ENV, "debug-offsets")
            .output()
            .expect("memlens runs");
        assert!(out.status.success(), "{}: snapshot", py.label);
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert!(v["totals"]["pss"].as_u64().is_some_and(|p| p > 0));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("the GC state"), "{}: {err}", py.label);
        assert!(t.lines.iter().any(|l| l.starts_with('{')));
    }
}
