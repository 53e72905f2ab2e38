//! The hook through which the Python view (read from outside the interpreter by another crate)
//! joins a recording. The sampler calls it at the ledger rate; it is optional.

use serde::{Deserialize, Serialize};

use memlens_ledger::Hints;

/// What the Python view saw in one process at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PythonSample {
    /// Objects tracked per GC generation (young first).
    pub gc_counts: Vec<u64>,
    /// Collections run per generation since start.
    pub gc_collections: Vec<u64>,
    /// pymalloc arenas allocated.
    pub pymalloc_arenas: Option<u64>,
    /// Bytes in used pymalloc blocks.
    pub pymalloc_used: Option<u64>,
    /// Bytes in free pymalloc blocks of allocated pools and arenas (fragmentation).
    pub pymalloc_free: Option<u64>,
    /// Top types of an object census, when one was taken this time (largest bytes first).
    pub census: Vec<CensusEntry>,
}

/// One type of an object census.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CensusEntry {
    /// Type name (untrusted: comes from the target).
    pub type_name: String,
    /// Objects.
    pub count: u64,
    /// Shallow bytes (as `sys.getsizeof`).
    pub bytes: u64,
}

/// The Python view, as the sampler sees it. Implementations read the interpreter from outside;
/// they must not stop the target for long, and may return `None` when the process is not a
/// supported Python.
pub trait PythonView {
    /// Reads the view of one process. `census` asks for an object census this time.
    fn sample(&mut self, pid: u32, census: bool) -> Option<PythonSample>;

    /// Address ranges the ledger sorts ahead of its name rules (pymalloc arenas).
    fn hints(&mut self, _pid: u32) -> Hints {
        Hints::default()
    }
}
