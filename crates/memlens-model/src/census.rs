//! What a census finds (objects by type, what could not be read, how it was made consistent),
//! what grew between two censuses, and the JSON shape of `memlens census`.
//! `memlens-cpython` takes censuses; `memlens-report` draws them.

use std::collections::HashMap;

use serde::Serialize;

pub use crate::python::Method;

/// One type's line of the census.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeCount {
    /// `type(o).__name__` (untrusted).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Objects.
    pub count: u64,
    /// Sum of `sys.getsizeof`.
    pub bytes: u64,
    /// Objects among `count` whose type defines a `__sizeof__` memlens does not model (a class
    /// with its own `__sizeof__`, `decimal.Decimal` ...): their bytes are the generic formula
    /// (`tp_basicsize + ob_size * tp_itemsize`), an estimate.
    pub estimated: u64,
    /// numpy arrays: bytes of the data buffers they own (inside `bytes`, as numpy's
    /// `__sizeof__` counts them). Absent for types without data buffers.
    #[serde(skip_serializing_if = "is_zero")]
    pub data_owned: u64,
    /// numpy arrays: bytes of buffers they view (owned by another object: not in `bytes`; the
    /// same buffer viewed twice counts twice). Absent for types without data buffers.
    #[serde(skip_serializing_if = "is_zero")]
    pub data_viewed: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Objects the census reached but could not read (their memory unreadable, or data that does
/// not decode); they are in no type's count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// Objects.
    pub objects: u64,
    /// Bytes of the target's memory that failed to read.
    pub bytes: u64,
}

/// How the census was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Consistency {
    /// What made it consistent.
    pub method: Method,
    /// Walks of the running target (each verified or not).
    pub attempts: u32,
    /// Microseconds the target was stopped, all pauses together (0 in nonblocking mode and
    /// under a fixed clock, `crate::clock`).
    pub pause_us: u64,
    /// Pages re-read and compared in the pause (method `verified`).
    pub pages_verified: u64,
    /// Pauses that found a garbage collection running, each followed by a wait for its end.
    pub collections_waited: u32,
}

impl Default for Consistency {
    fn default() -> Self {
        Consistency {
            method: Method::Nonblocking,
            attempts: 0,
            pause_us: 0,
            pages_verified: 0,
            collections_waited: 0,
        }
    }
}

/// The census of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Census {
    /// Objects counted.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Per type, most objects first.
    pub types: Vec<TypeCount>,
    /// Objects reached that could not be read.
    pub unreadable: Unreadable,
    /// How the census was read.
    pub consistency: Consistency,
    /// What `memlens snapshot --advice` weighs (`crate::advice`). Not in the census JSON.
    #[serde(skip)]
    pub tallies: Tallies,
}

/// The census's tallies for advice, each bounded in size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tallies {
    /// Instances with an instance dict, per class, largest saving first.
    pub classes: Vec<ClassDicts>,
    /// Large lists and tuples whose items are all floats or all ints, largest first.
    pub scalar_lists: Vec<ScalarList>,
    /// Equal str and bytes values held more than once, largest saving first (the first few).
    pub duplicates: Vec<DuplicateValue>,
    /// All the duplicated values found, per type (`str`, `bytes`).
    pub duplicate_totals: Vec<DuplicateTotal>,
    /// The process's Python objects by package (`package-import`), when attributed.
    pub packages: Vec<crate::packages::Package>,
}

/// The duplicated values of one type, all together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateTotal {
    /// `str` or `bytes`.
    pub type_name: &'static str,
    /// Distinct values held more than once.
    pub values: u64,
    /// Objects holding them.
    pub copies: u64,
    /// What keeping one copy of each would save: `(copies - 1) x size`, summed.
    pub saving: u64,
}

