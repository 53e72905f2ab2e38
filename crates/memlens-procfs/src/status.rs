//! `/proc/PID/status`: identity, memory high-water marks and the RSS split.

use serde::Serialize;

use crate::bytes::{fields, parse_kb, parse_u64, split_key_value};
use crate::error::{Error, Result};

/// The fields of `status` memlens uses; sizes in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `Name` (the comm, escaped by the kernel; at most 15 bytes).
    #[serde(serialize_with = "crate::serialize_lossy")]
    pub name: Vec<u8>,
    /// Single-letter state (`R`, `S`, `Z`, ...).
    pub state: u8,
    /// Thread group id (the PID).
    pub tgid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Effective user id.
    pub euid: u32,
    /// Peak virtual size.
    pub vm_peak: u64,
    /// Virtual size.
    pub vm_size: u64,
    /// Peak resident set (the kernel's exact high-water mark).
    pub vm_hwm: u64,
    /// Resident set.
    pub vm_rss: u64,
    /// Anonymous resident pages.
    pub rss_anon: u64,
    /// File-backed resident pages.
    pub rss_file: u64,
    /// Shared-memory resident pages.
    pub rss_shmem: u64,
    /// Swapped-out anonymous memory.
    pub vm_swap: u64,
    /// Page tables.
    pub vm_pte: u64,
    /// Number of threads.
    pub threads: u32,
    /// `TracerPid`: the process tracing this one (a debugger, strace, py-spy), 0 when none.
    pub tracer_pid: u32,
    /// `Kthread` (kernels 6.0 and later): whether this is a kernel thread; `None` when the
    /// kernel does not say.
    pub kthread: Option<bool>,
}

impl Status {
    /// Whether this is a kernel thread: the kernel's `Kthread` line where it has one, else a
    /// live process without an address space (no `VmSize` line). A zombie has no address space
    /// either but is not a kernel thread.
    pub fn is_kernel_thread(&self) -> bool {
        match self.kthread {
            Some(k) => k,
            None => self.vm_size == 0 && !self.has_exited(),
        }
    }

    /// Whether the process has exited: a zombie (`Z`, waiting for its parent to reap it) or
    /// dead (`X`).
    pub fn has_exited(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses `/proc/PID/status`.
pub fn parse(content: &[u8]) -> Result<Status> {
    let mut s = Status::default();
    let mut saw_pid = false;
    for line in content.split(|b| *b == b'\n') {
        let Some((key, value)) = split_key_value(line) else {
            continue;
        };
        let kb = || {
            parse_kb(value)
                .ok_or_else(|| Error::parse("status", String::from_utf8_lossy(line).into_owned()))
        };
        let num = || {
            parse_u64(value)
                .ok_or_else(|| Error::parse("status", String::from_utf8_lossy(line).into_owned()))
        };
        match key {
            b"Name" => s.name = value.to_vec(),
            b"State" => s.state = value.first().copied().unwrap_or(b'?'),
            b"Tgid" => {
                s.tgid = num()? as u32;
                saw_pid = true;
            }
            b"PPid" => s.ppid = num()? as u32,
            b"Uid" => {
                let mut f = fields(value).map(parse_u64);
                s.uid = f.next().flatten().unwrap_or(0) as u32;
                s.euid = f.next().flatten().unwrap_or(0) as u32;
            }
            b"VmPeak" => s.vm_peak = kb()?,
            b"VmSize" => s.vm_size = kb()?,
            b"VmHWM" => s.vm_hwm = kb()?,
            b"VmRSS" => s.vm_rss = kb()?,
            b"RssAnon" => s.rss_anon = kb()?,
            b"RssFile" => s.rss_file = kb()?,
            b"RssShmem" => s.rss_shmem = kb()?,
            b"VmSwap" => s.vm_swap = kb()?,
            b"VmPTE" => s.vm_pte = kb()?,
            b"Threads" => s.threads = num()? as u32,
            b"TracerPid" => s.tracer_pid = num()? as u32,
            b"Kthread" => s.kthread = Some(num()? != 0),
            _ => {}
        }
    }
    if !saw_pid {
        return Err(Error::parse("status", "no Tgid line"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields() {
        let s = parse(
            b"Name:\tpy thon\nState:\tS (sleeping)\nTgid:\t42\nPid:\t42\nPPid:\t1\n\
Uid:\t1000\t1001\t1000\t1000\nVmPeak:\t  2000 kB\nVmSize:\t  1000 kB\nVmHWM:\t 300 kB\n\
VmRSS:\t 200 kB\nRssAnon:\t 100 kB\nRssFile:\t 90 kB\nRssShmem:\t 10 kB\nVmSwap:\t 0 kB\nThreads:\t3\n",
        )
        .unwrap();
        assert_eq!(s.name, b"py thon");
        assert_eq!(s.state, b'S');
        assert_eq!((s.tgid, s.ppid, s.uid, s.euid), (42, 1, 1000, 1001));
        assert_eq!(s.vm_hwm, 300 * 1024);
        assert_eq!(s.rss_anon + s.rss_file + s.rss_shmem, s.vm_rss);
        assert_eq!(s.threads, 3);
        assert_eq!(s.tracer_pid, 0);
        assert!(!s.is_kernel_thread());
        assert!(!s.has_exited());
    }

    #[test]
    fn zombies_kernel_threads_and_tracers() {
        // A zombie has no VmSize line, like a kernel thread on kernels without `Kthread`.
        let zombie =
            parse(b"Name:\tpython3\nState:\tZ (zombie)\nTgid:\t7\nPPid:\t1\nThreads:\t1\n")
                .unwrap();
        assert!(zombie.has_exited());
        assert!(!zombie.is_kernel_thread());
        let old_kthread =
            parse(b"Name:\tkthreadd\nState:\tS (sleeping)\nTgid:\t2\nPPid:\t0\n").unwrap();
        assert!(old_kthread.is_kernel_thread());
        let kthread =
            parse(b"Name:\tkthreadd\nState:\tS (sleeping)\nTgid:\t2\nKthread:\t1\n").unwrap();
        assert!(kthread.is_kernel_thread());
        let traced = parse(b"Name:\tpython3\nState:\tt (tracing stop)\nTgid:\t9\nTracerPid:\t4242\nVmSize:\t 10 kB\nKthread:\t0\n").unwrap();
        assert_eq!(traced.tracer_pid, 4242);
        assert!(!traced.is_kernel_thread());
    }

    #[test]
    fn rejects() {
        assert!(parse(b"").is_err());
        assert!(parse(b"Tgid:\tx\n").is_err());
    }
}
