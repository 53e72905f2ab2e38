//! Decoding single objects: strings, bytes, type names.

use memlens_remote::ProcessMemory;

use crate::error::{Error, Result};
use crate::layouts::Layout;

/// Longest string decoded for names.
pub const MAX_NAME: usize = 1024;

/// Decodes a `str` object (compact forms; legacy strings give a placeholder). At most
/// `max_chars` characters are read.
pub fn read_str<M: ProcessMemory>(
    mem: &M,
    l: &Layout,
    addr: u64,
    max_chars: usize,
) -> Result<String> {
    if addr == 0 {
        return Ok(String::new());
    }
    if addr >= crate::census::MAX_ADDR {
        return Err(Error::Invalid {
            pid: 0,
            why: format!("not a str at {addr:#x}"),
        });
    }
    let state = mem.read_u32(addr.wrapping_add(l.str_state))?;
    let kind = (state >> 2) & 7;
    let compact = (state >> 5) & 1 == 1;
    let ascii = (state >> 6) & 1 == 1;
    let len = mem.read_i64(addr.wrapping_add(l.str_length))?;
    if !(0..=1 << 30).contains(&len) || !matches!(kind, 1 | 2 | 4) {
        return Err(Error::Invalid {
            pid: 0,
            why: format!("not a str at {addr:#x}"),
        });
    }
    if !compact {
        return Ok("<str>".into());
    }
    let data = addr
        + if ascii {
            l.str_ascii_size
        } else {
            l.str_compact_size
        };
    let n = (len as usize).min(max_chars);
    let raw = mem.read_vec(data, n * kind as usize)?;
    Ok(decode_str(&raw, kind))
}

/// Decodes the characters of a compact string of `kind` bytes per character.
pub fn decode_str(raw: &[u8], kind: u32) -> String {
    match kind {
        1 => raw.iter().map(|b| char::from(*b)).collect(),
        2 => raw
            .chunks_exact(2)
            .map(|c| {
                char::from_u32(u32::from(u16::from_ne_bytes([c[0], c[1]])))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
    }
}

/// The contents of a `bytes` object (at most `max` bytes).
pub fn read_bytes<M: ProcessMemory>(mem: &M, l: &Layout, addr: u64, max: usize) -> Result<Vec<u8>> {
    let size = mem.read_i64(addr.wrapping_add(l.var_size))?;
    if !(0..=1 << 30).contains(&size) {
        return Err(Error::Invalid {
            pid: 0,
            why: format!("not a bytes object at {addr:#x}"),
        });
    }
    Ok(mem.read_vec(addr.wrapping_add(l.bytes_sval), (size as usize).min(max))?)
}

/// `type.__name__` of a type object: `ht_name` for heap types, `tp_name` after its last dot
/// for static ones.
pub fn type_name<M: ProcessMemory>(mem: &M, l: &Layout, ty: u64) -> Result<String> {
    let not_a_type = |at: u64| Error::Invalid {
        pid: 0,
        why: format!("not a type (or its name) at {at:#x}"),
    };
    if ty >= crate::census::MAX_ADDR {
        return Err(not_a_type(ty));
    }
    let flags = mem.read_u64(ty.wrapping_add(l.type_flags))?;
    if flags & l.tpflags_heaptype != 0 {
        let name = mem.read_u64(ty.wrapping_add(l.heaptype_name))?;
        if let Ok(s) = read_str(mem, l, name, MAX_NAME) {
            return Ok(s);
        }
    }
    let p = mem.read_u64(ty.wrapping_add(l.type_name))?;
    if p >= crate::census::MAX_ADDR {
        return Err(not_a_type(p));
    }
    let raw = mem.read_cstr(p, MAX_NAME)?;
    let short = match raw.iter().rposition(|b| *b == b'.') {
        Some(i) => &raw[i + 1..],
        None => &raw[..],
    };
    Ok(String::from_utf8_lossy(short).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kinds() {
        assert_eq!(decode_str(b"abc", 1), "abc");
        assert_eq!(decode_str(&[0xe9], 1), "é");
        let two: Vec<u8> = [0x3b1u16, 0x3b2]
            .iter()
            .flat_map(|c| c.to_ne_bytes())
            .collect();
        assert_eq!(decode_str(&two, 2), "αβ");
        let four: Vec<u8> = [0x1f600u32, 0xd800]
            .iter()
            .flat_map(|c| c.to_ne_bytes())
            .collect();
        assert_eq!(decode_str(&four, 4), "😀\u{fffd}");
    }

    #[test]
    fn reads_a_compact_ascii_str_from_bytes() {
        let l = crate::layouts::for_version(12).expect("3.12");
        let mut obj = vec![0u8; l.str_ascii_size as usize + 6];
        let put = |o: &mut Vec<u8>, at: u64, v: &[u8]| {
            o[at as usize..at as usize + v.len()].copy_from_slice(v)
        };
        put(&mut obj, l.str_length, &5i64.to_ne_bytes());
        put(
            &mut obj,
            l.str_state,
            &((1u32 << 2) | (1 << 5) | (1 << 6)).to_ne_bytes(),
        );
        put(&mut obj, l.str_ascii_size, b"hello\0");
        let mut m = memlens_remote::SliceMemory::new();
        m.map(0x5000, obj);
        assert_eq!(read_str(&m, l, 0x5000, 100).ok().as_deref(), Some("hello"));
        assert_eq!(read_str(&m, l, 0x5000, 2).ok().as_deref(), Some("he"));
        assert!(read_str(&m, l, 0x9000, 2).is_err());
    }
}
