//! An interpreter over arbitrary memory: a small header (layout, where `_PyRuntime`, the
//! interpreter state and the builtin types are, the ELF symbols pymalloc looks up) followed by
//! the bytes mapped at [`BASE`] in a [`SliceMemory`].

use memlens_cpython::layouts::Layout;
use memlens_cpython::process::BuiltinTypes;
use memlens_cpython::{Interpreter, Version};
use memlens_remote::elf::ElfFile;
use memlens_remote::{ProcessMemory, SliceMemory};

use crate::Cursor;

/// Where the image is mapped.
pub const BASE: u64 = 0x1000_0000;

/// Number of builtin types the header places.
pub const TYPES: usize = 14;

/// The header before the image bytes. Offsets are from [`BASE`]; a type offset of 0 means
/// "not known" (address 0), as for a binary without that symbol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// Which operation the target runs.
    pub op: u8,
    /// Layout selector ([`crate::layout`]).
    pub layout: u8,
    /// bit 0: the ELF file has `arenas`/`maxarenas` symbols (3.8-3.11 with `.symtab`).
    pub flags: u8,
    /// `_PyRuntime`.
    pub runtime: u16,
    /// The main interpreter state.
    pub interp: u16,
    /// list, tuple, dict, set, frozenset, str, bytes, int, float, type, function, module,
    /// cell, code.
    pub types: [u16; TYPES],
    /// The `arenas` symbol (a pointer variable).
    pub arenas: u16,
    /// The `maxarenas` symbol (a u32 variable).
    pub maxarenas: u16,
    /// `.bss` start and size (the stripped-binary arena scan reads it).
    pub bss: (u16, u16),
}

/// Bytes of an encoded header.
pub const HEADER_LEN: usize = 3 + 2 * 2 + 2 * TYPES + 2 * 2 + 2 * 2;

impl Header {
    /// Encodes the header (for seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.op, self.layout, self.flags];
        let mut put = |v: u16| out.extend_from_slice(&v.to_le_bytes());
        put(self.runtime);
        put(self.interp);
        for t in self.types {
            put(t);
        }
        put(self.arenas);
        put(self.maxarenas);
        put(self.bss.0);
        put(self.bss.1);
        out
    }

    /// Decodes a header; missing bytes read as zeros.
    pub fn decode(c: &mut Cursor<'_>) -> Header {
        let mut h = Header {
            op: c.u8(),
            layout: c.u8(),
            flags: c.u8(),
            runtime: c.u16(),
            interp: c.u16(),
            ..Header::default()
        };
        for t in &mut h.types {
            *t = c.u16();
        }
        h.arenas = c.u16();
        h.maxarenas = c.u16();
        h.bss = (c.u16(), c.u16());
        h
    }
}

fn at(off: u16) -> u64 {
    if off == 0 {
        0
    } else {
        BASE + u64::from(off)
    }
}

/// The image at [`BASE`].
#[derive(Debug, Clone)]
pub struct Memory {
    inner: SliceMemory,
}

impl Memory {
    /// The image mapped at [`BASE`], zero-filled to a whole number of pages as a real mapping
    /// is (the census's cache reads whole pages: an image ending mid-page left its last page
    /// unreadable, and every walk that reached it stopped there).
    pub fn new(image: &[u8]) -> Memory {
        let mut inner = SliceMemory::new();
        let mut bytes = image.to_vec();
        bytes.resize(image.len().next_multiple_of(4096), 0);
        inner.map(BASE, bytes);
        Memory { inner }
    }
}

impl ProcessMemory for Memory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> memlens_remote::Result<()> {
        self.inner.read(addr, buf)
    }
}

/// Builds the interpreter a header describes, and the memory (the image at [`BASE`]).
pub fn interpreter(h: &Header, image: &[u8]) -> (Interpreter, Memory) {
    let layout: &'static Layout = crate::layout(h.layout);
    let minor = layout.version.1;
    let version = Version {
        major: 3,
        minor,
        micro: Some(0),
        level: 0xf,
        serial: 0,
    };
    // Symbols are link-time offsets from the image start; the load bias is BASE.
    let mut symbols = Vec::new();
    if h.flags & 1 != 0 {
        symbols.push(("arenas", u64::from(h.arenas), 8));
        symbols.push(("maxarenas", u64::from(h.maxarenas), 4));
    }
    let elf_bytes = crate::elf::write((u64::from(h.bss.0), u64::from(h.bss.1)), &symbols);
    let elf = ElfFile::parse(std::path::Path::new("python-fuzz"), &elf_bytes)
        .unwrap_or_else(|e| panic!("the minimal ELF writer is broken: {e}"));
    let t = h.types.map(at);
    let types = BuiltinTypes {
        list: t[0],
        tuple: t[1],
        dict: t[2],
        set: t[3],
        frozenset: t[4],
        str: t[5],
        bytes: t[6],
        int: t[7],
        float: t[8],
        type_: t[9],
        function: t[10],
        module: t[11],
        cell: t[12],
        code: t[13],
    };
    let it = Interpreter::from_parts(
        version,
        layout,
        at(h.runtime),
        at(h.interp),
        elf,
        BASE,
        types,
    );
    (it, Memory::new(image))
}

/// The census of the image as `memlens census` takes it: through a cache of the image's one
/// mapping, within a 64 MiB memory budget.
pub fn census(
    it: &Interpreter,
    mem: &Memory,
    image_len: usize,
) -> memlens_cpython::Result<memlens_cpython::census::Census> {
    use std::rc::Rc;
    let budget = Rc::new(memlens_remote::MemoryBudget::new(64 << 20));
    let end = BASE + image_len as u64;
    let cached = memlens_remote::CachedMemory::new(mem, vec![(BASE, end)], 4 << 20, budget.clone());
    // with the attribution to modules (`snapshot --packages`) and the tallies of
    // `snapshot --advice` (classes' dicts, scalar lists, duplicated values), so the fuzzer
    // walks those too
    let extras = memlens_cpython::census::Extras {
        by_module: true,
        advice: true,
    };
    memlens_cpython::census::take_with(
        it,
        &cached,
        budget,
        image_len as u64,
        std::time::Duration::ZERO,
        extras,
    )
    .map(|(c, _)| c)
}

/// `census --referrers TYPE` on the image, as `memlens census` walks it: through a cache of the
/// image's one mapping, within a 64 MiB memory budget, every chain kept.
pub fn referrers(
    it: &Interpreter,
    mem: &Memory,
    image_len: usize,
    query: &str,
) -> memlens_cpython::Result<memlens_model::referrers::Referrers> {
    use std::rc::Rc;
    let budget = Rc::new(memlens_remote::MemoryBudget::new(64 << 20));
    let end = BASE + image_len as u64;
    let cached = memlens_remote::CachedMemory::new(mem, vec![(BASE, end)], 4 << 20, budget.clone());
    memlens_cpython::census::referrers::search(it, &cached, budget, query, 0)
}
