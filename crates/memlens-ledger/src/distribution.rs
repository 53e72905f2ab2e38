//! Which Python distribution (numpy, torch, ...) an extension module's file belongs to.
//!
//! The first path component under `site-packages`/`dist-packages` names the import package;
//! the installed `*.dist-info/top_level.txt` files map it to the distribution that installed
//! it (`PIL` -> `pillow`). auditwheel's vendored `<pkg>.libs` folders belong to `<pkg>`.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::category::find;

/// Where a file sits relative to a Python installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonPath {
    /// Under `site-packages` or `dist-packages`: the folder and the top-level name.
    SitePackages {
        /// The `.../site-packages` folder.
        dir: Vec<u8>,
        /// The first component below it, reduced to an import name.
        top_level: Vec<u8>,
    },
    /// CPython's own compiled standard-library modules.
    LibDynload,
}

/// Locates a path within a Python installation.
pub fn locate(path: &[u8]) -> Option<PythonPath> {
    for marker in [&b"/site-packages/"[..], b"/dist-packages/"] {
        if let Some(i) = rfind(path, marker) {
            let dir = path[..i + marker.len() - 1].to_vec();
            let rest = &path[i + marker.len()..];
            let first = rest.split(|b| *b == b'/').next().unwrap_or(rest);
            return Some(PythonPath::SitePackages {
                dir,
                top_level: import_name(first, rest.len() == first.len()),
            });
        }
    }
    if find(path, b"/lib-dynload/").is_some() {
        return Some(PythonPath::LibDynload);
    }
    None
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// `numpy.libs` -> `numpy`; `_cffi_backend.cpython-311-x86_64-linux-gnu.so` -> `_cffi_backend`.
fn import_name(component: &[u8], is_file: bool) -> Vec<u8> {
    if let Some(base) = component.strip_suffix(b".libs") {
        return base.to_vec();
    }
    if is_file {
        let end = component
            .iter()
            .position(|b| *b == b'.')
            .unwrap_or(component.len());
        return component[..end].to_vec();
    }
    component.to_vec()
}

/// Maps top-level import names to distribution names, reading each `site-packages` folder's
/// `*.dist-info/top_level.txt` (and `RECORD` where that is missing) once.
#[derive(Debug, Default)]
pub struct DistributionResolver {
    /// Prefix for reading the target's files (`/proc/PID/root`), empty for the host's.
    root: PathBuf,
    by_dir: HashMap<Vec<u8>, HashMap<Vec<u8>, String>>,
}

impl DistributionResolver {
    /// A resolver reading files through `root` (e.g. `/proc/PID/root` to see a container's).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DistributionResolver {
            root: root.into(),
            by_dir: HashMap::new(),
        }
    }

    /// The item name for an extension file: its distribution, or `stdlib (lib-dynload)`.
    pub fn item_for(&mut self, path: &[u8]) -> Option<String> {
        match locate(path)? {
            PythonPath::LibDynload => Some("stdlib (lib-dynload)".to_string()),
            PythonPath::SitePackages { dir, top_level } => {
                let table = self
                    .by_dir
                    .entry(dir.clone())
                    .or_insert_with(|| read_top_levels(&self.root, &dir));
                Some(
                    table
                        .get(&top_level)
                        .cloned()
                        .unwrap_or_else(|| String::from_utf8_lossy(&top_level).into_owned()),
                )
            }
        }
    }
}

