//! Advice with figures (issue 12 item 1, docs/advice.md): programs whose waste is known by
//! construction get the advice, with a saving within 25% of the saving measured by applying
//! it in the target (the kernel's RSS of the target before and after building the waste and
//! its applied form, never memlens's output); programs without such waste get none.

use std::process::Command;

use serde_json::Value;

use crate::support::{
    memlens_json, memlens_output, pythons, rollup_field, target_script, u, Python, Target, TempDir,
};

/// Interpreters whose object layouts differ (3.8 dicts; 3.11 separate values; 3.12 managed
/// dicts; 3.13 inline values; 3.14 when installed), one build each.
pub(crate) fn layouts() -> Vec<Python> {
    let mut out: Vec<Python> = Vec::new();
    for py in pythons() {
        let wanted = matches!(py.version, (3, 8) | (3, 11) | (3, 12) | (3, 13) | (3, 14));
        if wanted && !out.iter().any(|p| p.version == py.version) {
            out.push(py);
        }
    }
    assert!(!out.is_empty(), "no CPython to test advice with");
    out
}

fn start(py: &Python, kind: &str, n: u64) -> Target {
    let mut cmd = Command::new(&py.path);
    cmd.arg("-S")
        .arg(target_script("advice.py"))
        .arg(kind)
        .arg(n.to_string());
    Target::spawn(cmd)
}

fn step(t: &mut Target, cmd: &str, answer: &str) -> u64 {
    t.send(cmd);
    let line = t.read_line();
    assert_eq!(line.as_deref(), Some(answer), "target answer to {cmd}");
    rollup_field(t.pid(), "Rss")
}

/// The advice of `memlens snapshot PID --advice --json`.
pub(crate) fn advice_of(pid: u32) -> Vec<Value> {
    let snap = memlens_json(&["snapshot", &pid.to_string(), "--advice", "--json"]);
    snap["advice"]
        .as_array()
        .unwrap_or_else(|| panic!("no advice array in {snap}"))
        .clone()
}

/// Builds the waste, takes the advice, applies it; returns the advice and the measured saving.
fn measure(py: &Python, kind: &str, n: u64) -> (Vec<Value>, u64) {
    let mut t = start(py, kind, n);
    let before = rollup_field(t.pid(), "Rss");
    let built = step(&mut t, "build", "BUILT");
    let advice = advice_of(t.pid());
    let applied = step(&mut t, "apply", "APPLIED");
    t.send("quit");
    if kind == "fragment" {
        // the applied form replaced the waste: the saving is what RSS lost
        eprintln!(
            "{} {kind}: RSS {built} after build, {applied} after apply",
            py.label
        );
        assert!(built > applied, "{}: applying freed nothing", py.label);
        return (advice, built - applied);
    }
    let waste = built.saturating_sub(before);
    let fixed = applied.saturating_sub(built);
    eprintln!(
        "{} {kind}: waste {waste} bytes, applied form {fixed}: saving measured {}",
        py.label,
        waste.saturating_sub(fixed)
    );
    assert!(
        waste > fixed,
        "{}: the applied form is not smaller",
        py.label
    );
    (advice, waste - fixed)
}

fn find<'a>(advice: &'a [Value], id: &str, subject: &str) -> Option<&'a Value> {
    advice
        .iter()
        .find(|a| a["id"] == id && a["subject"].as_str().is_some_and(|s| s.contains(subject)))
}

fn check(kind: &str, n: u64, id: &str, subject: &str) {
    let mut bad = Vec::new();
    for py in layouts() {
        let (advice, measured) = measure(&py, kind, n);
        let Some(a) = find(&advice, id, subject) else {
            bad.push(format!(
                "{}: no {id} advice for {subject}: {advice:?}",
                py.label
            ));
            continue;
        };
        let est = u(&a["saving_bytes"]);
        eprintln!("{}: {id} estimated {est}, measured {measured}", py.label);
        assert_eq!(a["estimated"], true);
        assert!(a["method"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(a["pid"].as_u64().is_some());
        let diff = (est as f64 - measured as f64).abs();
        if diff > measured as f64 * 0.25 {
            bad.push(format!(
                "{}: {id} saving {est} not within 25% of the measured {measured}",
                py.label
            ));
        }
        // ranked by saving
        let savings: Vec<u64> = advice.iter().map(|a| u(&a["saving_bytes"])).collect();
        assert!(savings.windows(2).all(|w| w[0] >= w[1]), "{savings:?}");
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn slots_saving_matches_the_slotted_class() {
    check("slots", 300_000, "slots", "Point");
}

#[test]
fn scalar_list_saving_matches_an_array() {
    check("floats", 1_000_000, "scalar-list", "list");
}

#[test]
fn scalar_list_of_ints_saving_matches_an_array() {
    check("ints", 1_000_000, "scalar-list", "ints");
}

#[test]
fn duplicate_values_saving_matches_deduplication() {
    check("strings", 100_000, "duplicate-values", "str");
}

#[test]
fn fragmentation_saving_matches_returning_the_arenas() {
    check("fragment", 400_000, "fragmentation", "pymalloc");
}

/// Slotted classes, an array of floats, one copy of each string and a plain small program get
/// no object-level advice.
#[test]
fn no_advice_without_waste() {
    let mut bad = Vec::new();
    for py in layouts() {
        for (kind, n) in [
            ("clean-slots", 300_000),
            ("clean-floats", 1_000_000),
            ("clean-ints", 1_000_000),
            ("clean-strings", 100_000),
            ("clean-plain", 0),
            ("clean-fragment", 400_000),
        ] {
            let mut t = start(&py, kind, n);
            step(&mut t, "build", "BUILT");
            let advice = advice_of(t.pid());
            t.send("quit");
            let census: Vec<&Value> = advice
                .iter()
                .filter(|a| {
                    kind == "clean-plain"
                        || ["slots", "scalar-list", "duplicate-values", "fragmentation"]
                            .contains(&a["id"].as_str().unwrap_or(""))
                })
                .collect();
            if !census.is_empty() {
                bad.push(format!("{} {kind}: false advice {census:?}", py.label));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// `diff` of a snapshot before the waste and one after names the advice that appeared (and,
/// the other way round, that went away); the HTML page carries the advice, escaped.
#[test]
fn diff_and_html_show_the_advice() {
    let py = layouts().remove(0);
    let dir = TempDir::new("advice-diff");
    let mut t = start(&py, "slots", 300_000);
    let pid = t.pid().to_string();
    let snap = |name: &str| {
        let out = memlens_output(&["snapshot", &pid, "--advice", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join(name), &out.stdout).unwrap();
    };
    snap("a.json");
    step(&mut t, "build", "BUILT");
    snap("b.json");
    let page = dir.join("page.html");
    let out = memlens_output(&[
        "snapshot",
        &pid,
        "--advice",
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.send("quit");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<h2>Advice</h2>") && html.contains("instances of class Point"));
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let d = memlens_json(&["diff", a, b, "--json"]);
    let appeared = d["diffs"][0]["advice_appeared"].as_array().unwrap();
    assert!(
        appeared
            .iter()
            .any(|x| x["id"] == "slots" && x["subject"] == "Point"),
        "{appeared:?}"
    );
    assert!(d["diffs"][0]["advice_absent"].is_null());
    let d = memlens_json(&["diff", b, a, "--json"]);
    let gone = d["diffs"][0]["advice_gone"].as_array().unwrap();
    assert!(gone.iter().any(|x| x["id"] == "slots"), "{gone:?}");
    let text = memlens_output(&["diff", a, b]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("+ [slots] Point"), "{text}");
}
