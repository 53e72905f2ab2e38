//! Memory cgroups, v2 and v1: where a process's cgroup is, and what its memory files say.
//!
//! Both are in use: hosts of this project's machine kind mount v1's memory controller beside a
//! v2 hierarchy without controllers, so the memory view comes from whichever hierarchy holds the
//! `memory` controller.

use std::path::{Path, PathBuf};

use crate::bytes::{fields, parse_u64, trim};
use crate::error::Result;

/// v1 reports "no limit" as a huge page-aligned number; anything above this is unlimited.
const UNLIMITED_ABOVE: u64 = 1 << 62;

/// One line of `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Hierarchy id (0 for v2).
    pub hierarchy: u32,
    /// Controllers, comma separated (empty for v2).
    pub controllers: Vec<u8>,
    /// Path relative to the hierarchy root (as seen from the reader's cgroup namespace).
    pub path: Vec<u8>,
}

/// Parses `/proc/PID/cgroup`.
pub fn parse_memberships(content: &[u8]) -> Vec<Membership> {
    content
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let mut parts = line.splitn(3, |b| *b == b':');
            let id = u32::try_from(parse_u64(parts.next()?)?).ok()?;
            let controllers = parts.next()?.to_vec();
            let path = parts.next()?.to_vec();
            Some(Membership {
                hierarchy: id,
                controllers,
                path,
            })
        })
        .collect()
}

/// A cgroup mount from `mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// 1 or 2.
    pub version: u8,
    /// Root of the mount within the hierarchy.
    pub root: Vec<u8>,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Super options (v1 lists the controllers here).
    pub options: Vec<u8>,
}

impl CgroupMount {
    /// Whether a v1 mount carries the named controller.
    pub fn has_controller(&self, name: &[u8]) -> bool {
        self.options.split(|b| *b == b',').any(|o| o == name)
    }
}

/// Decodes the octal escapes (`\040`) the kernel uses in `mountinfo` paths. The kernel escapes
/// single bytes (`\000` to `\377`); a backslash followed by anything else stays literal.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if let (b'\\', Some(&[a, b, c])) = (s[i], s.get(i + 1..i + 4)) {
            let octal = |d: u8| (b'0'..=b'7').contains(&d).then(|| u16::from(d - b'0'));
            if let (Some(a), Some(b), Some(c)) = (octal(a), octal(b), octal(c)) {
                if let Ok(byte) = u8::try_from(a * 64 + b * 8 + c) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Parses the cgroup mounts out of `/proc/PID/mountinfo`.
pub fn parse_mounts(content: &[u8]) -> Vec<CgroupMount> {
    use std::os::unix::ffi::OsStrExt;
    content
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let f: Vec<&[u8]> = fields(line).collect();
            let dash = f.iter().position(|x| *x == b"-")?;
            let fstype = *f.get(dash + 1)?;
            let version = match fstype {
                b"cgroup2" => 2,
                b"cgroup" => 1,
                _ => return None,
            };
            Some(CgroupMount {
                version,
                root: unescape(f.get(3)?),
                mount_point: PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(f.get(4)?))),
                options: f.get(dash + 3).map(|o| o.to_vec()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Finds the directory of the memory cgroup of a process: the v1 hierarchy with the `memory`
/// controller if one is mounted, else the v2 hierarchy (if it has the memory controller enabled).
pub fn locate(
    memberships: &[Membership],
    mounts: &[CgroupMount],
) -> Option<(u8, Vec<u8>, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let join = |mount: &CgroupMount, path: &[u8]| {
        let rel = if mount.root != b"/" {
            path.strip_prefix(mount.root.as_slice()).unwrap_or(path)
        } else {
            path
        };
        // every leading '/' (a joined absolute path would replace the mount point) and no
        // '..' component: the directory stays under the mount point whatever the file says
        let start = rel.iter().position(|b| *b != b'/').unwrap_or(rel.len());
        let mut dir = mount.mount_point.clone();
        for part in rel[start..].split(|b| *b == b'/') {
            if !part.is_empty() && part != b"." && part != b".." {
                dir.push(std::ffi::OsStr::from_bytes(part));
            }
        }
        dir
    };
    let v1 = memberships
        .iter()
        .find(|m| m.hierarchy != 0 && m.controllers.split(|b| *b == b',').any(|c| c == b"memory"));
    if let Some(member) = v1 {
        if let Some(mount) = mounts
            .iter()
            .find(|m| m.version == 1 && m.has_controller(b"memory"))
        {
            return Some((1, member.path.clone(), join(mount, &member.path)));
        }
    }
    let v2 = memberships.iter().find(|m| m.hierarchy == 0)?;
    let mount = mounts.iter().find(|m| m.version == 2)?;
    let dir = join(mount, &v2.path);
    if dir.join("memory.current").exists() {
        return Some((2, v2.path.clone(), dir));
    }
    None
}

pub use memlens_model::cgroup::CgroupMemory;

/// Parses a `key value` file (`memory.stat`, `memory.events`, v1 `memory.oom_control`).
pub fn parse_flat_keyed(content: &[u8]) -> Vec<(Vec<u8>, u64)> {
    content
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let mut f = fields(line);
            let k = f.next()?;
            let v = parse_u64(f.next()?)?;
            Some((k.to_vec(), v))
        })
        .collect()
}

fn lookup(kv: &[(Vec<u8>, u64)], key: &[u8]) -> Option<u64> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Parses a single-value file: a number, or `max` (unlimited).
pub fn parse_limit(content: &[u8]) -> Option<Option<u64>> {
    let t = trim(content);
    if t == b"max" {
        return Some(None);
    }
    let v = parse_u64(t)?;
    Some(if v >= UNLIMITED_ABOVE { None } else { Some(v) })
}

/// Parses a pressure file's `some`/`full` `avg10` values: percentages, so anything outside
/// 0 to 100 (or not a number: Rust's float parser takes `nan` and `inf`) is `None`.
pub fn parse_pressure(content: &[u8]) -> (Option<f64>, Option<f64>) {
    let mut some = None;
    let mut full = None;
    for line in content.split(|b| *b == b'\n') {
        let mut f = fields(line);
        let kind = f.next();
        let avg10 = f
            .find_map(|x| x.strip_prefix(b"avg10="))
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<f64>().ok())
            .filter(|v| (0.0..=100.0).contains(v));
        match kind {
            Some(b"some") => some = avg10,
            Some(b"full") => full = avg10,
            _ => {}
        }
    }
    (some, full)
}

