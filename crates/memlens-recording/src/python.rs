//! The Python view's rows of a recording: what the recorder saw of an interpreter at one
//! moment (stored as JSON in the `python` table, its census types in `census`).

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What the Python view saw in one process at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PythonSample {
    /// Objects tracked per GC generation (young first).
    pub gc_counts: Vec<u64>,
    /// Collections run per generation since start.
    pub gc_collections: Vec<u64>,
    /// Objects in the GC's permanent generation (`gc.get_freeze_count()`), when the collector
    /// was read (absent in recordings made before it was stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_frozen: Option<u64>,
    /// pymalloc arenas allocated.
    pub pymalloc_arenas: Option<u64>,
    /// Bytes in used pymalloc blocks.
    pub pymalloc_used: Option<u64>,
    /// Bytes in free pymalloc blocks of allocated pools and arenas (fragmentation).
    pub pymalloc_free: Option<u64>,
    /// Top types of an object census, when one was taken this time (largest bytes first).
    pub census: Vec<CensusEntry>,
    /// When the interpreter was read (the recording's time of the row); not stored in the JSON.
    #[serde(skip)]
    pub read_at: Option<Instant>,
}

/// One type of an object census.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CensusEntry {
    /// Type name (untrusted: comes from the target).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Objects.
    pub count: u64,
    /// Shallow bytes (as `sys.getsizeof`).
    pub bytes: u64,
}
