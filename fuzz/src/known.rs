//! Findings in code this fuzzing work does not own, not fixed yet. The targets step around
//! each one (as narrowly as a cheap check allows) so that CI keeps fuzzing everything else;
//! `MEMLENS_FUZZ_STRICT=1` turns every gate off. `scripts/fuzz.sh` replays each finding's
//! reproducer ([`reproducers`]) with the gates off and says which still reproduce: when one no
//! longer does, delete its entry here and its gate in the target.

use crate::image::{Header, BASE};

/// One finding.
#[derive(Debug, Clone, Copy)]
pub struct Finding {
    /// Short id, used by the gates and the reproducer file names.
    pub id: &'static str,
    /// Who owns the file (the helper branch rewriting it).
    pub owner: &'static str,
    /// Where it fails.
    pub site: &'static str,
    /// What goes wrong.
    pub what: &'static str,
}

/// Every known finding. Those whose id starts with `overflow-` are integer overflows in
/// memlens-cpython: fuzz builds compile that crate without overflow checks (`fuzz/Cargo.toml`,
/// `[profile.release.package.memlens-cpython]`), so they reproduce only in a build with them
/// (`scripts/fuzz.sh --strict`). In release builds of memlens they wrap: an address then
/// fails to read, a size or line number is silently wrong.
pub const FINDINGS: &[Finding] = &[];

fn strict() -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("MEMLENS_FUZZ_STRICT").is_some())
}

/// Whether a target steps around finding `id` (always `false` with `MEMLENS_FUZZ_STRICT`).
pub fn gated(id: &str) -> bool {
    assert!(FINDINGS.iter().any(|f| f.id == id), "unknown finding {id}");
    !strict()
}

