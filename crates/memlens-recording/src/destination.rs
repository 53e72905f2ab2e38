//! The files memlens writes (recordings, HTML and JSON reports), created so that memlens never
//! deletes, truncates or writes through anything it did not create: a new file is created
//! with `O_CREAT|O_EXCL|O_NOFOLLOW`; an existing path is refused unless it is a regular file of
//! the same kind that memlens wrote (recognised by its content), and even then it is replaced
//! only when the caller says so (`--force`); links, directories, devices, FIFOs and sockets are
//! refused. Reports are written to a temporary file in the destination's directory and renamed
//! into place (`renameat2(RENAME_NOREPLACE)` when nothing was there), so a reader never sees half
//! a report and a link put there meanwhile is replaced, never followed.
//!
//! The SQLite companions of a recording (`-wal`, `-shm`, `-journal`: [`COMPANIONS`]) are named
//! here only. The system calls go through `rustix` (safe wrappers): no `unsafe` here.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// What a destination holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A recording (SQLite with memlens's `application_id`).
    Recording,
    /// An HTML report.
    Html,
    /// A JSON report.
    Json,
    /// A flame graph (`report --flamegraph`): inferno's SVG with memlens's marker comment.
    Svg,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Recording => "a memlens recording",
            Kind::Html => "an HTML report memlens wrote",
            Kind::Json => "a JSON report memlens wrote",
            Kind::Svg => "a flame graph memlens wrote",
        }
    }

    /// Whether the first bytes of a file are what memlens writes for this kind.
    fn recognises(self, head: &[u8]) -> bool {
        match self {
            Kind::Recording => {
                head.len() >= 72
                    && head.starts_with(b"SQLite format 3\0")
                    && i32::from_be_bytes([head[68], head[69], head[70], head[71]])
                        == crate::schema::APPLICATION_ID
            }
            Kind::Html => {
                head.starts_with(b"<!DOCTYPE html>\n<html lang=\"en\">")
                    && contains(head, b"<title>memlens: ")
            }
            Kind::Json => head.starts_with(b"{\n  \"recording\": "),
            // The XML declaration, then the marker (memlens_report::alloc_flame::MARKER).
            Kind::Svg => {
                head.starts_with(b"<?xml ")
                    && contains(
                        &head[..head.len().min(80)],
                        b"?>\n<!-- memlens flame graph -->",
                    )
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What to do at a destination, as decided by [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing is there: create it.
    Create,
    /// A file memlens wrote is there and may be replaced (`--force`): this one (device, inode).
    Replace {
        /// Device of the file found.
        dev: u64,
        /// Inode of the file found.
        ino: u64,
    },
}

fn refused(path: &Path, why: impl Into<String>, force_helps: bool) -> Error {
    Error::Refused {
        path: path.to_path_buf(),
        why: why.into(),
        force_helps,
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The type of a non-regular file, in words.
fn file_type_words(t: std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link (memlens never writes through links)"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The first bytes of the regular file at `path`, read without following a link and without
/// blocking (a FIFO put there meanwhile is not waited on); `None` when it is no longer the file
/// `lstat` saw.
fn head_of(path: &Path, meta: &std::fs::Metadata, n: usize) -> Result<Option<Vec<u8>>> {
    let f = File::from(
        rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(path)(e.into()))?,
    );
    let m = f.metadata().map_err(io(path))?;
    if !m.file_type().is_file() || m.dev() != meta.dev() || m.ino() != meta.ino() {
        return Ok(None);
    }
    let mut head = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut head).map_err(io(path))?;
    Ok(Some(head))
}

/// Decides what to do at `path` for a file of `kind`: create it when nothing is there; replace
/// it when it is a file of that kind memlens wrote and `force` is set; refuse otherwise.
pub fn check(path: &Path, kind: Kind, force: bool) -> Result<Plan> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Plan::Create),
        Err(e) => return Err(io(path)(e)),
    };
    if !meta.file_type().is_file() {
        return Err(refused(
            path,
            format!(
                "exists and is {}; memlens writes only new files or replaces its own",
                file_type_words(meta.file_type())
            ),
            false,
        ));
    }
    let ours = match head_of(path, &meta, 512)? {
        Some(head) => kind.recognises(&head),
        None => {
            return Err(refused(
                path,
                "changed while memlens looked at it; nothing was written",
                false,
            ))
        }
    };
    match (ours, force) {
        (true, true) => Ok(Plan::Replace {
            dev: meta.dev(),
            ino: meta.ino(),
        }),
        (true, false) => Err(refused(
            path,
            format!("exists ({}); `--force` replaces it", kind.noun()),
            true,
        )),
        (false, _) => Err(refused(
            path,
            format!(
                "exists and is not {}; memlens does not replace files it did not write",
                kind.noun()
            ),
            false,
        )),
    }
}

/// Creates `path` with `O_CREAT|O_EXCL|O_NOFOLLOW`: it fails when anything is there, a
/// dangling link included.
pub fn create_exclusive(path: &Path) -> Result<File> {
    rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map(File::from)
    .map_err(std::io::Error::from)
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            refused(
                path,
                "appeared while memlens was preparing to write it; nothing was written",
                false,
            )
        } else {
            io(path)(e)
        }
    })
}

