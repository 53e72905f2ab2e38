//! Object sizes read from outside equal `sys.getsizeof` in the target, object by object, for
//! every type whose `__sizeof__` is not the generic formula, on every supported CPython
//! (several launches each, so addresses vary), and numpy's data buffers equal `nbytes`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::support::{pythons, u, Python, Target};
use memlens_cpython::sizes::{DataBuffer, SizeKind, Sizer};
use memlens_cpython::Attacher;
use memlens_remote::vm::RemoteMemory;
use memlens_remote::ProcessMemory;
use serde_json::Value;

const LAUNCHES: usize = 3;

fn target_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/targets/sizes.py")
}

/// Starts the target, reads every object it lists through memlens's sizes, and returns the
/// mismatches (empty when all equal) and how many objects were compared.
fn compare(py: &Python, launch: usize) -> (Vec<String>, usize) {
    let mut cmd = Command::new(&py.path);
    cmd.arg(target_script());
    let t = Target::spawn(cmd);
    let pid = t.pid();
    let mem = RemoteMemory::open(pid).expect("open memory");
    let session = Attacher::new()
        .attach(pid)
        .unwrap_or_else(|e| panic!("{}: attach: {e}", py.label));
    let it = session.interpreter.clone();
    let sizer = Sizer::new(&it);
    let mut bad = Vec::new();
    let mut theirs: BTreeMap<String, u64> = BTreeMap::new();
    let mut mine: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0;
    for line in t.lines.iter().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).expect("target JSON");
        let (case, addr, name) = (
            v["case"].as_str().unwrap_or("?").to_string(),
            u(&v["id"]),
            v["type"].as_str().unwrap_or("?").to_string(),
        );
        let ty = mem.read_u64(addr + it.layout.object_type).expect("ob_type");
        let facts = match sizer.type_facts(&mem, ty) {
            Ok(f) => f,
            Err(e) => {
                bad.push(format!("{case}: type facts: {e}"));
                continue;
            }
        };
        if v["unmodelled"].as_bool() == Some(true) {
            if facts.kind != SizeKind::Unmodelled {
                bad.push(format!(
                    "{case} ({name}): classified {:?}, not unmodelled",
                    facts.kind
                ));
            }
            continue;
        }
        // odd launches hand over the object's first bytes, as a census walker does
        let head = if launch % 2 == 1 {
            mem.read_vec(addr, 32).unwrap_or_default()
        } else {
            Vec::new()
        };
        let got = match sizer.getsizeof(&mem, &facts, addr, &head) {
            Ok(s) => s,
            Err(e) => {
                bad.push(format!("{case} ({name}, {:?}): {e}", facts.kind));
                continue;
            }
        };
        n += 1;
        let want = u(&v["size"]);
        if got.size != want || !got.exact {
            bad.push(format!(
                "{case} ({name}, {:?}): memlens {} (exact {}), sys.getsizeof {want}",
                facts.kind, got.size, got.exact
            ));
        }
        if let Some(nbytes) = v.get("nbytes") {
            let owned = v["owndata"].as_bool() == Some(true);
            let expected = Some(DataBuffer {
                bytes: u(nbytes),
                owned,
            });
            if got.buffer != expected {
                bad.push(format!(
                    "{case}: buffer {:?}, numpy says {expected:?}",
                    got.buffer
                ));
            }
        }
        *theirs.entry(name.clone()).or_default() += want;
        *mine.entry(name).or_default() += got.size;
    }
    if !t.lines.iter().any(|l| l.contains("\"code-extra\"")) {
        bad.push("the target set no co_extra".into());
    }
    if bad.is_empty() {
        assert_eq!(mine, theirs, "{}: per-type sums", py.label);
    }
    (bad, n)
}

fn check_all(pys: &[Python], min_objects: usize) {
    let mut failures = Vec::new();
    for py in pys {
        for launch in 0..LAUNCHES {
            let (bad, n) = compare(py, launch);
            assert!(n >= min_objects, "{}: only {n} objects compared", py.label);
            failures.extend(
                bad.into_iter()
                    .map(|b| format!("{} #{launch}: {b}", py.label)),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn sizes_equal_sys_getsizeof_on_every_cpython() {
    check_all(&pythons(), 100);
}

#[test]
fn numpy_arrays_equal_sys_getsizeof_and_nbytes() {
    check_all(&crate::support::numpy_pythons(), 110);
}

/// The census attributes numpy's data buffers to their arrays: owned ones inside the arrays'
/// bytes (as `sys.getsizeof` counts them), viewed ones beside, within 1% of an in-target
/// traversal, count within 1% and 4 arrays: the census does not follow the C fields of
/// extension types (`tp_traverse` cannot run from outside), so the few small arrays numpy's
/// `SeedSequence` (a Cython class) holds only there are not reached.
#[test]
fn census_reports_numpy_buffers_owned_and_viewed() {
    for py in crate::support::numpy_pythons() {
        for launch in 0..2 {
            let what = format!("{} launch {launch}", py.label);
            let mut cmd = Command::new(&py.path);
            cmd.arg(
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/targets/census_numpy.py"),
            );
            let t = Target::spawn(cmd);
            let truth: Value = t
                .lines
                .iter()
                .find(|l| l.starts_with('{'))
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_else(|| panic!("{what}: no truth in {:?}", t.lines));
            let out = crate::support::memlens_output(&[
                "census",
                &t.pid().to_string(),
                "--top",
                "0",
                "--json",
            ]);
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let census: Value = serde_json::from_slice(&out.stdout).expect("census JSON");
            let nd = census["types"]
                .as_array()
                .expect("types")
                .iter()
                .find(|t| t["type"] == "ndarray")
                .unwrap_or_else(|| panic!("{what}: no ndarray in the census"))
                .clone();
            for (mine, theirs) in [
                ("count", "count"),
                ("bytes", "bytes"),
                ("data_owned", "owned"),
                ("data_viewed", "viewed"),
            ] {
                let (got, want) = (
                    nd[mine].as_u64().unwrap_or(0),
                    truth[theirs].as_u64().unwrap_or(0),
                );
                assert!(
                    got.abs_diff(want) as f64
                        <= want as f64 * 0.01 + if mine == "count" { 4.0 } else { 0.0 },
                    "{what}: ndarray {mine}: memlens {nd}, the target {truth}"
                );
            }
        }
    }
}
