//! The rules that sort a mapping into exactly one ledger category ([`Category`], defined in
//! `memlens-model`).

use memlens_procfs::maps::MapEntry;

pub use memlens_model::category::Category;

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
