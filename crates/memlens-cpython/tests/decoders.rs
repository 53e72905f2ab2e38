//! The dict, managed-dict, GC and pymalloc decoders on byte slices laid out, for every
//! supported minor version, at the offsets its generated layout table gives
//! (`memlens_remote::SliceMemory`, no process): each must read what was laid out, and refuse
//! corrupt structures (pointers out of the address space, loops, lengths beyond the mapping)
//! with an error rather than a figure or a panic.

use memlens_cpython::dicts::{self, Managed};
use memlens_cpython::layouts::{self, Layout};
use memlens_cpython::process::BuiltinTypes;
use memlens_cpython::{gc, pymalloc, Error, Interpreter, Version};
use memlens_remote::elf::ElfFile;
use memlens_remote::SliceMemory;

/// Every minor version with a table on this architecture.
fn tables() -> Vec<&'static Layout> {
    let minors = layouts::supported_minors();
    assert!(minors.len() >= 8, "3.8-3.15 expected, got {minors:?}");
    minors
        .into_iter()
        .map(|m| layouts::for_version(m).expect("a table"))
        .collect()
}

/// A zeroed buffer to lay a structure out in, mapped at `base` when done.
struct Buf {
    base: u64,
    bytes: Vec<u8>,
}

impl Buf {
    fn new(base: u64, len: usize) -> Buf {
        Buf {
            base,
            bytes: vec![0; len],
        }
    }
    fn put(&mut self, addr: u64, v: u64, width: u64) -> &mut Self {
        let at = (addr - self.base) as usize;
        let w = width as usize;
        self.bytes[at..at + w].copy_from_slice(&v.to_ne_bytes()[..w]);
        self
    }
    fn u64(&mut self, addr: u64, v: u64) -> &mut Self {
        self.put(addr, v, 8)
    }
    fn map(self, mem: &mut SliceMemory) {
        mem.map(self.base, self.bytes);
    }
}

const OBJ_PAGE: u64 = 0x20_0000;

#[test]
fn the_generated_tables_say_what_cpython_does() {
    // facts of CPython's sources the decoders rely on, pinned so that a regenerated table that
    // lost one fails here (tests may read the minor version; the decoders do not)
    for l in tables() {
        let minor = l.version.1;
        let format = match minor {
            8 | 9 => memlens_cpython::linetable::LNOTAB,
            10 => memlens_cpython::linetable::LINETABLE_310,
            _ => memlens_cpython::linetable::LOCATIONS,
        };
        assert_eq!(l.linetable_format, format, "3.{minor}");
        assert_eq!(l.managed_dict_before.is_some(), minor >= 11, "3.{minor}");
        assert_eq!(l.managed_values_before.is_some(), minor == 11, "3.{minor}");
        assert_eq!(l.managed_dict_values_tag, (minor == 12).then_some(1));
        assert_eq!(l.dictvalues_valid.is_some(), minor >= 13, "3.{minor}");
        // 3.12 embeds pymalloc's state in the interpreter, 3.13 made it a pointer
        let by_pointer = (minor >= 12).then_some(u64::from(minor >= 13));
        assert_eq!(l.obmalloc_by_pointer, by_pointer, "3.{minor}");
        assert_eq!(l.long_sizeof_min_digits, (minor >= 11).then_some(1));
        let pre = match minor {
            ..=10 => None,
            11 | 12 => Some(1),
            _ => Some(2),
        };
        assert_eq!(l.static_type_preheader, pre, "3.{minor}");
        if l.pointer_size == 8 {
            // the managed pre-header is the two words before the GC header
            if let Some(before) = l.managed_dict_before {
                assert_eq!(before, l.gc_head_size + 8, "3.{minor}");
            }
            if let Some(values) = l.managed_values_before {
                assert_eq!(values, l.gc_head_size + 16, "3.{minor}");
            }
        }
    }
    if cfg!(target_arch = "x86_64") {
        let at = layouts::glibc_pthread_tid().expect("generated on x86_64");
        assert!(at % 4 == 0 && at < 0x800, "struct pthread's tid at {at:#x}");
    }
}

