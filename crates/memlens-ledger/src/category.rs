//! The ledger categories (DESIGN §3) and the rules that sort a mapping into exactly one.

use serde::Serialize;

use memlens_procfs::maps::MapEntry;

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

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Kinds of mapping recognised from the name alone, before process context is applied.
pub(crate) fn by_name(entry: &MapEntry) -> Option<(Category, Vec<u8>)> {
    let path = entry.path_without_deleted();
    match path {
        b"[heap]" => return Some((Category::NativeHeap, b"[heap] (brk)".to_vec())),
        b"[stack]" => return Some((Category::ThreadStacks, b"main thread".to_vec())),
        b"[vdso]" | b"[vvar]" | b"[vvar_vclock]" | b"[vsyscall]" | b"[uprobes]" => {
            return Some((Category::Other, path.to_vec()))
        }
        _ => {}
    }
    if path.starts_with(b"[stack:") {
        return Some((Category::ThreadStacks, b"thread".to_vec()));
    }
    if path.starts_with(b"[anon_shmem:") {
        return Some((Category::SharedMemory, path.to_vec()));
    }
    if path.starts_with(b"/dev/nvidia") || path.starts_with(b"/dev/dri/") || path == b"/dev/kfd" {
        return Some((Category::GpuDriver, path.to_vec()));
    }
    if path.starts_with(b"/dev/shm/") || path.starts_with(b"/memfd:") || path.starts_with(b"/SYSV")
    {
        return Some((Category::SharedMemory, path.to_vec()));
    }
    if path == b"/dev/zero" && entry.is_shared() {
        return Some((Category::SharedMemory, b"shared anonymous".to_vec()));
    }
    None
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
