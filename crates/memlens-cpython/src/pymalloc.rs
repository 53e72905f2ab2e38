//! pymalloc's arenas and pools, computed as `sys._debugmallocstats()` does.

use std::sync::atomic::Ordering;

use memlens_remote::ProcessMemory;

use crate::error::{Error, Result};
use crate::process::Interpreter;

pub use memlens_model::python::Pymalloc;

/// The largest arena table read (bytes of `arena_object`s).
const MAX_TABLE_BYTES: u64 = 64 << 20;

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
        // 3.12 embeds the state in the interpreter; 3.13 points to it (the table says which)
        let state = if l.obmalloc_by_pointer == Some(1) {
            mem.read_u64(it.interp.wrapping_add(obm))?
        } else {
            it.interp.wrapping_add(obm)
        };
        if state >= crate::census::MAX_ADDR {
            return Err(Error::Invalid {
                pid: it.pid,
                why: format!("pymalloc's state pointer {state:#x} is not an address"),
            });
        }
        return Ok(ArenaTable {
            arenas: mem.read_u64(state.wrapping_add(a))?,
            maxarenas: u64::from(mem.read_u32(state.wrapping_add(m))?),
        });
    }
    // 3.8-3.11: file statics of obmalloc.c, named in .symtab when not stripped
    let elf = &it.binary.elf;
    let in_bss = |name: &str| {
        elf.symbols_named(name)
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
    // Stripped: where the scan found the pointer in another process of this binary.
    let link = it.binary.arena_pointer.load(Ordering::Relaxed);
    if link != 0 {
        let at = link.wrapping_add(it.bias);
        let p = mem.read_u64(at)?;
        if let Some(t) = table_at(it, mem, p) {
            return Ok(t);
        }
        log::debug!(
            "pid {}: no arena table at the known place {at:#x}; scanning",
            it.pid
        );
    }
    scan_for_table(it, mem)
}

/// The arena table `p` points to, if it looks like one: a heap block whose glibc chunk header
/// gives room for whole `arena_object`s, each either unused (`address == 0`) or shaped like a
/// live arena (`pool_address` inside it, total pools one arena's worth, free pools no more
/// than total), with at least one live arena.
fn table_at<M: ProcessMemory>(it: &Interpreter, mem: &M, p: u64) -> Option<ArenaTable> {
    let l = it.layout;
    if p == 0 || p % 16 != 0 {
        return None;
    }
    let header = mem.read_u64(p - 8).ok()?;
    let mmapped = header & 2 != 0;
    let chunk = header & !7;
    let overhead = if mmapped { 16 } else { 8 };
    // at most 64 MiB of arena objects (over a million arenas): a bound on what is copied
    if chunk < l.arena_size_of + overhead || chunk > MAX_TABLE_BYTES {
        return None;
    }
    let n = (chunk - overhead) / l.arena_size_of;
    let raw = mem.read_vec(p, (n * l.arena_size_of) as usize).ok()?;
    let per_arena = l.arena_size / l.pool_size;
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
            && pool_address <= address.saturating_add(l.arena_size)
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
/// arena array ([`table_at`] must accept exactly one candidate). Where it was found is kept with
/// the binary's findings, so other processes of the binary read it directly.
fn scan_for_table<M: ProcessMemory>(it: &Interpreter, mem: &M) -> Result<ArenaTable> {
    let not_found = |why: &str| Error::Invalid {
        pid: it.pid,
        why: format!("pymalloc arena table not found in a stripped binary: {why}"),
    };
    let bss = it
        .binary
        .elf
        .section(".bss")
        .ok_or_else(|| not_found("no .bss"))?;
    let start = bss.address.wrapping_add(it.bias);
    let words = mem.read_vec(start, bss.size.min(16 << 20) as usize)?;
    // The table is a malloc'd block: in the heap or an anonymous mapping, never in a file's
    // mapping (where most of .bss's pointers lead). Checking that first spares a read per word.
    let heaps: Vec<(u64, u64)> = crate::attach::read_maps(it.pid)
        .map(|maps| {
            maps.iter()
                .filter(|m| m.is_readable() && m.is_writable())
                .filter(|m| m.path.is_empty() || m.path == b"[heap]")
                .map(|m| (m.start, m.end))
                .collect()
        })
        .unwrap_or_default();
    let in_heap = |p: u64| heaps.is_empty() || heaps.iter().any(|&(s, e)| s < p && p < e);
    let mut found: Vec<(u64, ArenaTable)> = Vec::new();
    for (i, w) in words.chunks_exact(8).enumerate() {
        let p = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        if p == 0 || p % 16 != 0 || !in_heap(p) || found.iter().any(|(_, t)| t.arenas == p) {
            continue;
        }
        if let Some(t) = table_at(it, mem, p) {
            found.push((bss.address + 8 * i as u64, t));
        }
    }
    match found.as_slice() {
        [(link, one)] => {
            it.binary.arena_pointer.store(*link, Ordering::Relaxed);
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
        // an address no arena can have (its end would pass any user address): a torn read
        .filter(|&(address, _)| address < crate::census::MAX_ADDR)
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

/// Whether the process started with `PYTHONMALLOC` naming a system allocator (`malloc`,
/// `malloc_debug`, `mimalloc`...), where pymalloc's arenas stay empty.
fn pymalloc_bypassed(pid: u32) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    env.split(|b| *b == 0)
        .filter_map(|v| v.strip_prefix(b"PYTHONMALLOC="))
        .any(|v| !v.starts_with(b"pymalloc"))
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
    let arenas = live_arenas(it, mem)?;
    if arenas.is_empty() && !pymalloc_bypassed(it.pid) {
        // A running interpreter has objects in pymalloc's arenas: none means its state was
        // read before it was set up (a process still starting), not an empty heap.
        return Err(Error::Invalid {
            pid: it.pid,
            why: "pymalloc has no arena yet (the interpreter is still starting)".into(),
        });
    }
    for (address, pool_address) in arenas {
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
    let unread = results.iter().filter(|r| r.is_err()).count();
    if unread > 0 {
        // An arena freed (or its pages returned) between the table's read and its pools':
        // the used bytes would be too low, so there is no figure rather than a wrong one.
        return Err(Error::Invalid {
            pid: it.pid,
            why: format!(
                "{unread} of {} pymalloc pool headers could not be read (arenas changed while \
                 they were read)",
                pools.len()
            ),
        });
    }
    for b in bufs.chunks_exact(hdr) {
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
    if out.used_bytes == 0 && out.arenas > 0 {
        // pymalloc frees an arena once its last block is freed: arenas holding nothing are
        // a state read while the interpreter was still setting it up.
        return Err(Error::Invalid {
            pid: it.pid,
            why: format!(
                "pymalloc's {} arenas hold no block yet (the interpreter is still starting)",
                out.arenas
            ),
        });
    }
    out.free_bytes = (out.arenas * l.arena_size).saturating_sub(out.used_bytes);
    Ok(out)
}
