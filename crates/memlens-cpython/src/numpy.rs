//! Whether numpy is loaded in a process, and which numpy: its `_multiarray_umath` extension
//! sits in `numpy/_core/` from numpy 2 on, in `numpy/core/` before; the version is read from
//! the `numpy-X.Y.Z.dist-info` folder beside the package when there is one.

use memlens_remote::vm::{self, Mapping};

/// The numpy a process has loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumpyVersion {
    /// 1 or 2 (the layout of its dtype changed at 2).
    pub major: u8,
    /// `X.Y.Z` when its dist-info folder says it.
    pub version: Option<String>,
}

/// numpy's version from the mappings of `pid` (`None`: numpy is not loaded).
pub fn detect(pid: u32) -> Option<NumpyVersion> {
    let maps = vm::maps(pid).ok()?;
    detect_in(pid, &maps)
}

/// numpy's version from a process's mappings.
pub fn detect_in(pid: u32, maps: &[Mapping]) -> Option<NumpyVersion> {
    for m in maps {
        let path = m.path.strip_suffix(b" (deleted)").unwrap_or(&m.path);
        let (major, marker): (u8, &[u8]) =
            if let Some(i) = find(path, b"/numpy/_core/_multiarray_umath") {
                (2, &path[..i])
            } else if let Some(i) = find(path, b"/numpy/core/_multiarray_umath") {
                (1, &path[..i])
            } else {
                continue;
            };
        return Some(NumpyVersion {
            major,
            version: dist_info_version(pid, marker),
        });
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `X.Y.Z` from `<site>/numpy-X.Y.Z.dist-info`, read through `/proc/PID/root`.
fn dist_info_version(pid: u32, site: &[u8]) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let mut dir = format!("/proc/{pid}/root").into_bytes();
    dir.extend_from_slice(site);
    let rd = std::fs::read_dir(std::ffi::OsStr::from_bytes(&dir)).ok()?;
    for e in rd.flatten().take(10_000) {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(v) = name
            .strip_prefix("numpy-")
            .and_then(|r| r.strip_suffix(".dist-info"))
        {
            return Some(v.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(path: &[u8]) -> Mapping {
        Mapping {
            start: 0x1000,
            end: 0x2000,
            perms: *b"r-xp",
            offset: 0,
            path: path.to_vec(),
        }
    }

    #[test]
    fn major_from_the_extension_path() {
        let v2 = [mapping(
            b"/v/lib/python3.12/site-packages/numpy/_core/_multiarray_umath.cpython-312-x86_64-linux-gnu.so",
        )];
        assert_eq!(detect_in(0, &v2).map(|v| v.major), Some(2));
        let v1 = [mapping(
            b"/v/lib/python3.11/site-packages/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so (deleted)",
        )];
        assert_eq!(detect_in(0, &v1).map(|v| v.major), Some(1));
        assert_eq!(detect_in(0, &[mapping(b"/usr/lib/libc.so.6")]), None);
    }
}