/// v2 `memory.stat` before Linux 5.18 has no `kernel` line: its parts, `None` when one is
/// missing or the sum does not fit a `u64` (no kernel writes that).
fn kernel_v2_before_5_18(stat: &[(Vec<u8>, u64)]) -> Option<u64> {
    lookup(stat, b"kernel_stack")?
        .checked_add(lookup(stat, b"slab")?)?
        .checked_add(lookup(stat, b"pagetables").unwrap_or(0))
}

fn read_opt(dir: &Path, name: &str) -> Option<Vec<u8>> {
    std::fs::read(dir.join(name)).ok()
}

/// Reads the memory files of a cgroup directory.
pub fn read_memory(version: u8, path: Vec<u8>, dir: &Path) -> Result<CgroupMemory> {
    let usage_file = if version == 2 {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    };
    let usage = crate::read_path(dir.join(usage_file).as_path(), 0).and_then(|b| {
        parse_u64(trim(&b)).ok_or_else(|| {
            crate::Error::parse("cgroup usage", String::from_utf8_lossy(&b).into_owned())
        })
    })?;
    let limit_of = |name: &str| read_opt(dir, name).and_then(|b| parse_limit(&b)).flatten();
    let stat = read_opt(dir, "memory.stat")
        .map(|b| parse_flat_keyed(&b))
        .unwrap_or_default();
    let mut m = CgroupMemory {
        version,
        path,
        usage,
        ..CgroupMemory::default()
    };
    if version == 2 {
        m.limit = limit_of("memory.max");
        m.high = limit_of("memory.high");
        m.peak = read_opt(dir, "memory.peak").and_then(|b| parse_u64(trim(&b)));
        m.anon = lookup(&stat, b"anon");
        m.file = lookup(&stat, b"file");
        m.kernel = lookup(&stat, b"kernel").or_else(|| kernel_v2_before_5_18(&stat));
        m.shmem = lookup(&stat, b"shmem");
        m.sock = lookup(&stat, b"sock");
        let events = read_opt(dir, "memory.events")
            .map(|b| parse_flat_keyed(&b))
            .unwrap_or_default();
        m.oom_events = lookup(&events, b"oom");
        m.oom_kills = lookup(&events, b"oom_kill");
        if let Some(p) = read_opt(dir, "memory.pressure") {
            (m.pressure_some_avg10, m.pressure_full_avg10) = parse_pressure(&p);
        }
    } else {
        let own = limit_of("memory.limit_in_bytes");
        let hierarchical =
            lookup(&stat, b"hierarchical_memory_limit").filter(|v| *v < UNLIMITED_ABOVE);
        m.limit = match (own, hierarchical) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        m.peak = read_opt(dir, "memory.max_usage_in_bytes").and_then(|b| parse_u64(trim(&b)));
        m.anon = lookup(&stat, b"total_rss").or_else(|| lookup(&stat, b"rss"));
        m.file = lookup(&stat, b"total_cache").or_else(|| lookup(&stat, b"cache"));
        m.shmem = lookup(&stat, b"total_shmem").or_else(|| lookup(&stat, b"shmem"));
        m.kernel = read_opt(dir, "memory.kmem.usage_in_bytes").and_then(|b| parse_u64(trim(&b)));
        let oom = read_opt(dir, "memory.oom_control")
            .map(|b| parse_flat_keyed(&b))
            .unwrap_or_default();
        m.oom_kills = lookup(&oom, b"oom_kill");
        m.oom_events = read_opt(dir, "memory.failcnt").and_then(|b| parse_u64(trim(&b)));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_and_mounts() {
        let m = parse_memberships(b"9:name=systemd:/\n4:memory:/process_api/df7c\n0::/\n");
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].controllers, b"memory");
        let mounts = parse_mounts(
            b"30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory\n\
31 25 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
32 25 0:28 / /mnt/a\\040b rw - ext4 /dev/x rw\n",
        );
        assert_eq!(mounts.len(), 2);
        assert!(mounts[0].has_controller(b"memory"));
        let (v, path, dir) = locate(&m, &mounts).unwrap();
        assert_eq!(v, 1);
        assert_eq!(path, b"/process_api/df7c");
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/memory/process_api/df7c"));
    }

    #[test]
    fn namespaced_root_is_stripped() {
        let m = parse_memberships(b"4:memory:/kube/pod1/ctr\n");
        let mounts = parse_mounts(
            b"30 25 0:26 /kube/pod1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        let (_, _, dir) = locate(&m, &mounts).unwrap();
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/memory/ctr"));
    }

    #[test]
    fn values() {
        assert_eq!(parse_limit(b"max\n"), Some(None));
        assert_eq!(parse_limit(b"9223372036854771712\n"), Some(None));
        assert_eq!(parse_limit(b"1048576\n"), Some(Some(1_048_576)));
        assert_eq!(parse_limit(b"x"), None);
        let (s, f) = parse_pressure(b"some avg10=1.50 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=5\n");
        assert_eq!((s, f), (Some(1.5), Some(0.25)));
        let kv = parse_flat_keyed(b"oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
        assert_eq!(lookup(&kv, b"oom_kill"), Some(3));
        assert_eq!(unescape(b"a\\040b"), b"a b");
    }

    #[test]
    fn hierarchy_ids_wider_than_u32_are_skipped_not_truncated() {
        // 4294967296 truncated to 0 would make a v1 line look like the v2 one.
        let m = parse_memberships(b"4294967296::/fake\n0::/real\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].path, b"/real");
    }

    #[test]
    fn pressure_outside_percentages_is_none() {
        let p = |s: &[u8]| parse_pressure(s);
        assert_eq!(p(b"some avg10=nan total=1\nfull avg10=inf\n"), (None, None));
        assert_eq!(p(b"some avg10=-1.0\nfull avg10=100.01\n"), (None, None));
        assert_eq!(
            p(b"some avg10=0.00\nfull avg10=100.00\n"),
            (Some(0.0), Some(100.0))
        );
    }

    #[test]
    fn kernel_parts_that_overflow_are_none() {
        let kv = parse_flat_keyed(b"kernel_stack 18446744073709551615\nslab 1\n");
        assert_eq!(kernel_v2_before_5_18(&kv), None);
        let kv = parse_flat_keyed(b"kernel_stack 3\nslab 4\npagetables 5\n");
        assert_eq!(kernel_v2_before_5_18(&kv), Some(12));
        let kv = parse_flat_keyed(b"kernel_stack 3\n");
        assert_eq!(kernel_v2_before_5_18(&kv), None);
    }

    #[test]
    fn octal_escapes_above_a_byte_stay_literal() {
        // Found by mutation testing: `\777` overflowed the u8 arithmetic (a panic in debug
        // builds). The kernel escapes bytes only (`\000`..`\377`); anything else is literal.
        assert_eq!(unescape(b"a\\777b"), b"a\\777b");
        assert_eq!(unescape(b"\\400"), b"\\400");
        assert_eq!(unescape(b"\\377\\134\\011"), b"\xff\\\t");
        assert_eq!(unescape(b"end\\04"), b"end\\04");
        let mounts =
            parse_mounts(b"30 25 0:26 /\\777 /sys/fs/cgroup/x\\040y rw - cgroup2 cgroup2 rw\n");
        assert_eq!(mounts[0].root, b"/\\777");
        assert_eq!(mounts[0].mount_point, PathBuf::from("/sys/fs/cgroup/x y"));
    }
}

#[cfg(test)]
mod locate_tests {
    use super::*;

    /// Found by the procfs fuzz target: a membership path `//x` or with `..` replaced or left
    /// the mount point.
    #[test]
    fn a_membership_path_never_leaves_its_mount_point() {
        let mounts =
            parse_mounts(b"30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
        for path in ["//etc", "/../../etc", "/a/../../b"] {
            let m = parse_memberships(format!("4:memory:{path}\n").as_bytes());
            let (_, _, dir) = locate(&m, &mounts).expect("located");
            assert!(dir.starts_with("/sys/fs/cgroup/memory"), "{path}: {dir:?}");
        }
    }
}
