//! The sampler's hot path: `statm`, `status` and `smaps_rollup` of one process kept open and
//! re-read with `pread` into a buffer that is allocated once (no zeroing per read), plus the
//! `children` files of its threads. A few microseconds per read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memlens_procfs::{smaps, statm, status, Error, Result};

/// The counter files of one process.
#[derive(Debug)]
pub struct OpenCounters {
    pid: u32,
    dir: PathBuf,
    statm: File,
    status: File,
    rollup: Option<File>,
    buf: Vec<u8>,
    page_size: u64,
}

fn classify(e: std::io::Error, path: &Path, pid: u32) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::ProcessGone { pid },
        std::io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ if e.raw_os_error() == Some(libc::ESRCH) => Error::ProcessGone { pid },
        _ => Error::Io {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

impl OpenCounters {
    /// Opens the files of `/proc/PID`.
    pub fn open(pid: u32) -> Result<OpenCounters> {
        let dir = Path::new("/proc").join(pid.to_string());
        let open = |name: &str| {
            let p = dir.join(name);
            File::open(&p).map_err(|e| classify(e, &p, pid))
        };
        Ok(OpenCounters {
            pid,
            statm: open("statm")?,
            status: open("status")?,
            rollup: open("smaps_rollup").ok(),
            dir,
            buf: vec![0; 8192],
            page_size: memlens_procfs::page_size(),
        })
    }

    /// Reads a whole file from offset 0 into `buf`; returns the length.
    fn pread(file: &File, buf: &mut Vec<u8>, path: &Path, pid: u32) -> Result<usize> {
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = file
                .read_at(&mut buf[len..], len as u64)
                .map_err(|e| classify(e, path, pid))?;
            if n == 0 {
                break;
            }
            len += n;
        }
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

    /// Re-reads `smaps_rollup` (a page-table walk: its cost grows with resident memory).
    pub fn smaps_rollup(&mut self) -> Result<smaps::Counters> {
        match &self.rollup {
            Some(f) => {
                let n = Self::pread(f, &mut self.buf, &self.dir, self.pid)?;
                smaps::parse_rollup(&self.buf[..n])
            }
            None => memlens_procfs::Process::new(self.pid)?.smaps_rollup(),
        }
    }
}
