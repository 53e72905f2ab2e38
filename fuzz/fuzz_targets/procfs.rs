//! Every `/proc` and cgroup parser of memlens-procfs. The first byte picks the parser
//! (`op % OPS`), the rest is the file. Beyond "no panic", each checks what must hold of what
//! it returns: sums equal the parts, no value wraps, no field exceeds what its text says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memlens_procfs::bytes::{fields, parse_u64};
use memlens_procfs::{cgroup, maps, smaps, stat, statm, status, syscall, tree};

const OPS: u8 = 12;

fuzz_target!(init: memlens_fuzz::seeds::write_if_asked("procfs"), |data: &[u8]| {
    let Some((&op, file)) = data.split_first() else {
        return;
    };
    match op % OPS {
        0 => smaps_file(file),
        1 => rollup(file),
        2 => status_file(file),
        3 => stat_file(file),
        4 => statm_file(file),
        5 => maps_file(file),
        6 => syscall_file(file),
        7 => process_tree(file),
        8 => memberships(file),
        9 => mountinfo(file),
        10 => flat_keyed(file),
        _ => single_values(file),
    }
});

fn smaps_file(file: &[u8]) {
    let Ok(mappings) = smaps::parse(file) else {
        return;
    };
    // Totals equal the sum of the mappings (computed without overflow), saturated.
    let total = smaps::sum(&mappings);
    let mut wide = [0u128; 12];
    for m in &mappings {
        assert!(m.entry.start <= m.entry.end);
        for (w, v) in wide.iter_mut().zip(m.counters.fields()) {
            assert!(v <= m.entry.size(), "counter above its mapping: {m:?}");
            *w += u128::from(v);
        }
        // The header line of smaps is a maps line.
        let line = format!(
            "{:x}-{:x} {} {:x} {:x}:{:x} {} ",
            m.entry.start,
            m.entry.end,
            String::from_utf8_lossy(&m.entry.perms),
            m.entry.offset,
            m.entry.dev_major,
            m.entry.dev_minor,
            m.entry.inode
        );
        let mut line = line.into_bytes();
        line.extend_from_slice(&m.entry.path);
        if !m.entry.perms.contains(&b' ') && !m.entry.perms.contains(&b'\n') {
            if let Ok(again) = maps::parse_line(&line) {
                assert_eq!(again.start, m.entry.start);
                assert_eq!(again.end, m.entry.end);
            }
        }
    }
    let expected = wide.map(|w| u64::try_from(w).unwrap_or(u64::MAX));
    let mut got = total.fields();
    got[0] = expected[0]; // `sum` zeroes the virtual size, as smaps_rollup has none
    assert_eq!(total.size, 0);
    assert_eq!(got, expected);
    assert_eq!(
        total.uss(),
        total.private_clean.saturating_add(total.private_dirty)
    );
}

fn rollup(file: &[u8]) {
    if let Ok(c) = smaps::parse_rollup(file) {
        let _ = c.uss();
        let mut twice = c;
        twice.add(&c);
        for (t, v) in twice.fields().into_iter().zip(c.fields()) {
            assert_eq!(t, v.saturating_add(v));
        }
    }
}

/// What was parsed, written back as `status` (sizes as bare byte counts), parses the same.
fn status_file(file: &[u8]) {
    let Ok(s) = status::parse(file) else {
        return;
    };
    let _ = s.is_kernel_thread();
    let mut text = b"Name:\t".to_vec();
    text.extend_from_slice(&s.name);
    if s.state != 0 {
        text.extend_from_slice(b"\nState:\t");
        text.push(s.state);
    }
    let numbers = format!(
        "\nTgid:\t{}\nPPid:\t{}\nUid:\t{}\t{}\t0\t0\nVmPeak:\t{}\nVmSize:\t{}\n\
VmHWM:\t{}\nVmRSS:\t{}\nRssAnon:\t{}\nRssFile:\t{}\nRssShmem:\t{}\nVmSwap:\t{}\n\
VmPTE:\t{}\nThreads:\t{}\n",
        s.tgid,
        s.ppid,
        s.uid,
        s.euid,
        s.vm_peak,
        s.vm_size,
        s.vm_hwm,
        s.vm_rss,
        s.rss_anon,
        s.rss_file,
        s.rss_shmem,
        s.vm_swap,
        s.vm_pte,
        s.threads
    );
    text.extend_from_slice(numbers.as_bytes());
    text.extend_from_slice(format!("TracerPid:\t{}\n", s.tracer_pid).as_bytes());
    if let Some(k) = s.kthread {
        text.extend_from_slice(format!("Kthread:\t{}\n", u8::from(k)).as_bytes());
    }
    let again = status::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, s);
}

