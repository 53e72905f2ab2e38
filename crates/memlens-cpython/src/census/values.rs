//! The census's tallies of values for advice (`memlens_model::advice`): large lists and
//! tuples whose items are all floats or all ints (`scalar-list`), and equal str and bytes
//! values held in several objects (`duplicate-values`). Both are bounded: the lists kept are
//! the [`MAX_LISTS`] largest, the values tracked at most [`MAX_VALUES`].

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use memlens_remote::ProcessMemory;

use super::{Kind, TypeInfo, Walker, PIECE};
use crate::error::Result;
use memlens_model::census::{DuplicateTotal, DuplicateValue, ScalarList, SCALAR_LIST_MIN};

/// Lists and tuples kept for advice (the largest savings).
pub(super) const MAX_LISTS: usize = 32;
/// Distinct values tracked at once; when the table is full, values seen once are dropped
/// (their later copies count from one again: the duplicates found are a lower bound).
pub(super) const MAX_VALUES: usize = 1 << 16;
/// Values reported (the largest savings).
const MAX_REPORTED: usize = 32;
/// Shorter values are not tracked (the small ones CPython caches itself, and the cost of
/// tracking outweighs what they could save).
const MIN_VALUE_LEN: u64 = 8;
/// Longer values are not read for comparison.
const MAX_VALUE_LEN: u64 = 1 << 20;
/// Characters of a value shown in its advice.
const PREVIEW: usize = 20;
/// Memory charged for the value table, per entry (entry and hash table overhead).
const ENTRY_BYTES: u64 = 96;

#[derive(Debug, Clone)]
struct Entry {
    str: bool,
    first: u64,
    data_at: u64,
    data_len: u64,
    size: u64,
    copies: u64,
    preview: String,
}

/// What the walk gathers for value advice.
#[derive(Debug, Default)]
pub(super) struct Values {
    lists: Vec<ScalarList>,
    table: HashMap<u64, Entry>,
    /// Bytes of memlens's memory budget charged for `table`.
    pub(super) charged: u64,
    full: bool,
    buf: Vec<u8>,
    other: Vec<u8>,
}

impl Values {
    /// The lists, the duplicated values (largest saving first) and their totals per type.
    pub(super) fn finish(self) -> (Vec<ScalarList>, Vec<DuplicateValue>, Vec<DuplicateTotal>) {
        let mut totals: Vec<DuplicateTotal> = Vec::new();
        for e in self.table.values().filter(|e| e.copies > 1) {
            let name = if e.str { "str" } else { "bytes" };
            let i = match totals.iter().position(|t| t.type_name == name) {
                Some(i) => i,
                None => {
                    totals.push(DuplicateTotal {
                        type_name: name,
                        values: 0,
                        copies: 0,
                        saving: 0,
                    });
                    totals.len() - 1
                }
            };
            let t = &mut totals[i];
            t.values += 1;
            t.copies += e.copies;
            t.saving = t
                .saving
                .saturating_add((e.copies - 1).saturating_mul(e.size));
        }
        totals.sort_by_key(|t| std::cmp::Reverse(t.saving));
        let mut dups: Vec<DuplicateValue> = self
            .table
            .into_values()
            .filter(|e| e.copies > 1)
            .map(|e| DuplicateValue {
                type_name: if e.str { "str" } else { "bytes" },
                size: e.size,
                copies: e.copies,
                preview: e.preview,
            })
            .collect();
        dups.sort_by(|a, b| {
            let sa = (a.copies - 1).saturating_mul(a.size);
            let sb = (b.copies - 1).saturating_mul(b.size);
            sb.cmp(&sa).then(a.preview.cmp(&b.preview))
        });
        dups.truncate(MAX_REPORTED);
        (self.lists, dups, totals)
    }
}

fn saving(l: &ScalarList) -> u64 {
    (l.owned_bytes + l.pointer_bytes).saturating_sub(l.items * 8)
}

/// `"abc..."`: printable ASCII, other bytes as `?`.
fn preview(data: &[u8], len: u64) -> String {
    let mut s: String = data
        .iter()
        .take(PREVIEW)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    if len > PREVIEW as u64 {
        s.push_str("...");
    }
    format!("{s:?}")
}

