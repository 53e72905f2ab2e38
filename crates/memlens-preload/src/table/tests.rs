//! The table's unit tests (apart: table.rs stays under its size).

use super::*;

/// One level of `1 << bits` slots, a filter of `1 << fbits` words.
fn one(bits: u32, fbits: u32) -> Shape {
    Shape {
        base_bits: bits,
        growth_bits: 2,
        levels: 1,
        filter_bits: fbits,
        filter_region_bits: 0,
        live_shift: 0,
    }
}

fn table(shape: Shape) -> (Vec<u64>, Table) {
    let mut v = vec![0u64; shape.bytes().div_ceil(8)];
    // SAFETY: the vector is zeroed, 8-aligned (as Slot needs), as long as bytes() says
    // and outlives the table in each test.
    let t = unsafe { Table::from_raw(v.as_mut_ptr().cast(), shape) };
    (v, t)
}

/// Non-zero filter words.
fn counted(t: &Table) -> usize {
    (0..t.shape.filter_len())
        // SAFETY: within the filter (filter_len words follow the header).
        .filter(|&i| unsafe { &*t.filter.add(i) }.load(Ordering::Relaxed) != 0)
        .count()
}

#[test]
fn insert_remove_roundtrip() {
    let (_v, t) = table(one(10, 14));
    let e = |s| Entry {
        size: s,
        weight: s as f64 * 1.5,
        domain: (s % 3) as u8,
        stack: s as u32 * 3,
        t: 7,
    };
    for k in 0..500usize {
        assert!(t.insert(0x1000 + k * 16, e(k as u64)));
    }
    assert_eq!(t.remove(0x10), None);
    for k in (0..500usize).rev() {
        assert_eq!(t.remove(0x1000 + k * 16), Some(e(k as u64)));
        assert_eq!(t.remove(0x1000 + k * 16), None);
    }
    // Tombstones are reused.
    for k in 0..500usize {
        assert!(t.insert(0x9000 + k * 32, e(1)));
    }
}

#[test]
fn full_table_refuses() {
    let (_v, t) = table(one(3, 7));
    let e = Entry {
        size: 1,
        weight: 1.0,
        domain: 0,
        stack: 0,
        t: 0,
    };
    for k in 0..8usize {
        assert!(t.insert(0x100 + k * 16, e));
    }
    assert!(!t.insert(0x9990, e));
}

#[test]
fn concurrent_inserts_and_removes() {
    let (_v, t) = table(one(14, 18));
    std::thread::scope(|sc| {
        for th in 0..8usize {
            let t = &t;
            sc.spawn(move || {
                for round in 0..50usize {
                    let base = 0x1_0000_0000 * (th + 1) + round * 0x10_0000;
                    for k in 0..500usize {
                        let e = Entry {
                            size: k as u64,
                            weight: 1.0,
                            domain: 0,
                            stack: 1,
                            t: 2,
                        };
                        assert!(t.insert(base + k * 16, e));
                    }
                    for k in 0..500usize {
                        assert_eq!(t.remove(base + k * 16).map(|e| e.size), Some(k as u64));
                    }
                }
            });
        }
    });
}

fn entry(size: u64) -> Entry {
    Entry {
        size,
        weight: 1.0,
        domain: 0,
        stack: 1,
        t: 2,
    }
}

#[test]
fn filter_answers_absent_in_a_table_of_tombstones() {
    let (_v, t) = table(one(8, 12));
    // Every slot becomes a tombstone (each insert takes the first free slot from its home,
    // so 256 at a time fill the table).
    for round in 0..20usize {
        let keys: Vec<usize> = (0..256).map(|k| 0x10_0000 * (round + 1) + k * 16).collect();
        let stored = keys
            .iter()
            .filter(|&&k| t.insert(k, entry(k as u64)))
            .count();
        assert!(stored > 128, "round {round}: only {stored} of 256 stored");
        for &k in &keys {
            t.remove(k);
        }
    }
    let tomb = (0..256).filter(|&i| t.slot(0, i).key.load(Ordering::Relaxed) == TOMBSTONE);
    assert_eq!(tomb.count(), 256, "the table is all tombstones");
    assert_eq!(counted(&t), 0, "every counter is back to zero");
    for k in 0..10_000usize {
        assert_eq!(t.remove(0x7000_0000 + k * 16), None);
    }
    // Still usable: tombstones are claimed, and found again past the filter.
    for k in 0..100usize {
        assert!(t.insert(0x9000_0000 + k * 16, entry(k as u64)));
    }
    assert!((1..=100).contains(&counted(&t)));
    for k in 0..100usize {
        assert_eq!(t.remove(0x9000_0000 + k * 16), Some(entry(k as u64)));
    }
    assert_eq!(counted(&t), 0);
}

