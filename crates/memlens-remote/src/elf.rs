//! ELF symbols, sections and load bias of the files mapped by a process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use crate::error::{Error, Result};

/// Says which symbol names to keep (see [`MappedFile::parse_symbols`]).
pub type KeepSymbol = dyn Fn(&[u8]) -> bool;

/// A symbol's link-time address and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol {
    /// Link-time address (add the load bias for the address in the process).
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A section's link-time address and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Link-time address.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What memlens needs of one ELF file: its data symbols (objects, not functions), sections and
/// first load address.
#[derive(Debug, Clone)]
pub struct ElfFile {
    /// The path it was read from.
    pub path: PathBuf,
    symbols: HashMap<String, Vec<Symbol>>,
    sections: HashMap<String, Section>,
    /// Link-time address of the first `PT_LOAD` segment, rounded down to its alignment.
    pub first_load: u64,
    /// Whether `.symtab` was present (the file is not stripped).
    pub has_symtab: bool,
}

/// How a file on disk is told apart from another when it has no build id: device, inode,
/// size and modification time (what a package upgrade or a rebuild changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// Device of the file system.
    pub dev: u64,
    /// Inode.
    pub inode: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
}

/// A file that a process maps, opened as the process sees it (through `/proc/PID/root`, or
/// `/proc/PID/map_files/RANGE` when it was deleted), not yet parsed.
#[derive(Debug)]
pub struct MappedFile {
    /// The path it was opened through.
    pub path: PathBuf,
    file: std::fs::File,
    /// Device, inode, size and mtime of the opened file.
    pub identity: FileIdentity,
}

/// ELF `PT_NOTE` and the GNU build-id note type.
const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;
/// Reads of a file's head are bounded (program headers, notes).
const MAX_HEAD_READ: u64 = 64 << 10;

