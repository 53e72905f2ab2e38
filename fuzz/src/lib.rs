//! Shared pieces of the memlens fuzz targets: a cursor over the fuzzer's bytes, the byte-slice
//! address space the CPython decoders read, a minimal ELF writer (so an `Interpreter` can be
//! built without a live process) and builders of well-formed CPython heaps for the seed corpora.
//!
//! Nothing here is used by memlens itself.

pub mod elf;
pub mod heap;
pub mod image;
pub mod known;
pub mod recording;
pub mod seeds;

/// Reads the fuzzer's bytes front to back; past the end every read gives zeros.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let t = self.take(2);
        b[..t.len()].copy_from_slice(t);
        u16::from_le_bytes(b)
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let t = self.take(4);
        b[..t.len()].copy_from_slice(t);
        u32::from_le_bytes(b)
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let t = self.take(8);
        b[..t.len()].copy_from_slice(t);
        u64::from_le_bytes(b)
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let r = self.data;
        self.data = &[];
        r
    }
}

/// The layouts the decoders know, in the order a selector byte picks them.
pub fn layouts() -> Vec<&'static memlens_cpython::layouts::Layout> {
    memlens_cpython::layouts::supported_minors()
        .into_iter()
        .filter_map(memlens_cpython::layouts::for_version)
        .collect()
}

/// The layout picked by a selector byte.
pub fn layout(selector: u8) -> &'static memlens_cpython::layouts::Layout {
    let all = layouts();
    all[usize::from(selector) % all.len()]
}

/// The selector byte of a minor version (for seeds).
pub fn selector_of(minor: u8) -> u8 {
    layouts()
        .iter()
        .position(|l| l.version.1 == minor)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(0)
}
