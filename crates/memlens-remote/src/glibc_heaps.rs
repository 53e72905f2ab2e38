//! glibc's malloc heaps of the arenas other than the main one, walked chunk by chunk from
//! outside (docs/advice.md, `malloc-arenas`): how many bytes of each heap are in allocated
//! chunks and how many are free.
//!
//! A thread's first `malloc` gives it an arena of its own (up to 8 per core on 64-bit,
//! `MALLOC_ARENA_MAX`): its memory comes from heaps, each an mmap of at most 64 MiB aligned on
//! 64 MiB (`HEAP_MAX_SIZE`), the part in use read-write and the rest `PROT_NONE`. A heap starts
//! with a `heap_info` (`ar_ptr`, `prev`, `size`, `mprotect_size`, and from glibc 2.35
//! `pagesize`: 32 or 48 bytes); an arena's first heap holds the arena's `malloc_state` right
//! after it (2,200 bytes on 64-bit from glibc 2.27, 2,112 in 2.43), then the chunks; a later heap holds the
//! chunks right after its `heap_info`. Each chunk has its size in the word before its data
//! (low 3 bits are flags); a chunk is free when the next chunk's `PREV_INUSE` bit is clear;
//! the last chunk (the arena's `top`) reaches the heap's `size`, or, in a heap the arena grew
//! out of, two fence posts (16 and 0 bytes) end it.
//!
//! Nothing here is taken on trust: a walk must end exactly where the heap's `size` says (or at
//! its fence posts), with every chunk size a multiple of 16 of at least 32 bytes; any other
//! shape is a failed walk ([`WalkError`]), counted by the caller, never a figure. Chunks that
//! sit in a fast bin or the thread cache look allocated: the free bytes are a lower bound.

use crate::memory::ProcessMemory;

/// The size and alignment of a glibc heap on 64-bit (`HEAP_MAX_SIZE`).
pub const HEAP_MAX: u64 = 64 << 20;
/// The sizes `sizeof(struct malloc_state)` has had on 64-bit: 2,200 bytes from glibc 2.27,
/// 2,112 without the fast bins (2.43, Debian sid). The walk that ends where the heap does
/// tells which.
const MALLOC_STATE: [u64; 2] = [2200, 2112];
/// The sizes `sizeof(heap_info)` has had (before and from glibc 2.35).
const HEAP_INFO: [u64; 2] = [48, 32];
const MINSIZE: u64 = 32;
const ALIGN: u64 = 16;
const PREV_INUSE: u64 = 1;
/// Bytes read at once while walking (headers of small chunks come from one read).
const BLOCK: u64 = 64 << 10;

/// One heap, walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    /// Its address (64 MiB aligned).
    pub start: u64,
    /// Its arena (`ar_ptr`): heaps of one arena share it.
    pub arena: u64,
    /// Bytes in use by the heap (`heap_info.size`).
    pub size: u64,
    /// Bytes in allocated chunks (headers included).
    pub used: u64,
    /// Bytes in free chunks, the top chunk included.
    pub free: u64,
    /// Chunks walked.
    pub chunks: u64,
}

/// Why a heap could not be walked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkError {
    /// A read failed.
    Read(String),
    /// What was read is not a glibc heap of the shape described above.
    Shape(String),
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkError::Read(e) => write!(f, "read failed: {e}"),
            WalkError::Shape(e) => write!(f, "not a glibc heap: {e}"),
        }
    }
}

/// Whether a mapping could be a non-main arena's heap: anonymous, read-write, at a 64 MiB
/// aligned address, at most 64 MiB long (the caller checks anonymity and permissions).
pub fn could_be_heap(start: u64, end: u64) -> bool {
    start % HEAP_MAX == 0 && end > start && end - start <= HEAP_MAX
}

/// Reads headers through blocks of [`BLOCK`] bytes, never past `end`.
struct Blocks<'a, M> {
    mem: &'a M,
    end: u64,
    at: u64,
    buf: Vec<u8>,
}

