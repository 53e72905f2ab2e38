//! The garbage collector's state: generations, statistics, the frozen (permanent) generation.

use memlens_remote::ProcessMemory;

use crate::error::{Error, Result};
use crate::process::Interpreter;

/// The smallest GC object: a `PyGC_Head` and a bare `PyObject` header. A list cannot hold more
/// objects than the process's readable memory divided by this.
pub const MIN_GC_OBJECT: u64 = 32;

pub use memlens_model::python::{GcState, Generation};

/// Address of the `_gc_runtime_state` of the main interpreter.
pub fn state_address(it: &Interpreter) -> Result<u64> {
    match (it.layout.interp_gc, it.layout.runtime_gc) {
        (Some(off), _) => Ok(it.interp + off),
        (None, Some(off)) => Ok(it.runtime + off),
        _ => Err(Error::Unsupported {
            what: format!("no GC layout for CPython {}", it.version),
        }),
    }
}

/// Address of the list head of generation `i` (0..3), or the permanent one for 3.
pub fn list_head(it: &Interpreter, state: u64, i: u64) -> u64 {
    let l = it.layout;
    if i < 3 {
        state.wrapping_add(l.gc_generations + i * l.gc_generation_size)
    } else {
        state.wrapping_add(l.gc_permanent)
    }
}

/// Walks a circular GC list, calling `f` with each object's address; returns the count.
///
/// Bounded whatever the list holds: a null link, a loop that does not pass the head (found by
/// Brent's cycle detection, in constant memory, within twice the loop's length) or more than
/// `max_nodes` objects stop it with [`Error::BrokenGcList`]. An error from `f` stops it too.
pub fn walk_list<M: ProcessMemory>(
    mem: &M,
    pid: u32,
    head: u64,
    gc_head_size: u64,
    max_nodes: u64,
    mut f: impl FnMut(u64) -> Result<()>,
) -> Result<u64> {
    let broken = |after: u64, why: &'static str| Error::BrokenGcList {
        pid,
        head,
        after,
        why,
    };
    let mut node = mem.read_u64(head)? & !3;
    let mut n = 0u64;
    // Brent: `tortoise` jumps to the current node at each power of two of steps
    let (mut tortoise, mut power, mut steps) = (head, 1u64, 0u64);
    while node != head {
        if node == 0 {
            return Err(broken(n, "a null link"));
        }
        if node >= 1 << 57 {
            return Err(broken(n, "a link outside the address space"));
        }
        if node == tortoise {
            return Err(broken(n, "a loop that does not pass the head"));
        }
        if n >= max_nodes {
            return Err(broken(n, "more objects than the process's memory holds"));
        }
        let next = match mem.read_u64(node) {
            Ok(next) => next & !3,
            Err(memlens_remote::Error::Unreadable { .. }) => {
                return Err(broken(n, "an unreadable link"))
            }
            Err(e) => return Err(e.into()),
        };
        mem.prefetch(next);
        f(node + gc_head_size)?;
        n += 1;
        steps += 1;
        if steps == power {
            tortoise = node;
            power = power.saturating_mul(2);
            steps = 0;
        }
        node = next;
    }
    Ok(n)
}

/// Address of generation `i`'s statistics record (`gc.get_stats()[i]`): an array inside the
/// state up to 3.14; from 3.15 the current record of that generation's ring of cumulative
/// records, behind a pointer.
fn stats_record<M: ProcessMemory>(it: &Interpreter, mem: &M, state: u64, i: u64) -> Result<u64> {
    let l = it.layout;
    let (
        Some(young),
        Some(old),
        Some(old_size),
        Some(young_items),
        Some(old_items),
        Some(young_index),
        Some(old_index),
        Some(young_slots),
        Some(old_slots),
    ) = (
        l.gc_stats_young,
        l.gc_stats_old,
        l.gc_stats_old_size,
        l.gc_stats_young_items,
        l.gc_stats_old_items,
        l.gc_stats_young_index,
        l.gc_stats_old_index,
        l.gc_stats_young_slots,
        l.gc_stats_old_slots,
    )
    else {
        return Ok(state.wrapping_add(l.gc_stats + i * l.gc_stats_size));
    };
    let rings = mem.read_u64(state.wrapping_add(l.gc_stats))?;
    let (ring, items, index, slots) = if i == 0 {
        (rings + young, young_items, young_index, young_slots)
    } else {
        (
            rings + old + (i - 1) * old_size,
            old_items,
            old_index,
            old_slots,
        )
    };
    let at = u64::from(mem.read_u8(ring + index)?);
    if at >= slots {
        return Err(Error::Invalid {
            pid: it.pid,
            why: format!("GC statistics ring {i} at {ring:#x} has index {at} of {slots}"),
        });
    }
    Ok(ring + items + at * l.gc_stats_size)
}

