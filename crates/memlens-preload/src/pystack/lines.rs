//! A frame's line, a code object's strings, and the trace file's `code` and `stack` lines.

use super::*;

impl Python {
    /// The line `f` executes (0 when unknown), `f.code` being code `id`'s object; `cur` the
    /// cursor of an earlier decode (linetable.rs, [`linetable::Cursor`]), used when it was
    /// made on this code's table, and left where this decode stopped.
    pub(super) fn line(&self, f: &RawFrame, id: u32, cur: &mut LineCursor) -> u32 {
        let l = self.layout;
        // SAFETY: f.code is a live code object (checked when walked, alive while its frame
        // runs, and the frame runs: this is still the allocating call).
        let table = unsafe { rd(f.code + l.code_linetable as usize) };
        if !plausible(table) {
            return 0;
        }
        // SAFETY: co_linetable / co_lnotab is a bytes object; ob_size then its characters.
        let len = unsafe { rd(table + l.var_size as usize) };
        if len > 1 << 22 {
            return 0;
        }
        // SAFETY: the bytes object's `len` characters at ob_sval.
        let bytes = unsafe {
            std::slice::from_raw_parts((table + l.bytes_sval as usize) as *const u8, len)
        };
        let first = i64::from(f.first_line);
        // The cursor resumes only on the table it was made on: the same code id (the same
        // code object: address and fingerprint, first line included) and the same bytes
        // object (a code object's table never changes while it lives).
        if cur.id1 != id + 1 || cur.table != table || cur.len != len {
            *cur = LineCursor {
                id1: id + 1,
                table,
                len,
                c: linetable::Cursor::new(first),
            };
        }
        let pos = if self.off.kind == 0 {
            f.pos
        } else {
            // The walk's byte offset of the instruction pointer from the code object; the
            // same arithmetic as `(instr - (code + adaptive)) / 2`.
            f.pos.wrapping_sub(self.off.adaptive as i64) / 2
        };
        let c = &mut cur.c;
        let line = match l.linetable_format {
            linetable::LNOTAB => Some(linetable::lnotab_line_at(bytes, first, pos, c)),
            linetable::LINETABLE_310 => linetable::linetable310_line_at(bytes, first, pos * 2, c),
            linetable::LOCATIONS => linetable::location_line_at(bytes, first, pos, c),
            _ => None,
        };
        line.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
    }

    /// Decodes the str at `s` as UTF-8 into `out` (at most [`MAX_CHARS`] characters); false
    /// when it is not a readable compact str.
    pub(super) fn decode(&self, s: usize, out: &mut Buf) -> bool {
        let l = self.layout;
        // SAFETY: a plausible address; ob_type is at the object's start.
        if !plausible(s) || unsafe { rd(s + l.object_type as usize) } != self.str_type {
            return false;
        }
        // SAFETY: a str object (its type checked), referenced by a live code object.
        let (state, len) = unsafe {
            (
                std::ptr::read_unaligned((s + l.str_state as usize) as *const u32),
                rd(s + l.str_length as usize),
            )
        };
        let mask = l.str_kind_mask as u32;
        let kind = (state & mask) >> mask.trailing_zeros();
        let compact = state & l.str_compact_bit as u32 != 0;
        let ascii = state & l.str_ascii_bit as u32 != 0;
        if !compact || !matches!(kind, 1 | 2 | 4) || len > 1 << 30 {
            return false;
        }
        let data = s + if ascii {
            l.str_ascii_size
        } else {
            l.str_compact_size
        } as usize;
        for i in 0..len.min(MAX_CHARS) {
            // SAFETY: character i < len of the str's data, `kind` bytes each.
            let c = unsafe {
                match kind {
                    1 => u32::from(rd_u8(data + i)),
                    2 => u32::from(std::ptr::read_unaligned((data + 2 * i) as *const u16)),
                    _ => std::ptr::read_unaligned((data + 4 * i) as *const u32),
                }
            };
            let ch = char::from_u32(c).unwrap_or('\u{fffd}');
            let mut b = [0u8; 4];
            out.extend(ch.encode_utf8(&mut b).as_bytes());
        }
        true
    }
}

/// A small fixed buffer for one decoded string.
pub struct Buf {
    pub(super) b: [u8; 4 * MAX_CHARS],
    pub(super) n: usize,
}