#[test]
fn managed_dicts_are_read_where_each_version_keeps_them() {
    const DICT: u64 = 0x7f00_0000_1000;
    const VALUES: u64 = 0x7f00_0000_2000;
    for l in tables() {
        let minor = l.version.1;
        let obj = OBJ_PAGE + 0x100;
        let flags = l.tpflags_managed_dict.unwrap_or(0);
        let read = |b: Buf, flags: u64| {
            let mut m = SliceMemory::new();
            b.map(&mut m);
            dicts::managed(&m, l, obj, flags, || Ok(0x40))
        };
        let Some(before) = l.managed_dict_before else {
            assert!(
                read(Buf::new(OBJ_PAGE, 0x1000), flags).is_err(),
                "3.{minor}: no managed dicts"
            );
            continue;
        };
        let values_off = l.dictvalues_values.unwrap_or(0);
        // no attribute yet
        assert_eq!(
            read(Buf::new(OBJ_PAGE, 0x1000), flags).ok(),
            Some(Managed::None)
        );
        // a materialised dict
        let mut b = Buf::new(OBJ_PAGE, 0x1000);
        b.u64(obj - before, DICT);
        assert_eq!(read(b, flags).ok(), Some(Managed::Dict(DICT)), "3.{minor}");
        // values, where this version keeps them
        let mut b = Buf::new(OBJ_PAGE, 0x1000);
        let expected = if let Some(vb) = l.managed_values_before {
            b.u64(obj - vb, VALUES);
            VALUES + values_off
        } else if let Some(tag) = l.managed_dict_values_tag {
            b.u64(obj - before, VALUES - tag);
            VALUES + values_off
        } else {
            let valid = l.dictvalues_valid.expect("3.13+: inline values");
            b.put(obj + 0x40 + valid, 1, 1);
            obj + 0x40 + values_off
        };
        let flags_v = flags | l.tpflags_inline_values.unwrap_or(0);
        assert_eq!(
            read(b, flags_v).ok(),
            Some(Managed::Values(expected)),
            "3.{minor}"
        );
        if let Some(valid) = l.dictvalues_valid {
            // inline values no longer valid: the dict that replaced them
            let mut b = Buf::new(OBJ_PAGE, 0x1000);
            b.put(obj + 0x40 + valid, 0, 1).u64(obj - before, DICT);
            assert_eq!(
                read(b, flags_v).ok(),
                Some(Managed::Dict(DICT)),
                "3.{minor}"
            );
        } else {
            // a values pointer out of the address space is refused
            let mut b = Buf::new(OBJ_PAGE, 0x1000);
            let slot = l.managed_values_before.unwrap_or(before);
            b.u64(obj - slot, u64::MAX - 1);
            assert!(read(b, flags).is_err(), "3.{minor}: a wild values pointer");
        }
        // the pre-header outside any mapping: an error, not a reading
        let mut m = SliceMemory::new();
        m.map(obj, vec![0; 0x100]);
        assert!(
            dicts::managed(&m, l, obj, flags, || Ok(0x40)).is_err(),
            "3.{minor}: unreadable pre-header"
        );
    }
}

/// A dict of `n` entries (key `KEY + i`, value `VALUE + i`) with a combined table of 8 slots,
/// general (hash, key, value) entries, at `DICT_AT`; its keys at `KEYS_AT`.
fn combined_dict(l: &Layout, n: u64, nentries: i64, unicode: bool) -> SliceMemory {
    const DICT_AT: u64 = 0x30_0000;
    const KEYS_AT: u64 = 0x30_1000;
    let mut d = Buf::new(DICT_AT, 0x100);
    d.u64(DICT_AT + l.dict_keys, KEYS_AT)
        .u64(DICT_AT + l.dict_values, 0)
        .u64(DICT_AT + l.dict_used, n);
    let mut k = Buf::new(KEYS_AT, 0x400);
    k.u64(KEYS_AT + l.dictkeys_refcnt, 1)
        .u64(KEYS_AT + l.dictkeys_nentries, nentries as u64)
        .u64(KEYS_AT + l.dictkeys_usable, 5 - n);
    let (kind, entry, key_at, value_at) = if unicode {
        let shape = (
            l.dict_kind_unicode,
            l.dictkeys_unicode_entry_size,
            l.dictunicode_key,
            l.dictunicode_value,
        );
        let (Some(kind), Some(size), Some(key), Some(value)) = shape else {
            panic!("3.{}: no unicode key tables", l.version.1)
        };
        (kind, size, key, value)
    } else {
        (
            l.dict_kind_general.unwrap_or(0),
            l.dictkeys_entry_size,
            l.dictentry_key,
            l.dictentry_value,
        )
    };
    if let Some(size_off) = l.dictkeys_size_field {
        k.u64(KEYS_AT + size_off, 8); // dk_size 8: 1-byte indices
    } else {
        k.put(KEYS_AT + l.dictkeys_log2_size.expect("log2"), 3, 1)
            .put(KEYS_AT + l.dictkeys_log2_index_bytes.expect("ixb"), 3, 1)
            .put(KEYS_AT + l.dictkeys_kind.expect("kind"), kind, 1);
    }
    // 8 one-byte indices, then the entries (the hash, where there is one, left 0)
    let entries = KEYS_AT + l.dictkeys_indices + 8;
    for i in 0..n {
        let e = entries + i * entry;
        k.u64(e + key_at, KEY + i).u64(e + value_at, VALUE + i);
    }
    let mut m = SliceMemory::new();
    d.map(&mut m);
    k.map(&mut m);
    m
}

