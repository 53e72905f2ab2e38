//! `/proc/PID/stat` and `/proc/PID/task/TID/stat`.

use serde::Serialize;

use crate::bytes::{fields, parse_i64, parse_u64};
use crate::error::{Error, Result};

/// The fields of `stat` memlens uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stat {
    /// Process (or thread) id.
    pub pid: u32,
    /// The comm between the parentheses, raw.
    #[serde(serialize_with = "crate::serialize_lossy")]
    pub comm: Vec<u8>,
    /// Single-letter state.
    pub state: u8,
    /// Parent process id.
    pub ppid: u32,
    /// User CPU time in clock ticks.
    pub utime: u64,
    /// System CPU time in clock ticks.
    pub stime: u64,
    /// Number of threads.
    pub num_threads: i64,
    /// Start time after boot in clock ticks.
    pub start_time: u64,
    /// Virtual size in bytes.
    pub vsize: u64,
    /// Resident pages.
    pub rss_pages: i64,
    /// Stack start address (of the main thread).
    pub start_stack: u64,
    /// Saved stack pointer; the kernel shows 0 unless the task is being dumped.
    pub kstkesp: u64,
}

/// Parses a `stat` line. The comm may contain spaces and parentheses, so the fields after it
/// are found from the last `)`.
pub fn parse(content: &[u8]) -> Result<Stat> {
    let bad = |d: &str| Error::parse("stat", d.to_string());
    let open = content
        .iter()
        .position(|b| *b == b'(')
        .ok_or_else(|| bad("no '('"))?;
    let close = content
        .iter()
        .rposition(|b| *b == b')')
        .ok_or_else(|| bad("no ')'"))?;
    if close < open {
        return Err(bad("')' before '('"));
    }
    let id = |s: &[u8]| parse_u64(s).and_then(|v| u32::try_from(v).ok());
    let pid = id(crate::bytes::trim(&content[..open])).ok_or_else(|| bad("pid"))?;
    let comm = content[open + 1..close].to_vec();
    // f[0] is field 3 (state) in proc(5)'s numbering.
    let f: Vec<&[u8]> = fields(&content[close + 1..]).collect();
    if f.len() < 26 {
        return Err(bad("too few fields"));
    }
    let u = |i: usize| parse_u64(f[i]).ok_or_else(|| bad("number"));
    Ok(Stat {
        pid,
        comm,
        state: f[0].first().copied().unwrap_or(b'?'),
        ppid: id(f[1]).ok_or_else(|| bad("ppid"))?,
        utime: u(11)?,
        stime: u(12)?,
        num_threads: parse_i64(f[17]).ok_or_else(|| bad("num_threads"))?,
        start_time: u(19)?,
        vsize: u(20)?,
        rss_pages: parse_i64(f[21]).ok_or_else(|| bad("rss"))?,
        start_stack: u(25)?,
        kstkesp: f.get(26).and_then(|v| parse_u64(v)).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_with_parens_and_spaces() {
        let line = b"1710 (a) b (c)) R 1702 1702 1006 0 -1 4194304 99 0 0 0 5 7 0 0 20 0 3 0 7099 3133440 387 18446744073709551615 94637367296000 94637367315881 140730749298384 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse(line).unwrap();
        assert_eq!(s.pid, 1710);
        assert_eq!(s.comm, b"a) b (c)");
        assert_eq!(s.state, b'R');
        assert_eq!(s.ppid, 1702);
        assert_eq!((s.utime, s.stime), (5, 7));
        assert_eq!(s.num_threads, 3);
        assert_eq!(s.start_time, 7099);
        assert_eq!(s.vsize, 3_133_440);
        assert_eq!(s.rss_pages, 387);
        assert_eq!(s.start_stack, 140_730_749_298_384);
    }

    #[test]
    fn truncated() {
        assert!(parse(b"12 (x) S 1 2 3").is_err());
        assert!(parse(b"").is_err());
    }

    #[test]
    fn ids_wider_than_u32_are_an_error_not_truncated() {
        let fields = " R 4294967297 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 7 1 1 1 1 1 1 1\n";
        assert!(parse(format!("4294967297 (x){fields}").as_bytes()).is_err());
        assert!(parse(format!("12 (x){fields}").as_bytes()).is_err(), "ppid");
        let ok = fields.replace("4294967297", "4294967295");
        assert_eq!(
            parse(format!("12 (x){ok}").as_bytes()).map(|s| s.ppid).ok(),
            Some(u32::MAX)
        );
    }
}
