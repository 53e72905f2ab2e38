//! The Python view's figures that ledgers and recordings carry: the collector's state,
//! pymalloc's arenas, `sys.modules`, and the census's consistency method and object tallies.
//! `memlens-cpython` reads them from the target.

use serde::Serialize;

/// One generation, as `gc.get_count()`, `gc.get_threshold()` and `gc.get_stats()` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Generation {
    /// `gc.get_count()[i]` (allocations minus deallocations for 0, collections of the younger
    /// generation for 1 and 2; not an object count).
    pub count: i64,
    /// `gc.get_threshold()[i]`.
    pub threshold: i64,
    /// Collections of this generation.
    pub collections: i64,
    /// Objects collected.
    pub collected: i64,
    /// Objects found uncollectable.
    pub uncollectable: i64,
}

/// The collector's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcState {
    /// Generations 0, 1, 2.
    pub generations: Vec<Generation>,
    /// Objects in the permanent generation (`gc.get_freeze_count()`).
    pub frozen: u64,
    /// A collection is running (lists are in flux).
    pub collecting: bool,
}

/// pymalloc's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pymalloc {
    /// Arenas allocated now (`# arenas allocated current`).
    pub arenas: u64,
    /// Pools carved out of those arenas (in use, or empty and kept for reuse).
    pub pools: u64,
    /// Bytes in allocated blocks.
    pub used_bytes: u64,
    /// Arena bytes not in allocated blocks: free blocks, empty and uncarved pools, pool
    /// headers, alignment (so `used_bytes + free_bytes` = arenas × arena size).
    pub free_bytes: u64,
    /// Bytes per arena.
    pub arena_size: u64,
    /// Each arena's `[start, end)` in the process.
    #[serde(skip)]
    pub arena_ranges: Vec<(u64, u64)>,
}

/// The modules of the main interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Modules {
    /// `len(sys.modules)`.
    pub count: u64,
    /// Names, sorted (untrusted).
    pub names: Vec<String>,
}

/// How the census was made consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Walked while the target ran, then proved unchanged in a short pause: exact as of the
    /// pause.
    Verified,
    /// Walked entirely while the target was stopped (its heap kept changing): exact.
    Paused,
    /// Walked without stopping the target: figures may be inexact.
    Nonblocking,
}

/// Objects and their `sys.getsizeof` bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Objects.
    pub count: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Tally {
    /// Counts one object of `bytes`.
    pub fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// Adds another tally.
    pub fn merge(&mut self, o: &Tally) {
        self.count += o.count;
        self.bytes = self.bytes.saturating_add(o.bytes);
    }
}

/// The objects attributed to packages: the four kinds that carry a module name or file, and
/// the objects they hold (reached from them first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ObjectKinds {
    /// Code objects (by `co_filename`).
    pub code: Tally,
    /// Functions (by `__module__`).
    pub functions: Tally,
    /// Classes: heap types (by their `__dict__['__module__']`).
    pub classes: Tally,
    /// Modules with their `__dict__` (by `__dict__['__name__']`); `count` counts modules.
    pub modules: Tally,
    /// Objects those hold that nothing attributed earlier holds: constants, names, line
    /// tables, class and instance dicts, default values, module globals' values (the
    /// package-memory walk, docs/advice.md#package-import).
    pub held: Tally,
    /// All of the above as allocated: each object's size rounded as pymalloc (16-byte blocks up
    /// to 512 bytes) or malloc (a word of header, 16-byte chunks) allocates it.
    #[serde(rename = "allocated_bytes")]
    pub allocated: u64,
}

impl ObjectKinds {
    /// Bytes of all five kinds (`sys.getsizeof`).
    pub fn bytes(&self) -> u64 {
        [
            self.code,
            self.functions,
            self.classes,
            self.modules,
            self.held,
        ]
        .iter()
        .fold(0u64, |a, t| a.saturating_add(t.bytes))
    }

    /// Objects of all five kinds (a module and its dict count once).
    pub fn count(&self) -> u64 {
        self.code.count
            + self.functions.count
            + self.classes.count
            + self.modules.count
            + self.held.count
    }

    /// Adds another's tallies.
    pub fn merge(&mut self, o: &ObjectKinds) {
        self.code.merge(&o.code);
        self.functions.merge(&o.functions);
        self.classes.merge(&o.classes);
        self.modules.merge(&o.modules);
        self.held.merge(&o.held);
        self.allocated = self.allocated.saturating_add(o.allocated);
    }
}
