//! Which file of a process is its Python, and what its name says: the one answer to "is this
//! Python, which version" for every part of memlens (the ledger, `ps`, the Python view).

use memlens_procfs::maps::{file_name, is_shared_object, MapEntry};
use memlens_remote::elf::{FileIdentity, MappedFile};

use crate::error::{Error, Result};
use crate::layouts;

/// `(major, minor, ABI flags)` as a file name spells them: `python3.11` gives `(3, 11, "")`,
/// `libpython3.13t.so.1.0` gives `(3, 13, "t")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameVersion {
    /// 3 (or 2).
    pub major: u8,
    /// The minor version.
    pub minor: u8,
    /// ABI flags after the minor: `t` free-threaded, `d` debug, `m` (3.7 and older).
    pub flags: String,
}

impl std::fmt::Display for NameVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}{}", self.major, self.minor, self.flags)
    }
}

/// The version in a file name such as `python3.11`, `libpython3.13t.so.1.0` or `python2.7`.
pub fn version_in_name(name: &[u8]) -> Option<NameVersion> {
    let i = name.windows(6).position(|w| w == b"python")?;
    let rest = &name[i + 6..];
    let dot = rest.iter().position(|b| *b == b'.')?;
    let major: u8 = std::str::from_utf8(&rest[..dot]).ok()?.parse().ok()?;
    let after = &rest[dot + 1..];
    let n = after.iter().take_while(|b| b.is_ascii_digit()).count();
    let minor: u8 = std::str::from_utf8(&after[..n]).ok()?.parse().ok()?;
    let flags = after[n..]
        .iter()
        .take_while(|b| b.is_ascii_lowercase())
        .map(|b| *b as char)
        .collect();
    Some(NameVersion {
        major,
        minor,
        flags,
    })
}

/// Whether a file name is CPython's shared library (`libpython3.11.so.1.0`, `libpython3.13t.so`).
pub fn is_libpython(name: &[u8]) -> bool {
    name.starts_with(b"libpython") && is_shared_object(name)
}

/// Whether an executable's name is a Python interpreter's: `python`, `python3`, `python3.11`.
fn is_python_program(name: &[u8]) -> bool {
    name.starts_with(b"python") && (name.len() == 6 || name[6].is_ascii_digit())
}

/// The file that holds a process's interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonFile {
    /// Its path as the process maps it (may end in ` (deleted)`).
    pub path: Vec<u8>,
    /// `true` for libpython (a shared build), `false` for the executable (a static build).
    pub shared: bool,
    /// What the file name says (or, for a libpython without one, the executable's name).
    pub name_version: Option<NameVersion>,
}

/// What a process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A CPython (or a program embedding one).
    Python(PythonFile),
    /// PyPy, which memlens does not read.
    PyPy,
    /// Not Python.
    NotPython,
}

/// Finds the Python of a process from its executable (`/proc/PID/exe`) and the paths it maps:
/// a mapped libpython first, else an executable named `python`, `python3`, `python3.11`..., else
/// (a program embedding Python under another name) a mapped file so named.
pub fn find<'a>(exe: &[u8], mapped: impl IntoIterator<Item = &'a [u8]>) -> Found {
    let exe_name = file_name(exe);
    let mut lib = None;
    let mut named = None;
    let exe_clean = exe.strip_suffix(b" (deleted)").unwrap_or(exe);
    let mut exe_mapped = None;
    for path in mapped {
        let name = file_name(path);
        if lib.is_none() && is_libpython(name) {
            lib = Some(path);
        }
        if named.is_none() && is_python_program(name) {
            named = Some(path);
        }
        if exe_mapped.is_none() && path.strip_suffix(b" (deleted)").unwrap_or(path) == exe_clean {
            exe_mapped = Some(path);
        }
    }
    let (path, shared) = match (lib, exe_mapped) {
        (Some(lib), _) => (lib, true),
        (None, Some(p)) if is_python_program(exe_name) => (p, false),
        (None, _) if exe_name.starts_with(b"pypy") => return Found::PyPy,
        (None, _) => match named {
            Some(p) => (p, false),
            None => return Found::NotPython,
        },
    };
    let name_version = version_in_name(file_name(path)).or_else(|| version_in_name(exe_name));
    Found::Python(PythonFile {
        path: path.to_vec(),
        shared,
        name_version,
    })
}

/// Checks what the file name says before any memory is read: Python 2, 3.0-3.7, newer than
/// the tables, free-threaded (`t`) and debug (`d`) builds are refused.
pub fn check_name_version(v: &NameVersion) -> Result<()> {
    if v.major != 3 || layouts::for_version(v.minor).is_none() {
        // (3.7's `m` ABI flag says nothing useful here)
        let shown: String = v.flags.chars().filter(|c| matches!(c, 't' | 'd')).collect();
        return Err(Error::Unsupported {
            what: format!("CPython {}.{}{shown}", v.major, v.minor),
        });
    }
    if v.flags.contains('t') {
        return Err(Error::Unsupported {
            what: format!("free-threaded CPython {v}"),
        });
    }
    if v.flags.contains('d') {
        return Err(Error::Unsupported {
            what: format!("debug build CPython {v}"),
        });
    }
    Ok(())
}