/// A reproducer of each finding, open or fixed, as an input of the target named: (finding id,
/// target, bytes). Every target's seeds include those of its findings (`regression-ID`), so
/// every run replays the fixed ones.
pub fn reproducers() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let l12 = crate::selector_of(12);
    let l11 = crate::selector_of(11);
    let word = |v: u64| v.to_le_bytes().to_vec();
    let mut out = Vec::new();
    // maps line 2000-1000
    let mut maps = vec![3u8];
    maps.extend_from_slice(b"2000-1000 r--p 00000000 00:00 0\n");
    out.push(("vm-maps-end-before-start", "discovery", maps));
    // objects op 5 (GC walk), head at BASE: its first node is 0xffff_ffff_ffff_fff8
    let mut over = vec![5, l12, 0, 0, 0];
    over.extend(word(0xffff_ffff_ffff_fff8));
    out.push(("overflow-gc-walk", "objects", over));
    // head at BASE -> node BASE+16 -> itself
    let mut cycle = vec![5, l12, 0, 0, 0];
    cycle.extend(word(BASE + 16));
    cycle.extend(word(0));
    cycle.extend(word(BASE + 16));
    out.push(("gc-walk-cycle", "objects", cycle));
    // objects op 8 (3.11+ location table): first line 0, index i64::MAX, two long-form
    // entries whose line delta is 2^63 - 1
    let mut lines = vec![8, l12, 0, 0, 0];
    lines.extend_from_slice(&0u32.to_le_bytes());
    lines.extend_from_slice(&i64::MAX.to_le_bytes());
    for _ in 0..2 {
        lines.push(0x80 | (14 << 3));
        lines.push(0x40 | 0x3e);
        lines.extend_from_slice(&[0x7f; 9]);
        lines.push(0x3f);
        lines.extend_from_slice(&[0, 0, 0]);
    }
    out.push(("overflow-linetable", "objects", lines));
    // interpreter op 3 (pymalloc) on 3.11 with symbols: arenas -> BASE+32, maxarenas 2^24 - 1
    let h = Header {
        op: 3,
        layout: l11,
        flags: 1,
        interp: 0x40,
        arenas: 8,
        maxarenas: 16,
        ..Header::default()
    };
    let mut v = h.encode();
    let mut image = vec![0u8; 0x40 + 2048];
    image[8..16].copy_from_slice(&(BASE + 32).to_le_bytes());
    image[16..20].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    v.extend(image);
    out.push(("pymalloc-maxarenas-alloc", "interpreter", v));
    // the stripped scan on 3.11: .bss holds BASE+32, whose "chunk header" says 4 GiB - 16
    let h = Header {
        op: 3,
        layout: l11,
        flags: 0,
        interp: 0x40,
        bss: (8, 8),
        ..Header::default()
    };
    let mut v = h.encode();
    let mut image = vec![0u8; 0x40 + 2048];
    image[8..16].copy_from_slice(&(BASE + 32).to_le_bytes());
    image[24..32].copy_from_slice(&0xffff_fff0u64.to_le_bytes());
    v.extend(image);
    out.push(("pymalloc-scan-alloc", "interpreter", v));
    // 3.11 with symbols: one arena at 0xffff_ffff_fff0_0000 (its 1 MiB range wraps)
    let h = Header {
        op: 3,
        layout: l11,
        flags: 1,
        interp: 0x40,
        arenas: 8,
        maxarenas: 16,
        ..Header::default()
    };
    let l = crate::layout(l11);
    let mut v = h.encode();
    let mut image = vec![0u8; 0x40 + 2048];
    image[8..16].copy_from_slice(&(BASE + 32).to_le_bytes());
    image[16..20].copy_from_slice(&1u32.to_le_bytes());
    let arena = 32 + l.arena_address as usize;
    image[arena..arena + 8].copy_from_slice(&0xffff_ffff_fff0_0000u64.to_le_bytes());
    let pools = 32 + l.arena_pool_address as usize;
    image[pools..pools + 8].copy_from_slice(&0xffff_ffff_fff0_0000u64.to_le_bytes());
    v.extend(image);
    out.push(("pymalloc-arena-range-wraps", "interpreter", v));
    // 3.12: the interpreter's first thread state is its own successor
    let l = crate::layout(l12);
    let h = Header {
        op: 4,
        layout: l12,
        interp: 0x100,
        ..Header::default()
    };
    let mut v = h.encode();
    let mut image = vec![0u8; 0x800];
    let head = 0x100 + l.interp_threads_head as usize;
    image[head..head + 8].copy_from_slice(&(BASE + 0x400).to_le_bytes());
    let next = 0x400 + l.tstate_next as usize;
    image[next..next + 8].copy_from_slice(&(BASE + 0x400).to_le_bytes());
    v.extend(image);
    out.push(("threads-cycle", "interpreter", v));
    // 3.10 (no native thread id: glibc's pthread is read): thread id 0xffff_ffff_ffff_ff00
    let l10 = crate::selector_of(10);
    let l = crate::layout(l10);
    let h = Header {
        op: 4,
        layout: l10,
        interp: 0x100,
        ..Header::default()
    };
    let mut v = h.encode();
    let mut image = vec![0u8; 0x800];
    let head = 0x100 + l.interp_threads_head as usize;
    image[head..head + 8].copy_from_slice(&(BASE + 0x400).to_le_bytes());
    let id = 0x400 + l.tstate_thread_id as usize;
    image[id..id + 8].copy_from_slice(&0xffff_ffff_ffff_ff00u64.to_le_bytes());
    v.extend(image);
    out.push(("overflow-threads-tid", "interpreter", v));
    out.push((
        "overflow-census-type-base",
        "interpreter",
        census_of_one(0xffff_ffff_ffff_ff00, false),
    ));
    out.push(("census-alloc", "interpreter", census_of_one(0, true)));
    // objects op 2 (type name) on 3.12: a heap type whose ht_name is 0xffff_ffff_ffff_fff8
    let l = crate::layout(l12);
    let mut image = vec![0u8; l.heaptype_size as usize];
    image[l.type_flags as usize..][..8].copy_from_slice(&l.tpflags_heaptype.to_le_bytes());
    image[l.heaptype_name as usize..][..8].copy_from_slice(&word(0xffff_ffff_ffff_fff8));
    let mut v = vec![2, l12, 0, 0, 0];
    v.extend(image);
    out.push(("overflow-type-name", "objects", v));
    // objects op 3 (dict) on 3.12: ma_keys -> BASE+64 whose dk_nentries is 2^31 - 1
    let mut image = vec![0u8; 64 + l.dictkeys_indices as usize + 8];
    image[l.dict_keys as usize..][..8].copy_from_slice(&word(BASE + 64));
    image[64 + l.dictkeys_refcnt as usize..][..8].copy_from_slice(&word(1));
    image[64 + l.dictkeys_nentries as usize..][..8].copy_from_slice(&word((1 << 31) - 1));
    let mut v = vec![3, l12, 0, 0, 0];
    v.extend(image);
    out.push(("dict-entries-alloc", "objects", v));
    // objects op 3 (dict), a split table whose dk_usable is near 2^63: the value slots'
    // size saturated and the keys' size overflowed on top of it (found by `--strict`)
    out.push(("overflow-dict-usable", "objects", base64(DICT_USABLE)));
    // A corrupt interpreter whose reads failed for nearly 2^64 bytes in all: the cache's
    // failed-bytes count overflowed (memlens-remote, fixed: saturating).
    out.push((
        "failed-bytes-overflow",
        "interpreter",
        include_bytes!("../regressions/interpreter-failed-bytes-overflow.bin").to_vec(),
    ));
    out
}