impl MappedFile {
    /// Opens `path` (as process `pid` sees it, from its `maps`). `range` is the mapping's
    /// `[start, end)`, used for `/proc/PID/map_files` when the file was deleted or is not
    /// reachable through the process's root.
    pub fn open(pid: u32, path: &[u8], range: Option<(u64, u64)>) -> Result<MappedFile> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let deleted = path.ends_with(b" (deleted)");
        let clean = path.strip_suffix(b" (deleted)").unwrap_or(path);
        let mut candidates = Vec::new();
        if let (true, Some((s, e))) = (deleted, range) {
            candidates.push(PathBuf::from(format!("/proc/{pid}/map_files/{s:x}-{e:x}")));
        }
        let mut rooted = PathBuf::from(format!("/proc/{pid}/root"));
        rooted.push(std::ffi::OsStr::from_bytes(
            clean.strip_prefix(b"/").unwrap_or(clean),
        ));
        candidates.push(rooted);
        if let Some((s, e)) = range {
            candidates.push(PathBuf::from(format!("/proc/{pid}/map_files/{s:x}-{e:x}")));
        }
        let mut last = None;
        for c in candidates {
            let opened = std::fs::File::open(&c).and_then(|f| f.metadata().map(|m| (f, m)));
            match opened {
                Ok((file, m)) => {
                    let identity = FileIdentity {
                        dev: m.dev(),
                        inode: m.ino(),
                        size: m.size(),
                        mtime_ns: i128::from(m.mtime()) * 1_000_000_000
                            + i128::from(m.mtime_nsec()),
                    };
                    return Ok(MappedFile {
                        path: c,
                        file,
                        identity,
                    });
                }
                Err(e) => {
                    last = Some(Error::Io {
                        what: format!("open {}", c.display()),
                        source: e,
                    })
                }
            }
        }
        Err(last.unwrap_or(Error::ProcessGone { pid }))
    }

    fn read_at(&self, at: u64, len: u64) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len.min(MAX_HEAD_READ) as usize];
        let n = self.file.read_at(&mut buf, at).map_err(|e| Error::Io {
            what: format!("read {}", self.path.display()),
            source: e,
        })?;
        buf.truncate(n);
        Ok(buf)
    }

    /// The GNU build id (`NT_GNU_BUILD_ID` note of a `PT_NOTE` segment), read from the file's
    /// head in a few small reads; `None` when the file has none. Only 64-bit ELF files of this
    /// machine's byte order are read.
    pub fn build_id(&self) -> Result<Option<Vec<u8>>> {
        let bad = |reason: &str| Error::Elf {
            path: self.path.clone(),
            reason: reason.into(),
        };
        let head = self.read_at(0, 64)?;
        let native = if cfg!(target_endian = "little") { 1 } else { 2 };
        if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != native {
            return Err(bad("not a 64-bit ELF file of this machine's byte order"));
        }
        let u16_at = |b: &[u8], at: usize| u64::from(u16::from_ne_bytes([b[at], b[at + 1]]));
        let u32_at =
            |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |b: &[u8], at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_ne_bytes(w)
        };
        let (phoff, phentsize, phnum) = (
            u64_at(&head, 0x20),
            u16_at(&head, 0x36),
            u16_at(&head, 0x38),
        );
        if phentsize < 56 {
            return Err(bad("program header entries too small"));
        }
        let phdrs = self.read_at(phoff, phentsize * phnum)?;
        for ph in phdrs.chunks_exact(phentsize as usize) {
            if u32_at(ph, 0) != PT_NOTE {
                continue;
            }
            let notes = self.read_at(u64_at(ph, 8), u64_at(ph, 32))?;
            if let Some(id) = find_build_id(&notes) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Parses the file, reading only what memlens looks at: the ELF, program and section
    /// headers, the symbol and string tables and the notes (about a megabyte of a 20 MB
    /// libpython with symbols). A file whose headers do not say where they are is read whole.
    pub fn parse(&self) -> Result<ElfFile> {
        self.parse_symbols(None)
    }

    /// [`MappedFile::parse`] keeping only the data symbols whose name `keep` accepts (when
    /// given): indexing the few hundred a caller looks up among a libpython's fifteen thousand.
    pub fn parse_symbols(&self, keep: Option<&KeepSymbol>) -> Result<ElfFile> {
        let names = keep;
        match self.read_tables() {
            Some(Ok(tables)) => ElfFile::parse_from(&self.path, &tables, names),
            Some(Err(e)) => Err(e),
            None => self.parse_whole(names),
        }
    }

    fn parse_whole(&self, names: Option<&KeepSymbol>) -> Result<ElfFile> {
        use std::io::Read;
        let mut data = Vec::with_capacity(self.identity.size.min(1 << 30) as usize);
        let mut f = &self.file;
        let r = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))
            .and_then(|_| f.read_to_end(&mut data));
        r.map_err(|e| Error::Io {
            what: format!("read {}", self.path.display()),
            source: e,
        })?;
        ElfFile::parse_from(&self.path, &data[..], names)
    }

    /// The file's headers, symbol and string tables and notes; `None` when the headers do not
    /// say where they are.
    fn read_tables(&self) -> Option<Result<Pieces>> {
        use std::os::unix::fs::FileExt;
        const SHT_SYMTAB: u32 = 2;
        const SHT_STRTAB: u32 = 3;
        const SHT_NOTE: u32 = 7;
        const SHT_DYNSYM: u32 = 11;
        let size = self.identity.size;
        let head = self.read_at(0, 64).ok()?;
        if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 {
            return None;
        }
        let u16_at = |b: &[u8], at: usize| u64::from(u16::from_ne_bytes([b[at], b[at + 1]]));
        let u32_at =
            |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |b: &[u8], at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_ne_bytes(w)
        };
        let (phoff, phentsize, phnum) = (
            u64_at(&head, 0x20),
            u16_at(&head, 0x36),
            u16_at(&head, 0x38),
        );
        let (shoff, shentsize, shnum) = (
            u64_at(&head, 0x28),
            u16_at(&head, 0x3a),
            u16_at(&head, 0x3c),
        );
        if shentsize < 64 || shnum == 0 || shoff.checked_add(shentsize * shnum)? > size {
            return None;
        }
        let mut ranges = vec![
            (0, 64),
            (phoff, phentsize * phnum),
            (shoff, shentsize * shnum),
        ];
        let mut shdrs = vec![0u8; (shentsize * shnum) as usize];
        self.file.read_exact_at(&mut shdrs, shoff).ok()?;
        for sh in shdrs.chunks_exact(shentsize as usize) {
            if matches!(
                u32_at(sh, 4),
                SHT_SYMTAB | SHT_STRTAB | SHT_NOTE | SHT_DYNSYM
            ) {
                ranges.push((u64_at(sh, 0x18), u64_at(sh, 0x20)));
            }
        }
        let mut pieces = Pieces {
            len: size,
            pieces: Vec::with_capacity(ranges.len()),
        };
        for (at, len) in ranges {
            if at.checked_add(len).is_none_or(|e| e > size) || len > 1 << 30 {
                return None;
            }
            let mut data = vec![0u8; len as usize];
            if let Err(e) = self.file.read_exact_at(&mut data, at) {
                return Some(Err(Error::Io {
                    what: format!("read {}", self.path.display()),
                    source: e,
                }));
            }
            pieces.pieces.push((at, data));
        }
        Some(Ok(pieces))
    }
}