impl<M: ProcessMemory> Walker<'_, M> {
    /// A list or tuple (`ty` exactly `list` or `tuple`) of `n` items: kept when at least
    /// [`SCALAR_LIST_MIN`] items are all floats or all ints.
    pub(super) fn scalar_list(&mut self, obj: u64, ty: u64, t: &TypeInfo, n: u64) -> Result<()> {
        let l = self.l;
        let types = self.it.types;
        let (container, items_at, pointer_bytes) = if t.kind == Kind::List && ty == types.list {
            let items = self.mem.read_u64(obj.wrapping_add(l.list_item))?;
            let allocated = self.mem.read_i64(obj.wrapping_add(l.list_allocated))?;
            // CPython over-allocates by an eighth and shrinks below half: a figure outside
            // that is a list read while it changed, taken as its length
            let allocated = u64::try_from(allocated).unwrap_or(0);
            let plausible = n..=n.saturating_mul(2).saturating_add(8);
            let allocated = if plausible.contains(&allocated) {
                allocated
            } else {
                n
            };
            ("list", items, allocated.saturating_mul(8))
        } else if t.kind == Kind::Tuple && ty == types.tuple {
            ("tuple", obj.wrapping_add(l.tuple_item), n * 8)
        } else {
            return Ok(());
        };
        if n < SCALAR_LIST_MIN || items_at == 0 || items_at >= super::MAX_ADDR {
            return Ok(());
        }
        let mut item_type = 0u64;
        let mut owned = 0u64;
        let mut head = [0u8; 16];
        let mut at = 0;
        while at < n {
            let k = (n - at).min(PIECE);
            let mut buf = std::mem::take(&mut self.values.buf);
            buf.resize((k * 8) as usize, 0);
            let read = self.mem.read(items_at + at * 8, &mut buf);
            let r = (|| -> Result<bool> {
                read?;
                for c in buf.chunks_exact(8) {
                    let item = super::word(c, 0);
                    if item == 0 || item >= super::MAX_ADDR {
                        return Ok(false);
                    }
                    self.mem.read(item, &mut head)?;
                    let ity = super::word(&head, l.object_type);
                    if item_type == 0 {
                        if ity != types.float && ity != types.int {
                            return Ok(false);
                        }
                        item_type = ity;
                    } else if ity != item_type {
                        return Ok(false);
                    }
                    let rc = super::word(&head, l.object_refcnt) & 0xffff_ffff;
                    if rc == 1 {
                        let size = if ity == types.float {
                            24
                        } else {
                            let ti = self.type_index(ity)?;
                            let Some(it) = self.infos.get(ti as usize).copied() else {
                                return Ok(false);
                            };
                            self.sizer.getsizeof(self.mem, &it.facts, item, &[])?.size
                        };
                        owned = owned.saturating_add(self.allocated(size));
                    }
                }
                Ok(true)
            })();
            self.values.buf = buf;
            if !r? {
                return Ok(());
            }
            at += k;
        }
        let list = ScalarList {
            container,
            items: n,
            float: item_type == types.float,
            owned_bytes: owned,
            pointer_bytes,
        };
        let lists = &mut self.values.lists;
        lists.push(list);
        lists.sort_by_key(|l| std::cmp::Reverse(saving(l)));
        lists.truncate(MAX_LISTS);
        Ok(())
    }

    /// A str or bytes object (exactly those types) of `sys.getsizeof` `size`: counted in the
    /// table of values by its contents.
    pub(super) fn value(&mut self, obj: u64, ty: u64, size: u64) -> Result<()> {
        let l = self.l;
        let types = self.it.types;
        let (is_str, data_at, data_len, kind) = if ty == types.str {
            let state = u64::from(self.mem.read_u32(obj.wrapping_add(l.str_state))?);
            let mask = l.str_kind_mask;
            let kind = (state & mask) >> mask.trailing_zeros();
            let compact = state & l.str_compact_bit != 0;
            let ascii = state & l.str_ascii_bit != 0;
            if !compact {
                return Ok(()); // legacy two-block strings: left alone
            }
            let len = self.mem.read_i64(obj.wrapping_add(l.str_length))?.max(0) as u64;
            let head = if ascii {
                l.str_ascii_size
            } else {
                l.str_compact_size
            };
            (true, obj.wrapping_add(head), len.saturating_mul(kind), kind)
        } else if ty == types.bytes {
            let len = self.mem.read_i64(obj.wrapping_add(l.var_size))?.max(0) as u64;
            (false, obj.wrapping_add(l.bytes_sval), len, 0)
        } else {
            return Ok(());
        };
        if !(MIN_VALUE_LEN..=MAX_VALUE_LEN).contains(&data_len) {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.values.buf);
        buf.resize(data_len as usize, 0);
        let r = self.count_value(obj, &mut buf, is_str, kind, data_at, data_len, size);
        self.values.buf = buf;
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn count_value(
        &mut self,
        obj: u64,
        buf: &mut [u8],
        is_str: bool,
        kind: u64,
        data_at: u64,
        data_len: u64,
        size: u64,
    ) -> Result<()> {
        self.mem.read(data_at, buf)?;
        let mut h = DefaultHasher::new();
        (is_str, kind, data_len).hash(&mut h);
        buf.hash(&mut h);
        let key = h.finish();
        if let Some(e) = self.values.table.get(&key) {
            if e.first == obj || e.data_len != data_len || e.str != is_str {
                return Ok(());
            }
            // a candidate: compare the contents with the first copy's
            let (first_at, len) = (e.data_at, e.data_len);
            let mut other = std::mem::take(&mut self.values.other);
            other.resize(len as usize, 0);
            let same = self.mem.read(first_at, &mut other).is_ok() && other[..] == buf[..];
            self.values.other = other;
            if same {
                if let Some(e) = self.values.table.get_mut(&key) {
                    e.copies += 1;
                }
            }
            return Ok(());
        }
        if self.values.table.len() >= MAX_VALUES {
            if self.values.full {
                return Ok(());
            }
            // drop the values seen once; if that frees nothing, track no new values
            self.values.table.retain(|_, e| e.copies > 1);
            if self.values.table.len() >= MAX_VALUES {
                self.values.full = true;
                return Ok(());
            }
        }
        if self.values.charged == 0 {
            let bytes = MAX_VALUES as u64 * ENTRY_BYTES;
            self.budget.charge(bytes, "tracking duplicated values")?;
            self.values.charged = bytes;
        }
        let size = self.allocated(size);
        self.values.table.insert(
            key,
            Entry {
                str: is_str,
                first: obj,
                data_at,
                data_len,
                size,
                copies: 1,
                preview: preview(buf, data_len),
            },
        );
        Ok(())
    }
}
