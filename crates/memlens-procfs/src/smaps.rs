//! `/proc/PID/smaps` and `/proc/PID/smaps_rollup`: per-mapping and whole-process page counters.

use serde::Serialize;

use crate::bytes::{parse_kb, split_key_value, trim};
use crate::error::{Error, Result};
use crate::maps::{self, MapEntry};

/// The page counters the kernel reports per mapping (and summed in `smaps_rollup`), in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Virtual size (`Size`), 0 in `smaps_rollup`.
    pub size: u64,
    /// Resident set.
    pub rss: u64,
    /// Proportional set: each resident page divided by the number of processes mapping it.
    pub pss: u64,
    /// Pages shared with another process, clean.
    pub shared_clean: u64,
    /// Pages shared with another process, dirty.
    pub shared_dirty: u64,
    /// Pages mapped only here, clean.
    pub private_clean: u64,
    /// Pages mapped only here, dirty.
    pub private_dirty: u64,
    /// Anonymous pages.
    pub anonymous: u64,
    /// Anonymous transparent huge pages.
    pub anon_huge_pages: u64,
    /// Swapped-out pages.
    pub swap: u64,
    /// Proportional swap.
    pub swap_pss: u64,
    /// Locked pages.
    pub locked: u64,
}

impl Counters {
    /// Unique set: what would be freed if only this process exited.
    pub fn uss(&self) -> u64 {
        self.private_clean + self.private_dirty
    }

    /// Adds another set of counters.
    pub fn add(&mut self, o: &Counters) {
        self.size += o.size;
        self.rss += o.rss;
        self.pss += o.pss;
        self.shared_clean += o.shared_clean;
        self.shared_dirty += o.shared_dirty;
        self.private_clean += o.private_clean;
        self.private_dirty += o.private_dirty;
        self.anonymous += o.anonymous;
        self.anon_huge_pages += o.anon_huge_pages;
        self.swap += o.swap;
        self.swap_pss += o.swap_pss;
        self.locked += o.locked;
    }

    /// Applies one `Key: N kB` line; unknown keys are ignored (kernels add fields).
    fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let slot = match key {
            b"Size" => &mut self.size,
            b"Rss" => &mut self.rss,
            b"Pss" => &mut self.pss,
            b"Shared_Clean" => &mut self.shared_clean,
            b"Shared_Dirty" => &mut self.shared_dirty,
            b"Private_Clean" => &mut self.private_clean,
            b"Private_Dirty" => &mut self.private_dirty,
            b"Anonymous" => &mut self.anonymous,
            b"AnonHugePages" => &mut self.anon_huge_pages,
            b"Swap" => &mut self.swap,
            b"SwapPss" => &mut self.swap_pss,
            b"Locked" => &mut self.locked,
            _ => return Ok(()),
        };
        *slot = parse_kb(value).ok_or_else(|| {
            Error::parse(
                "smaps field",
                format!(
                    "{}: {}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(value)
                ),
            )
        })?;
        Ok(())
    }
}

/// One mapping of `smaps`: its `maps` line plus its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mapping {
    /// Address range, permissions, backing file.
    #[serde(flatten)]
    pub entry: MapEntry,
    /// Page counters.
    pub counters: Counters,
    /// The `VmFlags` two-letter codes, space separated (`rd wr mr mw me ac sd`).
    #[serde(serialize_with = "crate::serialize_lossy")]
    pub vm_flags: Vec<u8>,
}

impl Mapping {
    /// Whether `VmFlags` has a two-letter flag (e.g. `gd` stack guard, `ht` hugetlb).
    pub fn has_flag(&self, flag: &[u8; 2]) -> bool {
        crate::bytes::fields(&self.vm_flags).any(|f| f == flag)
    }
}

/// Parses the whole of `/proc/PID/smaps`.
pub fn parse(content: &[u8]) -> Result<Vec<Mapping>> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in content.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if maps::is_header(line) {
            out.push(Mapping {
                entry: maps::parse_line(line)?,
                counters: Counters::default(),
                vm_flags: Vec::new(),
            });
            continue;
        }
        let (key, value) = split_key_value(line).ok_or_else(|| {
            Error::parse("smaps line", String::from_utf8_lossy(line).into_owned())
        })?;
        let current = out
            .last_mut()
            .ok_or_else(|| Error::parse("smaps", "counter line before any mapping"))?;
        if key == b"VmFlags" {
            current.vm_flags = trim(value).to_vec();
        } else if key == b"THPeligible" || key == b"ProtectionKey" {
            // flags, not byte counts
        } else {
            current.counters.apply(key, value)?;
        }
    }
    Ok(out)
}

/// Parses `/proc/PID/smaps_rollup`: the process's counters summed by the kernel.
pub fn parse_rollup(content: &[u8]) -> Result<Counters> {
    let mut c = Counters::default();
    let mut saw_rss = false;
    for line in content.split(|b| *b == b'\n') {
        if line.is_empty() || maps::is_header(line) {
            continue;
        }
        let (key, value) = split_key_value(line).ok_or_else(|| {
            Error::parse(
                "smaps_rollup line",
                String::from_utf8_lossy(line).into_owned(),
            )
        })?;
        saw_rss |= key == b"Rss";
        c.apply(key, value)?;
    }
    if !saw_rss {
        return Err(Error::parse("smaps_rollup", "no Rss line"));
    }
    Ok(c)
}

/// Sums per-mapping counters: the fallback where `smaps_rollup` does not exist (kernels < 4.14).
pub fn sum(mappings: &[Mapping]) -> Counters {
    let mut c = Counters::default();
    for m in mappings {
        c.add(&m.counters);
    }
    c.size = 0;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &[u8] = b"561950b78000-561950b7a000 r--p 00000000 fe:00 247282     /usr/bin/head
Size:                  8 kB
Rss:                   8 kB
Pss:                   4 kB
Shared_Clean:          8 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Swap:                  0 kB
THPeligible:           0
VmFlags: rd mr mw me
7ffd0f57a000-7ffd0f59b000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  16 kB
Pss:                  16 kB
Private_Dirty:        16 kB
Swap:                  4 kB
VmFlags: rd wr mr mw me gd ac
";

    #[test]
    fn parses_two_mappings() {
        let m = parse(TWO).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].counters.rss, 8192);
        assert_eq!(m[0].counters.pss, 4096);
        assert_eq!(m[1].entry.path, b"[stack]");
        assert_eq!(m[1].counters.uss(), 16384);
        assert!(m[1].has_flag(b"gd"));
        assert!(!m[0].has_flag(b"gd"));
        let s = sum(&m);
        assert_eq!(s.rss, 24 * 1024);
        assert_eq!(s.swap, 4096);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"Rss: 4 kB\n").is_err());
        assert!(parse(b"1000-2000 rw-p 0 00:00 0\nRss: many kB\n").is_err());
        assert!(parse_rollup(b"").is_err());
    }
}
