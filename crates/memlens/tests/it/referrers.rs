//! `census --referrers TYPE` (issue 12): the chains that hold a type's instances, read from
//! outside, against what the target computes itself (len and sum of sys.getsizeof of each
//! holder) through a list, a dict value, an instance attribute, a deque, a `__slots__` member
//! and a thread's frame local, on every supported CPython; a memory cap too small; bad input.

use std::process::Command;

use serde_json::Value;

use crate::support::{memlens_output, pythons, stderr, target_script, u, Python, Target};

fn start(py: &Python) -> (Target, Value) {
    start_with(py, &[])
}

fn start_with(py: &Python, args: &[&str]) -> (Target, Value) {
    let mut cmd = Command::new(&py.path);
    cmd.arg(target_script("referrers.py")).args(args);
    let t = Target::spawn(cmd);
    let facts: Value = serde_json::from_str(t.lines.last().expect("facts line")).expect("facts");
    (t, facts)
}

/// The chain of `json` whose root and path are these.
fn chain<'a>(r: &'a Value, root: &dyn Fn(&Value) -> bool, path: &[(&str, &str)]) -> &'a Value {
    let chains = r["chains"].as_array().expect("chains");
    chains
        .iter()
        .find(|c| {
            let p = c["path"].as_array().expect("path");
            root(&c["root"])
                && p.len() == path.len()
                && p.iter()
                    .zip(path)
                    .all(|(s, (t, v))| s["type"] == *t && s["via"] == *v)
        })
        .unwrap_or_else(|| {
            panic!(
                "no chain {path:?} in {}",
                serde_json::to_string_pretty(r).expect("json")
            )
        })
}

fn global(name: &'static str) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["kind"] == "global" && r["module"] == "leaky" && r["name"] == name
}

fn check_counts(label: &str, c: &Value, truth: &Value) {
    assert_eq!(u(&c["instances"]), u(&truth[0]), "{label}: instances: {c}");
    assert_eq!(u(&c["bytes"]), u(&truth[1]), "{label}: bytes: {c}");
}

fn referrers_json(pid: u32, name: &str) -> Value {
    let p = pid.to_string();
    let out = memlens_output(&["census", &p, "--referrers", name, "--top", "0", "--json"]);
    assert!(out.status.success(), "memlens failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn chains_to_a_module_list_a_dict_value_an_attribute_and_a_thread_local() {
    for py in pythons() {
        let label = &py.label;
        let (mut t, facts) = start(&py);
        for name in ["Item", "leaky.Item"] {
            let j = referrers_json(t.pid(), name);
            let r = &j["referrers"];
            assert_eq!(r["method"], "paused", "{label}");
            let cache = chain(r, &global("CACHE"), &[("list", "[*]")]);
            check_counts(&format!("{label} CACHE"), cache, &facts["cache"]);
            let reg = chain(
                r,
                &global("REGISTRY"),
                &[("dict", "['users']"), ("list", "[*]")],
            );
            check_counts(&format!("{label} REGISTRY"), reg, &facts["registry"]);
            let holder = chain(
                r,
                &global("HOLDER"),
                &[("Holder", ".items"), ("list", "[*]")],
            );
            check_counts(&format!("{label} HOLDER"), holder, &facts["holder"]);
            let queue = chain(r, &global("QUEUE"), &[("deque", "[*]")]);
            check_counts(&format!("{label} QUEUE"), queue, &facts["queue"]);
            let slotted = chain(
                r,
                &global("SLOTTED"),
                &[("Slotted", ".held"), ("list", "[*]")],
            );
            check_counts(&format!("{label} SLOTTED"), slotted, &facts["slotted"]);
            let tid = u(&facts["tid"]);
            let local = chain(
                r,
                &|root: &Value| {
                    root["kind"] == "local"
                        && u(&root["thread_id"]) == tid
                        && root["function"]
                            .as_str()
                            .is_some_and(|f| f.ends_with("worker"))
                        && root["name"] == "mine"
                },
                &[("list", "[*]")],
            );
            check_counts(&format!("{label} local"), local, &facts["local"]);
            let total: u64 = ["cache", "registry", "holder", "queue", "slotted", "local"]
                .iter()
                .map(|k| u(&facts[k][0]))
                .sum();
            assert_eq!(
                u(&r["instances"]),
                total,
                "{label}: every Item on one chain"
            );
            assert_eq!(u(&r["unreadable"]["objects"]), 0, "{label}");
        }
        // the text names the global and the chain
        let p = t.pid().to_string();
        let out = memlens_output(&["census", &p, "--referrers", "Item"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{label}: {}", stderr(&out));
        assert!(
            text.contains("module leaky . global CACHE -> list[*] -> Item"),
            "{label}: {text}"
        );
        assert!(text.contains("shallow"), "{label}: {text}");
        assert!(
            t.is_running(),
            "{label}: the target was left stopped or killed"
        );
        t.send("");
    }
}

#[test]
fn unknown_type_and_no_instances() {
    let py = pythons().into_iter().next().expect("a python");
    let (t, _) = start(&py);
    let p = t.pid().to_string();
    let out = memlens_output(&["census", &p, "--referrers", "NoSuchTypeAnywhere"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no type named `NoSuchTypeAnywhere`"),
        "{}",
        stderr(&out)
    );
    let out = memlens_output(&["census", &p, "--referrers", "not a name"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // a class without instances: a clear answer, exit 0
    let out = memlens_output(&["census", &p, "--referrers", "Unused"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("No instance of Unused is reachable"),
        "{text}"
    );
    let out = memlens_output(&["census", &p, "--referrers", "leaky.Unused"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j = referrers_json(t.pid(), "Unused");
    assert_eq!(u(&j["referrers"]["instances"]), 0);
    assert_eq!(j["referrers"]["chains"].as_array().map(Vec::len), Some(0));
}

#[test]
fn a_memory_cap_too_small_is_an_error_not_a_partial_answer() {
    let py = pythons().into_iter().next().expect("a python");
    let (t, _) = start_with(&py, &["big"]);
    let p = t.pid().to_string();
    let out = memlens_output(&["census", &p, "--referrers", "Item", "--max-memory", "4MiB"]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(stderr(&out).contains("max-memory"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "no partial answer");
    // with the default cap the same walk succeeds and counts them all
    let j = referrers_json(t.pid(), "Item");
    assert_eq!(
        u(&j["referrers"]["instances"]),
        300_000 + 300 + 120 + 70 + 9 + 5 + 40
    );
}
