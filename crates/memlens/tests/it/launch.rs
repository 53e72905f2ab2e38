//! `memlens run`'s own memory cgroup is removed on every path: a program that ran, one that
//! could not be found, one held while a destination memlens may not write was refused, and one
//! killed by a signal. Ground truth is the cgroup directory itself (memlens says where it made
//! it at `-vv`; the program reads its own `/proc/self/cgroup`), never memlens's report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{memlens, TempDir};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// The cgroup directory memlens said it created (`-vv`), if any.
fn created(o: &Output) -> Option<PathBuf> {
    let err = String::from_utf8_lossy(&o.stderr);
    err.lines()
        .find_map(|l| l.split_once("debug: created cgroup "))
        .map(|(_, dir)| PathBuf::from(dir.trim()))
}

/// Checks that memlens made its cgroup (as root: a failure fails the test) and removed it.
/// Returns false where an unprivileged user gets none (nothing to check then).
fn made_and_removed(what: &str, o: &Output) -> bool {
    let Some(dir) = created(o) else {
        assert!(
            !is_root(),
            "{what}: root made no cgroup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("skipped ({what}): no memory cgroup for a non-root user");
        return false;
    };
    assert!(
        dir.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("memlens-run-")),
        "{what}: {}",
        dir.display()
    );
    assert!(!dir.exists(), "{what}: {} is left behind", dir.display());
    true
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    memlens()
        .current_dir(dir)
        .args(["-vv", "run", "-q", "--no-python"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_runs_cgroup_is_removed_after_the_program_exits() {
    let dir = TempDir::new("exit");
    let o = run_in(
        &dir.0,
        &[
            "-o",
            "r.db",
            "--",
            "sh",
            "-c",
            "cat /proc/self/cgroup; exit 3",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    if !made_and_removed("exit", &o) {
        return;
    }
    // The program ran inside it.
    let made = created(&o).unwrap();
    let name = made.file_name().unwrap().to_string_lossy().into_owned();
    let cgroups = String::from_utf8_lossy(&o.stdout);
    assert!(
        cgroups.lines().any(|l| l.ends_with(&format!("/{name}"))),
        "the program was not in {name}: {cgroups}"
    );
}

#[test]
fn the_runs_cgroup_is_removed_when_the_program_cannot_start() {
    let dir = TempDir::new("notfound");
    let o = run_in(
        &dir.0,
        &["-o", "r.db", "--", "/nonexistent/memlens-test-program"],
    );
    assert_eq!(
        o.status.code(),
        Some(127),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    made_and_removed("not found", &o);
}

#[test]
fn the_runs_cgroup_is_removed_when_the_destination_is_refused() {
    let dir = TempDir::new("refused");
    let foreign = dir.0.join("notes.txt");
    std::fs::write(&foreign, "not memlens's").unwrap();
    let marker = dir.0.join("ran");
    let script = format!("touch {}", marker.display());
    let o = run_in(&dir.0, &["-o", "notes.txt", "--", "sh", "-c", &script]);
    assert_eq!(
        o.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !marker.exists(),
        "the program ran though its recording was refused"
    );
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "not memlens's");
    made_and_removed("refused", &o);
}

#[test]
fn the_runs_cgroup_is_removed_when_a_signal_kills_the_program() {
    let dir = TempDir::new("killed");
    let o = run_in(&dir.0, &["-o", "r.db", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(
        o.status.code(),
        Some(128 + 9),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    made_and_removed("killed", &o);
}