/// Parts of a file at their offsets, read for `object` to parse (a read outside them fails).
#[derive(Debug)]
struct Pieces {
    len: u64,
    pieces: Vec<(u64, Vec<u8>)>,
}

impl Pieces {
    fn piece_at(&self, offset: u64) -> Option<&[u8]> {
        self.pieces
            .iter()
            .find(|(start, data)| offset >= *start && offset - start < data.len() as u64)
            .map(|(start, data)| &data[(offset - start) as usize..])
    }
}

impl<'a> object::ReadRef<'a> for &'a Pieces {
    fn len(self) -> std::result::Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> std::result::Result<&'a [u8], ()> {
        if size == 0 {
            return Ok(&[]);
        }
        let rest = self.piece_at(offset).ok_or(())?;
        rest.get(..usize::try_from(size).map_err(|_| ())?).ok_or(())
    }

    fn read_bytes_at_until(
        self,
        range: std::ops::Range<u64>,
        delimiter: u8,
    ) -> std::result::Result<&'a [u8], ()> {
        let rest = self.piece_at(range.start).ok_or(())?;
        let max = usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| ())?;
        let rest = &rest[..rest.len().min(max)];
        let n = rest.iter().position(|b| *b == delimiter).ok_or(())?;
        Ok(&rest[..n])
    }
}

/// The descriptor of the first GNU build-id note in a notes segment.
fn find_build_id(notes: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0usize;
    let align4 = |n: usize| n.div_ceil(4) * 4;
    while at + 12 <= notes.len() {
        let word = |i: usize| {
            u32::from_ne_bytes([notes[i], notes[i + 1], notes[i + 2], notes[i + 3]]) as usize
        };
        let (namesz, descsz, kind) = (word(at), word(at + 4), word(at + 8) as u32);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(align4(namesz))?;
        let end = desc_at.checked_add(align4(descsz))?;
        if desc_at.checked_add(descsz)? > notes.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz) == Some(b"GNU\0") {
            return Some(notes[desc_at..desc_at + descsz].to_vec());
        }
        at = end;
    }
    None
}

impl ElfFile {
    /// Reads and parses a file.
    pub fn open(path: &Path) -> Result<ElfFile> {
        let data = std::fs::read(path).map_err(|e| Error::Io {
            what: format!("read {}", path.display()),
            source: e,
        })?;
        Self::parse(path, &data)
    }

    /// Opens a file of process `pid` through `/proc/PID/root`, so that files inside a
    /// container's mount namespace are found; `path` is as the process sees it (from `maps`).
    /// A file deleted since it was mapped is read through `/proc/PID/map_files/RANGE`.
    pub fn open_in_process(pid: u32, path: &[u8], range: Option<(u64, u64)>) -> Result<ElfFile> {
        MappedFile::open(pid, path, range)?.parse()
    }

    /// Parses file contents.
    pub fn parse(path: &Path, data: &[u8]) -> Result<ElfFile> {
        Self::parse_from(path, data, None)
    }

