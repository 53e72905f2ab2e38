//! The one write memlens makes into another process's memory: the few bytes of a PEP 768
//! request (`memlens record PID --trace` on CPython 3.14+, the one opt-in injection memlens
//! does; see `memlens_cpython::remote_exec`). Nothing else in memlens writes to a target.
//!
//! [`write_exact`] writes one small buffer with `process_vm_writev` (the kernel checks the
//! caller may ptrace-attach the target, the same right as reading it), and refuses anything
//! but a whole write: a partial write is reported with how many bytes landed. Writes are
//! bounded to [`MAX_WRITE`] bytes.

use crate::error::{Error, Result};

/// The longest write memlens makes (a script path of CPython's 512-byte buffer).
pub const MAX_WRITE: usize = 512;

/// Writes `data` at `addr` in process `pid`, all of it or an error.
pub fn write_exact(pid: u32, addr: u64, data: &[u8]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if data.len() > MAX_WRITE {
        return Err(Error::TooLong {
            addr,
            len: data.len(),
        });
    }
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: the local iovec points into `data`, which outlives the call and has exactly
    // `iov_len` readable bytes (process_vm_writev only reads it); the remote iovec is an
    // address in the other process, which the kernel checks. One entry each.
    let n = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EFAULT) => Error::Unreadable {
                addr,
                len: data.len(),
            },
            _ => Error::from_os(pid, "write the memory of", e),
        });
    }
    if n as usize != data.len() {
        return Err(Error::Io {
            what: format!("write the memory of process {pid}"),
            source: std::io::Error::other(format!(
                "{n} of {} bytes written at {addr:#x}",
                data.len()
            )),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProcessMemory, RemoteMemory};

    #[test]
    fn writes_exactly_into_a_process_and_refuses_the_rest() {
        let mut target = [0u8; 64];
        let addr = target.as_mut_ptr() as u64;
        let pid = std::process::id();
        write_exact(pid, addr + 3, b"memlens").expect("writes");
        let m = RemoteMemory::open(pid).expect("opens");
        assert_eq!(
            m.read_vec(addr + 3, 7).ok().as_deref(),
            Some(&b"memlens"[..])
        );
        // black_box: the compiler does not know the kernel wrote the array.
        assert_eq!(std::hint::black_box(&target)[3..10], *b"memlens");
        assert!(matches!(
            write_exact(pid, 8, b"x"),
            Err(Error::Unreadable { .. })
        ));
        assert!(matches!(
            write_exact(pid, addr, &[0; MAX_WRITE + 1]),
            Err(Error::TooLong { .. })
        ));
    }
}