#[test]
fn stuck_counter_never_hides_a_key() {
    let (_v, t) = table(one(10, 14));
    // 300 keys on one counter: it sticks at 255 and the keys past it are still found.
    let first = 0x1000usize;
    let c0 = t.word_of(first) as *const AtomicU16;
    let keys: Vec<usize> = (0..)
        .map(|k| first + k * 16)
        .filter(|&k| std::ptr::eq(t.word_of(k), c0))
        .take(300)
        .collect();
    for &k in &keys {
        assert!(t.insert(k, entry(k as u64)));
    }
    assert_eq!(t.word_of(first).load(Ordering::Relaxed) & COUNT, STUCK);
    for &k in keys.iter().rev() {
        assert_eq!(t.remove(k), Some(entry(k as u64)));
    }
    assert_eq!(t.word_of(first).load(Ordering::Relaxed) & COUNT, STUCK);
    assert_eq!(t.remove(first), None);
    assert_eq!(counted(&t), 1);
}

#[test]
fn stuck_counter_still_names_a_new_level() {
    // Level 0 of 512 slots (moved on at 384 keys), level 1 of 2,048.
    let shape = Shape {
        base_bits: 9,
        growth_bits: 2,
        levels: 2,
        filter_bits: 10,
        filter_region_bits: 0,
        live_shift: 0,
    };
    let (_v, t) = table(shape);
    let first = 0x1000usize;
    let c0 = t.word_of(first) as *const AtomicU16;
    let same: Vec<usize> = (0..)
        .map(|k| first + k * 16)
        .filter(|&k| std::ptr::eq(t.word_of(k), c0))
        .take(301)
        .collect();
    // 300 keys of one word stick its count in level 0 ...
    for &k in &same[..300] {
        assert!(t.insert(k, entry(k as u64)));
    }
    assert_eq!(t.levels_in_use().0, 0);
    assert_eq!(t.word_of(first).load(Ordering::Relaxed), STUCK | 0x100);
    // ... other keys move `top` on to level 1 ...
    let mut k = 0x4000_0000usize;
    while t.levels_in_use().0 == 0 {
        if !std::ptr::eq(t.word_of(k), c0) {
            assert!(t.insert(k, entry(1)));
        }
        k += 16;
    }
    // ... and a key of the stuck word put there sets level 1's bit: it is found.
    let last = same[300];
    assert!(t.insert(last, entry(7)));
    assert_eq!(t.word_of(first).load(Ordering::Relaxed), STUCK | 0x300);
    assert_eq!(t.remove(last), Some(entry(7)));
}

#[test]
fn refused_insert_uncounts() {
    let (_v, t) = table(one(3, 7));
    for k in 0..8usize {
        assert!(t.insert(0x100 + k * 16, entry(1)));
    }
    assert_eq!(
        counted(&t),
        8 - collisions(&t, (0..8).map(|k| 0x100 + k * 16))
    );
    assert!(!t.insert(0x9990, entry(1)));
    // The refused key is not counted: after the 8 leave, every counter is zero.
    for k in 0..8usize {
        assert_eq!(t.remove(0x100 + k * 16), Some(entry(1)));
    }
    assert_eq!(counted(&t), 0);
}

/// Keys sharing a counter with an earlier one.
fn collisions(t: &Table, keys: impl Iterator<Item = usize>) -> usize {
    let mut seen: Vec<*const AtomicU16> = Vec::new();
    let mut n = 0;
    for k in keys {
        let c = t.word_of(k) as *const AtomicU16;
        if seen.contains(&c) {
            n += 1;
        } else {
            seen.push(c);
        }
    }
    n
}

