//! ELF symbols, sections and load bias of the files mapped by a process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use crate::error::{Error, Result};

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

/// What memlens needs of one ELF file.
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
        use std::os::unix::ffi::OsStrExt;
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
            match Self::open(&c) {
                Ok(f) => return Ok(f),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(Error::ProcessGone { pid }))
    }

    /// Parses file contents.
    pub fn parse(path: &Path, data: &[u8]) -> Result<ElfFile> {
        let bad = |reason: String| Error::Elf {
            path: path.to_path_buf(),
            reason,
        };
        let file = object::File::parse(data).map_err(|e| bad(e.to_string()))?;
        if !matches!(file, object::File::Elf64(_)) {
            return Err(bad("not a 64-bit ELF file".into()));
        }
        let mut symbols: HashMap<String, Vec<Symbol>> = HashMap::new();
        let mut has_symtab = false;
        for s in file.symbols() {
            has_symtab = true;
            if let Ok(name) = s.name() {
                if s.address() != 0 {
                    symbols.entry(name.to_string()).or_default().push(Symbol {
                        address: s.address(),
                        size: s.size(),
                    });
                }
            }
        }
        for s in file.dynamic_symbols() {
            if let Ok(name) = s.name() {
                let sym = Symbol {
                    address: s.address(),
                    size: s.size(),
                };
                let e = symbols.entry(name.to_string()).or_default();
                if s.address() != 0 && !e.contains(&sym) {
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
    fn garbage_is_an_error_not_a_panic() {
        let e = ElfFile::parse(Path::new("x"), b"\x7fELF garbage");
        assert!(e.is_err());
    }
}
