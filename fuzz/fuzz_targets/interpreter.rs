//! The walks over a whole interpreter on arbitrary memory: the object census
//! (`census::take`, with the advice tallies, then `--referrers` of its most common type), the GC state, `sys.modules`, pymalloc's arenas and the thread/frame walk.
//! The interpreter is built from parts (`Interpreter::from_parts`) as `image::Header` says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memlens_cpython::{gc, modules, pymalloc, threads};
use memlens_fuzz::image::{self, Header};
use memlens_fuzz::Cursor;

const OPS: u8 = 5;

fuzz_target!(init: memlens_fuzz::seeds::write_if_asked("interpreter"), |data: &[u8]| {
    let mut c = Cursor::new(data);
    let h = Header::decode(&mut c);
    let bytes = c.rest();
    let (it, mem) = image::interpreter(&h, bytes);
    // Everything counted was read at a distinct 8-aligned address of the image.
    let words = bytes.len() as u64 / 8 + 1;
    match h.op % OPS {
        0 => {
            if let Ok(cs) = image::census(&it, &mem, bytes.len()) {
                assert_eq!(cs.objects, cs.types.iter().map(|t| t.count).sum::<u64>());
                assert_eq!(cs.bytes, cs.types.iter().map(|t| t.bytes).sum::<u64>());
                assert!(cs.types.iter().all(|t| t.count > 0));
                assert!(cs.objects <= words, "{} objects in {words} words", cs.objects);
                // `--referrers` of the most common type the census found (the same image):
                // every instance counted was reached at its own address, on one chain.
                if let Some(t) = cs.types.iter().max_by_key(|t| t.count) {
                    if let Ok(r) = image::referrers(&it, &mem, bytes.len(), &t.type_name) {
                        let on_chains: u64 = r.chains.iter().map(|c| c.instances).sum();
                        assert_eq!(on_chains, r.instances, "every chain kept (top 0)");
                        assert!(r.instances <= r.objects_reached.max(r.instances));
                        assert!(r.objects_reached <= words, "{} reached", r.objects_reached);
                    }
                }
            }
        }
        1 => {
            if let Ok(g) = gc::read(&it, &mem) {
                assert_eq!(g.generations.len(), 3);
                assert!(g.frozen <= words);
            }
        }
        2 => {
            if let Ok(m) = modules::read(&it, &mem) {
                assert!(m.names.len() as u64 <= words);
            }
        }
        3 => {
            if let Ok(p) = pymalloc::read(&it, &mem) {
                assert_eq!(p.arena_ranges.len() as u64, p.arenas);
                let per_arena = it.layout.arena_size / it.layout.pool_size;
                assert!(p.pools <= p.arenas * per_arena);
                let total = p.arenas * p.arena_size;
                assert_eq!(p.free_bytes, total.saturating_sub(p.used_bytes));
                for (s, e) in &p.arena_ranges {
                    assert_eq!(e - s, p.arena_size);
                }
            }
        }
        _ => {
            if let Ok(ts) = threads::threads(&it, &mem) {
                // each thread state (frame) was read at its own address of the image
                let cycle = ts.len() as u64 > words
                    || ts.iter().any(|t| t.frames.len() as u64 > words);
                assert!(!cycle, "a cycle of thread states or frames was followed");
                assert!(ts.len() as u64 <= words, "{} threads", ts.len());
                for t in ts {
                    assert!(t.frames.len() as u64 <= words, "{} frames", t.frames.len());
                }
            }
        }
    }
});
