//! `memlens run --trace` with the tracer memlens carries inside its binary (no
//! `MEMLENS_PRELOAD`, nothing beside the executable used): the copy written into the private
//! directory (mode 0500) is what the kernel maps into the program and its child, the bytes held
//! by construction are attributed to their line, and the copy is removed with the directory,
//! only while it is still the file memlens wrote. `MEMLENS_PRELOAD` still overrides it.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::preload::preload_so;
use crate::support::{memlens, no_panic, pythons, report_json, stderr, target_script, TempDir};
use crate::support_trace::{
    at_line, leftovers, markers, memlens_run_traced, refused_before_the_program,
};

const SCRIPT: &str = "trace_embedded.py";
const HELD: u64 = 48 << 20;

fn run(py: &Path, tmp: &Path, rec: &Path, user_lib: Option<&Path>, extra: &[&str]) -> Output {
    memlens_run_traced(user_lib, tmp, &["--trace=all"], rec)
        .arg(py)
        .arg(target_script(SCRIPT))
        .arg(HELD.to_string())
        .args(extra)
        .output()
        .expect("memlens runs")
}

/// What the program printed about its LD_PRELOAD library.
fn seen(o: &Output) -> Value {
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out} {}", stderr(o)))
}

/// On the oldest CPython, the static Debian one and the newest: the embedded library, written
/// into the private directory with mode 0500, is mapped (the kernel's maps) in the program and
/// in its child; the 48 MiB bytearray is attributed to its line at the peak (exact mode: at
/// least its size, at most 1% over); afterwards the copy and the directory are gone.
#[test]
fn embedded_tracer_attributes_and_is_removed() {
    let all = pythons();
    let mut chosen: Vec<_> = all.iter().take(1).cloned().collect();
    chosen.extend(
        all.iter()
            .filter(|p| p.label == "debian-3.11-static")
            .cloned(),
    );
    chosen.extend(all.last().cloned());
    chosen.dedup_by(|a, b| a.label == b.label);
    let line = markers(SCRIPT)["hold"];
    for py in &chosen {
        let dir = TempDir::new("trace-embedded");
        let rec = dir.join("r.db");
        let o = run(&py.path, dir.path(), &rec, None, &[]);
        no_panic(&o);
        assert!(o.status.success(), "{}: {}", py.label, stderr(&o));
        let s = seen(&o);
        let lib = s["lib"].as_str().expect("lib");
        assert_eq!(
            Path::new(lib).parent().and_then(Path::to_str),
            s["trace_dir"].as_str(),
            "{}: the library is memlens's copy in the private directory",
            py.label
        );
        assert!(lib.ends_with("/libmemlens_preload.so"), "{lib}");
        assert!(
            lib.starts_with(dir.path().to_str().expect("utf-8")),
            "{lib}"
        );
        assert_eq!(s["mode"], 0o500, "{}", py.label);
        assert_eq!(s["mapped"], true, "{}: not in /proc/self/maps", py.label);
        assert_eq!(
            s["child_mapped"], true,
            "{}: not in the child's maps",
            py.label
        );
        assert!(
            !Path::new(lib).exists(),
            "{}: the copy was removed",
            py.label
        );
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );

        let a = &report_json(&rec)["allocations"];
        let at = at_line(&a["at_peak"]["by_line"], SCRIPT, line) as u64;
        eprintln!("{}: {at} bytes at the peak on line {line}", py.label);
        assert!(
            (HELD..=HELD + HELD / 100).contains(&at),
            "{}: {at} bytes at the peak on trace_embedded.py:{line}, held {HELD}",
            py.label
        );
    }
}

/// The program replaces memlens's copy (moves it aside, writes its own file at its name):
/// memlens deletes neither, says so, and keeps the directory.
#[test]
fn a_replaced_copy_is_left_alone() {
    let py = &pythons()[0];
    let dir = TempDir::new("trace-embedded-replaced");
    let rec = dir.join("r.db");
    let o = run(&py.path, dir.path(), &rec, None, &["replace"]);
    no_panic(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = seen(&o);
    let lib = Path::new(s["lib"].as_str().expect("lib"));
    assert!(
        stderr(&o).contains("no longer the tracer library memlens wrote"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(lib).expect("the program's file is kept"),
        b"the program's own file"
    );
    let moved = lib.with_file_name("moved-by-program");
    assert!(
        moved.is_file(),
        "the moved copy is not memlens's name: kept"
    );
    assert_eq!(leftovers(dir.path()).len(), 1);
}

/// With MEMLENS_PRELOAD, that library is preloaded and no copy is written.
#[test]
fn memlens_preload_overrides_the_embedded_one() {
    let py = &pythons()[0];
    let dir = TempDir::new("trace-embedded-user");
    let rec = dir.join("r.db");
    let o = run(&py.path, dir.path(), &rec, Some(preload_so()), &[]);
    no_panic(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = seen(&o);
    assert_eq!(s["lib"].as_str(), preload_so().to_str());
    assert_eq!(s["mapped"], true);
    assert!(leftovers(dir.path()).is_empty());
}

/// A temporary directory whose path has a space: LD_PRELOAD could not carry the copy's path,
/// so exit 8 before the program runs, with nothing left behind.
#[test]
fn a_path_ld_preload_cannot_carry_is_refused() {
    let dir = TempDir::new("trace-embedded-space");
    let tmp = dir.join("with space");
    std::fs::create_dir(&tmp).expect("mkdir");
    let mut memlens = memlens();
    memlens.env_remove("MEMLENS_PRELOAD").env("TMPDIR", &tmp);
    refused_before_the_program(memlens, &pythons()[0].path, &dir, &tmp, 8, "space or colon");
}
