//! Object sizes read from outside equal `sys.getsizeof` in the target, object by object, for
//! every type whose `__sizeof__` is not the generic formula, on every supported CPython
//! (several launches each, so addresses vary), and numpy's data buffers equal `nbytes`.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use memlens_cpython::process::Interpreter;
use memlens_cpython::sizes::{DataBuffer, SizeKind, Sizer};
use memlens_remote::vm::RemoteMemory;
use memlens_remote::ProcessMemory;
use serde_json::Value;
use support::{pythons, Python, Target};

const LAUNCHES: usize = 3;

fn target_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/targets/sizes.py")
}

/// The virtualenvs with numpy that `scripts/test-pythons.sh` makes (numpy 1.x on 3.11, 2.x on
/// 3.12). Under CI a missing one fails.
fn numpy_pythons() -> Vec<Python> {
    let mut out = Vec::new();
    for minor in [11u32, 12] {
        let venv = support::test_cache().join(format!("numpy/python3.{minor}"));
        let python = venv.join("bin/python");
        let done = std::fs::read_dir(&venv).ok().and_then(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .find_map(|n| n.strip_prefix(".done-").map(str::to_string))
        });
        match done {
            Some(v) if python.exists() => out.push(Python {
                label: format!("3.{minor}+numpy-{v}"),
                path: python,
                version: (3, minor),
            }),
            _ if std::env::var_os("CI").is_some() => {
                panic!(
                    "numpy for 3.{minor} missing in {} (scripts/test-pythons.sh)",
                    venv.display()
                )
            }
            _ => eprintln!("warning: no numpy for 3.{minor}, not tested"),
        }
    }
    out
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Starts the target, reads every object it lists through memlens's sizes, and returns the
/// mismatches (empty when all equal) and how many objects were compared.
fn compare(py: &Python, launch: usize) -> (Vec<String>, usize) {
    let mut cmd = Command::new(&py.path);
    cmd.arg(target_script());
    let t = Target::spawn(cmd);
    let pid = t.pid();
    let mem = RemoteMemory::open(pid).expect("open memory");
    let it = Interpreter::attach(pid, &mem).unwrap_or_else(|e| panic!("{}: attach: {e}", py.label));
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
    check_all(&numpy_pythons(), 110);
}
