//! `/proc/PID/task/TID/syscall`: where a thread is blocked, with its stack pointer.

use serde::Serialize;

use crate::bytes::{fields, parse_hex, parse_i64};
use crate::error::{Error, Result};

/// What `syscall` says about a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Syscall {
    /// The thread is on a CPU: no registers to show.
    Running,
    /// Blocked; `number` is -1 when blocked outside a system call.
    Blocked {
        /// System-call number, or -1.
        number: i64,
        /// User stack pointer.
        stack_pointer: u64,
        /// User program counter.
        program_counter: u64,
    },
}

impl Syscall {
    /// The stack pointer, when known.
    pub fn stack_pointer(&self) -> Option<u64> {
        match self {
            Syscall::Running => None,
            Syscall::Blocked { stack_pointer, .. } => Some(*stack_pointer),
        }
    }
}

/// Parses `nr a1 .. a6 sp pc`, `-1 sp pc` or `running`.
pub fn parse(content: &[u8]) -> Result<Syscall> {
    let f: Vec<&[u8]> = fields(content).collect();
    let bad = || Error::parse("syscall", String::from_utf8_lossy(content).into_owned());
    match f.as_slice() {
        [b"running"] => Ok(Syscall::Running),
        [nr, .., sp, pc] if f.len() == 3 || f.len() == 9 => Ok(Syscall::Blocked {
            number: parse_i64(nr).ok_or_else(bad)?,
            stack_pointer: parse_hex(sp).ok_or_else(bad)?,
            program_counter: parse_hex(pc).ok_or_else(bad)?,
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse(b"running\n").unwrap(), Syscall::Running);
        let s = parse(b"0 0x3 0x7f2e7279a000 0x20000 0x7f2e7282db60 0xffffffff 0x0 0x7fff42a981f8 0x7f2e729162ad\n").unwrap();
        assert_eq!(s.stack_pointer(), Some(0x7fff_42a9_81f8));
        let s = parse(b"-1 0x7ffc1 0x4005\n").unwrap();
        assert!(matches!(s, Syscall::Blocked { number: -1, .. }));
        assert!(parse(b"1 2\n").is_err());
    }
}