/// The most objects a GC list of a process with `readable` bytes of readable memory can hold.
pub fn max_list_len(readable: u64) -> u64 {
    readable / MIN_GC_OBJECT + 1
}

/// Reads the collector's state.
pub fn read<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<GcState> {
    it.layout.require_tables("the GC state")?;
    let l = it.layout;
    let state = state_address(it)?;
    let mut generations = Vec::with_capacity(3);
    for i in 0..3u64 {
        let g = list_head(it, state, i);
        let s = stats_record(it, mem, state, i)?;
        generations.push(Generation {
            count: i64::from(mem.read_i32(g.wrapping_add(l.gc_generation_count))?),
            threshold: i64::from(mem.read_i32(g.wrapping_add(l.gc_generation_threshold))?),
            collections: mem.read_i64(s.wrapping_add(l.gc_stats_collections))?,
            collected: mem.read_i64(s.wrapping_add(l.gc_stats_collected))?,
            uncollectable: mem.read_i64(s.wrapping_add(l.gc_stats_uncollectable))?,
        });
    }
    let collecting = mem.read_i32(state.wrapping_add(l.gc_collecting))? != 0;
    // no mapping holds more than 2^47 bytes on the architectures memlens reads
    let frozen = walk_list(
        mem,
        it.pid,
        list_head(it, state, 3),
        l.gc_head_size,
        max_list_len(1 << 47),
        |_| Ok(()),
    )?;
    Ok(GcState {
        generations,
        frozen,
        collecting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use memlens_remote::SliceMemory;

    /// A list of nodes 32 bytes apart at `base`: `links[i]` is the next node's index, or `None`
    /// for the head (node 0 is the head).
    fn list(base: u64, links: &[Option<usize>]) -> SliceMemory {
        let mut bytes = vec![0u8; links.len() * 32];
        for (i, l) in links.iter().enumerate() {
            let next = l.map_or(0, |j| base + j as u64 * 32);
            bytes[i * 32..i * 32 + 8].copy_from_slice(&next.to_ne_bytes());
        }
        let mut m = SliceMemory::new();
        m.map(base, bytes);
        m
    }

    #[test]
    fn walks_a_closed_list_and_stops_at_every_kind_of_break() {
        let base = 0x10_0000;
        let m = list(base, &[Some(1), Some(2), Some(3), Some(0)]);
        let mut seen = Vec::new();
        let n = walk_list(&m, 42, base, 16, 100, |o| {
            seen.push(o);
            Ok(())
        });
        assert_eq!(n.ok(), Some(3));
        assert_eq!(seen, vec![base + 48, base + 80, base + 112]);

        // a loop that never passes the head: found, naming the process
        let m = list(
            base,
            &[Some(1), Some(2), Some(3), Some(4), Some(5), Some(2)],
        );
        let mut calls = 0;
        let e = walk_list(&m, 4242, base, 16, 1 << 40, |_| {
            calls += 1;
            Ok(())
        })
        .expect_err("a loop");
        assert!(matches!(e, Error::BrokenGcList { pid: 4242, .. }), "{e}");
        assert!(e.to_string().contains("process 4242"), "{e}");
        assert!(calls <= 16, "found within a few turns of the loop: {calls}");

        let m = list(base, &[Some(1), Some(2), None]);
        assert!(matches!(
            walk_list(&m, 1, base, 16, 100, |_| Ok(())),
            Err(Error::BrokenGcList {
                why: "a null link",
                ..
            })
        ));
        let m = list(base, &[Some(1), Some(2), Some(3), Some(0)]);
        assert!(matches!(
            walk_list(&m, 1, base, 16, 2, |_| Ok(())),
            Err(Error::BrokenGcList { after: 2, .. })
        ));
    }
}