#[test]
fn concurrent_shared_counters() {
    // A small filter (4 Ki counters), 8 threads with 64 live keys each: counters are shared
    // between threads all the time. Every key is found at its free, a key never inserted
    // is never found, and the counters end at zero.
    let (_v, t) = table(one(8, 12));
    std::thread::scope(|sc| {
        for th in 0..8usize {
            let t = &t;
            sc.spawn(move || {
                let mut live = std::collections::VecDeque::new();
                for n in 0..40_000usize {
                    let k = 0x1_0000_0000 * (th + 1) + n * 16;
                    if t.insert(k, entry(n as u64)) {
                        live.push_back((k, n));
                    }
                    if live.len() > 16 {
                        let (k, n) = live.pop_front().expect("non-empty");
                        assert_eq!(t.remove(k), Some(entry(n as u64)));
                    }
                    // A key of this thread's that was never inserted.
                    assert_eq!(
                        t.remove(0x8000_0000_0000 + th * 0x1_0000_0000 + n * 16),
                        None
                    );
                }
                for (k, n) in live {
                    assert_eq!(t.remove(k), Some(entry(n as u64)));
                }
            });
        }
    });
    assert_eq!(counted(&t), 0);
}

/// Levels open as they fill and every key is found again, through the shared operations
/// or (`excl`) the exclusive ones, which keep the same table: levels, filter, live counts.
/// Exclusive, a churn over few addresses (as a Python loop's) among the live keys finds
/// every key too. The filter and counts return to zero.
fn levels_grow_and_every_key_is_found_with(excl: bool) {
    let insert = |t: &Table, k, e| {
        if excl {
            t.insert_excl(k, e)
        } else {
            t.insert(k, e)
        }
    };
    let remove = |t: &Table, k| {
        if excl {
            t.remove_excl(k)
        } else {
            t.remove(k)
        }
    };
    let shape = Shape {
        base_bits: 4,
        growth_bits: 2,
        levels: 4,
        filter_bits: 16,
        filter_region_bits: 0,
        live_shift: 0,
    };
    let (_v, t) = table(shape);
    // 16, 64, 256, 1024 slots: 1,000 keys need the fourth level.
    let keys: Vec<usize> = (0..1000usize).map(|k| 0x10_0000 + k * 1008).collect();
    for &k in &keys {
        assert!(insert(&t, k, entry(k as u64)));
    }
    let (top, live) = t.levels_in_use();
    assert_eq!(top, 3, "live per level {live:?}");
    assert_eq!(live.iter().sum::<usize>(), 1000);
    // Each level below the top was filled to 3/4 before the next was opened.
    assert!(live[0] >= 12 && live[1] >= 48 && live[2] >= 192, "{live:?}");
    assert_eq!(remove(&t, 0x10), None);
    if excl {
        // Churn: 64 addresses allocated and freed again and again among the live keys.
        for round in 0..200u64 {
            for a in 0..64usize {
                assert!(insert(&t, 0x90_0000 + a * 48, entry(round)));
            }
            for a in 0..64usize {
                assert_eq!(remove(&t, 0x90_0000 + a * 48), Some(entry(round)));
            }
        }
    }
    for &k in keys.iter().rev() {
        assert_eq!(remove(&t, k), Some(entry(k as u64)));
        assert_eq!(remove(&t, k), None);
    }
    assert_eq!(counted(&t), 0);
    assert_eq!(t.levels_in_use().1, [0; MAX_LEVELS as usize]);
    // Freed slots of the older levels take keys again once the newest one is full.
    for k in 0..1000usize {
        assert!(insert(&t, 0x90_0000 + k * 48, entry(1)));
    }
}

#[test]
fn levels_grow_and_every_key_is_found() {
    levels_grow_and_every_key_is_found_with(false);
}

#[test]
fn exclusive_use_keeps_the_same_table() {
    levels_grow_and_every_key_is_found_with(true);
}

