//! `/proc/PID/maps`: the address-space layout, one mapping a line.

use serde::Serialize;

use crate::bytes::{fields, parse_hex, parse_u64};
use crate::error::{Error, Result};

/// One line of `maps` (also the header line of each `smaps` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Permissions as the kernel prints them, e.g. `r-xp`.
    pub perms: [u8; 4],
    /// File offset of the mapping.
    pub offset: u64,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Inode of the backing file, 0 for anonymous memory.
    pub inode: u64,
    /// The path or pseudo-name (`[heap]`, `[stack]`, `/dev/shm/x (deleted)`), raw bytes as the
    /// kernel wrote them (newlines in names arrive escaped as `\012`). Empty for anonymous.
    #[serde(serialize_with = "crate::serialize_lossy")]
    pub path: Vec<u8>,
}

impl MapEntry {
    /// Size of the address range in bytes.
    pub fn size(&self) -> u64 {
        self.end - self.start
    }
    /// Readable.
    pub fn is_readable(&self) -> bool {
        self.perms[0] == b'r'
    }
    /// Writable.
    pub fn is_writable(&self) -> bool {
        self.perms[1] == b'w'
    }
    /// Executable.
    pub fn is_executable(&self) -> bool {
        self.perms[2] == b'x'
    }
    /// Shared (`s`) rather than private (`p`).
    pub fn is_shared(&self) -> bool {
        self.perms[3] == b's'
    }
    /// No access at all (`---p`): a guard page or reserved, uncommitted range.
    pub fn is_inaccessible(&self) -> bool {
        &self.perms[..3] == b"---"
    }
    /// Anonymous memory: no inode and no name.
    pub fn is_anonymous(&self) -> bool {
        self.inode == 0 && self.path.is_empty()
    }
    /// Whether the address lies inside the mapping.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
    /// The path without the kernel's ` (deleted)` suffix.
    pub fn path_without_deleted(&self) -> &[u8] {
        self.path.strip_suffix(b" (deleted)").unwrap_or(&self.path)
    }
    /// Whether the backing file was deleted.
    pub fn is_deleted(&self) -> bool {
        self.path.ends_with(b" (deleted)")
    }
}

/// The last component of a mapping's path (`libc.so.6` of `/usr/lib/x/libc.so.6`), without the
/// kernel's ` (deleted)` suffix. The one file-name helper of memlens: the ledger sorts mappings
/// by it and the Python view finds the interpreter's file by it.
pub fn file_name(path: &[u8]) -> &[u8] {
    let p = path.strip_suffix(b" (deleted)").unwrap_or(path);
    match p.iter().rposition(|b| *b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

/// Whether a file name is a shared object (`libc.so.6`, `x.cpython-311-x86_64-linux-gnu.so`).
pub fn is_shared_object(name: &[u8]) -> bool {
    name.ends_with(b".so") || name.windows(4).any(|w| w == b".so.")
}

/// Parses a header line `start-end perms offset major:minor inode [path]`.
pub fn parse_line(line: &[u8]) -> Result<MapEntry> {
    let bad = || Error::parse("maps line", String::from_utf8_lossy(line).into_owned());
    let mut rest = line;
    let mut next_field = || -> Option<&[u8]> {
        let start = rest.iter().position(|b| *b != b' ')?;
        rest = &rest[start..];
        let end = rest.iter().position(|b| *b == b' ').unwrap_or(rest.len());
        let (f, r) = rest.split_at(end);
        rest = r;
        Some(f)
    };
    let range = next_field().ok_or_else(bad)?;
    let perms = next_field().ok_or_else(bad)?;
    let offset = next_field().ok_or_else(bad)?;
    let dev = next_field().ok_or_else(bad)?;
    let inode = next_field().ok_or_else(bad)?;
    let dash = range.iter().position(|b| *b == b'-').ok_or_else(bad)?;
    let start = parse_hex(&range[..dash]).ok_or_else(bad)?;
    let end = parse_hex(&range[dash + 1..]).ok_or_else(bad)?;
    let perms: [u8; 4] = perms.try_into().map_err(|_| bad())?;
    let colon = dev.iter().position(|b| *b == b':').ok_or_else(bad)?;
    let dev_number = |s: &[u8]| parse_hex(s).and_then(|v| u32::try_from(v).ok());
    let dev_major = dev_number(&dev[..colon]).ok_or_else(bad)?;
    let dev_minor = dev_number(&dev[colon + 1..]).ok_or_else(bad)?;
    let path_start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
    if end < start {
        return Err(bad());
    }
    Ok(MapEntry {
        start,
        end,
        perms,
        offset: parse_hex(offset).ok_or_else(bad)?,
        dev_major,
        dev_minor,
        inode: parse_u64(inode).ok_or_else(bad)?,
        path: rest[path_start..].to_vec(),
    })
}

/// Whether a line looks like a mapping header (`hex-hex perms ...`) rather than `Key: value`.
pub(crate) fn is_header(line: &[u8]) -> bool {
    match fields(line).next() {
        Some(first) => first.contains(&b'-') && !first.ends_with(b":"),
        None => false,
    }
}

/// Parses the whole of `/proc/PID/maps`.
pub fn parse(content: &[u8]) -> Result<Vec<MapEntry>> {
    content
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(parse_line)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_with_path_and_spaces() {
        let e = parse_line(
            b"7f2e72600000-7f2e72628000 r--p 00001000 fe:00 263000                     /tmp/a b (deleted)",
        )
        .unwrap();
        assert_eq!(e.start, 0x7f2e_7260_0000);
        assert_eq!(e.size(), 0x28000);
        assert_eq!(&e.perms, b"r--p");
        assert_eq!(e.offset, 0x1000);
        assert_eq!((e.dev_major, e.dev_minor), (0xfe, 0));
        assert_eq!(e.inode, 263000);
        assert_eq!(e.path, b"/tmp/a b (deleted)");
        assert!(e.is_deleted());
        assert_eq!(e.path_without_deleted(), b"/tmp/a b");
    }

    #[test]
    fn anonymous_and_bad() {
        let e = parse_line(b"7ffd0f57a000-7ffd0f59b000 rw-p 00000000 00:00 0 ").unwrap();
        assert!(e.is_anonymous());
        assert!(parse_line(b"nonsense").is_err());
        assert!(parse_line(b"10-5 rw-p 0 00:00 0").is_err());
    }

    #[test]
    fn device_numbers_wider_than_u32_are_an_error_not_truncated() {
        assert!(parse_line(b"1000-2000 rw-p 0 100000001:0 0").is_err());
        assert!(parse_line(b"1000-2000 rw-p 0 0:100000000 0").is_err());
        let e = parse_line(b"1000-2000 rw-p 0 ffffffff:fffff 0").unwrap();
        assert_eq!((e.dev_major, e.dev_minor), (u32::MAX, 0xfffff));
    }

    #[test]
    fn file_names() {
        assert_eq!(
            file_name(b"/usr/lib/libpython3.11.so.1.0"),
            b"libpython3.11.so.1.0"
        );
        assert_eq!(file_name(b"/tmp/a b (deleted)"), b"a b");
        assert_eq!(file_name(b"python3"), b"python3");
        assert_eq!(file_name(b"/usr/bin/"), b"");
        assert!(is_shared_object(b"libc.so.6"));
        assert!(is_shared_object(b"_ssl.cpython-38-x86_64-linux-gnu.so"));
        assert!(!is_shared_object(b"weights.bin"));
    }
}
