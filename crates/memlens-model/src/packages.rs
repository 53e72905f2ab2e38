//! Memory per Python package (`snapshot --packages`): the shapes `memlens-ledger::packages`
//! fills (the rules are there).

use serde::Serialize;

use crate::ledger::Amounts;
use crate::python::{Method, ObjectKinds};

/// Where a package's Python objects come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageKind {
    /// An installed distribution (`site-packages`, `dist-packages`).
    Distribution,
    /// The standard library (files under its folder, frozen and built-in modules).
    Stdlib,
    /// `__main__` and scripts and modules outside `site-packages` and the standard library.
    Program,
    /// Names that are not modules in `sys.modules`, and objects without a `str` name.
    Unknown,
}

/// The name shown for the standard library; its extension item is `stdlib (lib-dynload)`.
pub const STDLIB: &str = "stdlib";
/// The name shown for the program's own code.
pub const PROGRAM: &str = "(program)";
/// The name shown for objects of unknown origin.
pub const UNKNOWN: &str = "(unknown)";
/// What the figures are, in the JSON and the text.
pub const NOTE: &str = "bytes of Python objects (sys.getsizeof of code objects, functions, \
classes, modules and module dicts, and of the objects they hold, each charged once: to the first \
module in import order that holds it) already inside the python-heap row (pymalloc) or, for \
objects over 512 bytes, native-heap (malloc): an attribution, not added to any total";

/// A package's extension modules: its item of the `extensions` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExtensionModules {
    /// The item's amounts.
    #[serde(flatten)]
    pub amounts: Amounts,
    /// Virtual size of its mappings.
    pub size: u64,
    /// Its mappings.
    pub mappings: u64,
}

/// One Python package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    /// The distribution (`numpy`, `Pillow`), `stdlib`, `(program)` or `(unknown)`
    /// (untrusted: from the target's paths and names).
    pub name: String,
    /// What kind of package.
    pub kind: PackageKind,
    /// Bytes of its Python objects (all five kinds, `sys.getsizeof`).
    pub object_bytes: u64,
    /// Its Python objects (a module with its dict counts once).
    pub objects: u64,
    /// By kind.
    #[serde(flatten)]
    pub by_kind: ObjectKinds,
    /// Its extension modules (`.so`), when it has some mapped: the `extensions` row's item.
    pub extension: Option<ExtensionModules>,
}

/// The Python objects of a process by package (`snapshot --packages`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PythonPackages {
    /// What the figures are ([`NOTE`]).
    pub note: &'static str,
    /// Bytes of every attributed object (the sum over `packages`).
    pub object_bytes: u64,
    /// The census these come from: how it was made consistent.
    pub method: Method,
    /// Microseconds the target was stopped for it.
    pub pause_us: u64,
    /// Objects the census or the package-memory walk could not read (in no package).
    pub unreadable_objects: u64,
    /// Objects whose module name or file could not be read (in `(unknown)`).
    pub unreadable_names: u64,
    /// Packages, most object bytes first.
    pub packages: Vec<Package>,
    /// The census these come from, by type (`memlens census`'s rows, most objects first):
    /// what `memlens diff` compares. Left out of JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<crate::census::TypeCount>,
}
