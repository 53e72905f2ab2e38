//! pymalloc's arenas and pools, computed as `sys._debugmallocstats()` does.

use std::sync::Mutex;

use serde::Serialize;

use memlens_remote::ProcessMemory;

use crate::error::{Error, Result};
use crate::process::Interpreter;

/// pymalloc's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pymalloc {
    /// Arenas allocated now (`# arenas allocated current`).
    pub arenas: u64,
    /// Pools carved out of those arenas (in use, or empty and kept for reuse).
    pub pools: u64,
    /// Bytes in allocated blocks.
    pub used_bytes: u64,
    /// Arena bytes not in allocated blocks: free blocks, empty and uncarved pools, pool
    /// headers, alignment (so `used_bytes + free_bytes` = arenas × arena size).
    pub free_bytes: u64,
    /// Bytes per arena.
    pub arena_size: u64,
    /// Each arena's `[start, end)` in the process.
    #[serde(skip)]
    pub arena_ranges: Vec<(u64, u64)>,
}

/// Where the arena table is.
#[derive(Debug, Clone, Copy)]
struct ArenaTable {
    arenas: u64,
    maxarenas: u64,
}

fn table<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<ArenaTable> {
    let l = it.layout;
    if let (Some(obm), Some(a), Some(m)) =
        (l.interp_obmalloc, l.obmalloc_arenas, l.obmalloc_maxarenas)
    {
        // 3.12 embeds the state in the interpreter; 3.13 points to it.
        let state = if it.version.minor == 12 {
            it.interp + obm
        } else {
            mem.read_u64(it.interp + obm)?
        };
        return Ok(ArenaTable {
            arenas: mem.read_u64(state + a)?,
            maxarenas: u64::from(mem.read_u32(state + m)?),
        });
    }
    // 3.8-3.11: file statics of obmalloc.c, named in .symtab when not stripped
    let in_bss = |name: &str| {
        it.elf
            .symbols_named(name)
            .iter()
            .map(|s| s.address.wrapping_add(it.bias))
            .next()
    };
    if let (Some(a), Some(m)) = (in_bss("arenas"), in_bss("maxarenas")) {
        return Ok(ArenaTable {
            arenas: mem.read_u64(a)?,
            maxarenas: u64::from(mem.read_u32(m)?),
        });
    }
    scan_for_table(it, mem)
}

/// Where the scan of [`scan_for_table`] found the pointer to the arena array, by process and
/// load bias, so the next read of the same process reads one word instead of scanning `.bss`
/// (megabytes) again. Bounded; a stale entry (a PID reused) fails the shape check and is
/// replaced by a new scan.
static FOUND_SLOTS: Mutex<Vec<((u32, u64), u64)>> = Mutex::new(Vec::new());
const FOUND_SLOTS_MAX: usize = 256;

fn cached_slot(key: (u32, u64)) -> Option<u64> {
    let slots = FOUND_SLOTS.lock().ok()?;
    slots.iter().find(|(k, _)| *k == key).map(|(_, s)| *s)
}

fn remember_slot(key: (u32, u64), slot: u64) {
    if let Ok(mut slots) = FOUND_SLOTS.lock() {
        slots.retain(|(k, _)| *k != key);
        if slots.len() >= FOUND_SLOTS_MAX {
            slots.remove(0);
        }
        slots.push((key, slot));
    }
}

/// Whether `p` points to a heap block shaped like pymalloc's arena array: its glibc chunk
/// header gives room for whole `arena_object`s, each either unused (`address == 0`) or shaped
/// like a live arena (`pool_address` inside it, total pools one arena's worth, free pools no
/// more than total), with at least one live arena.
fn arena_array_at<M: ProcessMemory>(it: &Interpreter, mem: &M, p: u64) -> Option<ArenaTable> {
    let l = it.layout;
    let per_arena = l.arena_size / l.pool_size;
    if p == 0 || p % 16 != 0 {
        return None;
    }
    let header = mem.read_u64(p - 8).ok()?;
    let mmapped = header & 2 != 0;
    let chunk = header & !7;
    let overhead = if mmapped { 16 } else { 8 };
    if chunk < l.arena_size_of + overhead || chunk > 1 << 32 {
        return None;
    }
    let n = (chunk - overhead) / l.arena_size_of;
    let raw = mem.read_vec(p, (n * l.arena_size_of) as usize).ok()?;
    let mut live = 0;
    for e in raw.chunks_exact(l.arena_size_of as usize) {
        let rd = |at: u64, w: usize| {
            let at = at as usize;
            let mut b = [0u8; 8];
            b[..w].copy_from_slice(&e[at..at + w]);
            u64::from_ne_bytes(b)
        };
        let address = rd(l.arena_address, 8);
        if address == 0 {
            continue;
        }
        let pool_address = rd(l.arena_pool_address, 8);
        let total = rd(l.arena_ntotalpools, 4);
        let free = rd(l.arena_nfreepools, 4);
        let shaped = pool_address >= address
            && pool_address <= address + l.arena_size
            && (total == per_arena || total + 1 == per_arena)
            && free <= total;
        if !shaped {
            return None;
        }
        live += 1;
    }
    (live > 0).then_some(ArenaTable {
        arenas: p,
        maxarenas: n,
    })
}

