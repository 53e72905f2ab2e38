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

/// Reads the collector's state.
pub fn read<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<GcState> {
    let l = it.layout;
    let state = state_address(it)?;
    let mut generations = Vec::with_capacity(3);
    for i in 0..3u64 {
        let g = list_head(it, state, i);
        let s = state + l.gc_stats + i * l.gc_stats_size;
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