/// Where a process maps its Python file.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The file.
    pub file: PythonFile,
    /// Start of its offset-0 mapping (else its first mapping).
    pub base: u64,
    /// End of its last mapping.
    pub end: u64,
}

/// Finds the Python file among a process's mappings and where it is mapped.
pub fn locate(pid: u32, exe: &[u8], maps: &[MapEntry]) -> Result<Placement> {
    let file = match find(exe, maps.iter().map(|m| m.path.as_slice())) {
        Found::Python(f) => f,
        Found::PyPy => {
            return Err(Error::Unsupported {
                what: "PyPy".into(),
            })
        }
        Found::NotPython => return Err(Error::NotPython { pid }),
    };
    let mine: Vec<&MapEntry> = maps.iter().filter(|m| m.path == file.path).collect();
    let base = mine
        .iter()
        .find(|m| m.offset == 0)
        .or(mine.first())
        .map(|m| m.start)
        .ok_or(Error::NotPython { pid })?;
    let end = mine.iter().map(|m| m.end).max().unwrap_or(base);
    Ok(Placement { file, base, end })
}

/// What identifies a Python binary across processes, so that what was learnt of it (symbols,
/// version, layout) is learnt once: its GNU build id, else its file identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BinaryKey {
    /// The `NT_GNU_BUILD_ID` note.
    BuildId(Vec<u8>),
    /// Device, inode, size and modification time.
    File(FileIdentity),
}

/// Opens the Python file of a process and computes its key (a few small reads of the file's
/// head; the file is not parsed).
pub fn open_binary(
    pid: u32,
    placement: &Placement,
    maps: &[MapEntry],
) -> Result<(MappedFile, BinaryKey)> {
    let range = maps
        .iter()
        .find(|m| m.path == placement.file.path && m.start == placement.base)
        .map(|m| (m.start, m.end));
    let file = MappedFile::open(pid, &placement.file.path, range)?;
    let key = match file.build_id() {
        Ok(Some(id)) if !id.is_empty() => BinaryKey::BuildId(id),
        Ok(_) => BinaryKey::File(file.identity),
        Err(e) => {
            log::debug!("pid {pid}: no build id read ({e}); keyed by file identity");
            BinaryKey::File(file.identity)
        }
    };
    Ok((file, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nv(major: u8, minor: u8, flags: &str) -> NameVersion {
        NameVersion {
            major,
            minor,
            flags: flags.into(),
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            version_in_name(b"libpython3.13t.so.1.0"),
            Some(nv(3, 13, "t"))
        );
        assert_eq!(version_in_name(b"python2.7"), Some(nv(2, 7, "")));
        assert_eq!(version_in_name(b"python3.11"), Some(nv(3, 11, "")));
        assert_eq!(version_in_name(b"python3"), None);
        assert_eq!(version_in_name(b"python3."), None);
        assert_eq!(version_in_name(b"bash"), None);
        assert!(is_libpython(b"libpython3.8.so.1.0"));
        assert!(!is_libpython(b"libpython3.8.a"));
        assert!(check_name_version(&nv(2, 7, "")).is_err());
        assert!(check_name_version(&nv(3, 7, "")).is_err());
        assert!(check_name_version(&nv(3, 13, "t")).is_err());
        assert!(check_name_version(&nv(3, 11, "")).is_ok());
        let msg = check_name_version(&nv(3, 6, ""))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("unsupported: CPython 3.6") && msg.contains("3.8 to 3.15"),
            "{msg}"
        );
    }

    #[test]
    fn finds_the_python_file() {
        let lib: &[u8] = b"/opt/py/lib/libpython3.12.so.1.0";
        let libc: &[u8] = b"/usr/lib/x86_64-linux-gnu/libc.so.6";
        let exe: &[u8] = b"/opt/py/bin/python3.12";
        match find(exe, [exe, libc, lib]) {
            Found::Python(f) => {
                assert_eq!(f.path, lib);
                assert!(f.shared);
                assert_eq!(f.name_version, Some(nv(3, 12, "")));
            }
            other => panic!("{other:?}"),
        }
        let debian: &[u8] = b"/usr/bin/python3.11";
        match find(debian, [debian, libc]) {
            Found::Python(f) => assert!(!f.shared && f.path == debian),
            other => panic!("{other:?}"),
        }
        // a stub named python3 whose libpython is not mapped yet is still a (static) candidate
        let deleted: &[u8] = b"/usr/bin/python3 (deleted)";
        assert!(
            matches!(find(b"/usr/bin/python3", [deleted]), Found::Python(f) if f.path == deleted)
        );
        assert_eq!(
            find(b"/usr/bin/pypy3", [b"/usr/bin/pypy3".as_slice()]),
            Found::PyPy
        );
        assert_eq!(
            find(b"/bin/bash", [b"/bin/bash".as_slice(), libc]),
            Found::NotPython
        );
        assert_eq!(
            find(
                b"/usr/bin/python-config",
                [b"/usr/bin/python-config".as_slice()]
            ),
            Found::NotPython,
            "python-config is no interpreter"
        );
        // an embedding program maps a python executable file
        let embedded: &[u8] = b"/opt/x/python3.10";
        assert!(matches!(find(b"/usr/bin/uwsgi", [embedded]), Found::Python(f) if !f.shared));
    }
}
