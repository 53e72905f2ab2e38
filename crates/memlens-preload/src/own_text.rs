//! Gives back the page-table entries of the library's own code and read-only data once its
//! start-up work is done, so that only the code the running tracer executes stays resident.
//!
//! The library's text is ~300 KiB (its own code, and the parts of Rust's std it links: panic
//! and backtrace machinery, formatting), and a program that loads it makes most of it resident
//! however little of it runs: the kernel maps a whole window of page-cache pages (64 KiB,
//! `fault_around_bytes`) around each page it faults in, and the start-up (the constructor,
//! the allocator wrapper's installation, the first lines written) touches most windows once.
//! On a 14 MB Python process that is ~2.5% of its peak RSS (issue 10).
//!
//! [`release`] asks the kernel (`MADV_DONTNEED`) to unmap the pages of the library's
//! non-writable `PT_LOAD` segments (found from its own ELF header, `__ehdr_start`, without a
//! lock or an allocation); what runs afterwards faults back in, from the page cache.
//!
//! # Why it is safe
//! - Only pages of segments without `PF_W` are touched, and only whole pages inside a
//!   segment's file extent: never the writable data, `.bss`, or the RELRO part (written by the
//!   dynamic loader's relocations, then made read-only: its pages are private copies).
//! - Those pages are never written by the library or the loader (no text relocations: `ld`
//!   links a Rust cdylib as PIC), so each is the page cache's page of the file, and dropping the
//!   mapping of such a page is what the kernel's own reclaim does to it under memory pressure
//!   at any time: the next access faults the same bytes back in from the file. A mapped
//!   library replaced in place while the program runs breaks it the same way with or without
//!   this (a replaced file is a new inode; the old one stays mapped).
//! - A page that *was* written (a debugger's breakpoint, written with ptrace into a private
//!   copy) would lose that write: each page is checked first in `/proc/self/pagemap` and only
//!   pages not present, or present as a file page, are released; an anonymous copy is left
//!   alone. If the pagemap cannot be read, nothing is released.
//! - Another thread running this code meanwhile only takes a minor fault.

use std::ffi::c_void;

/// The page size this code assumes (x86-64 and the aarch64 kernels memlens supports use 4 KiB;
/// with larger pages the rounding inward still keeps to whole pages of each segment, checked
/// against `sysconf`).
const PAGE: usize = 4096;
/// Pagemap entries read at once (512 bytes of stack).
const CHUNK: usize = 64;
/// Pagemap bits: present, swapped, file page or shared anonymous.
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

extern "C" {
    /// The library's own ELF header, defined by the linker (GNU ld, lld) at the start of the
    /// first loaded segment, which holds the headers.
    static __ehdr_start: libc::Elf64_Ehdr;
}

/// Releases the resident pages of this library's read-only and executable segments, and of
/// `libgcc_s.so.1`'s (see the module docs). Called once, at the end of the constructor, while
/// the program's start-up runs in one thread. Makes no allocation; a few system calls.
#[cfg_attr(test, allow(dead_code))]
pub(crate) fn release() {
    // SAFETY: sysconf has no preconditions.
    if unsafe { libc::sysconf(libc::_SC_PAGESIZE) } != PAGE as libc::c_long {
        return;
    }
    // SAFETY: opening a /proc file read-only (a system call: never traced).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/proc/self/pagemap".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    } as libc::c_int;
    if fd < 0 {
        return;
    }
    // SAFETY: the linker-defined symbol is the mapped ELF header of this object.
    let eh: &libc::Elf64_Ehdr = unsafe { &*std::ptr::addr_of!(__ehdr_start) };
    let base = eh as *const libc::Elf64_Ehdr as usize;
    let phsize = std::mem::size_of::<libc::Elf64_Phdr>();
    let phoff = eh.e_phoff as usize;
    let phnum = usize::from(eh.e_phnum);
    // The program headers must lie in the header's own page (mapped with it); they do in any
    // shared object ld writes (right after the 64-byte header).
    if eh.e_ident[..4] == *b"\x7fELF"
        && usize::from(eh.e_phentsize) == phsize
        && base % PAGE == 0
        && phoff >= std::mem::size_of::<libc::Elf64_Ehdr>()
        && phoff + phnum * phsize <= PAGE
    {
        // SAFETY: `phnum` entries within the header's page, checked above.
        let phdrs =
            unsafe { std::slice::from_raw_parts((base + phoff) as *const libc::Elf64_Phdr, phnum) };
        release_segments(fd, base, phdrs);
    }
    // libgcc_s: loaded only because Rust's std links its unwinder, which runs only if a panic
    // unwinds (then up to a hook's `extern "C"` boundary, where it aborts): mapped and
    // initialised by the loader, then not run; its pages come back if it ever is.
    // SAFETY: the callback reads only what the loader passes it, for the duration of the call.
    unsafe { libc::dl_iterate_phdr(Some(each_object), &fd as *const libc::c_int as *mut c_void) };
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
}

