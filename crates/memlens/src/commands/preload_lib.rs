//! The allocation tracer library (`memlens-preload`) carried inside the memlens binary (built by
//! build.rs), and the copy of it memlens writes for a program to load with `LD_PRELOAD`.
//!
//! [`write_into`] writes the library into a directory memlens created and owns (the private
//! directory of `run --trace`): a new file, created with `O_CREAT|O_EXCL|O_NOFOLLOW` (never
//! over, or through, anything already there), mode 0500 (the program runs as memlens's user).
//! [`Written::remove`] deletes that copy only while the name is still the file memlens wrote
//! (same device and inode, a regular file), as the directory itself is removed.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The library's file name.
pub const LIBRARY: &str = "libmemlens_preload.so";

/// The library's bytes (memlens-preload, release profile, for the binary's target).
pub(crate) static EMBEDDED: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/libmemlens_preload.so"));

/// The size of each write of the copy: one page, so the page cache holds the file in
/// single-page folios. Written whole, the kernel caches it in large folios (a write sizes the
/// folios it fills: 256, 128, 64 KiB... for this ~500 KiB file, on ext4), and a kernel that maps
/// a large folio whole when fault-around reaches it (Linux 6.18, measured) makes a folio lying
/// inside the library's text mapping wholly resident however little of it runs: on w6, 276 KiB
/// of resident text in most runs (a 128 KiB folio pulled in) instead of 136-188 (issue 10; the
/// library's release of its own text, `own_text.rs` in memlens-preload, counts on the faults
/// mapping back little more than what runs). ~125 system calls, once per run.
const WRITE_CHUNK: usize = 4096;

/// A copy of the embedded library written by memlens.
#[derive(Debug)]
pub struct Written {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Written {
    /// Where it is (for `LD_PRELOAD`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the copy if its name is still the regular file memlens wrote (same device and
    /// inode; a link is not followed). Anything else there is left alone and said in the error.
    pub fn remove(self) -> std::io::Result<()> {
        let m = std::fs::symlink_metadata(&self.path)?;
        if !m.is_file() || (m.dev(), m.ino()) != (self.dev, self.ino) {
            return Err(std::io::Error::other(format!(
                "{} is no longer the tracer library memlens wrote; left alone",
                self.path.display()
            )));
        }
        std::fs::remove_file(&self.path)
    }
}

/// Writes the embedded library into `dir` as [`LIBRARY`] and returns its path and identity.
/// `dir` should be a directory memlens created for the run (nobody else can write in it);
/// an existing entry of that name (a file, a link) is an error, never overwritten or
/// followed. A copy left half-written by a failed write is removed. A directory on a
/// filesystem mounted `noexec` is an error too: the dynamic loader could not map the library.
pub fn write_into(dir: &Path) -> std::io::Result<Written> {
    write_with_mode(dir, 0o500)
}

/// [`write_into`] with another mode, for a loader that runs as another user than memlens
/// (`0o555`, in a directory that user can search; the caller makes sure of that). A mode with
/// a write bit or anything beyond the permission bits is refused (`InvalidInput`): the copy is
/// never writable by anyone.
pub fn write_with_mode(dir: &Path, mode: u32) -> std::io::Result<Written> {
    if mode & !0o555 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("mode {mode:o} for the tracer library: read and execute bits only"),
        ));
    }
    let noexec = rustix::fs::statvfs(dir)
        .map(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::NOEXEC))
        .map_err(std::io::Error::from)?;
    if noexec {
        return Err(std::io::Error::other(format!(
            "{} is on a filesystem mounted noexec: a library there cannot be loaded",
            dir.display()
        )));
    }
    let path = dir.join(LIBRARY);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let m = f.metadata()?;
    let written = Written {
        path,
        dev: m.dev(),
        ino: m.ino(),
    };
    // Exactly `mode` whatever the umask took; then the bytes, through the descriptor opened
    // for writing (the mode applies to later opens), one page per write: see [`WRITE_CHUNK`].
    let r = f
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| {
            EMBEDDED
                .chunks(WRITE_CHUNK)
                .try_for_each(|c| f.write_all(c))
        })
        .and_then(|()| f.flush());
    drop(f);
    match r {
        Ok(()) => Ok(written),
        Err(e) => {
            let path = written.path.clone();
            // Best effort: the half-written copy is memlens's own file.
            let _ = written.remove();
            Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("memlens-preload-lib-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).expect("scratch dir");
        d
    }

    #[test]
    fn embedded_is_a_shared_object() {
        // ELF magic, ET_DYN.
        assert!(EMBEDDED.starts_with(b"\x7fELF"));
        assert_eq!(u16::from_le_bytes([EMBEDDED[16], EMBEDDED[17]]), 3);
    }

    #[test]
    fn writes_a_0500_copy_and_removes_only_it() {
        let d = scratch("write");
        let w = write_into(&d).expect("written");
        assert_eq!(w.path(), d.join(LIBRARY));
        let m = std::fs::symlink_metadata(w.path()).expect("meta");
        assert_eq!(m.permissions().mode() & 0o7777, 0o500);
        assert_eq!(std::fs::read(w.path()).expect("read"), EMBEDDED);
        // A second copy is never written over the first.
        assert!(write_into(&d).is_err());
        assert_eq!(
            write_with_mode(&d, 0o755).map_err(|e| e.kind()).err(),
            Some(std::io::ErrorKind::InvalidInput)
        );
        w.remove().expect("removed");
        assert!(!d.join(LIBRARY).exists());
        let w = write_with_mode(&d, 0o555).expect("written");
        let m = std::fs::symlink_metadata(w.path()).expect("meta");
        assert_eq!(m.permissions().mode() & 0o7777, 0o555);
        w.remove().expect("removed");
        std::fs::remove_dir(&d).expect("empty");
    }

    #[test]
    fn never_through_a_link_and_never_a_replaced_file() {
        let d = scratch("link");
        let victim = d.join("victim");
        std::fs::write(&victim, b"v").expect("victim");
        std::os::unix::fs::symlink(&victim, d.join(LIBRARY)).expect("link");
        assert!(write_into(&d).is_err());
        assert_eq!(std::fs::read(&victim).expect("victim"), b"v");
        std::fs::remove_file(d.join(LIBRARY)).expect("unlink");

        // Replaced after it was written (moved away, so its inode stays in use and the new
        // file's differs): the replacement stays.
        let w = write_into(&d).expect("written");
        std::fs::rename(w.path(), d.join("moved")).expect("move");
        std::fs::write(w.path(), b"someone else's").expect("replace");
        assert!(w.remove().is_err());
        assert_eq!(
            std::fs::read(d.join(LIBRARY)).expect("kept"),
            b"someone else's"
        );
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
