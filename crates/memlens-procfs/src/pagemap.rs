//! `/proc/PID/pagemap`: one 64-bit entry per virtual page of a process (the kernel's
//! `Documentation/admin-guide/mm/pagemap.rst`). Reading it never changes the process: the
//! kernel walks the page tables and reports what is mapped, without faulting anything in.
//!
//! Bits used: 63 present, 62 swapped, 56 exclusively mapped (mapped once: not shared with
//! another process), 0-54 the page frame number. The frame number reads as 0 without
//! `CAP_SYS_ADMIN`; [`Entry::frame`] then gives `None`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::error::{Error, Result};

const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const EXCLUSIVE: u64 = 1 << 56;
const FRAME_MASK: u64 = (1 << 55) - 1;

/// One page's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry(pub u64);

impl Entry {
    /// The page is in memory.
    pub fn present(self) -> bool {
        self.0 & PRESENT != 0
    }

    /// The page is in swap.
    pub fn swapped(self) -> bool {
        self.0 & SWAPPED != 0
    }

    /// The page is mapped by this process only (its map count is one).
    pub fn exclusive(self) -> bool {
        self.0 & EXCLUSIVE != 0
    }

    /// The physical page frame of a present page, when the kernel shows it (root with
    /// `CAP_SYS_ADMIN`); `None` otherwise.
    pub fn frame(self) -> Option<u64> {
        let f = self.0 & FRAME_MASK;
        (self.present() && f != 0).then_some(f)
    }
}

/// Decodes native-endian entries (as the kernel writes them).
pub fn parse(bytes: &[u8]) -> Vec<Entry> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            Entry(u64::from_ne_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]))
        })
        .collect()
}

/// An open `/proc/PID/pagemap`. The file stays bound to the address space it was opened on: if
/// the process execs or exits, reads give nothing rather than another program's pages.
#[derive(Debug)]
pub struct Pagemap {
    pid: u32,
    file: File,
}

impl Pagemap {
    /// Opens the pagemap of `pid` (needs the same ptrace access as reading its memory).
    pub fn open(pid: u32) -> Result<Pagemap> {
        let path = PathBuf::from(format!("/proc/{pid}/pagemap"));
        let file = File::open(&path).map_err(|e| crate::classify_io(e, &path, pid))?;
        Ok(Pagemap { pid, file })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The entries of `count` pages from virtual page number `first` (address / page size).
    /// Fewer come back past the end of the address space or when the process is gone.
    pub fn read(&self, first: u64, count: usize) -> Result<Vec<Entry>> {
        let mut buf = vec![0u8; count * 8];
        let mut done = 0;
        while done < buf.len() {
            let at = first * 8 + done as u64;
            match self.file.read_at(&mut buf[done..], at) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let path = PathBuf::from(format!("/proc/{}/pagemap", self.pid));
                    return Err(match crate::classify_io(e, &path, self.pid) {
                        Error::Io { source, .. } if source.raw_os_error() == Some(libc::EIO) => {
                            Error::ProcessGone { pid: self.pid }
                        }
                        other => other,
                    });
                }
            }
        }
        buf.truncate(done - done % 8);
        Ok(parse(&buf))
    }
}

/// An open `/proc/kpagecount`: for each physical page frame, the number of times it is mapped
/// (`page_mapcount`). Readable by root only (`CAP_SYS_ADMIN`).
#[derive(Debug)]
pub struct KpageCount {
    file: File,
}

impl KpageCount {
    /// Opens `/proc/kpagecount`.
    pub fn open() -> std::io::Result<KpageCount> {
        Ok(KpageCount {
            file: File::open("/proc/kpagecount")?,
        })
    }

    /// The map counts of `count` frames from frame `first`; fewer past the end of memory.
    pub fn read(&self, first: u64, count: usize) -> std::io::Result<Vec<u64>> {
        let mut buf = vec![0u8; count * 8];
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], first * 8 + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(done - done % 8);
        Ok(parse(&buf).into_iter().map(|e| e.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bits() {
        let e = Entry(PRESENT | EXCLUSIVE | 0x1234);
        assert!(e.present() && e.exclusive() && !e.swapped());
        assert_eq!(e.frame(), Some(0x1234));
        assert_eq!(
            Entry(PRESENT).frame(),
            None,
            "frame hidden without CAP_SYS_ADMIN"
        );
        assert_eq!(Entry(0x1234).frame(), None, "not present");
        let bytes: Vec<u8> = [PRESENT | 7, SWAPPED]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .chain([1u8, 2, 3])
            .collect();
        assert_eq!(parse(&bytes), vec![Entry(PRESENT | 7), Entry(SWAPPED)]);
    }

    #[test]
    fn own_touched_page_is_present_and_exclusive() {
        let page = crate::page_size();
        let data = vec![1u8; 3 * page as usize];
        let addr = data.as_ptr() as u64;
        let first = addr.div_ceil(page);
        let map = Pagemap::open(std::process::id()).expect("opens");
        let e = map.read(first, 1).expect("reads");
        assert_eq!(e.len(), 1);
        assert!(e[0].present() && e[0].exclusive(), "{:#x}", e[0].0);
        assert!(std::hint::black_box(&data)[0] == 1);
    }
}