fn stat_file(file: &[u8]) {
    if let Ok(s) = stat::parse(file) {
        // The comm lies between the first '(' and the last ')'.
        let open = file.iter().position(|b| *b == b'(').map_or(0, |i| i + 1);
        let close = file.iter().rposition(|b| *b == b')').unwrap_or(0);
        assert_eq!(&file[open..close], s.comm.as_slice());
    }
}

fn statm_file(file: &[u8]) {
    // The page size comes from the first two bytes: 4 KiB, 16 KiB, 64 KiB or any.
    let (ps, text) = match file {
        [a, b, rest @ ..] => (u64::from(u16::from_le_bytes([*a, *b])).max(1), rest),
        _ => return,
    };
    if let Ok(s) = statm::parse(text, ps) {
        let pages: Vec<u64> = fields(text).filter_map(parse_u64).collect();
        let want = [pages[0], pages[1], pages[2], pages[3], pages[5]];
        let got = [s.size, s.resident, s.shared, s.text, s.data];
        for (g, w) in got.into_iter().zip(want) {
            assert_eq!(u128::from(g), u128::from(w) * u128::from(ps), "no wrap");
        }
    }
}

fn maps_file(file: &[u8]) {
    if let Ok(entries) = maps::parse(file) {
        for e in entries {
            assert!(e.start <= e.end);
            let _ = e.size();
            let _ = (e.is_anonymous(), e.path_without_deleted(), e.is_deleted());
        }
    }
}

fn syscall_file(file: &[u8]) {
    if let Ok(s) = syscall::parse(file) {
        if let syscall::Syscall::Blocked {
            number,
            stack_pointer,
            program_counter,
        } = s
        {
            let text = format!("{number} {stack_pointer:#x} {program_counter:#x}");
            assert_eq!(syscall::parse(text.as_bytes()).ok(), Some(s));
        }
    }
}

/// A process table from NUL-separated `stat` lines: the walks must end, visit each process
/// once, and list parents before children.
fn process_tree(file: &[u8]) {
    let rows: Vec<tree::ProcEntry> = file
        .split(|b| *b == 0)
        .filter_map(|l| stat::parse(l).ok())
        .map(|s| tree::ProcEntry {
            pid: s.pid,
            ppid: s.ppid,
            comm: s.comm,
            start_time: s.start_time,
        })
        .collect();
    let Some(first) = rows.first().map(|r| r.pid) else {
        return;
    };
    let table = tree::ProcessTable::from_entries(rows);
    let sub = table.subtree(first);
    assert_eq!(sub[0], first);
    let mut seen = std::collections::HashSet::new();
    for (i, pid) in sub.iter().enumerate() {
        assert!(seen.insert(*pid), "{pid} listed twice");
        if i > 0 {
            let parent = table.get(*pid).map(|e| e.ppid);
            assert!(parent.is_some_and(|p| sub[..i].contains(&p)));
        }
    }
    // The topmost match is `first` or one of its ancestors (PPid links, cycles included).
    let top = table.topmost_matching(first, |_| true);
    let mut chain = vec![first];
    while let Some(e) = table.get(chain[chain.len() - 1]) {
        if chain.contains(&e.ppid) {
            break;
        }
        chain.push(e.ppid);
    }
    assert!(chain.contains(&top), "{top} is not an ancestor of {first}");
}

fn memberships(file: &[u8]) {
    let m = cgroup::parse_memberships(file);
    assert!(m.len() <= file.split(|b| *b == b'\n').count());
    let mounts = cgroup::parse_mounts(
        b"30 25 0:26 / /nonexistent/memlens-fuzz/memory rw - cgroup cgroup rw,memory\n\
31 25 0:27 / /nonexistent/memlens-fuzz/unified rw - cgroup2 cgroup2 rw\n",
    );
    if let Some((version, _, dir)) = cgroup::locate(&m, &mounts) {
        assert_eq!(version, 1);
        assert!(dir.starts_with("/nonexistent/memlens-fuzz/memory"));
    }
}

fn mountinfo(file: &[u8]) {
    for m in cgroup::parse_mounts(file) {
        assert!(m.version == 1 || m.version == 2);
        // unescaping only shortens
        assert!(m.root.len() <= file.len());
        let _ = m.has_controller(b"memory");
    }
}

fn flat_keyed(file: &[u8]) {
    for (k, _) in cgroup::parse_flat_keyed(file) {
        assert!(!k.is_empty());
    }
}

fn single_values(file: &[u8]) {
    if let Some(Some(v)) = cgroup::parse_limit(file) {
        assert!(v < 1 << 62, "v1's 'no limit' is not a limit");
    }
    let (some, full) = cgroup::parse_pressure(file);
    for p in [some, full].into_iter().flatten() {
        assert!((0.0..=100.0).contains(&p), "{p}");
    }
}