impl<M: ProcessMemory> Blocks<'_, M> {
    fn word(&mut self, addr: u64) -> Result<u64, WalkError> {
        let in_buf = addr >= self.at && addr + 8 <= self.at + self.buf.len() as u64;
        if !in_buf {
            let len = BLOCK.min(self.end.saturating_sub(addr));
            if len < 8 {
                return Err(WalkError::Shape(format!(
                    "a header at {addr:#x} past the heap"
                )));
            }
            self.buf.resize(len as usize, 0);
            self.mem
                .read(addr, &mut self.buf)
                .map_err(|e| WalkError::Read(e.to_string()))?;
            self.at = addr;
        }
        let off = (addr - self.at) as usize;
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.buf[off..off + 8]);
        Ok(u64::from_ne_bytes(w))
    }
}

/// Walks the heap at `start`, a read-write mapping of `mapped` bytes.
pub fn walk<M: ProcessMemory>(mem: &M, start: u64, mapped: u64) -> Result<Heap, WalkError> {
    let read = |at: u64| mem.read_u64(at).map_err(|e| WalkError::Read(e.to_string()));
    let arena = read(start)?;
    let size = read(start + 16)?;
    let mprotect_size = read(start + 24)?;
    if size < 4096 || size > mapped || size > HEAP_MAX || size % 4096 != 0 {
        return Err(WalkError::Shape(format!(
            "heap_info.size {size} in a mapping of {mapped} bytes"
        )));
    }
    if mprotect_size < size || mprotect_size > HEAP_MAX {
        return Err(WalkError::Shape(format!(
            "heap_info.mprotect_size {mprotect_size} with size {size}"
        )));
    }
    let end = start + size;
    // the arena's first heap holds its malloc_state right after heap_info
    let firsts: Vec<u64> = if HEAP_INFO.iter().any(|&h| arena == start + h) {
        MALLOC_STATE
            .iter()
            .map(|&m| (arena + m).div_ceil(ALIGN) * ALIGN)
            .collect()
    } else {
        HEAP_INFO.iter().map(|&h| start + h).collect()
    };
    let mut last = None;
    for first in firsts {
        match walk_chunks(mem, first, end) {
            Ok((used, free, chunks)) => {
                return Ok(Heap {
                    start,
                    arena,
                    size,
                    used,
                    free,
                    chunks,
                })
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| WalkError::Shape("no first chunk".into())))
}

/// Walks the chunks from `first` to `end`: (bytes allocated, bytes free, chunks).
fn walk_chunks<M: ProcessMemory>(
    mem: &M,
    first: u64,
    end: u64,
) -> Result<(u64, u64, u64), WalkError> {
    let mut blocks = Blocks {
        mem,
        end,
        at: 0,
        buf: Vec::new(),
    };
    let (mut used, mut free, mut chunks) = (0u64, 0u64, 0u64);
    let mut c = first;
    // the size of the chunk before `c`, whose state `c`'s PREV_INUSE bit tells
    let mut pending: Option<u64> = None;
    loop {
        let head = blocks.word(c + 8)?;
        let size = head & !7;
        if let Some(prev) = pending.take() {
            if head & PREV_INUSE == 0 {
                free += prev;
            } else {
                used += prev;
            }
        }
        chunks += 1;
        // fence posts of a heap the arena grew out of: 16 bytes then 0, at its end
        if size == 16 {
            let next = blocks.word(c + 16 + 8)?;
            if next & !7 == 0 && end - c <= MINSIZE + 16 + ALIGN {
                return Ok((used, free, chunks));
            }
        }
        if size < MINSIZE || size % ALIGN != 0 || c + size > end {
            return Err(WalkError::Shape(format!(
                "a chunk of {size} bytes at {c:#x} (heap end {end:#x})"
            )));
        }
        if c + size == end {
            free += size; // the top chunk
            return Ok((used, free, chunks));
        }
        pending = Some(size);
        c += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::SliceMemory;

    const START: u64 = 0x7f00_0000_0000;

    /// A heap of `size` bytes whose chunks (after the arena's malloc_state) are `chunks`
    /// (size, in use), the last one the top.
    fn heap(size: u64, chunks: &[(u64, bool)]) -> SliceMemory {
        heap_at(
            size,
            START + 48,
            (48 + MALLOC_STATE[0]).div_ceil(16) * 16,
            chunks,
        )
    }

    /// A heap whose `ar_ptr` is `arena` and whose chunks start at offset `first`.
    fn heap_at(size: u64, arena: u64, first: u64, chunks: &[(u64, bool)]) -> SliceMemory {
        let mut b = vec![0u8; size as usize];
        let put = |b: &mut Vec<u8>, at: u64, v: u64| {
            b[at as usize..at as usize + 8].copy_from_slice(&v.to_ne_bytes())
        };
        put(&mut b, 0, arena);
        put(&mut b, 16, size);
        put(&mut b, 24, size);
        let mut at = first;
        let mut prev_in_use = true;
        for &(s, in_use) in chunks {
            put(&mut b, at + 8, s | u64::from(prev_in_use));
            prev_in_use = in_use;
            at += s;
        }
        let mut m = SliceMemory::new();
        m.map(START, b);
        m
    }

    #[test]
    fn a_heap_walk_counts_used_and_free_chunks() {
        let first = (48 + MALLOC_STATE[0]).div_ceil(16) * 16;
        let top = 65536 - first - 4096 - 256 - 4096;
        let m = heap(
            65536,
            &[(4096, true), (256, false), (4096, true), (top, false)],
        );
        let h = walk(&m, START, 65536).expect("walks");
        assert_eq!((h.used, h.free, h.chunks), (8192, 256 + top, 4));
        assert_eq!(h.arena, START + 48);
    }

    /// glibc 2.43's malloc_state (no fast bins); a later heap of an arena, ended by fence
    /// posts (its chunks right after a 32-byte heap_info, as before glibc 2.35).
    #[test]
    fn other_malloc_states_and_fence_posts() {
        let first = (48 + MALLOC_STATE[1]).div_ceil(16) * 16;
        let top = 65536 - first - 4096;
        let m = heap_at(65536, START + 48, first, &[(4096, true), (top, false)]);
        let h = walk(&m, START, 65536).expect("walks a 2.43 heap");
        assert_eq!((h.used, h.free), (4096, top));
        // chunks from offset 32; the last 48 bytes: fence posts of 16 and 0 bytes
        let body = 65536 - 32 - 48;
        let m = heap_at(
            65536,
            0x7e00_0000_0030,
            32,
            &[(4096, true), (body - 4096, false), (16, true), (0, true)],
        );
        let h = walk(&m, START, 65536).expect("walks a grown-out heap");
        // the fence posts are neither allocated nor free
        assert_eq!(
            (h.used, h.free, h.arena),
            (4096, body - 4096, 0x7e00_0000_0030)
        );
    }

    #[test]
    fn a_walk_that_does_not_end_at_the_heap_size_fails() {
        let m = heap(65536, &[(4096, true), (4096, false)]);
        assert!(matches!(walk(&m, START, 65536), Err(WalkError::Shape(_))));
        // a size beyond the mapping
        assert!(walk(&m, START, 8192).is_err());
        // nothing mapped
        assert!(matches!(
            walk(&SliceMemory::new(), START, 65536),
            Err(WalkError::Read(_))
        ));
    }

    #[test]
    fn heaps_are_64_mib_aligned() {
        assert!(could_be_heap(START, START + (132 << 10)));
        assert!(!could_be_heap(START + 4096, START + (132 << 10)));
        assert!(!could_be_heap(START, START + (65 << 20)));
    }
}
