//! Copy-on-write per forked worker (`snapshot --tree`, DESIGN §6): a parent maps a known
//! region and forks workers that copy a known part of it; memlens's shared and copied bytes
//! must match the construction, which the test checks against `/proc/PID/pagemap` itself.

use crate::support::*;
use serde_json::Value;

const HEAP_MIB: u64 = 96;
const COPY_MIB: u64 = 24;
const WORKERS: usize = 2;

fn workers(t: &Target) -> Vec<u32> {
    let line = t
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("WORKERS "))
        .expect("WORKERS line");
    line.split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect()
}

/// The `[start, end)` of the memfd region in a process's maps.
fn region(pid: u32) -> (u64, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps
        .lines()
        .find(|l| l.contains("/memfd:memlens-cow"))
        .expect("memfd region mapped");
    let (s, e) = line
        .split_whitespace()
        .next()
        .expect("test data")
        .split_once('-')
        .expect("test data");
    (
        u64::from_str_radix(s, 16).expect("test data"),
        u64::from_str_radix(e, 16).expect("test data"),
    )
}

fn pagemap(pid: u32, start: u64, end: u64) -> Vec<u64> {
    use std::os::unix::fs::FileExt;
    let page = 4096u64;
    let f = std::fs::File::open(format!("/proc/{pid}/pagemap")).expect("pagemap");
    let mut buf = vec![0u8; ((end - start) / page * 8) as usize];
    f.read_exact_at(&mut buf, start / page * 8)
        .expect("pagemap read");
    buf.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// Ground truth from the kernel: (shared, copied) bytes of the worker's region.
fn kernel_truth(parent: u32, worker: u32) -> (u64, u64) {
    let (s, e) = region(parent);
    assert_eq!(
        region(worker),
        (s, e),
        "the worker maps the region where its parent does"
    );
    let frame = |v: u64| (v >> 63 == 1).then_some(v & ((1 << 55) - 1));
    let (mut shared, mut copied) = (0, 0);
    for (p, w) in pagemap(parent, s, e).into_iter().zip(pagemap(worker, s, e)) {
        match (frame(p), frame(w)) {
            (Some(a), Some(b)) if a == b && a != 0 => shared += 4096,
            (Some(a), Some(b)) if a != b && a != 0 && b != 0 => copied += 4096,
            _ => {}
        }
    }
    (shared, copied)
}

fn process(j: &Value, pid: u32) -> &Value {
    j["processes"]
        .as_array()
        .expect("test data")
        .iter()
        .find(|p| u(&p["pid"]) == u64::from(pid))
        .unwrap_or_else(|| panic!("pid {pid} in the snapshot"))
}

fn row<'a>(sharing: &'a Value, category: &str) -> &'a Value {
    sharing["by_category"]
        .as_array()
        .expect("test data")
        .iter()
        .find(|r| r["category"] == category)
        .unwrap_or_else(|| panic!("{category} in {sharing}"))
}

#[test]
fn shared_and_copied_per_worker_match_construction() {
    let script = target_script("cow.py");
    let (shared_mib, copied_mib) = ((HEAP_MIB - COPY_MIB) << 20, COPY_MIB << 20);
    for py in pythons().iter().filter(|p| p.version >= (3, 8)) {
        for launch in 0..2 {
            let mut cmd = std::process::Command::new(&py.path);
            cmd.arg(&script)
                .args(["memfd", &HEAP_MIB.to_string(), &COPY_MIB.to_string()])
                .arg(WORKERS.to_string());
            let t = Target::spawn(cmd);
            let pids = workers(&t);
            assert_eq!(pids.len(), WORKERS);
            let j = memlens_json(&["snapshot", &t.pid().to_string(), "--tree", "--json"]);
            assert!(
                process(&j, t.pid()).get("sharing").is_none(),
                "the root has no parent in the tree"
            );
            let ex = &j["exclusive"];
            assert_eq!(ex["measured"], true, "{ex}");
            // the root's region and each worker's copies are mapped by the tree alone
            assert!(
                u(&ex["bytes"]) >= (HEAP_MIB + COPY_MIB * WORKERS as u64) << 20,
                "{ex}"
            );
            for &w in &pids {
                let (k_shared, k_copied) = kernel_truth(t.pid(), w);
                let what = format!("{} launch {launch} worker {w}", py.label);
                assert_close(
                    &format!("{what}: kernel shared vs construction"),
                    k_shared,
                    shared_mib,
                    3.0,
                );
                assert_close(
                    &format!("{what}: kernel copied vs construction"),
                    k_copied,
                    copied_mib,
                    3.0,
                );
                let s = &process(&j, w)["sharing"];
                assert_eq!(s["measured"], true, "{s}");
                assert_eq!(u(&s["parent"]), u64::from(t.pid()));
                assert_eq!(u(&s["failed_reads"]), 0, "{s}");
                let r = row(s, "shared-memory");
                let (m_shared, m_copied) = (u(&r["shared_with_parent"]), u(&r["copied"]));
                eprintln!(
                    "{what}: memlens shared {m_shared} copied {m_copied}; kernel {k_shared} {k_copied}; construction {shared_mib} {copied_mib}"
                );
                assert_close(
                    &format!("{what}: shared vs construction"),
                    m_shared,
                    shared_mib,
                    3.0,
                );
                assert_close(
                    &format!("{what}: copied vs construction"),
                    m_copied,
                    copied_mib,
                    3.0,
                );
                assert!(u(&r["own"]) < 1 << 20, "{what}: {r}");
                assert!(u(&s["shared_with_parent"]) >= m_shared && u(&s["copied"]) >= m_copied);
            }
        }
    }
}

