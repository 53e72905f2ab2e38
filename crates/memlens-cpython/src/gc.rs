//! The garbage collector's state: generations, statistics, the frozen (permanent) generation.

use serde::Serialize;

use memlens_remote::ProcessMemory;

use crate::error::{Error, Result};
use crate::process::Interpreter;

/// A bound on list walks, far above any real heap, so a corrupt list cannot loop forever.
pub const MAX_LIST: u64 = 1 << 32;

/// One generation, as `gc.get_count()`, `gc.get_threshold()` and `gc.get_stats()` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Generation {
    /// `gc.get_count()[i]` (allocations minus deallocations for 0, collections of the younger
    /// generation for 1 and 2; not an object count).
    pub count: i64,
    /// `gc.get_threshold()[i]`.
    pub threshold: i64,
    /// Collections of this generation.
    pub collections: i64,
    /// Objects collected.
    pub collected: i64,
    /// Objects found uncollectable.
    pub uncollectable: i64,
}

/// The collector's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcState {
    /// Generations 0, 1, 2.
    pub generations: Vec<Generation>,
    /// Objects in the permanent generation (`gc.get_freeze_count()`).
    pub frozen: u64,
    /// A collection is running (lists are in flux).
    pub collecting: bool,
}

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
        state + l.gc_generations + i * l.gc_generation_size
    } else {
        state + l.gc_permanent
    }
}

/// Walks a circular GC list, calling `f` with each object's address; returns the count.
pub fn walk_list<M: ProcessMemory>(
    mem: &M,
    head: u64,
    gc_head_size: u64,
    mut f: impl FnMut(u64),
) -> Result<u64> {
    let mut node = mem.read_u64(head)? & !3;
    let mut n = 0u64;
    while node != head {
        if node == 0 || n >= MAX_LIST {
            return Err(Error::Invalid {
                pid: 0,
                why: format!("GC list at {head:#x} is broken after {n} objects"),
            });
        }
        f(node + gc_head_size);
        n += 1;
        node = mem.read_u64(node)? & !3;
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
        return Ok(state + l.gc_stats + i * l.gc_stats_size);
    };
    let rings = mem.read_u64(state + l.gc_stats)?;
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
            count: i64::from(mem.read_i32(g + l.gc_generation_count)?),
            threshold: i64::from(mem.read_i32(g + l.gc_generation_threshold)?),
            collections: mem.read_i64(s + l.gc_stats_collections)?,
            collected: mem.read_i64(s + l.gc_stats_collected)?,
            uncollectable: mem.read_i64(s + l.gc_stats_uncollectable)?,
        });
    }
    let collecting = mem.read_i32(state + l.gc_collecting)? != 0;
    let frozen = walk_list(mem, list_head(it, state, 3), l.gc_head_size, |_| {})?;
    Ok(GcState {
        generations,
        frozen,
        collecting,
    })
}
