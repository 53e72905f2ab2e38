//! The one trait every remote read goes through, and a byte-slice backend for tests.

use crate::error::{Error, Result};

/// The longest single [`ProcessMemory::read_vec`]: 128 MiB (the largest structure memlens
/// reads whole is pymalloc's arena table, at most 64 MiB; containers are read in pieces).
pub const MAX_READ: usize = 128 << 20;

/// Reads bytes of another address space. Implementations never write to it.
pub trait ProcessMemory {
    /// Fills `buf` with the bytes at `addr`, or fails if any of them is unreadable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()>;

    /// Reads several ranges; the default reads them one by one. Backends batch them.
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<Result<()>> {
        reqs.iter_mut().map(|(a, b)| self.read(*a, b)).collect()
    }

    /// Hints that `addr` will be read soon (a cache may start loading it). Does nothing by
    /// default.
    fn prefetch(&self, _addr: u64) {}

    /// Reads `len` bytes into a new vector. A length above [`MAX_READ`] fails before anything
    /// is allocated (lengths come from the target's memory: a corrupt one must not exhaust
    /// memlens's memory).
    fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        if len > MAX_READ {
            return Err(Error::TooLong { addr, len });
        }
        let mut v = vec![0u8; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    /// Reads a little-endian (native) u64.
    fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    /// Reads a native i64.
    fn read_i64(&self, addr: u64) -> Result<i64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(i64::from_ne_bytes(b))
    }

    /// Reads a native u32.
    fn read_u32(&self, addr: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_ne_bytes(b))
    }

    /// Reads a native i32.
    fn read_i32(&self, addr: u64) -> Result<i32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(i32::from_ne_bytes(b))
    }

    /// Reads one byte.
    fn read_u8(&self, addr: u64) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }

    /// Reads a NUL-terminated string of at most `max` bytes (without the NUL). Reads in small
    /// steps so a string near the end of a mapping is still found.
    fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < max {
            let step = (64 - (at % 64) as usize).min(max - out.len());
            let mut b = vec![0u8; step];
            self.read(at, &mut b)?;
            if let Some(n) = b.iter().position(|c| *c == 0) {
                out.extend_from_slice(&b[..n]);
                return Ok(out);
            }
            out.extend_from_slice(&b);
            at += step as u64;
        }
        Ok(out)
    }
}

impl<M: ProcessMemory + ?Sized> ProcessMemory for &M {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read(addr, buf)
    }
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<Result<()>> {
        (**self).read_many(reqs)
    }
    fn prefetch(&self, addr: u64) {
        (**self).prefetch(addr)
    }
}

/// An address space made of byte slices at given addresses (for unit tests of decoders).
#[derive(Debug, Clone, Default)]
pub struct SliceMemory {
    segments: Vec<(u64, Vec<u8>)>,
}

impl SliceMemory {
    /// An empty address space.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `bytes` at `addr`.
    pub fn map(&mut self, addr: u64, bytes: Vec<u8>) -> &mut Self {
        self.segments.push((addr, bytes));
        self
    }
}

impl ProcessMemory for SliceMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        for (start, bytes) in &self.segments {
            let end = start + bytes.len() as u64;
            if addr >= *start && addr.saturating_add(buf.len() as u64) <= end {
                let off = (addr - start) as usize;
                buf.copy_from_slice(&bytes[off..off + buf.len()]);
                return Ok(());
            }
        }
        Err(Error::Unreadable {
            addr,
            len: buf.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_memory_reads_inside_segments_only() {
        // strings are read in 64-byte aligned steps, which never cross a page
        let mut page = vec![b'x'; 128];
        page[..11].copy_from_slice(b"hello\0world");
        let mut m = SliceMemory::new();
        m.map(0x1000, page);
        assert_eq!(m.read_cstr(0x1000, 100).ok(), Some(b"hello".to_vec()));
        assert_eq!(m.read_cstr(0x1006, 5).ok(), Some(b"world".to_vec()));
        assert_eq!(
            m.read_cstr(0x1006, 1000).ok(),
            None,
            "no NUL before the end"
        );
        assert!(m.read_u64(0x0ffc).is_err());
        assert_eq!(m.read_u8(0x1004).ok(), Some(b'o'));
    }
}