/// A 3.12 census of one object in generation 0. With `list`, its type is the list type and its
/// `ob_size` is 2^32 - 1; else its type's `tp_base` is `base`.
fn census_of_one(base: u64, list: bool) -> Vec<u8> {
    let l = crate::layout(crate::selector_of(12));
    let interp = 0x100u64;
    let state = interp + l.interp_gc.unwrap_or(0);
    let heads: Vec<u64> = (0..3)
        .map(|i| state + l.gc_generations + i * l.gc_generation_size)
        .chain([state + l.gc_permanent])
        .collect();
    let (node, ty, name) = (0x1000u64, 0x1100u64, 0x1400u64);
    let obj = node + l.gc_head_size;
    let mut image = vec![0u8; 0x1480];
    let mut put = |at: u64, v: u64| {
        image[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    };
    for &h in &heads {
        put(h, BASE + h);
        put(h + 8, BASE + h);
    }
    put(heads[0], BASE + node);
    put(node, BASE + heads[0]);
    put(obj + l.object_type, BASE + ty);
    put(ty + l.type_name, BASE + name);
    put(ty + l.type_base, base);
    put(name, u64::from_le_bytes(*b"list\0\0\0\0"));
    if list {
        put(obj + l.var_size, 0xffff_ffff);
        put(obj + l.list_item, BASE);
    }
    let mut h = Header {
        op: 0,
        layout: crate::selector_of(12),
        interp: interp as u16,
        ..Header::default()
    };
    if list {
        h.types[0] = ty as u16;
    }
    let mut v = h.encode();
    v.extend(image);
    v
}

/// The input `scripts/fuzz.sh --strict objects` found for `overflow-dict-usable`.
const DICT_USABLE: &str = "AwQAAAAAAAAAAAEAAAAAAAAHAAAAAAAAAAAAAAAAAAAAAAAAAEAAABAAAAAAAAAAAABqAAAAAAAAAAAAAAAAAAAAAAAAAQAAAAAAAAAIBAAAAAAAAAAAAABRUVFZUQAAAAAAAAAAAAAAAA==";

/// Decodes standard base64 (the form `scripts/fuzz.sh` prints a failing input in).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, d) in chunk.iter().enumerate() {
            n |= u32::from(*d) << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_finding_has_one_reproducer_and_every_reproducer_a_target() {
        // Fixed findings keep their reproducers (regression seeds) without a FINDINGS entry.
        let repro = super::reproducers();
        for f in super::FINDINGS {
            let n = repro.iter().filter(|(id, _, _)| *id == f.id).count();
            assert_eq!(n, 1, "{}", f.id);
        }
        for (id, target, _) in &repro {
            assert!(
                ["discovery", "objects", "interpreter"].contains(target),
                "{id}: {target}"
            );
            assert_eq!(repro.iter().filter(|(i, _, _)| i == id).count(), 1, "{id}");
        }
    }

    #[test]
    fn base64_decodes_what_fuzz_sh_prints() {
        assert_eq!(super::base64("AwQA"), [3, 4, 0]);
        assert_eq!(super::base64("TWFu"), b"Man");
        assert_eq!(super::base64("TWE="), b"Ma");
        assert_eq!(super::base64("TQ=="), b"M");
        assert_eq!(super::base64("+/8="), [0xfb, 0xff]);
        assert_eq!(super::base64(super::DICT_USABLE).len(), 106);
    }
}
