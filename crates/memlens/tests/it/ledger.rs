//! `snapshot` and `ps` against real Python processes of every supported CPython, with ground
//! truth from construction (sizes allocated by the target) and from the kernel's own files.
#![allow(clippy::unwrap_used)]

use crate::support::{
    assert_close, memlens_json, memlens_output, pythons, rollup_field, u, Target, TempDir,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// A target with a 256 MiB touched bytearray, a 64 MiB file read through mmap, a 32 MiB
/// shared_memory segment, 5 threads, and a compiled stdlib module loaded from a fake
/// distribution folder (`site-packages/fakepkg`, owned by `FakeDist-1.0.dist-info`).
const LEDGER_TARGET: &str = r#"
import mmap, os, sys, tempfile, threading, shutil, sysconfig, importlib.util
from multiprocessing import shared_memory
tmp = sys.argv[1]
buf = bytearray(256 << 20)
for i in range(0, len(buf), 4096):
    buf[i] = 1
path = os.path.join(tmp, "weights.bin")
with open(path, "wb") as f:
    f.write(b"\1" * (64 << 20))
fd = os.open(path, os.O_RDONLY)
mm = mmap.mmap(fd, 64 << 20, prot=mmap.PROT_READ)
total = 0
for i in range(0, 64 << 20, 4096):
    total += mm[i]
shm = shared_memory.SharedMemory(create=True, size=32 << 20)
for i in range(0, 32 << 20, 4096):
    shm.buf[i] = 1
# An extension module loaded from a site-packages folder of a distribution we construct.
dynload = sysconfig.get_config_var("DESTSHARED")
ext = None
for name in ["_bisect", "_json", "_csv", "_heapq", "_random", "array", "_statistics", "_struct", "_contextvars", "cmath", "_bz2", "_lzma", "_uuid"]:
    if name in sys.modules:
        continue
    cands = [f for f in os.listdir(dynload) if f.startswith(name + ".") and f.endswith(".so")]
    if cands:
        ext = (name, cands[0])
        break
site = os.path.join(tmp, "site-packages")
os.makedirs(os.path.join(site, "fakepkg"))
os.makedirs(os.path.join(site, "FakeDist-1.0.dist-info"))
with open(os.path.join(site, "FakeDist-1.0.dist-info", "top_level.txt"), "w") as f:
    f.write("fakepkg\n")
so = os.path.join(site, "fakepkg", ext[1])
shutil.copy(os.path.join(dynload, ext[1]), so)
spec = importlib.util.spec_from_file_location(ext[0], so)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
stop = threading.Event()
threads = [threading.Thread(target=stop.wait) for _ in range(5)]
for t in threads:
    t.start()
print("THREADS", threading.active_count())
print("SHM", "/dev/shm/" + shm.name)
print("MMAP", path)
print("READY", flush=True)
sys.stdin.readline()
stop.set()
shm.close(); shm.unlink()
"#;

fn row<'a>(p: &'a Value, category: &str) -> Option<&'a Value> {
    p["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["category"] == category)
}

fn item<'a>(row: &'a Value, name: &str) -> Option<&'a Value> {
    row["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
}