/// A list or tuple of at least [`SCALAR_LIST_MIN`] items, all floats or all ints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarList {
    /// `list` or `tuple` (the exact type, not a subclass).
    pub container: &'static str,
    /// Items.
    pub items: u64,
    /// Floats (else ints).
    pub float: bool,
    /// Bytes of the items only this container references (reference count 1), as pymalloc
    /// allocates them.
    pub owned_bytes: u64,
    /// Bytes of the pointer array (a list's allocated items, a tuple's items).
    pub pointer_bytes: u64,
}

/// Lists and tuples shorter than this are not examined for `scalar-list`.
pub const SCALAR_LIST_MIN: u64 = 10_000;

/// A str or bytes value held in several equal objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateValue {
    /// `str` or `bytes`.
    pub type_name: &'static str,
    /// Bytes of one copy, as pymalloc or malloc allocates it.
    pub size: u64,
    /// Equal objects.
    pub copies: u64,
    /// The value's start, quoted and escaped (untrusted contents: printable ASCII only).
    pub preview: String,
}

/// Instances of one class (by `type(o).__name__`) that carry an instance dict or its inline
/// or managed values, with what they take and what a `__slots__` layout would take. Only
/// classes whose first static base is dict-free (e.g. `object`) are counted: a slotted
/// subclass of a class with a built-in dict would keep that dict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClassDicts {
    /// `type(o).__name__` (untrusted).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Instances counted.
    pub instances: u64,
    /// Bytes they take now: `sys.getsizeof` of each instance (GC header and pre-header
    /// included), plus its dict's `sys.getsizeof` or the size of its values array (3.11+,
    /// separate or inline in the object, which `sys.getsizeof` leaves out).
    pub bytes: u64,
    /// Bytes the same instances would take with `__slots__` naming their attributes: GC header,
    /// the instance without its dict and weakref words, and one word per attribute.
    pub slotted_bytes: u64,
    /// Attributes, summed over the instances (a dict's `len`, or the class's shared keys).
    pub attributes: u64,
    /// Instances whose dict is a dict object (not inline or managed values).
    pub dicts: u64,
    /// Instances whose dict or values could not be read: in no other field.
    pub unread: u64,
}

impl ClassDicts {
    /// Adds another's tallies (classes of one name share a line).
    pub fn merge(&mut self, o: &ClassDicts) {
        self.instances += o.instances;
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.slotted_bytes = self.slotted_bytes.saturating_add(o.slotted_bytes);
        self.attributes += o.attributes;
        self.dicts += o.dicts;
        self.unread += o.unread;
    }
}

impl Census {
    /// Count of a type name (0 if absent).
    pub fn count_of(&self, name: &str) -> u64 {
        self.types
            .iter()
            .find(|t| t.type_name == name)
            .map_or(0, |t| t.count)
    }
}

/// A type that grew between two censuses, in count or in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Growth {
    /// `type(o).__name__` (untrusted).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Objects in the second census.
    pub count: u64,
    /// Change in count.
    pub delta: i64,
    /// Bytes in the second census.
    pub bytes: u64,
    /// Change in bytes.
    pub bytes_delta: i64,
}

/// The types that grew, ranked two ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grown {
    /// Types whose bytes grew, most bytes first.
    pub by_bytes: Vec<Growth>,
    /// Types whose count grew, most objects first.
    pub by_count: Vec<Growth>,
}

impl Grown {
    /// What grew from `before` to `after`: the `top` types that grew most in bytes and in count
    /// (ties by name), like `objgraph.show_growth()`. A type absent before grew from zero.
    pub fn between(before: &Census, after: &Census, top: usize) -> Grown {
        let old: HashMap<&str, &TypeCount> = before
            .types
            .iter()
            .map(|t| (t.type_name.as_str(), t))
            .collect();
        let all: Vec<Growth> = after
            .types
            .iter()
            .map(|t| {
                let (c0, b0) = old
                    .get(t.type_name.as_str())
                    .map_or((0, 0), |o| (o.count, o.bytes));
                Growth {
                    type_name: t.type_name.clone(),
                    count: t.count,
                    delta: t.count as i64 - c0 as i64,
                    bytes: t.bytes,
                    bytes_delta: t.bytes as i64 - b0 as i64,
                }
            })
            .collect();
        let mut by_bytes: Vec<Growth> = all.iter().filter(|g| g.bytes_delta > 0).cloned().collect();
        by_bytes.sort_by(|a, b| {
            b.bytes_delta
                .cmp(&a.bytes_delta)
                .then(a.type_name.cmp(&b.type_name))
        });
        let mut by_count: Vec<Growth> = all.into_iter().filter(|g| g.delta > 0).collect();
        by_count.sort_by(|a, b| b.delta.cmp(&a.delta).then(a.type_name.cmp(&b.type_name)));
        by_bytes.truncate(top);
        by_count.truncate(top);
        Grown { by_bytes, by_count }
    }
}

