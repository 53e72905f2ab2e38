//! The CPython object decoders over arbitrary memory (the byte-slice backend): `str`, `bytes`
//! and type names (objects.rs), dicts (dicts.rs), the GC list walk (gc.rs) and the three line
//! table formats (linetable.rs), a lookup resumed from an earlier one's cursor checked against
//! one from the table's start.
//!
//! Input: op, layout selector, a u16 offset of the object, a parameter byte, then the image
//! mapped at `image::BASE`. The object address is `BASE + offset`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memlens_cpython::{dicts, gc, linetable, objects};
use memlens_fuzz::image::BASE;
use memlens_fuzz::Cursor;

const OPS: u8 = 9;

fuzz_target!(init: memlens_fuzz::seeds::write_if_asked("objects"), |data: &[u8]| {
    let mut c = Cursor::new(data);
    let op = c.u8() % OPS;
    let l = memlens_fuzz::layout(c.u8());
    let addr = BASE + u64::from(c.u16());
    let param = c.u8();
    let image = c.rest();
    let mem = memlens_fuzz::image::Memory::new(image);
    // Objects are read at addresses in the image: every distinct object is 8-aligned there.
    let words = image.len() as u64 / 8 + 1;
    match op {
        0 => {
            let max = usize::from(param) * 8;
            if let Ok(s) = objects::read_str(&mem, l, addr, max) {
                // (legacy, non-compact strings read as a "<str>" placeholder)
                let n = s.chars().count();
                assert!(n <= max || s == "<str>", "{n} chars > {max}");
            }
        }
        1 => {
            let max = usize::from(param) * 8;
            if let Ok(b) = objects::read_bytes(&mem, l, addr, max) {
                assert!(b.len() <= max);
            }
        }
        2 => {
            if let Ok(name) = objects::type_name(&mem, l, addr) {
                assert!(name.chars().count() <= objects::MAX_NAME);
            }
        }
        3 => {
            if let Ok(d) = dicts::read_dict(&mem, l, addr) {
                // every item was read from an entry in the image
                assert!(d.items.len() as u64 <= words, "{} items", d.items.len());
                assert!(d.items.iter().all(|(k, v)| *k != 0 && *v != 0));
            }
        }
        4 => {
            let _ = dicts::keys_size(&mem, l, addr);
        }
        5 => {
            // A walk visits each node once and ends: at its head, or with an error.
            let mut seen = std::collections::HashSet::new();
            let mut repeated = None;
            let r = gc::walk_list(&mem, 0, addr, l.gc_head_size, words, |o| {
                if !seen.insert(o) && repeated.is_none() {
                    repeated = Some(o);
                }
                Ok(())
            });
            if let Ok(n) = r {
                assert!(n <= words, "{n} objects in {words} words");
                assert_eq!(repeated, None, "a node visited twice");
            }
        }
        6 => {
            let (first, at, table) = line_args(image);
            let fresh = |at| linetable::lnotab_line(table, first, at);
            let mut cur = linetable::Cursor::new(first);
            for at in [at, second(at, param)] {
                assert_eq!(linetable::lnotab_line_at(table, first, at, &mut cur), fresh(at));
            }
        }
        7 => {
            let (first, at, table) = line_args(image);
            let fresh = |at| linetable::linetable310_line(table, first, at);
            let mut cur = linetable::Cursor::new(first);
            for at in [at, second(at, param)] {
                assert_eq!(linetable::linetable310_line_at(table, first, at, &mut cur), fresh(at));
            }
        }
        _ => {
            let (first, at, table) = line_args(image);
            let fresh = |at| linetable::location_line(table, first, at);
            let mut cur = linetable::Cursor::new(first);
            for at in [at, second(at, param)] {
                assert_eq!(linetable::location_line_at(table, first, at, &mut cur), fresh(at));
            }
            let _ = objects::decode_str(table, u32::from(param % 5));
        }
    }
});

/// A second position to look up from the first lookup's cursor (linetable.rs: it must give
/// what a lookup from the table's start gives): before or after the first, by `param`.
fn second(at: i64, param: u8) -> i64 {
    at.wrapping_add(i64::from(param) - 64)
}

/// `co_firstlineno` is a C int; the position is whatever the frame says.
fn line_args(image: &[u8]) -> (i64, i64, &[u8]) {
    let mut c = Cursor::new(image);
    let first = i64::from(c.u32() as i32);
    let at = c.u64() as i64;
    (first, at, c.rest())
}
