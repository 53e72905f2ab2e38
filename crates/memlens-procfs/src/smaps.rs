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
        self.private_clean.saturating_add(self.private_dirty)
    }

    /// Adds another set of counters. Sums saturate at `u64::MAX` instead of wrapping: counters
    /// of one mapping never exceed its address range ([`parse`] checks it), so only a `smaps`
    /// listing one range many times (a concurrent change on an old kernel) could get there.
    pub fn add(&mut self, o: &Counters) {
        for (a, b) in self.fields_mut().into_iter().zip(o.fields()) {
            *a = a.saturating_add(b);
        }
    }

    /// Every byte counter, in declaration order.
    pub fn fields(&self) -> [u64; 12] {
        [
            self.size,
            self.rss,
            self.pss,
            self.shared_clean,
            self.shared_dirty,
            self.private_clean,
            self.private_dirty,
            self.anonymous,
            self.anon_huge_pages,
            self.swap,
            self.swap_pss,
            self.locked,
        ]
    }

    fn fields_mut(&mut self) -> [&mut u64; 12] {
        [
            &mut self.size,
            &mut self.rss,
            &mut self.pss,
            &mut self.shared_clean,
            &mut self.shared_dirty,
            &mut self.private_clean,
            &mut self.private_dirty,
            &mut self.anonymous,
            &mut self.anon_huge_pages,
            &mut self.swap,
            &mut self.swap_pss,
            &mut self.locked,
        ]
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

/// Parses the whole of `/proc/PID/smaps`. A mapping whose counters exceed its own address
/// range (no kernel writes that: each entry is computed under the lock of its mapping) is an
/// error, so that no figure built from them is silently wrong.
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
    for m in &out {
        let range = m.entry.size();
        if m.counters.fields().into_iter().any(|v| v > range) {
            return Err(Error::parse(
                "smaps",
                format!(
                    "counters larger than the mapping {:x}-{:x} ({range} bytes)",
                    m.entry.start, m.entry.end
                ),
            ));
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

    #[test]
    fn counters_larger_than_the_mapping_are_an_error() {
        // 4 kB of address range cannot hold 8 kB resident.
        let e = parse(b"1000-2000 rw-p 0 00:00 0\nSize: 4 kB\nRss: 8 kB\n");
        assert!(e.is_err());
        let ok = parse(b"1000-2000 rw-p 0 00:00 0\nSize: 4 kB\nRss: 4 kB\nSwap: 4 kB\n");
        assert_eq!(ok.map(|m| m[0].counters.rss).ok(), Some(4096));
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        // Two whole-address-space mappings (a listing no kernel writes, but the parser takes):
        // the sum must not wrap to a small number (nor panic in debug builds).
        let huge = b"0-ffffffffffff0000 rw-p 0 00:00 0\nRss: 18014398509481920 kB\n\
Private_Dirty: 18014398509481920 kB\nPrivate_Clean: 18014398509481920 kB\n";
        let one = parse(huge).unwrap();
        let mut two = one.clone();
        two.extend(one);
        let s = sum(&two);
        assert_eq!(s.rss, u64::MAX);
        assert_eq!(s.uss(), u64::MAX);
        assert_eq!(two[0].counters.uss(), u64::MAX);
    }
}