#[test]
fn sampled_live_counts_estimate_and_return_to_zero() {
    // `all` mode's shape: the levels' counts count one key in 16, each as 16.
    let shape = Shape::ALL;
    let mut v = vec![0u64; shape.bytes().div_ceil(8)];
    // SAFETY: zeroed, 8-aligned, as long as bytes() says, outlives the table.
    let t = unsafe { Table::from_raw(v.as_mut_ptr().cast(), shape) };
    // pymalloc-like keys: 48-byte blocks in a few hundred pages.
    let keys: Vec<usize> = (0..40_000usize)
        .map(|k| 0x7f12_3400_0000 + k * 48)
        .collect();
    for &k in &keys {
        assert!(t.insert(k, entry(k as u64)));
    }
    let (top, live) = t.levels_in_use();
    assert_eq!(top, 0, "40,000 keys stay below level 0's 3/4 mark");
    let est = live[0] as f64;
    assert!(
        (est - 40_000.0).abs() < 0.05 * 40_000.0,
        "estimate {est} for 40,000 live keys"
    );
    // Churn: every key removed and put back twice; then all removed. A key's insert and
    // removal agree on whether it is counted, so the counts end at exactly zero.
    for _ in 0..2 {
        for &k in &keys {
            assert_eq!(t.remove(k), Some(entry(k as u64)));
            assert!(t.insert(k, entry(k as u64)));
        }
    }
    for &k in &keys {
        assert_eq!(t.remove(k), Some(entry(k as u64)));
    }
    assert_eq!(t.levels_in_use().1, [0; MAX_LEVELS as usize]);
    assert_eq!(counted(&t), 0);
}

#[test]
fn concurrent_while_growing() {
    // Levels of 256 slots to 32 Ki: eight threads keep up to 2,000 keys live each while `top`
    // moves on under them.
    let shape = Shape {
        base_bits: 8,
        growth_bits: 1,
        levels: 8,
        filter_bits: 12,
        filter_region_bits: 0,
        live_shift: 0,
    };
    let (_v, t) = table(shape);
    std::thread::scope(|sc| {
        for th in 0..8usize {
            let t = &t;
            sc.spawn(move || {
                let mut live = std::collections::VecDeque::new();
                for n in 0..30_000usize {
                    let k = 0x1_0000_0000 * (th + 1) + n * 32;
                    assert!(t.insert(k, entry(n as u64)), "thread {th} key {n}");
                    live.push_back((k, n));
                    if live.len() > 2000 || (n % 3 == 0 && live.len() > 100) {
                        let (k, n) = live.pop_front().expect("non-empty");
                        assert_eq!(t.remove(k), Some(entry(n as u64)));
                    }
                    assert_eq!(t.remove(k + 16), None);
                }
                for (k, n) in live {
                    assert_eq!(t.remove(k), Some(entry(n as u64)));
                }
            });
        }
    });
    assert_eq!(counted(&t), 0);
    let (top, live) = t.levels_in_use();
    assert!(top >= 3, "top {top}");
    assert_eq!(live, [0; MAX_LEVELS as usize]);
}

#[test]
fn smaller_means_get_larger_filters() {
    assert_eq!(Shape::sampled(512 << 10), Shape::SAMPLED);
    assert_eq!(Shape::sampled(1 << 30).filter_bits, 17);
    assert_eq!(Shape::sampled(256 << 10).filter_bits, 18);
    assert_eq!(Shape::sampled(64 << 10).filter_bits, 19);
    assert_eq!(Shape::sampled(2).levels, Shape::SAMPLED.levels);
}

/// Resident bytes of `len` bytes at `p`, asked of the kernel.
fn resident(p: *mut libc::c_void, len: usize) -> usize {
    let pages = len.div_ceil(4096);
    let mut v = vec![0u8; pages];
    // SAFETY: mincore writes one byte per page of our mapping into `v`.
    assert_eq!(unsafe { libc::mincore(p, len, v.as_mut_ptr()) }, 0);
    v.iter().filter(|b| **b & 1 != 0).count() * 4096
}

fn mapped(shape: Shape) -> (*mut libc::c_void, Table) {
    // SAFETY: a fresh private anonymous mapping (zeroed), unmapped by the caller.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            shape.bytes(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: zeroed, page-aligned, shape.bytes() long, unmapped after the table's use.
    (p, unsafe { Table::from_raw(p.cast(), shape) })
}

