//! `sys.getsizeof` of each object, by kind of type. These formulas are the census's own and
//! stay here, in one place, to be replaced by exact per-type sizes.

use memlens_remote::ProcessMemory;

use super::{addr, small, Kind, TypeInfo, Walker};
use crate::dicts::{self, keys_size};
use crate::error::Result;

impl<M: ProcessMemory> Walker<'_, M> {
    /// `sys.getsizeof(obj)`: the type's formula plus the pre-header (GC head, managed dict).
    /// The per-kind formulas live here, in one place, to be replaced by the exact sizes of each
    /// type's `__sizeof__`.
    pub(super) fn shallow_size(
        &self,
        obj: u64,
        t: &TypeInfo,
        ob_size: i64,
        dict: Option<&dicts::DictTable>,
    ) -> Result<u64> {
        let l = self.l;
        let mut size = t.basicsize;
        // Some variable-size types (generators, frames) keep no item count in ob_size and
        // define their own __sizeof__; an implausible count is ignored.
        let items = ob_size.unsigned_abs();
        if t.itemsize != 0 && items < 1 << 28 {
            size += items * t.itemsize;
        }
        let minor = self.it.version.minor;
        match t.kind {
            Kind::List => {
                let allocated = self.mem.read_i64(obj + l.list_allocated)?;
                size = t.basicsize + (allocated.max(0) as u64).saturating_mul(8);
            }
            Kind::Dict => {
                size = t.basicsize + dict.map_or(0, |d| d.extra_size);
            }
            Kind::Set => {
                let table = self.mem.read_u64(obj + l.set_table)?;
                let mask = self.mem.read_i64(obj + l.set_mask)?;
                if (0..1 << 32).contains(&mask) && table != 0 && table != obj + l.set_smalltable {
                    size = t.basicsize + (mask as u64 + 1) * 16;
                }
            }
            Kind::Str => size = self.str_size(obj)?,
            Kind::Int => {
                let digits = match l.long_tag {
                    Some(tag) => (self.mem.read_u64(obj + tag)? >> 3).max(1),
                    None if minor >= 11 => ob_size.unsigned_abs().max(1),
                    None => ob_size.unsigned_abs(),
                };
                size = l.long_digits + digits.saturating_mul(l.long_digit_size);
            }
            Kind::Type => {
                if t.heap || self.mem.read_u64(obj + l.type_flags)? & l.tpflags_heaptype != 0 {
                    let keys = addr(
                        self.mem.read_u64(obj + l.heaptype_cached_keys)?,
                        "cached keys",
                    )?;
                    size = l.heaptype_size
                        + if keys != 0 {
                            keys_size(self.mem, l, keys).unwrap_or(0)
                        } else {
                            0
                        };
                } else {
                    // a static type: not a GC object for getsizeof
                    return Ok(l.type_size);
                }
            }
            _ => {}
        }
        let mut pre = 0;
        if t.gc {
            pre += l.gc_head_size;
        }
        if let Some(md) = l.tpflags_managed_dict {
            let mut mask = md;
            if let Some(mw) = l.tpflags_managed_weakref {
                mask |= mw;
            }
            if t.flags & mask != 0 {
                pre += 16;
            }
        }
        Ok(size + pre)
    }

    fn str_size(&self, obj: u64) -> Result<u64> {
        let l = self.l;
        let state = self.mem.read_u32(obj + l.str_state)?;
        let kind = u64::from((state >> 2) & 7);
        let compact = (state >> 5) & 1 == 1;
        let ascii = (state >> 6) & 1 == 1;
        let len = small(
            self.mem.read_i64(obj + l.str_length)?.max(0) as u64,
            "a str length",
        )?;
        if !compact {
            return Ok(l.str_compact_size);
        }
        let (mut size, data) = if ascii {
            (l.str_ascii_size + len + 1, obj + l.str_ascii_size)
        } else {
            (
                l.str_compact_size + (len + 1) * kind,
                obj + l.str_compact_size,
            )
        };
        if !ascii {
            let utf8 = self.mem.read_u64(obj + l.str_utf8)?;
            if utf8 != 0 && utf8 != data {
                size += small(self.mem.read_u64(obj + l.str_utf8_length)?, "a utf8 length")? + 1;
            }
        }
        if let (Some(w), Some(wl)) = (l.str_wstr, l.str_wstr_length) {
            let wstr = self.mem.read_u64(obj + w)?;
            if wstr != 0 && wstr != data {
                let wlen = if ascii {
                    len
                } else {
                    small(self.mem.read_u64(obj + wl)?, "a wstr length")?
                };
                size += (wlen + 1) * 4;
            }
        }
        Ok(size)
    }
}
