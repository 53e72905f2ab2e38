//! The live-process backends: `/proc/PID/mem` and `process_vm_readv` with batched iovecs.
//!
//! `/proc/PID/mem` is preferred. `process_vm_readv` pins the pages it reads (`FOLL_PIN`), and
//! since Linux 5.19 a read-only pin of an anonymous page shared copy-on-write makes the kernel
//! unshare it first: reading a forked worker with it copies every page read (measured here:
//! a census of a forked child grew its PSS from 46 MB to 183 MB). `/proc/PID/mem` reads through
//! `access_remote_vm` without pinning and leaves sharing intact. `process_vm_readv` remains
//! the fallback where `/proc/PID/mem` cannot be opened, and can be chosen explicitly.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::memory::ProcessMemory;

/// The kernel's limit on iovecs per call (`UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

/// Memory of a live process. It is `Sync`: several threads may read at once.
#[derive(Debug)]
pub struct RemoteMemory {
    pid: u32,
    /// Read through `/proc/PID/mem` (default when it opens), else `process_vm_readv`.
    use_file: AtomicBool,
    mem: Option<File>,
}

impl RemoteMemory {
    /// Opens the memory of `pid`. Fails when the process does not exist; permission problems
    /// show on the first read.
    pub fn open(pid: u32) -> Result<Self> {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(Error::ProcessGone { pid });
        }
        let mem = File::open(format!("/proc/{pid}/mem")).ok();
        Ok(RemoteMemory {
            pid,
            use_file: AtomicBool::new(mem.is_some()),
            mem,
        })
    }

    /// Reads with `process_vm_readv` (batched iovecs) even where `/proc/PID/mem` works. Beware:
    /// it unshares copy-on-write pages it reads (see the module documentation).
    pub fn open_with_process_vm_readv(pid: u32) -> Result<Self> {
        let m = Self::open(pid)?;
        m.use_file.store(false, Ordering::Relaxed);
        Ok(m)
    }

    /// Whether reads go through `/proc/PID/mem`.
    pub fn uses_proc_mem(&self) -> bool {
        self.use_file.load(Ordering::Relaxed)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn read_file(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let Some(f) = &self.mem else {
            return Err(Error::PermissionDenied {
                pid: self.pid,
                what: "read the memory of",
            });
        };
        f.read_exact_at(buf, addr).map_err(|e| {
            // The kernel answers EIO for an unmapped address and end-of-file once the
            // process's memory is gone (it exited, or is a zombie): the file stays bound to
            // the memory it was opened for, so a reused PID is never read.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return Error::ProcessGone { pid: self.pid };
            }
            match e.raw_os_error() {
                Some(libc::EIO) | Some(libc::EFAULT) | None => Error::Unreadable {
                    addr,
                    len: buf.len(),
                },
                _ => Error::from_os(self.pid, "read the memory of", e),
            }
        })
    }

    /// One `process_vm_readv` call for up to [`MAX_IOV`] ranges; returns bytes read.
    fn readv(&self, reqs: &mut [(u64, &mut [u8])]) -> std::io::Result<usize> {
        let local: Vec<libc::iovec> = reqs
            .iter_mut()
            .map(|(_, b)| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let remote: Vec<libc::iovec> = reqs
            .iter()
            .map(|(a, b)| libc::iovec {
                iov_base: *a as usize as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: every local iovec points into a distinct `&mut [u8]` that outlives the call
        // and has exactly `iov_len` writable bytes; the remote iovecs are only addresses in the
        // other process, which the kernel checks. Both arrays hold `reqs.len()` entries.
        let n = unsafe {
            libc::process_vm_readv(
                self.pid as libc::pid_t,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl ProcessMemory for RemoteMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.uses_proc_mem() {
            return self.read_file(addr, buf);
        }
        let len = buf.len();
        match self.readv(&mut [(addr, &mut *buf)]) {
            Ok(n) if n == len => Ok(()),
            Ok(_) => Err(Error::Unreadable { addr, len }),
            Err(e) => match e.raw_os_error() {
                Some(libc::EFAULT) => Err(Error::Unreadable { addr, len }),
                Some(libc::ENOSYS) | Some(libc::EPERM) if self.mem.is_some() => {
                    log::debug!(
                        "process_vm_readv failed ({e}); using /proc/{}/mem",
                        self.pid
                    );
                    self.use_file.store(true, Ordering::Relaxed);
                    self.read_file(addr, buf)
                }
                _ => Err(Error::from_os(self.pid, "read the memory of", e)),
            },
        }
    }

    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<Result<()>> {
        let mut out = Vec::with_capacity(reqs.len());
        for batch in reqs.chunks_mut(MAX_IOV) {
            if self.uses_proc_mem() {
                out.extend(batch.iter_mut().map(|(a, b)| self.read_file(*a, b)));
                continue;
            }
            // process_vm_readv stops at the first unreadable byte: retry the rest after it.
            let mut start = 0;
            while start < batch.len() {
                let lens: Vec<usize> = batch[start..].iter().map(|(_, b)| b.len()).collect();
                match self.readv(&mut batch[start..]) {
                    Ok(mut n) => {
                        let mut i = 0;
                        while i < lens.len() && n >= lens[i] {
                            n -= lens[i];
                            out.push(Ok(()));
                            i += 1;
                        }
                        if i < lens.len() {
                            // range i failed (partially or wholly): read it alone to classify
                            let (a, b) = &mut batch[start + i];
                            out.push(self.read(*a, b));
                            i += 1;
                        }
                        start += i;
                    }
                    Err(_) => {
                        let (a, b) = &mut batch[start];
                        out.push(self.read(*a, b));
                        start += 1;
                    }
                }
            }
        }
        out
    }
}

/// The readable `[start, end)` ranges of a process, from `/proc/PID/maps` (kernel-special
/// `[vvar]`/`[vsyscall]` areas left out), parsed by `memlens_procfs::maps`.
pub fn readable_regions(pid: u32) -> Result<Vec<(u64, u64)>> {
    let text = std::fs::read(format!("/proc/{pid}/maps"))
        .map_err(|e| Error::from_os(pid, "read the mappings of", e))?;
    let maps = memlens_procfs::maps::parse(&text).map_err(|e| Error::Io {
        what: format!("parse the mappings of process {pid}"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    Ok(maps
        .into_iter()
        .filter(|m| m.is_readable() && !m.path.starts_with(b"[v"))
        .map(|m| (m.start, m.end))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_read_this_process() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3 * 4096 + 17).collect();
        let addr = data.as_ptr() as u64;
        let pid = std::process::id();
        let a = RemoteMemory::open(pid).expect("opens");
        assert!(a.uses_proc_mem());
        let b = RemoteMemory::open_with_process_vm_readv(pid).expect("opens");
        assert!(!b.uses_proc_mem());
        for m in [&a, &b] {
            assert_eq!(
                m.read_vec(addr + 5, 9000).ok().as_deref(),
                Some(&data[5..9005])
            );
            let (mut x, mut y) = ([0u8; 16], [0u8; 16]);
            let mut reqs: Vec<(u64, &mut [u8])> = vec![(addr + 100, &mut x), (8, &mut y)];
            let r = m.read_many(&mut reqs);
            assert!(r[0].is_ok() && r[1].is_err(), "{r:?}");
            assert_eq!(&x[..], &data[100..116]);
            assert!(matches!(m.read_u64(16), Err(Error::Unreadable { .. })));
        }
    }

    #[test]
    fn a_process_whose_memory_is_gone_is_gone_not_unreadable() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep starts");
        let pid = child.id();
        let m = RemoteMemory::open(pid).expect("opens");
        let stack = readable_regions(pid)
            .expect("maps")
            .last()
            .map(|r| r.0)
            .expect("a region");
        assert!(m.read_u64(stack).is_ok(), "readable while it runs");
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert!(
            matches!(m.read_u64(stack), Err(Error::ProcessGone { pid: p }) if p == pid),
            "{:?}",
            m.read_u64(stack)
        );
    }
}
