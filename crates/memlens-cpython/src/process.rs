//! The interpreter in a process: `_PyRuntime`, the exact version and flavour, the generated
//! layout, and a validation before anything else is read. What is the same for every process
//! of one Python binary is learnt once ([`BinaryFindings`]); see [`crate::attach`].

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use memlens_remote::elf::{ElfFile, MappedFile};
use memlens_remote::ProcessMemory;

use crate::binary::{BinaryKey, NameVersion, PythonFile};
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

/// Local (`.symtab`) statics memlens looks up beside CPython's API objects.
const STATICS: &[&str] = &["version", "version.0", "arenas", "maxarenas"];

/// Whether memlens keeps a data symbol of a Python binary: CPython's objects (`Py*`, `_Py*`:
/// `_PyRuntime`, `Py_Version`, the `Py*_Type`s) and a few statics. A libpython's other data
/// symbols (docstrings, method tables: thousands) are not indexed.
pub fn wanted_symbol(name: &[u8]) -> bool {
    name.starts_with(b"Py")
        || name.starts_with(b"_Py")
        || STATICS.iter().any(|s| s.as_bytes() == name)
}

/// What is learnt once per Python binary (keyed by [`BinaryKey`]) and shared by every process
/// that runs it: its symbols, the addresses memlens needs at link time, and what reading the
/// first process told (the exact version, the `_Py_DebugOffsets` check, where a stripped static
/// build keeps pymalloc's arena table).
#[derive(Debug)]
pub struct BinaryFindings {
    /// What identifies the binary.
    pub key: BinaryKey,
    /// Its ELF symbols and sections.
    pub elf: ElfFile,
    /// `true` for libpython, `false` for a static executable.
    pub shared: bool,
    /// What its file name (or the executable's) says.
    pub name_version: Option<NameVersion>,
    /// Link-time address of `_PyRuntime`.
    runtime: u64,
    /// Link-time addresses of the builtin types.
    types: BuiltinTypes,
    /// The exact version, once a process said it (constant for a binary).
    version: OnceLock<Version>,
    /// The layout selected for it (the minor's table, or `_Py_DebugOffsets` alone), once.
    layout: OnceLock<&'static Layout>,
    /// Link-time address of obmalloc's `arenas` pointer in a stripped build's `.bss` where the
    /// last scan found it, 0 before (3.8-3.11 without `.symtab`).
    pub(crate) arena_pointer: AtomicU64,
}

impl BinaryFindings {
    /// Parses the binary (the costly part of discovery: the whole file is read) and looks up
    /// what every process of it needs.
    pub fn discover(
        pid: u32,
        file: &MappedFile,
        key: BinaryKey,
        python: &PythonFile,
    ) -> Result<BinaryFindings> {
        let elf = file.parse_symbols(Some(&wanted_symbol))?;
        let path = String::from_utf8_lossy(&python.path);
        let runtime = match elf.symbol("_PyRuntime") {
            Some(s) => s.address,
            // A python executable without the runtime is the stub of a shared build whose
            // libpython is not mapped yet (just after exec): worth another try.
            None if !python.shared => {
                return Err(Error::Invalid {
                    pid,
                    why: format!(
                        "no _PyRuntime symbol in {path} (its libpython may not be loaded yet)"
                    ),
                })
            }
            None => {
                return Err(Error::Unsupported {
                    what: format!(
                        "no _PyRuntime symbol in {path} (CPython older than 3.7, or not CPython)"
                    ),
                })
            }
        };
        let t = |name: &str| elf.symbol(name).map_or(0, |s| s.address);
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
        Ok(BinaryFindings {
            key,
            elf,
            shared: python.shared,
            name_version: python.name_version.clone(),
            runtime,
            types,
            version: OnceLock::new(),
            layout: OnceLock::new(),
            arena_pointer: AtomicU64::new(0),
        })
    }
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
    /// Load bias of the binary holding the interpreter.
    pub bias: u64,
    /// What was learnt of that binary (shared by every process running it).
    pub binary: Arc<BinaryFindings>,
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

impl BuiltinTypes {
    /// The same addresses moved by a load bias (0 stays 0: a symbol the binary lacks).
    fn biased(&self, bias: u64) -> BuiltinTypes {
        let b = |a: u64| if a == 0 { 0 } else { a.wrapping_add(bias) };
        BuiltinTypes {
            list: b(self.list),
            tuple: b(self.tuple),
            dict: b(self.dict),
            set: b(self.set),
            frozenset: b(self.frozenset),
            str: b(self.str),
            bytes: b(self.bytes),
            int: b(self.int),
            float: b(self.float),
            type_: b(self.type_),
            function: b(self.function),
            module: b(self.module),
            cell: b(self.cell),
            code: b(self.code),
        }
    }
}

impl Interpreter {
    /// Finds and validates the interpreter of `pid`, whose Python binary (mapped from `base`)
    /// was discovered as `binary`: a few reads of the process's memory.
    pub fn attach<M: ProcessMemory>(
        pid: u32,
        mem: &M,
        binary: &Arc<BinaryFindings>,
        base: u64,
    ) -> Result<Interpreter> {
        let bias = binary.elf.load_bias(base);
        let runtime = binary.runtime.wrapping_add(bias);
        let version = match binary.version.get() {
            Some(v) => *v,
            None => {
                let v = read_version(mem, binary, bias)?;
                if v.micro.is_some() {
                    let _ = binary.version.set(v);
                }
                v
            }
        };
        if version.major != 3 {
            return Err(Error::Unsupported {
                what: format!("CPython {version}"),
            });
        }
        // the minor's table, checked against _Py_DebugOffsets (3.13+); a build the table does
        // not match is read through its debug offsets alone. The same for every process of
        // the binary: selected once.
        let layout = match binary.layout.get() {
            Some(l) => *l,
            None => {
                let l = layouts::select(mem, runtime, &version)?;
                let _ = binary.layout.set(l);
                l
            }
        };
        let mut it = Interpreter {
            pid,
            version,
            layout,
            runtime,
            interp: 0,
            bias,
            binary: Arc::clone(binary),
            types: binary.types.biased(bias),
        };
        it.interp = it.validate(mem)?;
        Ok(it)
    }