/// `dl_iterate_phdr`'s callback: releases `libgcc_s.so.1`'s segments.
unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> libc::c_int {
    // SAFETY: the loader's description of one loaded object, valid during the call; `data` is
    // the pagemap descriptor `release` passed.
    let (info, fd) = unsafe { (&*info, *(data as *const libc::c_int)) };
    if info.dlpi_name.is_null() || info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: a NUL-terminated path kept by the loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes();
    if !(name == b"libgcc_s.so.1" || name.ends_with(b"/libgcc_s.so.1")) {
        return 0;
    }
    // SAFETY: the object's program headers, mapped by the loader.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    release_segments(fd, info.dlpi_addr as usize, phdrs);
    1
}

/// Releases the whole pages of the non-writable `PT_LOAD` segments of the object loaded at
/// `base` (their file extent only).
fn release_segments(fd: libc::c_int, base: usize, phdrs: &[libc::Elf64_Phdr]) {
    for ph in phdrs {
        if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_W != 0 {
            continue;
        }
        let start = (base + ph.p_vaddr as usize).next_multiple_of(PAGE);
        let end = (base + ph.p_vaddr as usize + ph.p_filesz as usize) / PAGE * PAGE;
        if end > start {
            release_file_pages(fd, start, end);
        }
    }
}

/// Releases the pages of `[start, end)` (page-aligned, one file mapping) that the pagemap
/// (`fd`) shows absent or mapped from the file; a run of them at a time.
fn release_file_pages(fd: libc::c_int, start: usize, end: usize) {
    let mut buf = [0u64; CHUNK];
    let mut page = start;
    let mut run: Option<usize> = None;
    while page < end {
        let n = ((end - page) / PAGE).min(CHUNK);
        let want = n * 8;
        // SAFETY: reading into our own buffer of at least `want` bytes.
        let got = unsafe {
            libc::pread(
                fd,
                buf.as_mut_ptr() as *mut c_void,
                want,
                (page / PAGE * 8) as libc::off_t,
            )
        };
        if got != want as isize {
            break;
        }
        for e in &buf[..n] {
            let file_or_absent = if e & PM_PRESENT != 0 {
                e & PM_FILE != 0
            } else {
                e & PM_SWAP == 0
            };
            match (file_or_absent, run) {
                (true, None) => run = Some(page),
                (false, Some(from)) => {
                    dont_need(from, page);
                    run = None;
                }
                _ => {}
            }
            page += PAGE;
        }
    }
    if let Some(from) = run {
        dont_need(from, page.min(end));
    }
}

fn dont_need(from: usize, to: usize) {
    if to > from {
        // SAFETY: whole pages of this library's unwritten file mapping (module docs): the
        // next access maps the file's same bytes again.
        unsafe { libc::madvise(from as *mut c_void, to - from, libc::MADV_DONTNEED) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Present pages of `[p, p + pages * PAGE)` per the pagemap.
    fn present(p: usize, pages: usize) -> Vec<bool> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
        f.seek(SeekFrom::Start((p / PAGE * 8) as u64))
            .expect("seek");
        let mut b = vec![0u8; pages * 8];
        f.read_exact(&mut b).expect("read");
        b.chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) & PM_PRESENT != 0)
            .collect()
    }

    /// A private file mapping: the pages read from the file are released, the page written
    /// (a private copy, as a debugger's breakpoint makes) keeps its contents.
    #[test]
    fn releases_file_pages_and_keeps_a_written_copy() {
        let dir = std::env::temp_dir().join(format!("own-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f");
        let pages = 8;
        let bytes: Vec<u8> = (0..pages * PAGE).map(|i| (i / PAGE) as u8 + 1).collect();
        std::fs::write(&path, &bytes).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh private mapping of our own file, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let p = p as usize;
        let mut sum = 0u64;
        for i in 0..pages {
            // SAFETY: within the mapping.
            sum += u64::from(unsafe { std::ptr::read_volatile((p + i * PAGE) as *const u8) });
        }
        assert_eq!(sum, (1..=pages as u64).sum::<u64>());
        // SAFETY: within the mapping (writable): page 3 becomes a private copy.
        unsafe { std::ptr::write_volatile((p + 3 * PAGE + 5) as *mut u8, 0xAB) };
        assert!(present(p, pages).iter().all(|&b| b));
        // SAFETY: opening a /proc file read-only.
        let fd = unsafe {
            libc::open(
                c"/proc/self/pagemap".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        assert!(fd >= 0);
        release_file_pages(fd, p, p + pages * PAGE);
        // SAFETY: our descriptor.
        unsafe { libc::close(fd) };
        let now = present(p, pages);
        assert!(now[3], "the written page stays");
        assert_eq!(now.iter().filter(|&&b| b).count(), 1, "{now:?}");
        // SAFETY: within the mapping.
        let (w, r) = unsafe {
            (
                std::ptr::read_volatile((p + 3 * PAGE + 5) as *const u8),
                std::ptr::read_volatile((p + 6 * PAGE + 5) as *const u8),
            )
        };
        assert_eq!(
            (w, r),
            (0xAB, 7),
            "the copy kept its write, a released page reads the file"
        );
        // SAFETY: our mapping.
        unsafe { libc::munmap(p as *mut c_void, pages * PAGE) };
        let _ = std::fs::remove_dir_all(&dir);
    }
}
