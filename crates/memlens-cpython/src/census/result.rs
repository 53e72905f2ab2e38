//! What a census finds: objects by type, what could not be read, how it was made consistent.

use serde::Serialize;

use crate::error::{Error, Result};

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

pub use memlens_model::python::Method;

/// How the census was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Consistency {
    /// What made it consistent.
    pub method: Method,
    /// Walks of the running target (each verified or not).
    pub attempts: u32,
    /// Microseconds the target was stopped, all pauses together (0 in nonblocking mode and
    /// under a fixed clock, `memlens_model::clock`).
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

/// The census fails when more than 1 object in this many could not be read (0.1%).
pub const MAX_UNREADABLE_PER: u64 = 1000;

impl Census {
    /// Fails with [`Error::Incomplete`] when more than 0.1% of the objects reached could not
    /// be read.
    pub fn check_complete(&self, pid: u32) -> Result<()> {
        let reached = self.objects + self.unreadable.objects;
        if self.unreadable.objects * MAX_UNREADABLE_PER > reached {
            return Err(Error::Incomplete {
                pid,
                unreadable: self.unreadable.objects,
                reached,
                bytes: self.unreadable.bytes,
                limit: "0.1%",
            });
        }
        Ok(())
    }
}