const KEY: u64 = 0x7f10_0000_0000;
const VALUE: u64 = 0x7f20_0000_0000;

#[test]
fn dict_entries_are_read_and_corrupt_tables_refused() {
    for l in tables() {
        let minor = l.version.1;
        let m = combined_dict(l, 3, 3, false);
        let got = dicts::read_dict(&m, l, 0x30_0000).expect("a dict");
        let want: Vec<(u64, u64)> = (0..3).map(|i| (KEY + i, VALUE + i)).collect();
        assert_eq!(got.items, want, "3.{minor}");
        assert!(
            got.extra_size > 0,
            "3.{minor}: the keys are owned (refcnt 1)"
        );
        // an entry count beyond its table's capacity (8 slots hold 5; within the mapping),
        // beyond the mapping, a negative one, or one no small dict has
        for nentries in [6, 40, 1000, -1, 1 << 40] {
            let m = combined_dict(l, 3, nentries, false);
            assert!(
                dicts::read_dict(&m, l, 0x30_0000).is_err(),
                "3.{minor}: dk_nentries {nentries}"
            );
        }
        // keys out of the address space, or none
        for keys in [1u64 << 60, 0] {
            let mut m = combined_dict(l, 3, 3, false);
            let mut d = Buf::new(0x40_0000, 0x100);
            d.u64(0x40_0000 + l.dict_keys, keys);
            d.map(&mut m);
            assert!(
                dicts::read_dict(&m, l, 0x40_0000).is_err(),
                "3.{minor}: keys {keys:#x}"
            );
        }
    }
}

/// An interpreter over a byte-slice memory: `runtime` and `interp` where the test lays them
/// out, the symbols of a small real ELF file (none that memlens looks for).
fn interpreter(l: &'static Layout, runtime: u64, interp: u64) -> Interpreter {
    let elf = ElfFile::open(std::path::Path::new("/bin/true")).expect("/bin/true is an ELF file");
    let hex = 0x0300_00f0 | u32::from(l.version.1) << 16;
    let types = BuiltinTypes {
        list: 0,
        tuple: 0,
        dict: 0,
        set: 0,
        frozenset: 0,
        str: 0,
        bytes: 0,
        int: 0,
        float: 0,
        type_: 0,
        function: 0,
        module: 0,
        cell: 0,
        code: 0,
    };
    Interpreter::from_parts(Version::from_hex(hex), l, runtime, interp, elf, 0, types)
}

const RUNTIME: u64 = 0x100_0000;
const INTERP: u64 = 0x200_0000;
const RINGS: u64 = 0x300_0000;
const NODES: u64 = 0x400_0000;

