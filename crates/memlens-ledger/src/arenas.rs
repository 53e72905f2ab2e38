//! Reads a process's glibc arenas other than the main one for the `malloc-arenas` advice
//! (docs/advice.md): finds their heaps in the process's mappings, walks each one's chunks
//! (`memlens_remote::glibc_heaps`) in a short pause, and sums them per arena.

use std::collections::BTreeMap;

use memlens_model::arenas::{ArenaFigures, MallocArenas};
use memlens_remote::glibc_heaps;

/// Heap bytes walked at most per process (the walk reads the heaps it walks); heaps beyond
/// are counted as not walked.
const MAX_WALKED: u64 = 1 << 30;

/// The non-main arenas of `pid`; `None` when the process could not be read at all (gone, no
/// permission): said in the log, and no `malloc-arenas` advice follows.
pub fn read(pid: u32, nonblocking: bool) -> Option<MallocArenas> {
    let pause = if nonblocking {
        None
    } else {
        match memlens_remote::Pause::stop(pid) {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("pid {pid}: glibc arenas not read (pause failed: {e})");
                return None;
            }
        }
    };
    let out = read_now(pid);
    if let Some(a) = out.as_ref().filter(|a| a.unread_heaps > 0) {
        log::warn!(
            "pid {pid}: {} glibc heaps could not be walked (left out of the malloc-arenas figures)",
            a.unread_heaps
        );
    }
    if let Some(p) = pause {
        let stopped = p.resume();
        log::info!(
            "pid {pid}: glibc arenas read in a pause of {:.1} ms",
            stopped.as_secs_f64() * 1e3
        );
    }
    out
}

fn read_now(pid: u32) -> Option<MallocArenas> {
    let smaps = match memlens_procfs::Process::new(pid).and_then(|p| p.smaps()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("pid {pid}: glibc arenas not read (smaps: {e})");
            return None;
        }
    };
    let mem = match memlens_remote::RemoteMemory::open(pid) {
        Ok(m) => m,
        Err(e) => {
            log::warn!("pid {pid}: glibc arenas not read ({e})");
            return None;
        }
    };
    let mut arenas: BTreeMap<u64, ArenaFigures> = BTreeMap::new();
    let mut unread_arenas: Vec<u64> = Vec::new();
    let mut out = MallocArenas::default();
    let mut walked = 0u64;
    for m in &smaps {
        let e = &m.entry;
        if !(e.is_anonymous() && &e.perms == b"rw-p") {
            continue;
        }
        // a heap's read-write part starts at a 64 MiB boundary; the kernel may have merged it
        // with an anonymous mapping below, so every boundary inside the mapping is a candidate
        let mut at = e.start.div_ceil(glibc_heaps::HEAP_MAX) * glibc_heaps::HEAP_MAX;
        while at < e.end {
            let mapped = e.end.min(at + glibc_heaps::HEAP_MAX) - at;
            // the mapping's RSS bounds the heap's when the heap is the whole mapping
            let rss = if at == e.start && mapped == e.size() {
                m.counters.rss
            } else {
                u64::MAX
            };
            walk_one(
                pid,
                &mem,
                at,
                mapped,
                rss,
                &mut walked,
                &mut arenas,
                &mut unread_arenas,
                &mut out,
            );
            at += glibc_heaps::HEAP_MAX;
        }
    }
    // an arena with a heap not walked is left out whole
    for a in unread_arenas {
        arenas.remove(&a);
    }
    out.arenas = arenas.into_values().collect();
    Some(out)
}

/// Walks the heap candidate at `at` (`mapped` read-write bytes, `rss` resident at most).
#[allow(clippy::too_many_arguments)]
fn walk_one(
    pid: u32,
    mem: &memlens_remote::RemoteMemory,
    at: u64,
    mapped: u64,
    rss: u64,
    walked: &mut u64,
    arenas: &mut BTreeMap<u64, ArenaFigures>,
    unread_arenas: &mut Vec<u64>,
    out: &mut MallocArenas,
) {
    // only what looks like a heap_info is walked: a size no larger than the mapping
    let size = memlens_remote::ProcessMemory::read_u64(mem, at + 16).unwrap_or(0);
    if size == 0 || size > mapped {
        return;
    }
    if walked.saturating_add(size) > MAX_WALKED {
        out.unread_heaps += 1;
        return;
    }
    *walked += size;
    match glibc_heaps::walk(mem, at, mapped) {
        Ok(h) => {
            let a = arenas.entry(h.arena).or_default();
            a.heaps += 1;
            a.used += h.used;
            a.free += h.free;
            // free chunks never touched (or returned by malloc_trim) are not resident
            a.free_resident += h.free.min(rss.saturating_sub(h.used));
        }
        Err(glibc_heaps::WalkError::Shape(why)) => {
            // an aligned anonymous mapping that is not a heap (a large allocation, a pymalloc
            // arena) is not a failed read; a heap_info that points just past itself (an
            // arena's first heap) whose chunks do not add up is
            log::debug!("pid {pid}: mapping at {at:#x}: {why}");
            if looks_like_heap(mem, at) {
                out.unread_heaps += 1;
                unread_arenas.push(at + 48);
                unread_arenas.push(at + 32);
            }
        }
        Err(glibc_heaps::WalkError::Read(why)) => {
            log::debug!("pid {pid}: heap at {at:#x}: {why}");
            out.unread_heaps += 1;
        }
    }
}

/// Whether the word at `start` (`heap_info.ar_ptr`) points just past a `heap_info` at
/// `start`: the first heap of an arena, whatever its chunks say.
fn looks_like_heap(mem: &memlens_remote::RemoteMemory, start: u64) -> bool {
    memlens_remote::ProcessMemory::read_u64(mem, start)
        .is_ok_and(|p| p == start + 32 || p == start + 48)
}