fn read_top_levels(root: &std::path::Path, dir: &[u8]) -> HashMap<Vec<u8>, String> {
    use std::os::unix::ffi::OsStrExt;
    let rel = dir.strip_prefix(b"/").unwrap_or(dir);
    let full = root.join(std::ffi::OsStr::from_bytes(rel));
    let mut map = HashMap::new();
    let Ok(rd) = std::fs::read_dir(&full) else {
        return map;
    };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let name = name.as_bytes();
        let Some(stem) = name
            .strip_suffix(b".dist-info")
            .or_else(|| name.strip_suffix(b".egg-info"))
        else {
            continue;
        };
        // `numpy-2.1.0` -> `numpy`: the version starts after the last '-'.
        let dist = match stem.iter().rposition(|b| *b == b'-') {
            Some(i) => &stem[..i],
            None => stem,
        };
        let dist = String::from_utf8_lossy(dist).into_owned();
        let mut tops: Vec<Vec<u8>> = Vec::new();
        if let Ok(t) = std::fs::read(entry.path().join("top_level.txt")) {
            tops.extend(
                t.split(|b| *b == b'\n')
                    .map(memlens_procfs::bytes::trim)
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec),
            );
        }
        if tops.is_empty() {
            if let Ok(r) = std::fs::read(entry.path().join("RECORD")) {
                for line in r.split(|b| *b == b'\n') {
                    let file = line.split(|b| *b == b',').next().unwrap_or(line);
                    let first = file.split(|b| *b == b'/').next().unwrap_or(file);
                    if first.is_empty() || first.ends_with(b".dist-info") || first == b".." {
                        continue;
                    }
                    let top = import_name(first, first.len() == file.len());
                    if !tops.contains(&top) {
                        tops.push(top);
                    }
                }
            }
        }
        for t in tops {
            map.entry(t).or_insert_with(|| dist.clone());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates() {
        assert_eq!(
            locate(b"/v/lib/python3.11/site-packages/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so"),
            Some(PythonPath::SitePackages {
                dir: b"/v/lib/python3.11/site-packages".to_vec(),
                top_level: b"numpy".to_vec()
            })
        );
        assert_eq!(
            locate(b"/v/site-packages/numpy.libs/libopenblas64_p-r0.so"),
            Some(PythonPath::SitePackages {
                dir: b"/v/site-packages".to_vec(),
                top_level: b"numpy".to_vec()
            })
        );
        assert_eq!(
            locate(b"/usr/lib/python3/dist-packages/_cffi_backend.cpython-311-x86_64-linux-gnu.so"),
            Some(PythonPath::SitePackages {
                dir: b"/usr/lib/python3/dist-packages".to_vec(),
                top_level: b"_cffi_backend".to_vec()
            })
        );
        assert_eq!(
            locate(b"/p/lib/python3.8/lib-dynload/_ssl.cpython-38-x86_64-linux-gnu.so"),
            Some(PythonPath::LibDynload)
        );
        assert_eq!(locate(b"/usr/lib/x86_64-linux-gnu/libc.so.6"), None);
    }

    #[test]
    fn resolves_through_dist_info() {
        let tmp = std::env::temp_dir().join(format!("memlens-dist-{}", std::process::id()));
        let sp = tmp.join("site-packages");
        std::fs::create_dir_all(sp.join("Pillow-10.0.0.dist-info")).unwrap();
        std::fs::create_dir_all(sp.join("pyyaml-6.0.dist-info")).unwrap();
        std::fs::write(sp.join("Pillow-10.0.0.dist-info/top_level.txt"), "PIL\n").unwrap();
        std::fs::write(
            sp.join("pyyaml-6.0.dist-info/RECORD"),
            "_yaml/__init__.py,sha256=x,1\nyaml/_yaml.cpython-311.so,,\n",
        )
        .unwrap();
        let mut r = DistributionResolver::new("/");
        let base = sp.to_str().unwrap();
        assert_eq!(
            r.item_for(format!("{base}/PIL/_imaging.cpython-311.so").as_bytes())
                .as_deref(),
            Some("Pillow")
        );
        assert_eq!(
            r.item_for(format!("{base}/yaml/_yaml.cpython-311.so").as_bytes())
                .as_deref(),
            Some("pyyaml")
        );
        assert_eq!(
            r.item_for(format!("{base}/other/x.so").as_bytes())
                .as_deref(),
            Some("other")
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