/// Removes `path` if it is still the file `(dev, ino)` found by [`check`].
pub fn remove_if_same(path: &Path, dev: u64, ino: u64) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() && m.dev() == dev && m.ino() == ino => {
            std::fs::remove_file(path).map_err(io(path))
        }
        Ok(_) => Err(refused(
            path,
            "changed while memlens was replacing it; nothing was removed",
            false,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// The suffix of SQLite's write-ahead log beside a recording (`rec.db-wal`).
pub const WAL: &str = "-wal";
/// The suffix of the WAL index.
pub const SHM: &str = "-shm";
/// The suffix of a rollback journal.
pub const JOURNAL: &str = "-journal";

/// The SQLite files that live beside a recording while it is written or after a crash.
pub const COMPANIONS: [&str; 3] = [WAL, SHM, JOURNAL];

/// `path` with a suffix appended (`rec.db` + `-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Whether the first bytes of a companion file are SQLite's: a WAL, a WAL index or a rollback
/// journal (or empty, as SQLite leaves them).
fn companion_recognised(suffix: &str, head: &[u8]) -> bool {
    if head.is_empty() {
        return true;
    }
    match suffix {
        WAL => {
            head.len() >= 4
                && matches!(
                    u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
                    0x377f_0682 | 0x377f_0683
                )
        }
        // The WAL index starts with its version, 3007000, in native byte order.
        SHM => {
            head.len() >= 4 && u32::from_ne_bytes([head[0], head[1], head[2], head[3]]) == 3_007_000
        }
        JOURNAL => head.starts_with(&[0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7]),
        _ => false,
    }
}

/// Checks the companions of a recording about to be written at `path`. With `Plan::Create`
/// none may exist (SQLite would take a stray `-wal` for the new file's log); with
/// `Plan::Replace` those that exist must be SQLite's own files of that kind, and they are
/// returned to be removed with it.
pub fn check_companions(path: &Path, plan: Plan) -> Result<Vec<(PathBuf, u64, u64)>> {
    let mut remove = Vec::new();
    for suffix in COMPANIONS {
        let p = with_suffix(path, suffix);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&p)(e)),
        };
        if !meta.file_type().is_file() {
            return Err(refused(
                &p,
                format!(
                    "exists and is {}; memlens will not write {} beside it",
                    file_type_words(meta.file_type()),
                    path.display()
                ),
                false,
            ));
        }
        let sqlite = head_of(&p, &meta, 8)?.is_some_and(|h| companion_recognised(suffix, &h));
        match plan {
            Plan::Replace { .. } if sqlite => remove.push((p, meta.dev(), meta.ino())),
            Plan::Replace { .. } => {
                return Err(refused(
                    &p,
                    "exists and is not an SQLite file; memlens does not remove files it did not write",
                    false,
                ))
            }
            Plan::Create => {
                return Err(refused(
                    &p,
                    format!(
                        "exists, without {} beside it: SQLite would read it as part of the new recording; remove it or choose another name",
                        path.display()
                    ),
                    false,
                ))
            }
        }
    }
    Ok(remove)
}

/// A report being written: a temporary file in the destination's directory, created
/// exclusively when the command starts (so a bad destination is found before any work), and
/// renamed into place by [`PendingFile::commit`]. Dropped uncommitted, the temporary file is
/// removed.
#[derive(Debug)]
pub struct PendingFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    plan: Plan,
}

