//! Reading another process from outside: its memory ([`ProcessMemory`], with a
//! `process_vm_readv` backend, a `/proc/PID/mem` fallback, a chunk cache and a byte-slice
//! backend for tests), its ELF files ([`elf::ElfFile`], opened through `/proc/PID/root` so
//! containers and deleted files work) and short, guarded ptrace pauses ([`pause::Pause`]).
//!
//! This crate writes to a target only in [`write`]: the few bytes of a PEP 768 request
//! (`memlens record PID --trace`, CPython 3.14+), the one opt-in injection memlens does. With `memlens-launch` (the process-control calls of
//! `memlens run`), it is one of the two memlens crates allowed `unsafe`: the system calls of
//! reading another process live here, each with a `// SAFETY:` comment.

pub mod bitmap;
pub mod budget;
pub mod cache;
pub mod elf;
mod error;
pub mod glibc_heaps;
pub mod memory;
pub mod pagelog;
pub mod pause;
pub mod sealer;
pub mod vm;
pub mod write;

pub use bitmap::AddressBits;
pub use budget::MemoryBudget;
pub use cache::CachedMemory;
pub use error::{Error, Result};
pub use memory::{ProcessMemory, SliceMemory, MAX_READ};
pub use pagelog::PageLog;
pub use pause::Pause;
pub use vm::RemoteMemory;
