//! The ledger of a captured real process (procfs fixtures): 4 threads, an 8 MiB bytearray.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use memlens_ledger::distribution::DistributionResolver;
use memlens_ledger::{build, Category, Hints, ProcessParts};
use memlens_procfs::{smaps, status, syscall};

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../memlens-procfs/tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn parts() -> ProcessParts {
    let st = status::parse(&fixture("python_threads.status")).unwrap();
    let sps = fixture("python_threads.task_syscall")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| syscall::parse(l).unwrap().stack_pointer())
        .collect();
    ProcessParts {
        pid: st.tgid,
        ppid: st.ppid,
        name: st.name.clone(),
        cmdline: b"python3\0-c\0...".to_vec(),
        exe: b"/root/.pyenv/versions/3.11.7/bin/python3.11".to_vec(),
        threads: st.threads,
        vm_hwm: st.vm_hwm,
        mappings: smaps::parse(&fixture("python_threads.smaps")).unwrap(),
        stack_pointers: sps,
    }
}

#[test]
fn rows_add_up_to_totals_exactly() {
    let p = parts();
    let l = build(
        &p,
        &Hints::default(),
        &mut DistributionResolver::new("/nonexistent"),
    );
    let sum = smaps::sum(&p.mappings);
    assert_eq!(l.totals.rss, sum.rss);
    assert_eq!(l.totals.pss, sum.pss);
    assert_eq!(l.totals.uss, sum.uss());
    let (mut rss, mut pss, mut uss, mut maps) = (0, 0, 0, 0);
    for r in &l.ledger {
        rss += r.amounts.rss;
        pss += r.amounts.pss;
        uss += r.amounts.uss;
        maps += r.mappings;
        let items_pss: u64 = r.items.iter().map(|i| i.amounts.pss).sum();
        assert_eq!(items_pss, r.amounts.pss, "items of {:?} add up", r.category);
    }
    assert_eq!((rss, pss, uss), (l.totals.rss, l.totals.pss, l.totals.uss));
    assert_eq!(
        maps as usize,
        p.mappings.len(),
        "every mapping in exactly one row"
    );
}

#[test]
fn sorts_the_known_parts() {
    let p = parts();
    let l = build(
        &p,
        &Hints::default(),
        &mut DistributionResolver::new("/nonexistent"),
    );
    // 4 threads: [stack] plus three thread stacks located by their stack pointers.
    assert_eq!(l.thread_stacks.count, 4);
    assert_eq!(l.thread_stacks.unlocated, 0);
    // glibc's default thread stack is 8 MiB + a guard page.
    assert!(l.thread_stacks.reserved >= 3 * (8 << 20));
    let native = l.row(Category::NativeHeap).unwrap();
    assert!(native.amounts.rss >= 8 << 20, "bytearray is native heap");
    let interp = l.row(Category::Interpreter).unwrap();
    assert!(interp
        .items
        .iter()
        .any(|i| i.name.starts_with("libpython3.11")));
    let ext = l.row(Category::Extensions).unwrap();
    assert!(ext.items.iter().any(|i| i.name == "stdlib (lib-dynload)"));
    assert!(l
        .row(Category::SystemLibraries)
        .unwrap()
        .items
        .iter()
        .any(|i| i.name == "libc.so.6"));
    let py = l.python.as_ref().unwrap();
    assert_eq!(py.version.as_deref(), Some("3.11"));
    assert_eq!(py.build, "shared");
}

#[test]
fn arenas_move_memory_into_python_heap_and_keep_the_sum() {
    let p = parts();
    let plain = build(
        &p,
        &Hints::default(),
        &mut DistributionResolver::new("/nonexistent"),
    );
    // Pretend the first anonymous rw mapping holds pymalloc arenas over half its range.
    let m = p
        .mappings
        .iter()
        .find(|m| m.entry.is_anonymous() && m.counters.rss > 0)
        .unwrap();
    let half = m.entry.start + m.entry.size() / 2;
    let hints = Hints {
        python_arenas: vec![(m.entry.start, half)],
    };
    let l = build(&p, &hints, &mut DistributionResolver::new("/nonexistent"));
    let heap = l.row(Category::PythonHeap).unwrap();
    assert!(heap.size == m.entry.size() / 2);
    assert_eq!(l.totals, plain.totals);
    let pss: u64 = l.ledger.iter().map(|r| r.amounts.pss).sum();
    assert_eq!(pss, l.totals.pss);
}