/// Polls `/proc/PID/task/*/stat` until every thread's state is `S` (at most 30 s).
fn wait_until_every_thread_sleeps(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let states: Vec<char> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter_map(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
            .collect();
        if states.iter().all(|c| *c == 'S') {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "threads of {pid} never all slept: {states:?}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn snapshot_ledger_matches_construction_and_kernel() {
    for py in pythons() {
        let tmp_dir = TempDir::new(&format!("ledger-{}", py.label));
        let tmp = tmp_dir.path().to_path_buf();
        let mut cmd = std::process::Command::new(&py.path);
        cmd.arg("-c").arg(LEDGER_TARGET).arg(&tmp);
        let mut target = Target::spawn(cmd);
        let line = |key: &str| {
            target
                .lines
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{key} ")).map(str::to_string))
                .unwrap()
        };
        let threads: u64 = line("THREADS").parse().unwrap();
        let shm = line("SHM");
        let mmap_path = line("MMAP");
        let pid = target.pid();
        // Threads just started may still be runnable (the kernel then shows no registers in
        // task/TID/syscall): wait until the kernel says every thread sleeps.
        wait_until_every_thread_sleeps(pid);
        let v = memlens_json(&["snapshot", &pid.to_string(), "--json"]);
        // The kernel's own totals, read right after (the target is idle, blocked on stdin).
        let (k_rss, k_pss) = (rollup_field(pid, "Rss"), rollup_field(pid, "Pss"));
        let label = &py.label;
        let p = &v["processes"][0];
        assert_eq!(u(&p["pid"]), u64::from(pid));
        // the exact version once the Python view read the interpreter, e.g. 3.11.7
        let version = p["python"]["version"].as_str().unwrap();
        assert!(
            version.starts_with(&format!("{}.{}.", py.version.0, py.version.1)),
            "{label}: {version}"
        );
        // Rows add up to the process totals exactly, and to the kernel's within 2%.
        for field in ["rss", "pss", "uss", "swap"] {
            let sum: u64 = p["ledger"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| u(&r[field]))
                .sum();
            assert_eq!(
                sum,
                u(&p["totals"][field]),
                "{label}: ledger {field} adds up"
            );
        }
        assert_close(
            &format!("{label}: RSS vs smaps_rollup"),
            u(&p["totals"]["rss"]),
            k_rss,
            2.0,
        );
        assert_close(
            &format!("{label}: PSS vs smaps_rollup"),
            u(&p["totals"]["pss"]),
            k_pss,
            2.0,
        );
        assert_eq!(u(&v["totals"]["pss"]), u(&p["totals"]["pss"]));
        // 256 MiB touched bytearray: native heap.
        let native = row(p, "native-heap").unwrap();
        assert!(
            u(&native["rss"]) >= 256 * MIB,
            "{label}: native-heap {}",
            native["rss"]
        );
        // 64 MiB of a file read through mmap: mapped-files, itemised by path.
        let mapped = row(p, "mapped-files").unwrap();
        let it = item(mapped, &mmap_path)
            .unwrap_or_else(|| panic!("{label}: {mmap_path} not in {mapped}"));
        assert_close(&format!("{label}: mmap rss"), u(&it["rss"]), 64 * MIB, 1.0);
        // 32 MiB shared_memory segment: shared-memory.
        let shared = row(p, "shared-memory").unwrap();
        let it = item(shared, &shm).unwrap_or_else(|| panic!("{label}: {shm} not in {shared}"));
        assert_close(&format!("{label}: shm rss"), u(&it["rss"]), 32 * MIB, 1.0);
        // Threads: one stack each, found from the stack pointers.
        assert_eq!(u(&p["threads"]), threads, "{label}: threads");
        assert_eq!(
            u(&p["thread_stacks"]["count"]),
            threads,
            "{label}: one stack per thread"
        );
        assert!(u(&p["thread_stacks"]["reserved"]) >= (threads - 1) * 8 * MIB);
        assert!(u(&p["thread_stacks"]["resident"]) > 0);
        // The extension loaded from site-packages/fakepkg shows under its distribution.
        let ext = row(p, "extensions").unwrap();
        assert!(
            item(ext, "FakeDist").is_some(),
            "{label}: FakeDist not in {ext}"
        );
        assert!(u(&p["vm_hwm"]) >= 256 * MIB);
        target.send("");
        let _ = target.child.wait();
    }
}

/// A parent that builds ~120 MiB of objects and forks 3 workers that keep them: the tree's PSS
/// sum matches the kernel's within 3% while the RSS sum counts the shared pages 4 times.
const FORK_TARGET: &str = r#"
import os, sys
data = [str(i) * 20 for i in range(1_000_000)]
pids = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        sys.stdin.readline()
        os._exit(0)
    pids.append(pid)
print("PIDS", *pids)
print("READY", flush=True)
sys.stdin.readline()
"#;

#[test]
fn forked_tree_pss_sum_matches_kernel_and_rss_overcounts() {
    for py in pythons() {
        let mut target = Target::python(&py.path, FORK_TARGET);
        let kids: Vec<u32> = target.lines[0]
            .strip_prefix("PIDS ")
            .unwrap()
            .split(' ')
            .map(|p| p.parse().unwrap())
            .collect();
        let pid = target.pid();
        let v = memlens_json(&["snapshot", &pid.to_string(), "--tree", "--json"]);
        let all: Vec<u32> = std::iter::once(pid).chain(kids.iter().copied()).collect();
        let kernel_pss: u64 = all.iter().map(|p| rollup_field(*p, "Pss")).sum();
        let kernel_rss: u64 = all.iter().map(|p| rollup_field(*p, "Rss")).sum();
        let label = &py.label;
        let pids: Vec<u64> = v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| u(&p["pid"]))
            .collect();
        assert_eq!(pids.len(), 4, "{label}: {pids:?}");
        for p in &all {
            assert!(pids.contains(&u64::from(*p)), "{label}: {p} in tree");
        }
        let pss = u(&v["totals"]["pss"]);
        let rss = u(&v["totals"]["rss"]);
        assert_close(&format!("{label}: tree PSS"), pss, kernel_pss, 3.0);
        assert_close(&format!("{label}: tree RSS"), rss, kernel_rss, 3.0);
        assert!(
            rss as f64 > 1.8 * pss as f64,
            "{label}: RSS sum {rss} overcounts PSS {pss}"
        );
        assert_eq!(u(&v["rss_overcount"]), rss - pss);
        let findings = v["findings"].as_array().unwrap();
        assert!(findings
            .iter()
            .any(|f| f.as_str().unwrap().contains("summing RSS would report")));
        // ps groups the four into one tree with the same PSS sum (within the moment's drift).
        let ps = memlens_json(&["ps", "--json"]);
        let tree = ps["trees"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| u(&t["root"]) == u64::from(pid))
            .unwrap();
        assert_eq!(
            tree["processes"].as_array().unwrap().len(),
            4,
            "{label}: ps tree"
        );
        assert_close(
            &format!("{label}: ps tree PSS"),
            u(&tree["totals"]["pss"]),
            kernel_pss,
            3.0,
        );
        for _ in 0..4 {
            target.send("");
        }
    }
}

#[test]
fn non_python_process_has_a_ledger_and_no_python() {
    let target = Target::sleeper();
    let v = memlens_json(&["snapshot", &target.pid().to_string(), "--json"]);
    let p = &v["processes"][0];
    assert!(p["python"].is_null());
    assert!(u(&p["totals"]["rss"]) > 0);
    assert_close(
        "sleep RSS",
        u(&p["totals"]["rss"]),
        rollup_field(target.pid(), "Rss"),
        2.0,
    );
    assert!(row(p, "system-libraries").is_some());
}

#[test]
fn missing_pid_is_exit_3_with_a_message() {
    let out = memlens_output(&["snapshot", "4294967"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("4294967") && err.contains("does not exist"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = memlens_output(&["snapshot", "not-a-pid"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn process_exiting_during_the_read_is_never_a_panic() {
    // Targets that exit after a few milliseconds, read as they go: every outcome is a ledger
    // of that very process (exit 0) or "does not exist" naming it with nothing on stdout
    // (exit 3), never a crash.
    for i in 0..40u32 {
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import time; x = bytearray(20 << 20); time.sleep({})",
                f64::from(i % 8) / 1000.0
            ))
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = memlens_output(&["snapshot", &pid.to_string(), "--tree", "--json"]);
        let _ = child.wait();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "launch {i}: {err}");
        match out.status.code() {
            Some(0) => {
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                    panic!("launch {i}: exit 0 without a JSON ledger ({e}): {err}")
                });
                assert_eq!(
                    v["processes"][0]["pid"],
                    u64::from(pid),
                    "launch {i}: the ledger is not of the target's tree: {v}"
                );
            }
            Some(3) => {
                assert!(
                    err.contains(&pid.to_string()) && err.contains("does not exist"),
                    "launch {i}: exit 3 without naming the vanished process: {err}"
                );
                assert!(out.stdout.is_empty(), "launch {i}: exit 3 printed a result");
            }
            other => panic!("launch {i}: exit {other:?}: {err}"),
        }
    }
}

#[test]
fn unprivileged_user_gets_permission_denied_exit_4() {
    // A root-owned target read by `nobody`: the kernel refuses smaps (ptrace access check).
    let target = Target::sleeper();
    if unsafe_euid() != 0 {
        panic!("this test must run as root to start a process nobody may not read");
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_memlens"))
        .args(["snapshot", &target.pid().to_string()])
        .output()
        .expect("setpriv (util-linux) runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("permission denied") && err.contains("hint:"),
        "{err}"
    );
}

fn unsafe_euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn ps_lists_python_processes_with_versions() {
    let py = &pythons()[0];
    let target = Target::python(
        &py.path,
        "import sys; print('READY', flush=True); sys.stdin.readline()",
    );
    let v = memlens_json(&["ps", "--json"]);
    let p = v["trees"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["processes"].as_array().unwrap())
        .find(|p| u(&p["pid"]) == u64::from(target.pid()))
        .expect("target listed");
    assert_eq!(
        p["python"]["version"],
        format!("{}.{}", py.version.0, py.version.1)
    );
    // RSS is the target's own; PSS moves as other processes (the other tests' interpreters)
    // map and unmap the same libpython pages, so it is checked against what the kernel says
    // bounds it: the private pages below, the resident ones above (read before and after).
    let pid = target.pid();
    let rss = u(&p["totals"]["rss"]);
    assert_close("ps RSS", rss, rollup_field(pid, "Rss"), 5.0);
    let private = |pid| rollup_field(pid, "Private_Clean") + rollup_field(pid, "Private_Dirty");
    let pss = u(&p["totals"]["pss"]);
    let (low, high) = (
        private(pid) * 95 / 100,
        rollup_field(pid, "Rss") * 105 / 100,
    );
    assert!(
        (low..=high).contains(&pss),
        "ps PSS {pss} outside the target's private {low} .. resident {high} (5% slack)"
    );
    // `sleep` is no Python: only with --all.
    let sleeper = Target::sleeper();
    let listed = |v: &Value| {
        v["trees"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["processes"].as_array().unwrap())
            .any(|p| u(&p["pid"]) == u64::from(sleeper.pid()))
    };
    assert!(!listed(&memlens_json(&["ps", "--json"])));
    assert!(listed(&memlens_json(&["ps", "--all", "--json"])));
    let text = memlens_output(&["ps"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&target.pid().to_string()));
}
