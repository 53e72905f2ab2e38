//! Finding the interpreter in a process: which file holds it, `_PyRuntime`, the exact version
//! and flavour, the generated layout, and a validation before anything else is read.

use memlens_remote::elf::ElfFile;
use memlens_remote::vm::{self, Mapping};
use memlens_remote::ProcessMemory;

use crate::error::{Error, Result};
use crate::layouts::{self, Layout};

/// A CPython version as `PY_VERSION_HEX` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// 3.
    pub major: u8,
    /// 8..13.
    pub minor: u8,
    /// Patch level, when known (file names give only the minor).
    pub micro: Option<u8>,
    /// Release level nibble: 0xA alpha, 0xB beta, 0xC candidate, 0xF final.
    pub level: u8,
    /// Serial of a pre-release.
    pub serial: u8,
}

impl Version {
    /// Decodes `PY_VERSION_HEX`.
    pub fn from_hex(hex: u32) -> Version {
        Version {
            major: (hex >> 24) as u8,
            minor: (hex >> 16) as u8,
            micro: Some((hex >> 8) as u8),
            level: ((hex >> 4) & 0xf) as u8,
            serial: (hex & 0xf) as u8,
        }
    }

    /// Parses the start of `sys.version` (`"3.9.18 (main, ...)"`).
    pub fn from_version_string(s: &[u8]) -> Option<Version> {
        let end = s.iter().position(|b| *b == b' ').unwrap_or(s.len());
        let text = std::str::from_utf8(&s[..end]).ok()?;
        let mut it = text.splitn(3, '.');
        let major: u8 = it.next()?.parse().ok()?;
        let minor: u8 = it.next()?.parse().ok()?;
        let rest = it.next()?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let micro: u8 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        let (level, serial) = match tail.chars().next() {
            None | Some('+') => (0xf, 0),
            Some(c) => {
                let level = match c {
                    'a' => 0xa,
                    'b' => 0xb,
                    'r' => 0xc,
                    _ => 0xf,
                };
                let serial = tail
                    .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0);
                (level, serial)
            }
        };
        Some(Version {
            major,
            minor,
            micro: Some(micro),
            level,
            serial,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(m) = self.micro {
            write!(f, ".{m}")?;
            match self.level {
                0xa => write!(f, "a{}", self.serial)?,
                0xb => write!(f, "b{}", self.serial)?,
                0xc => write!(f, "rc{}", self.serial)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// `(major, minor, abi flags)` from a file name such as `python3.11` or `libpython3.13t.so.1.0`.
pub fn version_in_name(name: &[u8]) -> Option<(u8, u8, String)> {
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
    Some((major, minor, flags))
}

fn file_name(path: &[u8]) -> &[u8] {
    let p = path.strip_suffix(b" (deleted)").unwrap_or(path);
    match p.iter().rposition(|b| *b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

/// The file holding the interpreter, as found in the process's mappings.
#[derive(Debug, Clone)]
pub struct Binary {
    /// Path as the process sees it.
    pub path: Vec<u8>,
    /// `true` for libpython (shared build), `false` for the executable (static build).
    pub shared: bool,
    /// `(major, minor, abi flags)` from the file name.
    pub name_version: Option<(u8, u8, String)>,
    /// Start of its offset-0 mapping.
    pub base: u64,
    /// End of its last mapping.
    pub end: u64,
}

/// Finds the python executable or libpython among the mappings.
pub fn find_binary(pid: u32, maps: &[Mapping]) -> Result<Binary> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| {
            use std::os::unix::ffi::OsStrExt;
            p.as_os_str().as_bytes().to_vec()
        })
        .unwrap_or_default();
    let lib = maps.iter().find(|m| {
        let n = file_name(&m.path);
        n.starts_with(b"libpython") && (n.ends_with(b".so") || n.windows(4).any(|w| w == b".so."))
    });
    let exe_name = file_name(&exe).to_vec();
    let (path, shared) = match lib {
        Some(m) => (m.path.clone(), true),
        None if exe_name.starts_with(b"python") => {
            let exe_clean = exe.strip_suffix(b" (deleted)").unwrap_or(&exe);
            let m = maps
                .iter()
                .find(|m| m.path.strip_suffix(b" (deleted)").unwrap_or(&m.path) == exe_clean)
                .ok_or(Error::NotPython { pid })?;
            (m.path.clone(), false)
        }
        None if exe_name.starts_with(b"pypy") => {
            return Err(Error::Unsupported {
                what: "PyPy".into(),
            })
        }
        None => {
            // A program embedding Python under another name still maps a file called python*.
            match maps
                .iter()
                .find(|m| file_name(&m.path).starts_with(b"python"))
            {
                Some(m) => (m.path.clone(), false),
                None => return Err(Error::NotPython { pid }),
            }
        }
    };
    let mine: Vec<&Mapping> = maps.iter().filter(|m| m.path == path).collect();
    let base = mine
        .iter()
        .find(|m| m.offset == 0)
        .or(mine.first())
        .map(|m| m.start)
        .ok_or(Error::NotPython { pid })?;
    let end = mine.iter().map(|m| m.end).max().unwrap_or(base);
    let name_version =
        version_in_name(file_name(&path)).or_else(|| version_in_name(file_name(&exe)));
    Ok(Binary {
        path,
        shared,
        name_version,
        base,
        end,
    })
}

/// Checks what the file name says before any memory is read: Python 2, 3.0-3.7, newer than
/// the tables, free-threaded (`t`) and debug (`d`) builds are refused.
pub fn check_name_version(v: &(u8, u8, String)) -> Result<()> {
    let (major, minor, flags) = v;
    let supported = layouts::supported_minors();
    if *major != 3 || !supported.contains(minor) {
        // (3.7's `m` ABI flag says nothing useful here)
        let shown: String = flags.chars().filter(|c| matches!(c, 't' | 'd')).collect();
        return Err(Error::Unsupported {
            what: format!("CPython {major}.{minor}{shown}"),
        });
    }
    if flags.contains('t') {
        return Err(Error::Unsupported {
            what: format!("free-threaded CPython {major}.{minor}{flags}"),
        });
    }
    if flags.contains('d') {
        return Err(Error::Unsupported {
            what: format!("debug build CPython {major}.{minor}{flags}"),
        });
    }
    Ok(())
}

/// An attached interpreter: where `_PyRuntime` is, its version and its layout.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// Process id.
    pub pid: u32,
    /// Exact version (micro known when the process says it).
    pub version: Version,
    /// The generated table for the version.
    pub layout: &'static Layout,
    /// Address of `_PyRuntime`.
    pub runtime: u64,
    /// Address of the main interpreter state.
    pub interp: u64,
    /// The binary holding the interpreter.
    pub binary: Binary,
    /// Load bias of that binary.
    pub bias: u64,
    /// Its ELF symbols and sections.
    pub elf: ElfFile,
    /// Addresses of builtin type objects, by C name (`PyList_Type` ...), in the process.
    pub types: BuiltinTypes,
}

/// Addresses of the builtin types the census and the frame walk recognise.
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct BuiltinTypes {
    pub list: u64,
    pub tuple: u64,
    pub dict: u64,
    pub set: u64,
    pub frozenset: u64,
    pub str: u64,
    pub bytes: u64,
    pub int: u64,
    pub float: u64,
    pub type_: u64,
    pub function: u64,
    pub module: u64,
    pub cell: u64,
    pub code: u64,
}

impl Interpreter {
    /// Finds and validates the interpreter of `pid`.
    pub fn attach<M: ProcessMemory>(pid: u32, mem: &M) -> Result<Interpreter> {
        let maps = vm::maps(pid)?;
        let binary = find_binary(pid, &maps)?;
        if let Some(v) = &binary.name_version {
            check_name_version(v)?;
        }
        let range = maps
            .iter()
            .find(|m| m.path == binary.path && m.start == binary.base)
            .map(|m| (m.start, m.end));
        let elf = ElfFile::open_in_process(pid, &binary.path, range)?;
        let bias = elf.load_bias(binary.base);
        let sym = |name: &str| elf.symbol(name).map(|s| s.address.wrapping_add(bias));
        let runtime = sym("_PyRuntime").ok_or_else(|| Error::Unsupported {
            what: format!(
                "no _PyRuntime symbol in {} (CPython older than 3.7, or not CPython)",
                String::from_utf8_lossy(&binary.path)
            ),
        })?;
        let version = read_version(mem, &elf, bias, &binary)?;
        if version.major != 3 {
            return Err(Error::Unsupported {
                what: format!("CPython {version}"),
            });
        }
        // the minor's table, checked against _Py_DebugOffsets (3.13+); a build the table does
        // not match is read through its debug offsets alone
        let layout = layouts::select(mem, runtime, &version)?;
        let interp = mem.read_u64(runtime + layout.runtime_interpreters_head)?;
        let invalid = |why: String| Error::Invalid { pid, why };
        if interp == 0 {
            return Err(invalid(
                "no interpreter yet (starting or finalising)".into(),
            ));
        }
        let tstate = mem.read_u64(interp + layout.interp_threads_head)?;
        if tstate != 0 {
            let back = mem.read_u64(tstate + layout.tstate_interp)?;
            if back != interp {
                return Err(invalid(format!(
                    "thread state {tstate:#x} points to interpreter {back:#x}, not {interp:#x}"
                )));
            }
        }
        let t = |name: &str| sym(name).unwrap_or(0);
        let types = BuiltinTypes {
            list: t("PyList_Type"),
            tuple: t("PyTuple_Type"),
            dict: t("PyDict_Type"),
            set: t("PySet_Type"),
            frozenset: t("PyFrozenSet_Type"),
            str: t("PyUnicode_Type"),
            bytes: t("PyBytes_Type"),
            int: t("PyLong_Type"),
            float: t("PyFloat_Type"),
            type_: t("PyType_Type"),
            function: t("PyFunction_Type"),
            module: t("PyModule_Type"),
            cell: t("PyCell_Type"),
            code: t("PyCode_Type"),
        };
        // The modules dict must be a dict: a last check that the layout fits this process.
        let modules = mem.read_u64(interp + layout.interp_modules)?;
        if modules != 0 && types.dict != 0 {
            let ty = mem.read_u64(modules + layout.object_type)?;
            if ty != types.dict {
                return Err(invalid(
                    "sys.modules is not a dict at the expected offset".into(),
                ));
            }
        }
        Ok(Interpreter {
            pid,
            version,
            layout,
            runtime,
            interp,
            binary,
            bias,
            elf,
            types,
        })
    }

    /// Address of a symbol of the interpreter's binary in the process.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.elf
            .symbol(name)
            .map(|s| s.address.wrapping_add(self.bias))
    }
}

/// The exact version: `Py_Version` (3.11+), the `Py_GetVersion` buffer (symbol `version` or
/// `version.0`, filled at startup), else the minor from the file name.
fn read_version<M: ProcessMemory>(
    mem: &M,
    elf: &ElfFile,
    bias: u64,
    binary: &Binary,
) -> Result<Version> {
    if let Some(s) = elf.symbol("Py_Version") {
        let hex = mem.read_u32(s.address.wrapping_add(bias))?;
        let v = Version::from_hex(hex);
        if v.major == 3 {
            return Ok(v);
        }
    }
    for name in ["version", "version.0"] {
        for s in elf.symbols_named(name) {
            if s.size == 250 {
                if let Ok(text) = mem.read_cstr(s.address.wrapping_add(bias), 250) {
                    if let Some(v) = Version::from_version_string(&text) {
                        return Ok(v);
                    }
                }
            }
        }
    }
    match &binary.name_version {
        Some((major, minor, _)) => Ok(Version {
            major: *major,
            minor: *minor,
            micro: None,
            level: 0xf,
            serial: 0,
        }),
        None => Err(Error::Unsupported {
            what: "a Python whose version cannot be determined".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(Version::from_hex(0x030d00f0).to_string(), "3.13.0");
        assert_eq!(Version::from_hex(0x030e00a3).to_string(), "3.14.0a3");
        assert_eq!(
            Version::from_version_string(b"3.9.18 (main, Nov 1 2026) [GCC]").map(|v| v.to_string()),
            Some("3.9.18".into())
        );
        assert_eq!(
            Version::from_version_string(b"3.12.0rc2 (x)").map(|v| v.to_string()),
            Some("3.12.0rc2".into())
        );
        assert_eq!(Version::from_version_string(b"garbage"), None);
    }

    #[test]
    fn names() {
        assert_eq!(
            version_in_name(b"libpython3.13t.so.1.0"),
            Some((3, 13, "t".into()))
        );
        assert_eq!(version_in_name(b"python2.7"), Some((2, 7, String::new())));
        assert!(check_name_version(&(2, 7, String::new())).is_err());
        assert!(check_name_version(&(3, 7, String::new())).is_err());
        assert!(check_name_version(&(3, 13, "t".into())).is_err());
        assert!(check_name_version(&(3, 11, String::new())).is_ok());
        let msg = check_name_version(&(3, 6, String::new()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("unsupported: CPython 3.6") && msg.contains("3.8 to 3.15"),
            "{msg}"
        );
    }
}