/// The kernel's figure for the table in `all` mode: 60,000 live keys 1,008 bytes apart
/// (1,000-byte malloc blocks) keep at most ~300 bytes each resident, filter included (one
/// fixed table of 16 Mi slots kept a page each: 4 KiB).
#[test]
fn resident_size_follows_the_live_keys() {
    let (p, t) = mapped(Shape::ALL);
    let n = 60_000usize;
    for k in 0..n {
        assert!(
            t.insert(0x5555_0000_0000 + k * 1008, entry(1000)),
            "key {k}: {:?}",
            t.levels_in_use()
        );
    }
    let r = resident(p, Shape::ALL.bytes());
    let (top, live) = t.levels_in_use();
    eprintln!("all mode: {n} live keys, {r} bytes resident, top {top}, live {live:?}");
    assert!(r <= n * 300, "{r} bytes resident for {n} keys");
    // The filter alone touches at most its 1 MiB; the levels in use are dense.
    assert!(r >= n * 32, "{r}");
    // Sampled mode: 100,000 samples over a run, at most 150 live at once (the first
    // level's 256 slots hold 192), keep little resident however many went through.
    // SAFETY: our mapping, no longer used.
    unsafe { libc::munmap(p, Shape::ALL.bytes()) };
    let (p, t) = mapped(Shape::SAMPLED);
    let mut live = std::collections::VecDeque::new();
    for k in 0..100_000usize {
        let key = 0x7000_0000_0000 + k * 4_000_016;
        assert!(t.insert(key, entry(1)));
        live.push_back(key);
        if live.len() > 150 {
            assert!(t.remove(live.pop_front().expect("non-empty")).is_some());
        }
    }
    let r = resident(p, Shape::SAMPLED.bytes());
    eprintln!(
        "sampled: {r} bytes resident, levels {:?}",
        t.levels_in_use()
    );
    assert_eq!(t.levels_in_use().0, 0);
    assert!(r <= 4096 + (1 << 8) * 32 + (2 << 17), "{r}");
    // SAFETY: our mapping, no longer used.
    unsafe { libc::munmap(p, Shape::SAMPLED.bytes()) };
}

/// Sampled mode's filter pages follow the address space the samples lie in: 100,000
/// samples in 12 MiB (a small program's heap: three 4 MiB regions) make at most 3 of its
/// 64 pages resident (all 64 with the index all hash), the first level's 8 KiB and the
/// header's page; and every key is still found, every other key still ruled out by a
/// zero word or the probe.
#[test]
fn sampled_filter_pages_follow_the_regions_sampled() {
    let shape = Shape::SAMPLED;
    let hashed = Shape {
        filter_region_bits: 0,
        ..shape
    };
    let base = 0x7f00_0000_0000usize;
    let keys: Vec<usize> = (0..100_000usize)
        .map(|k| (base + (k.wrapping_mul(0x9E37_79B9) % (12 << 20))) & !15)
        .collect();
    let mut figures = Vec::new();
    for s in [shape, hashed] {
        let (p, t) = mapped(s);
        let mut live = std::collections::VecDeque::new();
        for (n, &key) in keys.iter().enumerate() {
            if live.contains(&key) || !t.insert(key, entry(n as u64)) {
                continue;
            }
            live.push_back(key);
            if live.len() > 40 {
                let k = live.pop_front().expect("non-empty");
                assert!(t.remove(k).is_some(), "{k:#x}");
                assert!(t.remove(k).is_none());
            }
        }
        for &k in &live {
            assert!(t.may_hold(k));
        }
        // Header and filter (page-aligned from the header).
        let filter = resident(p, Shape::HEADER + s.filter_len() * 2);
        let all = resident(p, s.bytes());
        eprintln!(
            "filter_region_bits {}: filter {filter}, all {all} bytes resident",
            s.filter_region_bits
        );
        figures.push((filter, all));
        // SAFETY: our mapping, no longer used.
        unsafe { libc::munmap(p, s.bytes()) };
    }
    // The filter's bytes start 128 bytes into the header's page: a region's page may
    // straddle two; the header's page.
    assert!(figures[0].0 <= 7 * 4096, "{figures:?}");
    assert!(figures[0].1 <= 7 * 4096 + (1 << 8) * 32, "{figures:?}");
    assert!(figures[1].0 >= 60 * 4096, "{figures:?}");
}

