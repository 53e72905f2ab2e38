//! The ledger categories (DESIGN §3).

use serde::Serialize;

/// Where a mapping's memory belongs. Names in JSON and text are exactly DESIGN §3's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// pymalloc arenas (addresses read from the interpreter).
    PythonHeap,
    /// `[heap]`, malloc arenas, large anonymous allocations.
    NativeHeap,
    /// `[stack]` and every thread's stack mapping with its guard page.
    ThreadStacks,
    /// The python executable and libpython.
    Interpreter,
    /// Extension modules, grouped by Python distribution.
    Extensions,
    /// Other shared objects.
    SystemLibraries,
    /// Other file-backed mappings.
    MappedFiles,
    /// `/dev/shm`, memfd, SysV and other shared anonymous memory.
    SharedMemory,
    /// GPU driver mappings (host side).
    GpuDriver,
    /// Anything else, named so nothing is lost.
    Other,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 10] = [
        Category::PythonHeap,
        Category::NativeHeap,
        Category::ThreadStacks,
        Category::Interpreter,
        Category::Extensions,
        Category::SystemLibraries,
        Category::MappedFiles,
        Category::SharedMemory,
        Category::GpuDriver,
        Category::Other,
    ];

    /// The name used in text and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Category::PythonHeap => "python-heap",
            Category::NativeHeap => "native-heap",
            Category::ThreadStacks => "thread-stacks",
            Category::Interpreter => "interpreter",
            Category::Extensions => "extensions",
            Category::SystemLibraries => "system-libraries",
            Category::MappedFiles => "mapped-files",
            Category::SharedMemory => "shared-memory",
            Category::GpuDriver => "gpu-driver",
            Category::Other => "other",
        }
    }

    /// Parses a name as printed by [`Category::name`].
    pub fn from_name(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::from_name(c.name()), Some(c));
        }
    }
}
