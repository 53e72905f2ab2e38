//! A read cache that copies the target's memory in large chunks, so that walking millions of
//! objects costs a few hundred system calls instead of millions.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::memory::ProcessMemory;

/// Chunk size: one pymalloc arena on 3.10+.
const CHUNK: u64 = 1 << 20;

/// A copied chunk: its start address and bytes (clipped to one readable region).
type Chunk = (u64, Vec<u8>);

/// Caches reads of `inner` in chunks clipped to the readable regions of the target.
pub struct CachedMemory<M> {
    inner: M,
    /// Readable `[start, end)` ranges, sorted.
    regions: Vec<(u64, u64)>,
    chunks: RefCell<HashMap<u64, Option<Chunk>>>,
    copied: RefCell<u64>,
}

impl<M: ProcessMemory> CachedMemory<M> {
    /// A cache over `inner` limited to `regions` (readable `[start, end)` address ranges).
    pub fn new(inner: M, mut regions: Vec<(u64, u64)>) -> Self {
        regions.sort_unstable();
        CachedMemory {
            inner,
            regions,
            chunks: RefCell::new(HashMap::new()),
            copied: RefCell::new(0),
        }
    }

    /// The backend.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// Bytes copied from the target so far.
    pub fn bytes_copied(&self) -> u64 {
        *self.copied.borrow()
    }

    fn region_of(&self, addr: u64) -> Option<(u64, u64)> {
        let i = self.regions.partition_point(|r| r.1 <= addr);
        self.regions.get(i).copied().filter(|r| r.0 <= addr)
    }

    /// Copies as much of `buf` as the chunk holding `addr` has; returns the bytes copied.
    fn copy_from_chunk(&self, addr: u64, buf: &mut [u8]) -> Result<usize> {
        let idx = addr / CHUNK;
        let mut chunks = self.chunks.borrow_mut();
        let entry = chunks.entry(idx).or_insert_with(|| self.load(idx, addr));
        match entry {
            Some((start, data)) if addr >= *start && addr < *start + data.len() as u64 => {
                let off = (addr - *start) as usize;
                let n = buf.len().min(data.len() - off);
                buf[..n].copy_from_slice(&data[off..off + n]);
                Ok(n)
            }
            _ => Err(Error::Unreadable {
                addr,
                len: buf.len(),
            }),
        }
    }

    fn load(&self, idx: u64, addr: u64) -> Option<Chunk> {
        let (rs, re) = self.region_of(addr)?;
        let start = (idx * CHUNK).max(rs);
        let end = ((idx + 1) * CHUNK).min(re);
        let mut data = vec![0u8; (end - start) as usize];
        match self.inner.read(start, &mut data) {
            Ok(()) => {
                *self.copied.borrow_mut() += data.len() as u64;
                Some((start, data))
            }
            Err(e) => {
                log::debug!("chunk {start:#x}..{end:#x} unreadable: {e}");
                None
            }
        }
    }

    /// Copies every chunk of the given `[start, end)` ranges now, in batched reads (used while
    /// the target is paused, so that the walk afterwards sees one consistent copy). Returns the
    /// bytes copied.
    pub fn prefetch(&self, ranges: &[(u64, u64)]) -> u64 {
        let mut wanted: Vec<(u64, u64, u64)> = Vec::new(); // (idx, start, end)
        {
            let chunks = self.chunks.borrow();
            for &(s, e) in ranges {
                let mut at = s;
                while at < e {
                    let idx = at / CHUNK;
                    let end = ((idx + 1) * CHUNK).min(e);
                    if !chunks.contains_key(&idx) {
                        wanted.push((idx, at, end));
                    }
                    at = end;
                }
            }
        }
        let mut bufs: Vec<Vec<u8>> = wanted
            .iter()
            .map(|(_, s, e)| vec![0u8; (e - s) as usize])
            .collect();
        let mut reqs: Vec<(u64, &mut [u8])> = wanted
            .iter()
            .zip(bufs.iter_mut())
            .map(|((_, s, _), b)| (*s, b.as_mut_slice()))
            .collect();
        let results = self.inner.read_many(&mut reqs);
        drop(reqs);
        let mut copied = 0;
        let mut chunks = self.chunks.borrow_mut();
        for (((idx, s, _), buf), r) in wanted.into_iter().zip(bufs).zip(results) {
            if r.is_ok() {
                copied += buf.len() as u64;
                chunks.insert(idx, Some((s, buf)));
            }
        }
        *self.copied.borrow_mut() += copied;
        copied
    }
}

impl<M: ProcessMemory> ProcessMemory for CachedMemory<M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        if buf.len() as u64 > CHUNK {
            return self.inner.read(addr, buf);
        }
        let mut done = 0;
        while done < buf.len() {
            let at = addr + done as u64;
            match self.copy_from_chunk(at, &mut buf[done..]) {
                Ok(n) => done += n,
                Err(_) if done == 0 => {
                    // outside the cached regions (e.g. a mapping created after the cache):
                    // read it directly
                    return self.inner.read(addr, buf);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::SliceMemory;

    #[test]
    fn reads_across_chunks_and_outside_regions() {
        let mut m = SliceMemory::new();
        let base = 3 * CHUNK - 8;
        let bytes: Vec<u8> = (0..64u8).collect();
        m.map(base, bytes.clone());
        let c = CachedMemory::new(m, vec![(base, base + 64)]);
        let mut b = [0u8; 16];
        c.read(base, &mut b).expect("spans two chunks");
        assert_eq!(&b[..], &bytes[..16]);
        assert_eq!(c.read_u8(base + 63).ok(), Some(63));
        assert!(c.read_u8(base + 64).is_err());
        assert!(c.bytes_copied() <= 64);
    }
}
