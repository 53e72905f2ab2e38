//! Readers for `/proc` and cgroup files.
//!
//! Every file has a pure `parse(&[u8])` function (bytes in, typed values out, no `String` round
//! trips), and [`Process`] is the thin file layer over them. This crate knows nothing about
//! Python or about ledgers; it never writes to `/proc` or to a cgroup.

pub mod bytes;
pub mod cgroup;
mod error;
pub mod maps;
pub mod pagemap;
pub mod smaps;
pub mod stat;
pub mod statm;
pub mod status;
pub mod syscall;
pub mod tree;

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use error::{Error, Result};

/// Serializes raw bytes from the kernel or a target as a (lossily decoded) string.
pub fn serialize_lossy<S: serde::Serializer>(
    v: &[u8],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v))
}

/// Maps an I/O error on a `/proc/PID/...` file to this crate's errors.
fn classify_io(err: std::io::Error, path: &Path, pid: u32) -> Error {
    match err.kind() {
        ErrorKind::NotFound => Error::ProcessGone { pid },
        ErrorKind::PermissionDenied => Error::PermissionDenied {
            path: path.to_path_buf(),
        },
        // ESRCH: the task exited between open and read.
        _ if err.raw_os_error() == Some(libc::ESRCH) => Error::ProcessGone { pid },
        _ => Error::Io {
            path: path.to_path_buf(),
            source: err,
        },
    }
}

/// Reads a whole file, classifying errors against `pid` (0 when not a process file).
pub fn read_path(path: &Path, pid: u32) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(|e| classify_io(e, path, pid))?;
    let mut buf = Vec::with_capacity(4096);
    f.read_to_end(&mut buf)
        .map_err(|e| classify_io(e, path, pid))?;
    Ok(buf)
}

/// Reads a whole kept-open file from offset 0 into `buf` and returns its length: the bytes
/// are `buf[..len]`. The kernel regenerates a `/proc` or cgroup file on each read from offset
/// 0, so one open file serves every re-read. `buf` grows as needed (at least 4 KiB) and is never
/// shrunk or zeroed again, so a caller that keeps it allocates once. A failed read fails the
/// whole read: a partial content could end in the middle of a number.
pub fn read_from_start(file: &File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read_at(&mut buf[len..], len as u64)? {
            0 => return Ok(len),
            n => len += n,
        }
    }
}

/// The system page size in bytes.
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// Clock ticks per second (for `stat` times).
pub fn clock_ticks() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        v => v,
    }
}

/// One process's `/proc` directory.
#[derive(Debug, Clone)]
pub struct Process {
    pid: u32,
    dir: PathBuf,
}

impl Process {
    /// A process under the real `/proc`; fails with [`Error::ProcessGone`] when it does not exist.
    pub fn new(pid: u32) -> Result<Self> {
        Self::with_root(Path::new("/proc"), pid)
    }

    /// A process under another procfs root (tests use captured trees).
    pub fn with_root(root: &Path, pid: u32) -> Result<Self> {
        let dir = root.join(pid.to_string());
        if pid == 0 || !dir.exists() {
            return Err(Error::ProcessGone { pid });
        }
        Ok(Process { pid, dir })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The `/proc/PID` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        read_path(&self.dir.join(name), self.pid)
    }

    /// `status`.
    pub fn status(&self) -> Result<status::Status> {
        status::parse(&self.read("status")?)
    }

    /// `stat`.
    pub fn stat(&self) -> Result<stat::Stat> {
        stat::parse(&self.read("stat")?)
    }

    /// `statm`.
    pub fn statm(&self) -> Result<statm::Statm> {
        statm::parse(&self.read("statm")?, page_size())
    }

    /// `maps`.
    pub fn maps(&self) -> Result<Vec<maps::MapEntry>> {
        maps::parse(&self.read("maps")?)
    }