impl PendingFile {
    /// Checks `dest` (see [`check`]) and creates the temporary file beside it.
    pub fn reserve(dest: &Path, kind: Kind, force: bool) -> Result<PendingFile> {
        let plan = check(dest, kind, force)?;
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut last = None;
        for n in 0..100u32 {
            let tmp = dir.join(format!(".memlens-{}-{n}.tmp", std::process::id()));
            match create_exclusive(&tmp) {
                Ok(file) => {
                    return Ok(PendingFile {
                        dest: dest.to_path_buf(),
                        tmp,
                        file: Some(file),
                        plan,
                    })
                }
                Err(Error::Refused { .. }) => continue,
                Err(Error::Io { source, .. }) => {
                    last = Some(source);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Io {
            path: dest.to_path_buf(),
            source: last.unwrap_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "no free temporary name in its directory",
                )
            }),
        })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.dest
    }

    /// The temporary file to write the report into.
    pub fn file(&mut self) -> Option<&mut File> {
        self.file.as_mut()
    }

    /// Moves the written file into place: without replacing anything when nothing was there
    /// at [`PendingFile::reserve`], replacing only the file found then otherwise.
    pub fn commit(mut self) -> Result<PathBuf> {
        drop(self.file.take());
        let placed = match self.plan {
            Plan::Create => rename_noreplace(&self.tmp, &self.dest),
            Plan::Replace { dev, ino } => match std::fs::symlink_metadata(&self.dest) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    rename_noreplace(&self.tmp, &self.dest)
                }
                Ok(m) if m.file_type().is_file() && m.dev() == dev && m.ino() == ino => {
                    std::fs::rename(&self.tmp, &self.dest).map_err(io(&self.dest))
                }
                Ok(_) => Err(refused(
                    &self.dest,
                    "changed while memlens ran; it was not replaced",
                    false,
                )),
                Err(e) => Err(io(&self.dest)(e)),
            },
        };
        match placed {
            Ok(()) => {
                self.tmp = PathBuf::new();
                Ok(self.dest.clone())
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Renames `from` to `to` unless something is at `to` (a file, a link, anything):
/// `renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the filesystem lacks it.
fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    let cwd = rustix::fs::CWD;
    let r = rustix::fs::renameat_with(cwd, from, cwd, to, rustix::fs::RenameFlags::NOREPLACE);
    match r {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(refused(
            to,
            "appeared while memlens ran; it was not replaced",
            false,
        )),
        Err(Errno::INVAL) | Err(Errno::NOSYS) => {
            // link(2) fails with EEXIST when anything is there: no replacement either.
            std::fs::hard_link(from, to).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    refused(to, "appeared while memlens ran; it was not replaced", false)
                } else {
                    io(to)(e)
                }
            })?;
            std::fs::remove_file(from).map_err(io(from))
        }
        Err(e) => Err(io(to)(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("memlens-dest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn new_paths_are_created_and_others_refused() {
        let d = dir("check");
        assert_eq!(
            check(&d.join("new.db"), Kind::Recording, false).unwrap(),
            Plan::Create
        );
        let other = d.join("other.html");
        std::fs::write(&other, b"<html>mine</html>").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o400)).unwrap();
        for force in [false, true] {
            let e = check(&other, Kind::Html, force).unwrap_err().to_string();
            assert!(e.contains("not an HTML report memlens wrote"), "{e}");
        }
        std::os::unix::fs::symlink(&other, d.join("link.html")).unwrap();
        let e = check(&d.join("link.html"), Kind::Html, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = check(&d, Kind::Json, true).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let e = check(Path::new("/dev/null"), Kind::Recording, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("character device"), "{e}");
        let ours = d.join("ours.json");
        std::fs::write(&ours, b"{\n  \"recording\": \"x.db\"\n}\n").unwrap();
        assert!(check(&ours, Kind::Json, false)
            .unwrap_err()
            .to_string()
            .contains("--force"));
        assert!(matches!(
            check(&ours, Kind::Json, true),
            Ok(Plan::Replace { .. })
        ));
        // A dangling link is still a link: creation fails, nothing is written through it.
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
        assert!(create_exclusive(&d.join("dangling")).is_err());
        assert!(!d.join("nowhere").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pending_files_land_atomically_and_never_through_links() {
        let d = dir("pending");
        let dest = d.join("r.json");
        let mut p = PendingFile::reserve(&dest, Kind::Json, false).unwrap();
        std::io::Write::write_all(p.file().unwrap(), b"{\n  \"recording\": 1}").unwrap();
        // A link planted after the check is replaced by nothing: the commit refuses.
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, &dest).unwrap();
        assert!(p.commit().is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&dest)
            .unwrap()
            .file_type()
            .is_symlink());
        std::fs::remove_file(&dest).unwrap();
        let mut p = PendingFile::reserve(&dest, Kind::Json, false).unwrap();
        std::io::Write::write_all(p.file().unwrap(), b"{\n  \"recording\": 2}").unwrap();
        p.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"{\n  \"recording\": 2}");
        // Only the temporary files memlens made are gone; nothing else was left behind.
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let e = PendingFile::reserve(&d.join("missing/r.json"), Kind::Json, false).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
