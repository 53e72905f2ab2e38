//! Parsers against files captured from a real Python process on a development host (3 threads
#![allow(clippy::unwrap_used)]
//! waiting on an Event, an 8 MiB touched bytearray), and a cgroup v1 directory of that host.

use std::path::{Path, PathBuf};

use memlens_procfs::{cgroup, maps, smaps, stat, statm, status, syscall};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn smaps_sum_matches_rollup_and_maps() {
    let mappings = smaps::parse(&fixture("python_threads.smaps")).unwrap();
    let rollup = smaps::parse_rollup(&fixture("python_threads.smaps_rollup")).unwrap();
    let sum = smaps::sum(&mappings);
    // Captured one after the other from an idle process: the page counts agree to the page.
    let diff = sum.rss.abs_diff(rollup.rss);
    assert!(
        diff <= rollup.rss / 100,
        "smaps sum {} vs rollup {}",
        sum.rss,
        rollup.rss
    );
    assert!(rollup.pss > 0 && rollup.pss <= rollup.rss);
    assert!(rollup.uss() <= rollup.rss);
    let m = maps::parse(&fixture("python_threads.maps")).unwrap();
    assert_eq!(m.len(), mappings.len());
    for (a, b) in m.iter().zip(&mappings) {
        assert_eq!(a, &b.entry);
    }
    assert!(mappings.iter().any(|m| m.entry.path == b"[heap]"));
    assert_eq!(
        mappings
            .iter()
            .filter(|m| m.entry.path == b"[stack]")
            .count(),
        1
    );
    // The 8 MiB bytearray is one anonymous mapping of at least 8 MiB resident.
    assert!(mappings
        .iter()
        .any(|m| m.entry.is_anonymous() && m.counters.rss >= 8 << 20));
}

#[test]
fn status_stat_statm_agree() {
    let st = status::parse(&fixture("python_threads.status")).unwrap();
    let sa = stat::parse(&fixture("python_threads.stat")).unwrap();
    let sm = statm::parse(&fixture("python_threads.statm"), 4096).unwrap();
    assert_eq!(st.tgid, sa.pid);
    assert_eq!(st.ppid, sa.ppid);
    assert_eq!(st.threads, 4);
    assert_eq!(sa.num_threads, 4);
    assert_eq!(st.name, b"python3");
    assert_eq!(st.vm_rss, st.rss_anon + st.rss_file + st.rss_shmem);
    assert_eq!(sm.resident, st.vm_rss);
    assert_eq!(sm.size, st.vm_size);
    assert!(st.vm_hwm >= st.vm_rss);
}

#[test]
fn every_thread_stack_pointer_lies_in_a_mapping() {
    let mappings = maps::parse(&fixture("python_threads.maps")).unwrap();
    let text = fixture("python_threads.task_syscall");
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 4);
    let mut holders = Vec::new();
    for l in lines {
        let sp = syscall::parse(l).unwrap().stack_pointer().unwrap();
        let m = mappings
            .iter()
            .position(|m| m.contains(sp))
            .expect("sp in a mapping");
        holders.push(m);
    }
    // The main thread is on [stack]; the three others on distinct anonymous mappings with a
    // guard page right below.
    assert_eq!(mappings[holders[0]].path, b"[stack]");
    holders.sort_unstable();
    holders.dedup();
    assert_eq!(holders.len(), 4);
    for &h in &holders {
        if mappings[h].path != b"[stack]" {
            assert!(mappings[h].is_anonymous());
            let guard = &mappings[h - 1];
            assert!(guard.is_inaccessible() && guard.end == mappings[h].start);
        }
    }
}