impl Buf {
    pub(super) fn new() -> Buf {
        Buf {
            b: [0; 4 * MAX_CHARS],
            n: 0,
        }
    }
    pub(super) fn extend(&mut self, s: &[u8]) {
        if self.n + s.len() <= self.b.len() {
            self.b[self.n..self.n + s.len()].copy_from_slice(s);
            self.n += s.len();
        }
    }
    pub(super) fn bytes(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

impl Stacks {
    /// Appends the `code` line of published code `id`.
    pub fn code_line(&self, id: u32, out: &mut String) {
        if id >= self.codes() {
            return;
        }
        // SAFETY: the region pointers never change after new(); a published record and its
        // strings are immutable.
        let (c, file, name) = unsafe {
            let t = &*self.t.get();
            let c = *t.codes.add(id as usize);
            let s = |off: u32, len: u32| {
                std::slice::from_raw_parts(t.strings.add(off as usize), len as usize)
            };
            (c, s(c.file_off, c.file_len), s(c.name_off, c.name_len))
        };
        out.push_str("code id=");
        push_u64(out, u64::from(id));
        out.push_str(" first_line=");
        push_i64(out, i64::from(c.first_line));
        out.push_str(" file=");
        escape(file, out);
        out.push_str(" name=");
        escape(name, out);
        out.push('\n');
    }

    /// The record of published stack `id`.
    pub fn stack(&self, id: u32) -> Option<StackRec> {
        if id >= self.stacks() {
            return None;
        }
        // SAFETY: a published record (immutable); the region pointer never changes.
        Some(unsafe { *(*self.t.get()).stacks.add(id as usize) })
    }

    /// Appends the `stack` line of published stack `id`.
    pub fn stack_line(&self, id: u32, out: &mut String) {
        let Some(r) = self.stack(id) else { return };
        // SAFETY: the frames of a published stack (immutable).
        let frames = unsafe {
            std::slice::from_raw_parts((*self.t.get()).frames.add(r.off as usize), usize::from(r.n))
        };
        out.push_str("stack id=");
        push_u64(out, u64::from(id));
        out.push_str(" domain=");
        out.push_str(domain_name(r.domain));
        out.push_str(" frames=");
        // Each frame's `,ID:LINE` written in place: room for the longest (22 bytes) made for
        // every frame at once, cut to what was written (a deep stack has thousands of numbers,
        // and the final write has all the stacks: a string append per number cost more than
        // the digits).
        // SAFETY: only ASCII (commas, colons and digits) is written over the zeros added, and
        // the vector is cut back to what was written: it stays UTF-8.
        let v = unsafe { out.as_mut_vec() };
        let start = v.len();
        v.resize(start + frames.len() * FRAME_CHARS, 0);
        let mut n = start;
        for (i, f) in frames.iter().enumerate() {
            if i > 0 {
                v[n] = b',';
                n += 1;
            }
            n += put_u32(&mut v[n..], f[0]);
            v[n] = b':';
            n += 1;
            n += put_u32(&mut v[n..], f[1]);
        }
        v.truncate(n);
        for (flag, text) in [
            (TRUNCATED, " truncated=1"),
            (UNREADABLE, " unreadable=1"),
            (LOST, " lost=1"),
        ] {
            if r.flags & flag != 0 {
                out.push_str(text);
            }
        }
        out.push('\n');
    }
}

/// The most bytes one frame of a `stack` line takes: `,` + 10 digits + `:` + 10 digits.
const FRAME_CHARS: usize = 22;

/// The two digits of each number below 100.
const PAIRS: [[u8; 2]; 100] = {
    let mut p = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        p[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    p
};

/// Writes the decimal digits of `v` at the start of `b` (at least 10 bytes); their count.
/// Code ids and lines are nearly always below 10,000: those take a compare or two and a
/// division at most (a stack line's numbers were most of the tracer's work at exit).
#[inline]
fn put_u32(b: &mut [u8], v: u32) -> usize {
    let pair = |i: u32| PAIRS[i as usize % 100];
    match v {
        0..=9 => {
            b[0] = b'0' + v as u8;
            1
        }
        10..=99 => {
            b[..2].copy_from_slice(&pair(v));
            2
        }
        100..=999 => {
            b[0] = b'0' + (v / 100) as u8;
            b[1..3].copy_from_slice(&pair(v % 100));
            3
        }
        1000..=9999 => {
            b[..2].copy_from_slice(&pair(v / 100));
            b[2..4].copy_from_slice(&pair(v % 100));
            4
        }
        _ => {
            let len = v.ilog10() as usize + 1;
            let mut v = v;
            for d in b[..len].iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
            len
        }
    }
}

/// Percent-encodes a string value of the trace file (docs/trace-format.md).
pub fn escape(b: &[u8], out: &mut String) {
    for &c in b {
        if (0x21..=0x7e).contains(&c) && c != b'%' && c != b'=' {
            out.push(char::from(c));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack line's numbers are the plain decimal ones.
    #[test]
    fn frame_numbers_are_decimal() {
        let mut b = [0u8; 10];
        let every_width = (0..=10)
            .flat_map(|k| [10u64.pow(k) - 1, 10u64.pow(k), 10u64.pow(k) + 1])
            .filter_map(|v| u32::try_from(v).ok());
        for v in (0..20_000)
            .chain(every_width)
            .chain([u32::MAX - 1, u32::MAX])
        {
            let n = put_u32(&mut b, v);
            assert_eq!(&b[..n], v.to_string().as_bytes());
        }
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        escape("a b=%é/x.py".as_bytes(), &mut s);
        assert_eq!(s, "a%20b%3D%25%C3%A9/x.py");
    }
}