/// The collector's state of `l` laid out: generation `i` with count `10 + i`, threshold
/// `700 - i`, `collections`/`collected`/`uncollectable` `100 * (i + 1) + 1..3`, the
/// permanent generation holding `frozen` objects linked by `link(k)` (the next node of node
/// `k`; `None`: back to the head), `collecting` set.
fn gc_memory(l: &Layout, frozen: u64, link: impl Fn(u64) -> Option<u64>) -> SliceMemory {
    let (base, state) = match (l.interp_gc, l.runtime_gc) {
        (Some(off), _) => (INTERP, INTERP + off),
        (None, Some(off)) => (RUNTIME, RUNTIME + off),
        _ => panic!("3.{}: no GC state", l.version.1),
    };
    let end = l.gc_permanent.max(l.gc_stats).max(l.gc_collecting) + 0x1000;
    let mut b = Buf::new(base, (state - base + end) as usize);
    let mut rings = Buf::new(RINGS, 0x1_0000);
    for i in 0..3 {
        let g = state + l.gc_generations + i * l.gc_generation_size;
        b.put(g + l.gc_generation_count, 10 + i, 4)
            .put(g + l.gc_generation_threshold, 700 - i, 4);
        let record = match (l.gc_stats_young, l.gc_stats_old) {
            (Some(young), Some(old)) => {
                // 3.15: rings of records behind a pointer, the current one at `index`
                b.u64(state + l.gc_stats, RINGS);
                let (ring, items, index) = if i == 0 {
                    (
                        RINGS + young,
                        l.gc_stats_young_items,
                        l.gc_stats_young_index,
                    )
                } else {
                    let size = l.gc_stats_old_size.expect("ring size");
                    (
                        RINGS + old + (i - 1) * size,
                        l.gc_stats_old_items,
                        l.gc_stats_old_index,
                    )
                };
                rings.put(ring + index.expect("index"), 2, 1);
                ring + items.expect("items") + 2 * l.gc_stats_size
            }
            _ => state + l.gc_stats + i * l.gc_stats_size,
        };
        let target = if record >= RINGS { &mut rings } else { &mut b };
        let v = 100 * (i + 1);
        target
            .u64(record + l.gc_stats_collections, v + 1)
            .u64(record + l.gc_stats_collected, v + 2)
            .u64(record + l.gc_stats_uncollectable, v + 3);
    }
    b.put(state + l.gc_collecting, 1, 4);
    let head = state + l.gc_permanent;
    let node = |k: u64| NODES + k * 64;
    let mut nodes = Buf::new(NODES, (frozen.max(1) * 64) as usize);
    b.u64(head, if frozen == 0 { head } else { node(0) });
    for k in 0..frozen {
        nodes.u64(node(k), link(k).map_or(head, node));
    }
    let mut m = SliceMemory::new();
    b.map(&mut m);
    rings.map(&mut m);
    nodes.map(&mut m);
    m
}

#[test]
fn gc_state_is_read_and_a_broken_frozen_list_refused() {
    for l in tables() {
        let minor = l.version.1;
        let it = interpreter(l, RUNTIME, INTERP);
        let m = gc_memory(l, 5, |k| (k + 1 < 5).then_some(k + 1));
        let s = gc::read(&it, &m).unwrap_or_else(|e| panic!("3.{minor}: {e}"));
        assert_eq!(s.frozen, 5, "3.{minor}");
        assert!(s.collecting, "3.{minor}");
        for (i, g) in s.generations.iter().enumerate() {
            let i = i as i64;
            assert_eq!(
                (g.count, g.threshold),
                (10 + i, 700 - i),
                "3.{minor} gen {i}"
            );
            let v = 100 * (i + 1);
            assert_eq!(
                (g.collections, g.collected, g.uncollectable),
                (v + 1, v + 2, v + 3),
                "3.{minor} gen {i}"
            );
        }
        // a loop that never passes the head, and a link out of the mapping
        let m = gc_memory(l, 5, |k| Some((k + 1) % 5).filter(|_| k != 4).or(Some(2)));
        assert!(
            matches!(gc::read(&it, &m), Err(Error::BrokenGcList { .. })),
            "3.{minor}: a loop"
        );
        let m = gc_memory(l, 3, |k| {
            Some(if k == 1 { 1000 } else { k + 1 }).filter(|_| k < 2)
        });
        assert!(
            matches!(gc::read(&it, &m), Err(Error::BrokenGcList { .. })),
            "3.{minor}: a link out of the mapping"
        );
    }
}

const ARENAS: u64 = 0x500_0000;
const ARENA: u64 = 0x1000_0000;