#[test]
fn cgroup_v1_locate_and_read() {
    let members = cgroup::parse_memberships(&fixture("python_threads.cgroup"));
    let mounts = cgroup::parse_mounts(&fixture("python_threads.mountinfo"));
    let (version, path, dir_) = cgroup::locate(&members, &mounts).expect("memory cgroup");
    assert_eq!(version, 1);
    assert!(path.starts_with(b"/process_api/"));
    assert!(dir_.starts_with("/sys/fs/cgroup/memory/process_api"));
    let m = cgroup::read_memory(1, path, &dir().join("cgroup_v1")).unwrap();
    let usage: u64 = String::from_utf8(fixture("cgroup_v1/memory.usage_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(m.usage, usage);
    assert_eq!(m.limit, None, "this host's cgroup has no limit");
    assert_eq!(m.headroom(), None);
    assert!(m.peak.unwrap() >= m.usage);
    assert!(m.anon.is_some() && m.file.is_some());
    assert_eq!(m.oom_kills, Some(0));
}

#[test]
fn cgroup_v2_read() {
    let m = cgroup::read_memory(2, b"/app".to_vec(), &dir().join("cgroup_v2")).unwrap();
    assert_eq!(m.usage, 734_003_200);
    assert_eq!(m.limit, Some(1 << 30));
    assert_eq!(m.high, None);
    assert_eq!(m.headroom(), Some((1 << 30) - 734_003_200));
    assert_eq!(m.peak, Some(901_775_360));
    assert_eq!(m.anon, Some(612_368_384));
    assert_eq!(m.kernel, Some(15_728_640));
    assert_eq!(m.shmem, Some(33_554_432));
    assert_eq!(m.sock, Some(4096));
    assert_eq!((m.oom_events, m.oom_kills), (Some(2), Some(1)));
    assert_eq!(m.pressure_some_avg10, Some(3.21));
}

#[test]
fn truncated_files_are_errors_not_panics() {
    for name in [
        "python_threads.smaps",
        "python_threads.status",
        "python_threads.stat",
        "python_threads.maps",
    ] {
        let full = fixture(name);
        for cut in [1, 7, full.len() / 3, full.len() / 2] {
            let part = &full[..cut.min(full.len())];
            // A cut mid-line may parse or fail; it must never panic.
            let _ = smaps::parse(part);
            let _ = status::parse(part);
            let _ = stat::parse(part);
            let _ = maps::parse(part);
        }
    }
    assert!(stat::parse(&fixture("python_threads.stat")[..20]).is_err());
}

#[test]
fn rollup_falls_back_to_summing_smaps() {
    // A procfs tree without smaps_rollup, as kernels before 4.14 have.
    let root = std::env::temp_dir().join(format!("memlens-procroot-{}", std::process::id()));
    let pid_dir = root.join("4242");
    std::fs::create_dir_all(&pid_dir).unwrap();
    std::fs::write(pid_dir.join("smaps"), fixture("python_threads.smaps")).unwrap();
    std::fs::write(pid_dir.join("status"), fixture("python_threads.status")).unwrap();
    let proc = memlens_procfs::Process::with_root(&root, 4242).unwrap();
    let rollup = proc.smaps_rollup().unwrap();
    let expected = smaps::sum(&smaps::parse(&fixture("python_threads.smaps")).unwrap());
    assert_eq!(rollup, expected);
    assert!(rollup.rss > 0);
    assert!(matches!(
        memlens_procfs::Process::with_root(&root, 4243),
        Err(memlens_procfs::Error::ProcessGone { pid: 4243 })
    ));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn counter_files_reread_a_live_process() {
    let me = std::process::id();
    let mut files = memlens_procfs::CounterFiles::open(me).unwrap();
    let first = files.status().unwrap();
    assert_eq!(first.tgid, me);
    // Grow by 16 MiB of touched memory; the same open file shows it on the next read.
    let block = vec![1u8; 16 << 20];
    let after = files.statm().unwrap();
    assert!(
        after.resident >= first.vm_rss + (15 << 20),
        "{} vs {}",
        after.resident,
        first.vm_rss
    );
    let rollup = files.smaps_rollup().unwrap();
    assert!(rollup.rss >= after.resident - (4 << 20));
    assert_eq!(block.iter().map(|b| u64::from(*b)).sum::<u64>(), 16 << 20);
}