    fn parse_from<'a, R: object::ReadRef<'a>>(
        path: &Path,
        data: R,
        names: Option<&KeepSymbol>,
    ) -> Result<ElfFile> {
        let bad = |reason: String| Error::Elf {
            path: path.to_path_buf(),
            reason,
        };
        let file = object::File::parse(data).map_err(|e| bad(e.to_string()))?;
        if !matches!(file, object::File::Elf64(_)) {
            return Err(bad("not a 64-bit ELF file".into()));
        }
        // Data objects only (`_PyRuntime`, `Py_Version`, `PyList_Type`, obmalloc's statics):
        // what memlens reads. Functions, three quarters of a libpython's symbols, are skipped.
        let wanted = |s: &object::Symbol<'a, '_, R>| {
            s.kind() == object::SymbolKind::Data
                && s.address() != 0
                && names.is_none_or(|keep| s.name_bytes().is_ok_and(keep))
        };
        let mut symbols: HashMap<String, Vec<Symbol>> = HashMap::new();
        let mut has_symtab = false;
        for s in file.symbols() {
            has_symtab = true;
            if !wanted(&s) {
                continue;
            }
            if let Ok(name) = s.name() {
                symbols.entry(name.to_string()).or_default().push(Symbol {
                    address: s.address(),
                    size: s.size(),
                });
            }
        }
        for s in file.dynamic_symbols() {
            if !wanted(&s) {
                continue;
            }
            if let Ok(name) = s.name() {
                let sym = Symbol {
                    address: s.address(),
                    size: s.size(),
                };
                let e = symbols.entry(name.to_string()).or_default();
                if !e.contains(&sym) {
                    e.push(sym);
                }
            }
        }
        let mut sections = HashMap::new();
        for s in file.sections() {
            if let Ok(name) = s.name() {
                sections.insert(
                    name.to_string(),
                    Section {
                        address: s.address(),
                        size: s.size(),
                    },
                );
            }
        }
        let first_load = file
            .segments()
            .map(|s| {
                let align = s.align().max(1);
                s.address() & !(align - 1)
            })
            .min()
            .ok_or_else(|| bad("no PT_LOAD segment".into()))?;
        Ok(ElfFile {
            path: path.to_path_buf(),
            symbols,
            sections,
            first_load,
            has_symtab,
        })
    }

    /// The symbol of this name (the first one when local symbols repeat a name).
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols.get(name).and_then(|v| v.first().copied())
    }

    /// Every symbol of this name (local symbols can repeat).
    pub fn symbols_named(&self, name: &str) -> &[Symbol] {
        self.symbols.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The section of this name.
    pub fn section(&self, name: &str) -> Option<Section> {
        self.sections.get(name).copied()
    }

    /// Load bias given where the file's offset-0 mapping starts in the process.
    pub fn load_bias(&self, mapping_start: u64) -> u64 {
        mapping_start.wrapping_sub(self.first_load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_executable_has_symbols_and_sections() {
        let exe = std::env::current_exe().expect("test binary");
        let f = ElfFile::open(&exe).expect("parses");
        assert!(f.section(".text").is_some());
        assert!(f.section(".bss").is_some() || f.section(".data").is_some());
        assert!(f.first_load < 0x1_0000_0000);
    }

    #[test]
    fn build_id_of_own_executable_matches_the_full_parse() {
        use object::Object;
        let exe = std::env::current_exe().expect("test binary");
        let pid = std::process::id();
        let path = exe.as_os_str().as_encoded_bytes().to_vec();
        let f = MappedFile::open(pid, &path, None).expect("opens");
        assert_eq!(
            f.identity.size,
            std::fs::metadata(&exe).expect("stat").len()
        );
        let data = std::fs::read(&exe).expect("reads");
        let parsed = object::File::parse(&*data).expect("parses");
        let want = parsed.build_id().ok().flatten().map(<[u8]>::to_vec);
        assert_eq!(f.build_id().expect("reads notes"), want);
        // what the partial read parses is what the whole file gives
        let (part, whole) = (
            f.parse().expect("parses"),
            f.parse_whole(None).expect("parses"),
        );
        assert_eq!(part.symbols, whole.symbols);
        assert_eq!(part.sections, whole.sections);
        assert_eq!(part.first_load, whole.first_load);
        assert!(part.symbol("main").is_none(), "functions are not kept");
        assert_eq!(
            find_build_id(b"\x04\0\0\0\x02\0\0\0\x03\0\0\0GNU\0\xab\xcd\0\0"),
            Some(vec![0xab, 0xcd])
        );
        assert_eq!(
            find_build_id(b"\x04\0\0\0\xff\0\0\0\x03\0\0\0GNU\0"),
            None,
            "descriptor past the end"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let e = ElfFile::parse(Path::new("x"), b"\x7fELF garbage");
        assert!(e.is_err());
    }
}