    /// Reads the main interpreter's address and checks that the process agrees with what is
    /// known: a thread state points back to it, and `sys.modules` is a dict.
    pub(crate) fn validate<M: ProcessMemory>(&self, mem: &M) -> Result<u64> {
        let pid = self.pid;
        let l = self.layout;
        let invalid = |why: String| Error::Invalid { pid, why };
        let interp = mem.read_u64(self.runtime.wrapping_add(l.runtime_interpreters_head))?;
        if interp == 0 {
            return Err(invalid(
                "no interpreter yet (starting or finalising)".into(),
            ));
        }
        let tstate = mem.read_u64(interp.wrapping_add(l.interp_threads_head))?;
        if tstate != 0 {
            let back = mem.read_u64(tstate.wrapping_add(l.tstate_interp))?;
            if back != interp {
                return Err(invalid(format!(
                    "thread state {tstate:#x} points to interpreter {back:#x}, not {interp:#x}"
                )));
            }
        }
        // The modules dict must be a dict: a last check that the layout fits this process.
        let modules = mem.read_u64(interp.wrapping_add(l.interp_modules))?;
        if modules != 0 && self.types.dict != 0 {
            let ty = mem.read_u64(modules.wrapping_add(l.object_type))?;
            if ty != self.types.dict {
                return Err(invalid(
                    "sys.modules is not a dict at the expected offset".into(),
                ));
            }
        }
        Ok(interp)
    }

    /// An interpreter made of given parts, without a process: for tests and fuzzing of the
    /// decoders over a byte-slice memory (`memlens_remote::SliceMemory`). Nothing is validated
    /// and nothing is read; never use it for a live process ([`Interpreter::attach`] is that).
    /// The binary is a static `python3.MINOR` whose symbols are `elf`'s, loaded at `bias`;
    /// `pid` is 0.
    pub fn from_parts(
        version: Version,
        layout: &'static Layout,
        runtime: u64,
        interp: u64,
        elf: ElfFile,
        bias: u64,
        types: BuiltinTypes,
    ) -> Interpreter {
        let findings = BinaryFindings {
            key: BinaryKey::BuildId(Vec::new()),
            elf,
            shared: false,
            name_version: Some(NameVersion {
                major: version.major,
                minor: version.minor,
                flags: String::new(),
            }),
            runtime: runtime.wrapping_sub(bias),
            types,
            version: OnceLock::from(version),
            layout: OnceLock::from(layout),
            arena_pointer: AtomicU64::new(0),
        };
        Interpreter {
            pid: 0,
            version,
            layout,
            runtime,
            interp,
            bias,
            binary: Arc::new(findings),
            types,
        }
    }

    /// The same interpreter in a process forked from this one without exec (same addresses):
    /// checked with a few reads of the child's memory.
    pub fn in_forked_child<M: ProcessMemory>(&self, pid: u32, mem: &M) -> Result<Interpreter> {
        let mut it = self.clone();
        it.pid = pid;
        let interp = it.validate(mem)?;
        if interp != self.interp {
            return Err(Error::Invalid {
                pid,
                why: format!(
                    "interpreter at {interp:#x}, not at {:#x} as in its parent",
                    self.interp
                ),
            });
        }
        Ok(it)
    }

    /// Address of a data symbol of the interpreter's binary in the process (one that
    /// [`wanted_symbol`] keeps).
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.binary
            .elf
            .symbol(name)
            .map(|s| s.address.wrapping_add(self.bias))
    }
}

/// The exact version: `Py_Version` (3.11+), the `Py_GetVersion` buffer (symbol `version` or
/// `version.0`, filled at startup), else the minor from the file name.
fn read_version<M: ProcessMemory>(mem: &M, binary: &BinaryFindings, bias: u64) -> Result<Version> {
    let elf = &binary.elf;
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
        Some(n) => Ok(Version {
            major: n.major,
            minor: n.minor,
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
}