/// pymalloc's state (3.12+) laid out: an arena table of two entries, the first a live arena at
/// `ARENA` with three pools carved, whose headers say `counts[k]` blocks of size class
/// `k + 1` (pool `k`); `maxarenas` entries claimed.
fn pymalloc_memory(l: &Layout, counts: [u64; 3], maxarenas: u64, state_ptr: u64) -> SliceMemory {
    let obm = l.interp_obmalloc.expect("3.12+");
    let mut interp = Buf::new(INTERP, (obm + 0x1000) as usize);
    let mut state = Buf::new(0x600_0000, 0x1000);
    let s = if l.obmalloc_by_pointer == Some(1) {
        interp.u64(INTERP + obm, state_ptr);
        0x600_0000
    } else {
        INTERP + obm
    };
    let target = if s == INTERP + obm {
        &mut interp
    } else {
        &mut state
    };
    target
        .u64(s + l.obmalloc_arenas.expect("arenas"), ARENAS)
        .put(s + l.obmalloc_maxarenas.expect("maxarenas"), maxarenas, 4);
    let mut table = Buf::new(ARENAS, (2 * l.arena_size_of) as usize);
    table
        .u64(ARENAS + l.arena_address, ARENA)
        .u64(ARENAS + l.arena_pool_address, ARENA + 3 * l.pool_size);
    let mut m = SliceMemory::new();
    interp.map(&mut m);
    state.map(&mut m);
    table.map(&mut m);
    for (k, count) in counts.iter().enumerate() {
        let at = ARENA + k as u64 * l.pool_size;
        let mut pool = Buf::new(at, 0x40);
        pool.put(at + l.pool_count, *count, 4)
            .put(at + l.pool_szidx, k as u64 + 1, 4);
        pool.map(&mut m);
    }
    m
}

#[test]
fn pymalloc_pools_are_summed_and_corrupt_tables_refused() {
    for l in tables().into_iter().filter(|l| l.interp_obmalloc.is_some()) {
        let minor = l.version.1;
        let it = interpreter(l, RUNTIME, INTERP);
        let m = pymalloc_memory(l, [4, 0, 7], 2, 0x600_0000);
        let p = pymalloc::read(&it, &m).unwrap_or_else(|e| panic!("3.{minor}: {e}"));
        let align = l.pymalloc_alignment;
        let used = 4 * 2 * align + 7 * 4 * align;
        assert_eq!((p.arenas, p.pools, p.used_bytes), (1, 3, used), "3.{minor}");
        assert_eq!(p.free_bytes, l.arena_size - used, "3.{minor}");
        assert_eq!(p.arena_ranges, vec![(ARENA, ARENA + l.arena_size)]);
        // arenas holding no block: a starting interpreter, not 0 bytes
        let m = pymalloc_memory(l, [0, 0, 0], 2, 0x600_0000);
        assert!(pymalloc::read(&it, &m).is_err(), "3.{minor}: empty arenas");
        // more arenas claimed than the table's mapping holds, or than is plausible
        for maxarenas in [64, 1 << 30] {
            let m = pymalloc_memory(l, [4, 0, 7], maxarenas, 0x600_0000);
            assert!(
                pymalloc::read(&it, &m).is_err(),
                "3.{minor}: {maxarenas} arenas"
            );
        }
        if l.obmalloc_by_pointer == Some(1) {
            let m = pymalloc_memory(l, [4, 0, 7], 2, 1 << 60);
            assert!(
                pymalloc::read(&it, &m).is_err(),
                "3.{minor}: a wild state pointer"
            );
        }
    }
}

#[test]
fn a_type_pointer_near_the_top_of_the_address_space_is_an_error_not_a_panic() {
    // A list read while the target changes it can hand the census a wild type pointer; the
    // walk of its bases must fail that read (counted as unreadable) and never overflow
    // `pointer + offset` (a debug-build panic before).
    for l in tables() {
        let sizer = memlens_cpython::sizes::Sizer::from_parts(l, |_| None, None);
        for wild in [u64::MAX - 7, u64::MAX - l.type_base + 1, u64::MAX] {
            let mut mem = SliceMemory::new();
            let mut ty = Buf::new(OBJ_PAGE, l.type_size as usize + 64);
            ty.u64(OBJ_PAGE + l.type_base, wild)
                .u64(OBJ_PAGE + l.type_basicsize, 16);
            ty.map(&mut mem);
            let got = sizer.type_facts(&mem, OBJ_PAGE);
            assert!(got.is_err(), "3.{}: base {wild:#x}: {got:?}", l.version.1);
            // the wild pointer itself as the type
            assert!(sizer.type_facts(&mem, wild).is_err());
        }
    }
}
