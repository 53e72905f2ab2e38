//! A minimal ELF64 (x86-64, little-endian, `ET_DYN`) writer: one `PT_LOAD` segment, a `.bss`
//! section, and a `.symtab` with the given object symbols. It gives the `ElfFile` an
//! `Interpreter` needs without a file on disk, and small well-formed seeds for the ELF parser.

/// A symbol to write: name, link-time address, size.
pub type Sym<'a> = (&'a str, u64, u64);

fn u16le(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn u32le(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn u64le(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Adds `name` to a string table, returning its offset.
fn add_str(table: &mut Vec<u8>, name: &str) -> u32 {
    let at = u32::try_from(table.len()).unwrap_or(0);
    table.extend_from_slice(name.as_bytes());
    table.push(0);
    at
}

#[allow(clippy::too_many_arguments)]
fn section_header(
    out: &mut Vec<u8>,
    name: u32,
    kind: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
    align: u64,
    entsize: u64,
) {
    u32le(out, name);
    u32le(out, kind);
    u64le(out, flags);
    u64le(out, addr);
    u64le(out, offset);
    u64le(out, size);
    u32le(out, link);
    u32le(out, info);
    u64le(out, align);
    u64le(out, entsize);
}

/// Writes the file: `.bss` at `bss = (address, size)`, symbols defined in `.bss`.
pub fn write(bss: (u64, u64), symbols: &[Sym<'_>]) -> Vec<u8> {
    const EHDR: u64 = 64;
    const PHDR: u64 = 56;
    let mut strtab = vec![0u8];
    let mut symtab = vec![0u8; 24]; // the null symbol
    for (name, addr, size) in symbols {
        let n = add_str(&mut strtab, name);
        u32le(&mut symtab, n);
        symtab.push(0x11); // STB_GLOBAL, STT_OBJECT
        symtab.push(0);
        u16le(&mut symtab, 1); // .bss
        u64le(&mut symtab, *addr);
        u64le(&mut symtab, *size);
    }
    let mut shstrtab = vec![0u8];
    let n_bss = add_str(&mut shstrtab, ".bss");
    let n_symtab = add_str(&mut shstrtab, ".symtab");
    let n_strtab = add_str(&mut shstrtab, ".strtab");
    let n_shstrtab = add_str(&mut shstrtab, ".shstrtab");
    let symtab_at = EHDR + PHDR;
    let strtab_at = symtab_at + symtab.len() as u64;
    let shstrtab_at = strtab_at + strtab.len() as u64;
    let sh_at = (shstrtab_at + shstrtab.len() as u64).next_multiple_of(8);
    let mut out = Vec::new();
    // ELF header
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    out.extend_from_slice(&[0; 8]);
    u16le(&mut out, 3); // ET_DYN
    u16le(&mut out, 62); // EM_X86_64
    u32le(&mut out, 1);
    u64le(&mut out, 0); // entry
    u64le(&mut out, EHDR); // phoff
    u64le(&mut out, sh_at); // shoff
    u32le(&mut out, 0);
    u16le(&mut out, EHDR as u16);
    u16le(&mut out, PHDR as u16);
    u16le(&mut out, 1); // phnum
    u16le(&mut out, 64); // shentsize
    u16le(&mut out, 5); // shnum
    u16le(&mut out, 4); // shstrndx
                        // PT_LOAD covering the file and .bss
    u32le(&mut out, 1);
    u32le(&mut out, 6);
    u64le(&mut out, 0);
    u64le(&mut out, 0);
    u64le(&mut out, 0);
    u64le(&mut out, sh_at);
    u64le(&mut out, (bss.0 + bss.1).max(sh_at));
    u64le(&mut out, 0x1000);
    out.extend_from_slice(&symtab);
    out.extend_from_slice(&strtab);
    out.extend_from_slice(&shstrtab);
    out.resize(sh_at as usize, 0);
    section_header(&mut out, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    // .bss: SHT_NOBITS, alloc + write
    section_header(&mut out, n_bss, 8, 3, bss.0, sh_at, bss.1, 0, 0, 8, 0);
    // .symtab: SHT_SYMTAB, linked to .strtab, first global symbol 1
    let symtab_size = symtab.len() as u64;
    section_header(
        &mut out,
        n_symtab,
        2,
        0,
        0,
        symtab_at,
        symtab_size,
        3,
        1,
        8,
        24,
    );
    let strtab_size = strtab.len() as u64;
    section_header(
        &mut out,
        n_strtab,
        3,
        0,
        0,
        strtab_at,
        strtab_size,
        0,
        0,
        1,
        0,
    );
    let shstrtab_size = shstrtab.len() as u64;
    section_header(
        &mut out,
        n_shstrtab,
        3,
        0,
        0,
        shstrtab_at,
        shstrtab_size,
        0,
        0,
        1,
        0,
    );
    out
}

#[cfg(test)]
mod tests {
    use memlens_remote::elf::ElfFile;

    #[test]
    fn the_parser_reads_what_we_write() {
        let bytes = super::write(
            (0x2000, 0x100),
            &[("arenas", 0x2008, 8), ("maxarenas", 0x2010, 4)],
        );
        let f = ElfFile::parse(std::path::Path::new("mini"), &bytes).expect("parses");
        assert_eq!(f.symbol("arenas").map(|s| s.address), Some(0x2008));
        assert_eq!(f.symbol("maxarenas").map(|s| s.size), Some(4));
        assert_eq!(
            f.section(".bss").map(|s| (s.address, s.size)),
            Some((0x2000, 0x100))
        );
        assert_eq!(f.first_load, 0);
        assert!(f.has_symtab);
    }
}
