//! Small helpers for parsing `/proc` bytes without `String` round trips.

/// Parses an unsigned decimal number; `None` on anything else (empty, sign, overflow).
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Parses a signed decimal number.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.split_first() {
        Some((b'-', rest)) => parse_u64(rest)
            .and_then(|v| i64::try_from(v).ok())
            .map(|v| -v),
        _ => parse_u64(s).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Parses a hexadecimal number, with or without `0x`.
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    let s = s.strip_prefix(b"0x").unwrap_or(s);
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Trims ASCII whitespace at both ends.
pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Splits `Key:   value` into key and trimmed value.
pub fn split_key_value(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    Some((&line[..colon], trim(&line[colon + 1..])))
}

/// Parses `1234 kB` (or a bare number) into bytes.
pub fn parse_kb(value: &[u8]) -> Option<u64> {
    let value = trim(value);
    let (num, unit) = match value.iter().position(|&b| b == b' ') {
        Some(sp) => (&value[..sp], trim(&value[sp..])),
        None => (value, &b""[..]),
    };
    let n = parse_u64(num)?;
    match unit {
        b"kB" => n.checked_mul(1024),
        b"" => Some(n),
        _ => None,
    }
}

/// Iterates whitespace-separated fields.
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"1a"), None);
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_hex(b"7ffd0f59b000"), Some(0x7ffd_0f59_b000));
        assert_eq!(parse_hex(b"0x20000"), Some(0x20000));
        assert_eq!(parse_hex(b"xyz"), None);
        assert_eq!(parse_kb(b"  1732 kB"), Some(1732 * 1024));
        assert_eq!(parse_kb(b"12"), Some(12));
        assert_eq!(parse_kb(b"12 MB"), None);
        assert_eq!(trim(b"  a b \n"), b"a b");
    }
}
