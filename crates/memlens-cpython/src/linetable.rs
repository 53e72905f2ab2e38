//! Line numbers from code objects' line tables, one decoder per format (pure functions on the
//! table bytes, tested on hand-made tables).

/// 3.8-3.9 `co_lnotab`: pairs (byte offset increment, signed line increment). `lasti` is a
/// byte offset.
pub fn lnotab_line(table: &[u8], first_line: i64, lasti: i64) -> i64 {
    let mut line = first_line;
    let mut addr = 0i64;
    for pair in table.chunks_exact(2) {
        addr += i64::from(pair[0]);
        if addr > lasti {
            break;
        }
        line = line.saturating_add(i64::from(pair[1] as i8));
    }
    line
}

/// 3.10 `co_linetable`: pairs (byte length of a range, signed line delta; -128 = no line).
/// `offset` is a byte offset (`f_lasti * 2`). `None` for "no line".
pub fn linetable310_line(table: &[u8], first_line: i64, offset: i64) -> Option<i64> {
    if offset < 0 {
        return Some(first_line);
    }
    let mut line = first_line;
    let mut start = 0i64;
    for pair in table.chunks_exact(2) {
        let end = start + i64::from(pair[0]);
        let delta = pair[1] as i8;
        let this = if delta == -128 {
            None
        } else {
            line = line.saturating_add(i64::from(delta));
            Some(line)
        };
        if start <= offset && offset < end {
            return this;
        }
        start = end;
    }
    None
}

/// 3.11+ location table (`Objects/locations.md`). `index` counts code units (2 bytes) from
/// the first instruction. `None` for "no location".
pub fn location_line(table: &[u8], first_line: i64, index: i64) -> Option<i64> {
    if index < 0 {
        return Some(first_line);
    }
    let mut pos = 0usize;
    let mut line = first_line;
    let mut unit = 0i64;
    let next = |pos: &mut usize| -> Option<u8> {
        let b = *table.get(*pos)?;
        *pos += 1;
        Some(b)
    };
    let varint = |pos: &mut usize| -> Option<u64> {
        let mut b = next(pos)?;
        let mut val = u64::from(b & 63);
        let mut shift = 0;
        while b & 64 != 0 {
            b = next(pos)?;
            shift += 6;
            if shift > 60 {
                return None;
            }
            val |= u64::from(b & 63) << shift;
        }
        Some(val)
    };
    let svarint = |pos: &mut usize| -> Option<i64> {
        let u = varint(pos)?;
        Some(if u & 1 != 0 {
            -((u >> 1) as i64)
        } else {
            (u >> 1) as i64
        })
    };
    while pos < table.len() {
        let first = next(&mut pos)?;
        if first & 0x80 == 0 {
            return None; // not at an entry start: corrupt
        }
        let code = (first >> 3) & 15;
        let length = i64::from(first & 7) + 1;
        let this = match code {
            15 => None,
            14 => {
                line = line.checked_add(svarint(&mut pos)?)?;
                varint(&mut pos)?; // end line delta
                varint(&mut pos)?; // column + 1
                varint(&mut pos)?; // end column + 1
                Some(line)
            }
            13 => {
                line = line.checked_add(svarint(&mut pos)?)?;
                Some(line)
            }
            10..=12 => {
                line = line.saturating_add(i64::from(code - 10));
                next(&mut pos)?;
                next(&mut pos)?;
                Some(line)
            }
            _ => {
                next(&mut pos)?;
                Some(line)
            }
        };
        if unit <= index && index < unit + length {
            return this;
        }
        unit += length;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab() {
        // offsets 0..6 line 10, 6..12 line 12, 12.. line 11
        let t = [6u8, 2, 6, 0xff];
        assert_eq!(lnotab_line(&t, 10, 0), 10);
        assert_eq!(lnotab_line(&t, 10, 5), 10);
        assert_eq!(lnotab_line(&t, 10, 6), 12);
        assert_eq!(lnotab_line(&t, 10, 20), 11);
        assert_eq!(lnotab_line(&[], 7, 3), 7);
    }

    #[test]
    fn linetable_310() {
        // [0,4) line 5+0, [4,10) no line, [10,14) line 5+3
        let t = [4u8, 0, 6, 0x80, 4, 3];
        assert_eq!(linetable310_line(&t, 5, 0), Some(5));
        assert_eq!(linetable310_line(&t, 5, 6), None);
        assert_eq!(linetable310_line(&t, 5, 12), Some(8));
        assert_eq!(linetable310_line(&t, 5, 40), None);
        assert_eq!(linetable310_line(&t, 5, -1), Some(5));
    }

    #[test]
    fn locations() {
        let t = [
            0x80 | (13 << 3),     // no-column form, 1 unit
            2 << 1,               // line +2
            0x80 | (11 << 3) | 1, // one-line form, line +1, 2 units
            0,
            5,
            0x80 | (15 << 3),     // no location, 1 unit
            0x80 | (14 << 3) | 2, // long form, 3 units
            (3 << 1) | 1,         // line -3
            0,
            1,
            1,
            0x80 | 2, // short form, same line, 3 units
            0x10,
        ];
        assert_eq!(location_line(&t, 100, 0), Some(102));
        assert_eq!(location_line(&t, 100, 1), Some(103));
        assert_eq!(location_line(&t, 100, 2), Some(103));
        assert_eq!(location_line(&t, 100, 3), None);
        assert_eq!(location_line(&t, 100, 4), Some(100));
        assert_eq!(location_line(&t, 100, 8), Some(100));
        assert_eq!(location_line(&t, 100, 9), Some(100));
        assert_eq!(location_line(&t, 100, 10), None);
        assert_eq!(location_line(&[0x12], 1, 0), None, "corrupt table");
    }
}