/// A random mix of inserts, removals of live keys and lookups of absent ones, through the
/// shared or (`excl`) the exclusive operations, against a map: every answer is the map's,
/// levels open as they fill, and once all is removed the live counts are zero and the only
/// non-zero filter words are stuck ones. Small levels and filter: keys share words (some
/// stick), probes wrap, tombstones pile up, inserts fall back to older levels.
fn matches_a_map_with(excl: bool, live_shift: u32, seed: u64) {
    let shape = Shape {
        base_bits: 6,
        growth_bits: 1,
        levels: 4,
        filter_bits: 9,
        filter_region_bits: 0,
        live_shift,
    };
    let (_v, t) = table(shape);
    let insert = |k, e| {
        if excl {
            t.insert_excl(k, e)
        } else {
            t.insert(k, e)
        }
    };
    let remove = |k| if excl { t.remove_excl(k) } else { t.remove(k) };
    let mut x = seed;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut model: std::collections::HashMap<usize, Entry> = std::collections::HashMap::new();
    let mut live: Vec<usize> = Vec::new();
    let mut refused = 0;
    for n in 0..200_000u64 {
        // Addresses of a pymalloc-like heap (16-byte aligned, reused) and a few far apart.
        let key = if rnd(8) == 0 {
            0x7f00_0000_0000 + rnd(1 << 20) as usize * 4096
        } else {
            0x5555_0000_0000 + rnd(1 << 12) as usize * 16
        };
        // Keep about 100-300 keys live: the 64-slot first level fills, then the next.
        let want_more = live.len() < 100 || (live.len() < 300 && rnd(2) == 0);
        match rnd(4) {
            0 | 1 if want_more && !model.contains_key(&key) => {
                let e = Entry {
                    size: n % 1000,
                    weight: (n % 1000) as f64 * 0.5,
                    domain: (n % 3) as u8,
                    stack: (n * 7) as u32,
                    t: n as u32,
                };
                if insert(key, e) {
                    model.insert(key, e);
                    live.push(key);
                } else {
                    refused += 1;
                }
            }
            0..=2 if !live.is_empty() => {
                let k = live.swap_remove(rnd(live.len() as u64) as usize);
                assert_eq!(remove(k), model.remove(&k), "key {k:#x} at {n}");
                assert_eq!(remove(k), None);
            }
            _ => {
                if !model.contains_key(&key) {
                    assert_eq!(remove(key), None, "absent {key:#x} at {n}");
                    assert!(t.may_hold(key) || remove(key).is_none());
                }
            }
        }
    }
    let (top, _) = t.levels_in_use();
    assert!(top >= 1, "levels opened: {top}");
    assert!(refused < 100, "{refused} refused");
    for (k, e) in model.drain() {
        assert!(t.may_hold(k));
        assert_eq!(remove(k), Some(e));
    }
    assert_eq!(t.levels_in_use().1, [0; MAX_LEVELS as usize]);
    let stuck = (0..shape.filter_len())
        // SAFETY: within the filter (filter_len words follow the header).
        .map(|i| unsafe { &*t.filter.add(i) }.load(Ordering::Relaxed))
        .filter(|&w| w != 0)
        .inspect(|&w| assert_eq!(w & COUNT, STUCK, "{w:#x}"))
        .count();
    assert_eq!(counted(&t), stuck);
}

#[test]
fn exclusive_operations_match_a_map() {
    for seed in [1, 0x9E37_79B9, 0xDEAD_BEEF_1234] {
        matches_a_map_with(true, 0, seed);
        matches_a_map_with(true, 2, seed);
    }
}

#[test]
fn shared_operations_match_a_map() {
    for seed in [7, 0x1234_5678_9ABC] {
        matches_a_map_with(false, 0, seed);
        matches_a_map_with(false, 2, seed);
    }
}

/// `top` moves on from a level once its live count reaches the 3/4 mark, and not from a level
/// below `top` that fills again.
#[test]
fn top_moves_at_the_mark() {
    let shape = Shape {
        base_bits: 8,
        growth_bits: 1,
        levels: 3,
        filter_bits: 14,
        filter_region_bits: 0,
        live_shift: 0,
    };
    let (_v, t) = table(shape);
    let keys: Vec<usize> = (0..192usize).map(|k| 0x10_0000 + k * 64).collect();
    for &k in &keys[..191] {
        assert!(t.insert_excl(k, entry(1)));
    }
    let (top, live) = t.levels_in_use();
    // 191 counted: below level 0's mark of 192, unless a probe found no free slot.
    if live[0] == 191 {
        assert_eq!(top, 0);
        assert!(t.insert_excl(keys[191], entry(1)));
        assert_eq!(t.levels_in_use().0, 1);
    }
}