/// gc.freeze() before fork keeps a full collection in the worker from writing the GC headers
/// of the parent's objects: the python-heap copied stays small next to a worker without it.
#[test]
fn gc_freeze_keeps_python_heap_shared() {
    let script = target_script("cow.py");
    for py in pythons()
        .iter()
        .filter(|p| p.version >= (3, 8) && p.version <= (3, 13))
    {
        let copied = |mode: &str| -> (u64, u64, Vec<String>) {
            let mut cmd = std::process::Command::new(&py.path);
            cmd.arg(&script).args([mode, "200000", "1"]);
            let t = Target::spawn(cmd);
            let w = workers(&t)[0];
            let j = memlens_json(&["snapshot", &t.pid().to_string(), "--tree", "--json"]);
            let s = &process(&j, w)["sharing"];
            assert_eq!(s["measured"], true, "{s}");
            let r = row(s, "python-heap");
            let findings = j["findings"]
                .as_array()
                .expect("test data")
                .iter()
                .map(|f| f.as_str().expect("test data").to_string())
                .collect();
            (u(&r["copied"]), u(&r["shared_with_parent"]), findings)
        };
        let (plain, plain_shared, plain_findings) = copied("nofreeze");
        let (frozen, frozen_shared, _) = copied("freeze");
        eprintln!(
            "{}: python-heap copied without freeze {plain} (shared {plain_shared}), with {frozen} (shared {frozen_shared})",
            py.label
        );
        // 200,000 lists of 56+ bytes: a full collection writes at least ~10 MiB of headers
        assert!(plain > 8 << 20, "{}: {plain}", py.label);
        assert!(
            frozen * 8 < plain,
            "{}: frozen {frozen} vs {plain}",
            py.label
        );
        assert!(
            plain_findings
                .iter()
                .any(|f| f.contains("gc.freeze() before fork")),
            "{}: {plain_findings:?}",
            py.label
        );
    }
}

/// Without CAP_SYS_ADMIN the kernel shows frame numbers as 0: sharing cannot be measured, and
/// memlens must say so rather than print zeros (or call every page shared) as if measured.
#[test]
fn unprivileged_run_says_sharing_is_not_measured() {
    let python = std::path::Path::new("/usr/bin/python3.11");
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "/usr/bin/python3.11 missing in CI"
        );
        return;
    }
    let source = std::fs::read_to_string(target_script("cow.py")).expect("cow.py");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(python)
        .arg("-c")
        .arg(&source)
        .args(["memfd", "16", "4", "1"])
        .current_dir("/");
    let t = Target::spawn(cmd);
    let w = workers(&t)[0];
    let as_nobody = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        memlens()
            .args(args)
            .uid(65534)
            .gid(65534)
            .current_dir("/")
            .output()
            .expect("memlens runs")
    };
    let pid = t.pid().to_string();
    let out = as_nobody(&["snapshot", &pid, "--tree", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_slice(&out.stdout).expect("json");
    let s = &process(&j, w)["sharing"];
    assert_eq!(s["measured"], false, "{s}");
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("CAP_SYS_ADMIN")),
        "{s}"
    );
    for k in ["shared_with_parent", "copied", "own", "by_category"] {
        assert!(s.get(k).is_none(), "{k} printed though not measured: {s}");
    }
    assert_eq!(j["exclusive"]["measured"], false, "{}", j["exclusive"]);
    assert!(j["exclusive"].get("bytes").is_none());
    let out = as_nobody(&["snapshot", &pid, "--tree"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("pid {w} (parent {pid}): not measured")),
        "{text}"
    );
}