    /// `smaps`: every mapping with its counters.
    pub fn smaps(&self) -> Result<Vec<smaps::Mapping>> {
        let bytes = self.read("smaps")?;
        if bytes.is_empty() {
            // A zombie or a process that exited between open and read has no mappings.
            self.ensure_alive()?;
        }
        smaps::parse(&bytes)
    }

    /// `smaps_rollup`, or the sum of `smaps` where the kernel has no rollup (before 4.14).
    pub fn smaps_rollup(&self) -> Result<smaps::Counters> {
        match self.read("smaps_rollup") {
            Ok(bytes) if bytes.is_empty() => {
                self.ensure_alive()?;
                Ok(smaps::Counters::default())
            }
            Ok(bytes) => smaps::parse_rollup(&bytes),
            Err(Error::ProcessGone { .. }) if self.dir.exists() => Ok(smaps::sum(&self.smaps()?)),
            Err(e) => Err(e),
        }
    }

    fn ensure_alive(&self) -> Result<()> {
        match self.status() {
            Ok(s) if s.state == b'Z' || s.state == b'X' => {
                Err(Error::ProcessGone { pid: self.pid })
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The command line, arguments separated by NUL (empty for kernel threads and zombies).
    pub fn cmdline(&self) -> Result<Vec<u8>> {
        let mut c = self.read("cmdline")?;
        while c.last() == Some(&0) {
            c.pop();
        }
        Ok(c)
    }

    /// The command line's arguments.
    pub fn argv(&self) -> Result<Vec<Vec<u8>>> {
        let c = self.cmdline()?;
        if c.is_empty() {
            return Ok(Vec::new());
        }
        Ok(c.split(|b| *b == 0).map(<[u8]>::to_vec).collect())
    }

    /// The target of `exe` (raw bytes; ` (deleted)` when the file was replaced).
    pub fn exe(&self) -> Result<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let p = self.dir.join("exe");
        std::fs::read_link(&p)
            .map(|t| t.as_os_str().as_bytes().to_vec())
            .map_err(|e| classify_io(e, &p, self.pid))
    }

    /// Thread ids, from `task/`.
    pub fn threads(&self) -> Result<Vec<u32>> {
        let p = self.dir.join("task");
        let rd = std::fs::read_dir(&p).map_err(|e| classify_io(e, &p, self.pid))?;
        let mut tids: Vec<u32> = rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_unstable();
        Ok(tids)
    }

    /// `task/TID/stat`.
    pub fn task_stat(&self, tid: u32) -> Result<stat::Stat> {
        stat::parse(&self.read(&format!("task/{tid}/stat"))?)
    }

    /// `task/TID/syscall` (needs ptrace access to the process).
    pub fn task_syscall(&self, tid: u32) -> Result<syscall::Syscall> {
        syscall::parse(&self.read(&format!("task/{tid}/syscall"))?)
    }

    /// `task/TID/comm` (the thread's name).
    pub fn task_comm(&self, tid: u32) -> Result<Vec<u8>> {
        let mut c = self.read(&format!("task/{tid}/comm"))?;
        if c.last() == Some(&b'\n') {
            c.pop();
        }
        Ok(c)
    }

    /// The memory cgroup of the process with its figures, `None` when no memory controller is
    /// mounted where this process can see it.
    pub fn memory_cgroup(&self) -> Result<Option<cgroup::CgroupMemory>> {
        let memberships = cgroup::parse_memberships(&self.read("cgroup")?);
        let mounts = cgroup::parse_mounts(&read_path(Path::new("/proc/self/mountinfo"), 0)?);
        match cgroup::locate(&memberships, &mounts) {
            Some((version, path, dir)) => match cgroup::read_memory(version, path, &dir) {
                Ok(m) => Ok(Some(m)),
                Err(Error::ProcessGone { .. }) => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    }

    /// Opens the cheap counter files once, for repeated sampling.
    pub fn counter_files(&self) -> Result<CounterFiles> {
        let open = |name: &str| {
            let p = self.dir.join(name);
            File::open(&p).map_err(|e| classify_io(e, &p, self.pid))
        };
        Ok(CounterFiles {
            pid: self.pid,
            status: open("status")?,
            statm: open("statm")?,
            rollup: open("smaps_rollup").ok(),
            dir: self.dir.clone(),
            buf: vec![0; 8192],
            page_size: page_size(),
        })
    }
}

/// `status`, `statm` and `smaps_rollup` kept open and re-read from offset 0 (the kernel
/// regenerates the content on each read) into a buffer allocated once and never zeroed again:
/// the sampler's hot path, a few microseconds a read.
#[derive(Debug)]
pub struct CounterFiles {
    pid: u32,
    dir: PathBuf,
    status: File,
    statm: File,
    rollup: Option<File>,
    buf: Vec<u8>,
    page_size: u64,
}

impl CounterFiles {
    /// Opens the counter files of a process under the real `/proc`.
    pub fn open(pid: u32) -> Result<CounterFiles> {
        Process::new(pid)?.counter_files()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads a whole file from offset 0 into `buf`; returns the length.
    fn pread(file: &File, buf: &mut Vec<u8>, dir: &Path, pid: u32) -> Result<usize> {
        let len = read_from_start(file, buf).map_err(|e| classify_io(e, dir, pid))?;
        if len == 0 {
            // A process without an address space any more (exiting) reads empty.
            return Err(Error::ProcessGone { pid });
        }
        Ok(len)
    }

    /// Re-reads `statm`.
    pub fn statm(&mut self) -> Result<statm::Statm> {
        let n = Self::pread(&self.statm, &mut self.buf, &self.dir, self.pid)?;
        statm::parse(&self.buf[..n], self.page_size)
    }

    /// Re-reads `status`.
    pub fn status(&mut self) -> Result<status::Status> {
        let n = Self::pread(&self.status, &mut self.buf, &self.dir, self.pid)?;
        status::parse(&self.buf[..n])
    }

    /// Re-reads `smaps_rollup` (a page-table walk: cost grows with resident memory), or sums
    /// `smaps` where the kernel has no rollup.
    pub fn smaps_rollup(&mut self) -> Result<smaps::Counters> {
        match &self.rollup {
            Some(f) => {
                let n = Self::pread(f, &mut self.buf, &self.dir, self.pid)?;
                smaps::parse_rollup(&self.buf[..n])
            }
            None => Process::with_root(self.dir.parent().unwrap_or(Path::new("/proc")), self.pid)?
                .smaps_rollup(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn read_from_start_reads_whole_files_of_any_length_again_and_again() {
        let path =
            std::env::temp_dir().join(format!("memlens-read-from-start-{}", std::process::id()));
        // Longer than the first 4 KiB buffer and than its first doubling: the buffer grows twice.
        let long: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &long).unwrap();
        let f = File::open(&path).unwrap();
        let mut buf = Vec::new();
        let n = read_from_start(&f, &mut buf).unwrap();
        assert_eq!(&buf[..n], &long[..]);
        // The same open file read again, now shorter: only the new bytes, from offset 0.
        std::fs::write(&path, b"12 34\n").unwrap();
        let n = read_from_start(&f, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"12 34\n");
        assert!(buf.len() >= 10_000, "the buffer is kept, not shrunk");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(read_from_start(&f, &mut buf).unwrap(), 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn read_from_start_rereads_a_kept_open_proc_file() {
        // The kernel regenerates /proc files on each read from offset 0.
        let f = File::open("/proc/self/status").unwrap();
        let mut buf = Vec::new();
        for _ in 0..2 {
            let n = read_from_start(&f, &mut buf).unwrap();
            let st = status::parse(&buf[..n]).unwrap();
            assert_eq!(st.tgid, std::process::id());
        }
    }

    #[test]
    fn read_from_start_fails_on_a_file_that_cannot_be_read() {
        let dir = File::open("/proc/self").unwrap();
        let mut buf = Vec::new();
        assert!(read_from_start(&dir, &mut buf).is_err());
    }
}
