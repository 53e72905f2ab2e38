//! `/proc/PID/statm`: the cheapest resident-size counters (pages).

use serde::Serialize;

use crate::bytes::{fields, parse_u64};
use crate::error::{Error, Result};

/// `statm`, converted to bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Statm {
    /// Virtual size.
    pub size: u64,
    /// Resident set (anon + file + shmem).
    pub resident: u64,
    /// Resident file-backed and shared pages.
    pub shared: u64,
    /// Text (code).
    pub text: u64,
    /// Data + stack.
    pub data: u64,
}

/// Parses `statm` given the page size in bytes. A page count whose size in bytes does not fit
/// in a `u64` is an error, not a wrapped number.
pub fn parse(content: &[u8], page_size: u64) -> Result<Statm> {
    let mut f = fields(content).map(parse_u64);
    let mut next = || {
        f.next()
            .flatten()
            .and_then(|p| p.checked_mul(page_size))
            .ok_or_else(|| Error::parse("statm", String::from_utf8_lossy(content).into_owned()))
    };
    let size = next()?;
    let resident = next()?;
    let shared = next()?;
    let text = next()?;
    let _lib = next()?;
    let data = next()?;
    Ok(Statm {
        size,
        resident,
        shared,
        text,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let s = parse(b"765 430 402 5 0 123 0\n", 4096).unwrap();
        assert_eq!(s.resident, 430 * 4096);
        assert_eq!(s.data, 123 * 4096);
        assert!(parse(b"1 2\n", 4096).is_err());
    }

    #[test]
    fn pages_times_page_size_overflow_is_an_error() {
        // Found by mutation testing: `pages * page_size` overflowed (a panic in debug builds,
        // a silently wrapped size in release builds).
        assert!(parse(b"18446744073709551615 1 1 1 0 1 0\n", 4096).is_err());
        assert!(parse(b"1 1 1 1 0 4503599627370496 0\n", 4096).is_err());
        let max = parse(b"4503599627370495 0 0 0 0 0 0\n", 4096).unwrap();
        assert_eq!(max.size, 4_503_599_627_370_495 * 4096);
    }
}