/// `{"version": "3.12.1"}`: the `python` object of the `census` and `stacks` JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PythonVersion {
    /// The exact version read from the interpreter.
    pub version: String,
}

/// What `memlens census` shows (its JSON, `docs/json.md`): the census with its `top` types,
/// and what grew when two were taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CensusReport {
    /// The interpreter's version.
    pub python: PythonVersion,
    /// Objects counted (all types, shown or not).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The types shown, most objects first.
    pub types: Vec<TypeCount>,
    /// Objects reached that could not be read.
    pub unreadable: Unreadable,
    /// How the census was read.
    pub consistency: Consistency,
    /// What grew since the first census (`--growth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth: Option<Grown>,
    /// Read without stopping the target: figures may be inexact.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inexact: bool,
}

impl CensusReport {
    /// The report of `census`, showing its `top` types (`usize::MAX` for all).
    pub fn new(
        version: String,
        census: Census,
        growth: Option<Grown>,
        top: usize,
        inexact: bool,
    ) -> Self {
        let mut types = census.types;
        types.truncate(top);
        CensusReport {
            python: PythonVersion { version },
            objects: census.objects,
            bytes: census.bytes,
            types,
            unreadable: census.unreadable,
            consistency: census.consistency,
            growth,
            inexact,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(types: &[(&str, u64, u64)]) -> Census {
        Census {
            objects: types.iter().map(|t| t.1).sum(),
            bytes: types.iter().map(|t| t.2).sum(),
            types: types
                .iter()
                .map(|(n, c, b)| TypeCount {
                    type_name: (*n).into(),
                    count: *c,
                    bytes: *b,
                    estimated: 0,
                    data_owned: 0,
                    data_viewed: 0,
                })
                .collect(),
            unreadable: Unreadable::default(),
            consistency: Consistency::default(),
            tallies: Tallies::default(),
        }
    }

    #[test]
    fn growth_ranks_by_bytes_and_by_count() {
        let before = census(&[("bytearray", 1, 100), ("str", 10, 500), ("int", 5, 140)]);
        let after = census(&[
            ("bytearray", 1, 10_000_100),
            ("str", 30, 1500),
            ("int", 4, 112),
            ("dict", 2, 464),
        ]);
        let g = Grown::between(&before, &after, usize::MAX);
        let names = |v: &[Growth]| v.iter().map(|g| g.type_name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&g.by_bytes), ["bytearray", "str", "dict"]);
        assert_eq!(names(&g.by_count), ["str", "dict"]);
        assert_eq!(g.by_bytes[0].delta, 0);
        assert_eq!(g.by_bytes[0].bytes_delta, 10_000_000);
        let g = Grown::between(&before, &after, 1);
        assert_eq!(names(&g.by_bytes), ["bytearray"]);
        assert_eq!(names(&g.by_count), ["str"]);
    }

    #[test]
    fn a_report_shows_its_top_types_and_counts_them_all() {
        let c = census(&[("str", 10, 500), ("int", 5, 140), ("dict", 2, 464)]);
        let r = CensusReport::new("3.12.1".into(), c, None, 2, false);
        assert_eq!(r.types.len(), 2);
        assert_eq!((r.objects, r.bytes), (17, 1104));
    }
}