/// Stripped 3.8-3.11 (e.g. Debian's static python3.11): look in `.bss` for the pointer to the
/// arena array ([`arena_array_at`]). Exactly one candidate must pass. Where it was found is
/// remembered for the process.
fn scan_for_table<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<ArenaTable> {
    let not_found = |why: &str| Error::Invalid {
        pid: it.pid,
        why: format!("pymalloc arena table not found in a stripped binary: {why}"),
    };
    let key = (it.pid, it.bias);
    if let Some(slot) = cached_slot(key) {
        if let Some(t) = mem
            .read_u64(slot)
            .ok()
            .and_then(|p| arena_array_at(it, mem, p))
        {
            return Ok(t);
        }
    }
    let bss = it.elf.section(".bss").ok_or_else(|| not_found("no .bss"))?;
    let start = bss.address.wrapping_add(it.bias);
    let words = mem.read_vec(start, bss.size.min(16 << 20) as usize)?;
    let mut found: Vec<(ArenaTable, u64)> = Vec::new();
    for (k, w) in words.chunks_exact(8).enumerate() {
        let p = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        if found.iter().any(|(t, _)| t.arenas == p) {
            continue;
        }
        if let Some(t) = arena_array_at(it, mem, p) {
            found.push((t, start + 8 * k as u64));
        }
    }
    match found.as_slice() {
        [(one, slot)] => {
            remember_slot(key, *slot);
            Ok(*one)
        }
        [] => Err(not_found(
            "no candidate (is pymalloc in use? PYTHONMALLOC=malloc disables it)",
        )),
        _ => Err(not_found("several candidates")),
    }
}

/// The live arenas: `(address, pool_address)` of each, from one read of the arena table.
fn live_arenas<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<Vec<(u64, u64)>> {
    it.layout.require_tables("pymalloc")?;
    let l = it.layout;
    let t = table(it, mem)?;
    if t.arenas == 0 || t.maxarenas == 0 {
        return Ok(Vec::new());
    }
    if t.maxarenas > 1 << 24 {
        return Err(Error::Invalid {
            pid: it.pid,
            why: format!("{} arenas is not plausible", t.maxarenas),
        });
    }
    let raw = mem.read_vec(t.arenas, (t.maxarenas * l.arena_size_of) as usize)?;
    let word = |e: &[u8], at: u64| {
        let at = at as usize;
        let mut b = [0u8; 8];
        b.copy_from_slice(&e[at..at + 8]);
        u64::from_ne_bytes(b)
    };
    Ok(raw
        .chunks_exact(l.arena_size_of as usize)
        .map(|e| (word(e, l.arena_address), word(e, l.arena_pool_address)))
        .filter(|&(address, _)| address != 0)
        .collect())
}

/// Each live arena's `[start, end)`, from one read of the arena table and nothing else: what a
/// ledger needs to sort the `python-heap` row, at a small fraction of the cost of [`read`]
/// (which also reads every pool header).
pub fn arena_ranges<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<Vec<(u64, u64)>> {
    let size = it.layout.arena_size;
    Ok(live_arenas(it, mem)?
        .into_iter()
        .map(|(address, _)| (address, address + size))
        .collect())
}

/// Reads pymalloc's arenas and the pool headers of each.
pub fn read<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<Pymalloc> {
    let l = it.layout;
    let mut out = Pymalloc {
        arenas: 0,
        pools: 0,
        used_bytes: 0,
        free_bytes: 0,
        arena_size: l.arena_size,
        arena_ranges: Vec::new(),
    };
    let mut pools: Vec<u64> = Vec::new();
    for (address, pool_address) in live_arenas(it, mem)? {
        out.arenas += 1;
        out.arena_ranges.push((address, address + l.arena_size));
        let first = address.div_ceil(l.pool_size) * l.pool_size;
        let mut p = first;
        while p + l.pool_size <= pool_address.min(address + l.arena_size) {
            pools.push(p);
            p += l.pool_size;
        }
    }
    out.pools = pools.len() as u64;
    let hdr = (l.pool_szidx + 4) as usize;
    let mut bufs = vec![0u8; hdr * pools.len()];
    let mut reqs: Vec<(u64, &mut [u8])> = pools
        .iter()
        .zip(bufs.chunks_exact_mut(hdr))
        .map(|(p, b)| (*p, b))
        .collect();
    let results = mem.read_many(&mut reqs);
    drop(reqs);
    let align = l.pymalloc_alignment;
    for (b, r) in bufs.chunks_exact(hdr).zip(results) {
        if r.is_err() {
            continue;
        }
        let u32_at = |at: u64| {
            let at = at as usize;
            u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
        };
        let count = u64::from(u32_at(l.pool_count));
        let szidx = u64::from(u32_at(l.pool_szidx));
        if count > 0 && szidx < 64 {
            out.used_bytes += count * (szidx + 1) * align;
        }
    }
    out.free_bytes = (out.arenas * l.arena_size).saturating_sub(out.used_bytes);
    Ok(out)
}
