//! Dict internals: entries (combined and split tables), `dict.__sizeof__`, and where an
//! instance of a managed-dict type (3.11+) keeps its attributes.

use memlens_remote::ProcessMemory;

use crate::error::{Error, Result};
use crate::layouts::Layout;

/// The live entries of a dict and what `dict.__sizeof__` says of it.
#[derive(Debug, Clone, Default)]
pub struct DictContents {
    /// `(key, value)` pairs with a value (deleted entries left out).
    pub items: Vec<(u64, u64)>,
    /// `dict.__sizeof__` less the type's basic size.
    pub extra_size: u64,
}

const MAX_ENTRIES: i64 = 1 << 31;
/// No user-space address reaches this; a larger pointer is garbage (and would overflow).
const MAX_ADDR: u64 = 1 << 57;

fn bad(addr: u64, what: &str) -> Error {
    Error::Decode {
        addr,
        what: format!("a dict: {what}"),
    }
}

/// Where the entries of a dict lie, without reading them: what a walk needs to read them in
/// pieces, and what `dict.__sizeof__` says of the dict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictTable {
    /// First entry.
    pub entries_at: u64,
    /// Entries in use or deleted (`dk_nentries`).
    pub entries: u64,
    /// Bytes per entry.
    pub entry_size: u64,
    /// Offset of the key in an entry.
    pub key_at: u64,
    /// Offset of the value in an entry (combined tables).
    pub value_at: u64,
    /// The values array of a split table (`entries` pointers), or `None`.
    pub split_values: Option<u64>,
    /// `dict.__sizeof__` less the type's basic size.
    pub extra_size: u64,
}

/// Where an instance of a type with `Py_TPFLAGS_MANAGED_DICT` (3.11+) keeps its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Managed {
    /// Neither a dict nor values (no attribute set yet).
    None,
    /// A dict object.
    Dict(u64),
    /// The first value of a values array (`PyDictValues.values`), in the order of the
    /// type's cached keys.
    Values(u64),
}

/// Reads where `obj`, whose type has `tp_flags` `flags`, keeps its attributes, as its minor's
/// table says (`managed_dict_before`, and `managed_values_before` for 3.11's separate values
/// pointer, `managed_dict_values_tag` for 3.12's tagged word, inline values after the object
/// for 3.13+); `basicsize` gives the type's `tp_basicsize`, asked for inline values only. A
/// values pointer out of the address space is an error.
pub fn managed<M: ProcessMemory>(
    mem: &M,
    l: &Layout,
    obj: u64,
    flags: u64,
    basicsize: impl FnOnce() -> Result<u64>,
) -> Result<Managed> {
    let Some(before) = l.managed_dict_before else {
        return Err(bad(obj, "managed dicts in a version without them"));
    };
    let values_off = l.dictvalues_values.unwrap_or(0);
    let checked = |v: u64| {
        if v < MAX_ADDR {
            Ok(v)
        } else {
            Err(Error::Decode {
                addr: v,
                what: "dict values".into(),
            })
        }
    };
    if let Some(values_before) = l.managed_values_before {
        // a dict, and a separate values pointer before it
        let dict = mem.read_u64(obj.wrapping_sub(before))?;
        let values = checked(mem.read_u64(obj.wrapping_sub(values_before))?)?;
        return Ok(match (dict, values) {
            (0, 0) => Managed::None,
            (0, v) => Managed::Values(v + values_off),
            (d, _) => Managed::Dict(d),
        });
    }
    if let Some(tag) = l.managed_dict_values_tag {
        // one word: a dict as is, or a values pointer stored minus the tag (so tagged)
        let word = checked(mem.read_u64(obj.wrapping_sub(before))?)?;
        return Ok(match word {
            0 => Managed::None,
            v if v & tag != 0 => Managed::Values(v + tag + values_off),
            d => Managed::Dict(d),
        });
    }
    if l.tpflags_inline_values.is_some_and(|f| flags & f != 0) {
        // values inline after the object, in use while their `valid` byte is set
        let values = obj.wrapping_add(basicsize()?);
        let valid = l
            .dictvalues_valid
            .ok_or_else(|| bad(obj, "inline values in a version without them"))?;
        if mem.read_u8(values.wrapping_add(valid))? != 0 {
            return Ok(Managed::Values(values.wrapping_add(values_off)));
        }
    }
    Ok(match mem.read_u64(obj.wrapping_sub(before))? {
        0 => Managed::None,
        d => Managed::Dict(d),
    })
}

/// Locates the entries of the dict at `dict` and computes its extra size.
pub fn table<M: ProcessMemory>(mem: &M, l: &Layout, dict: u64) -> Result<DictTable> {
    let keys = mem.read_u64(dict.wrapping_add(l.dict_keys))?;
    let values = mem.read_u64(dict.wrapping_add(l.dict_values))?;
    if keys == 0 {
        return Err(bad(dict, "no keys"));
    }
    if keys >= MAX_ADDR || values >= MAX_ADDR {
        return Err(bad(dict, "a pointer out of the address space"));
    }
    let refcnt = mem.read_i64(keys.wrapping_add(l.dictkeys_refcnt))?;
    let nentries = mem.read_i64(keys.wrapping_add(l.dictkeys_nentries))?;
    let usable = mem.read_i64(keys.wrapping_add(l.dictkeys_usable))?;
    if !(0..MAX_ENTRIES).contains(&nentries) {
        return Err(bad(dict, "entry count out of range"));
    }
    let (entries_at, entry_size, key_at, value_at, keys_size);
    if let Some(size_off) = l.dictkeys_size_field {
        // 3.8-3.10: dk_size slots, index width from the size, PyDictKeyEntry entries
        let size = mem.read_i64(keys.wrapping_add(size_off))?;
        if !(1..=MAX_ENTRIES * 2).contains(&size) {
            return Err(bad(dict, "size out of range"));
        }
        let ix: i64 = if size <= 0xff {
            1
        } else if size <= 0xffff {
            2
        } else if size <= 0xffff_ffff {
            4
        } else {
            8
        };
        if nentries > size * 2 / 3 {
            return Err(bad(dict, "more entries than its table holds"));
        }
        entries_at = keys.wrapping_add(l.dictkeys_indices + (size * ix) as u64);
        entry_size = l.dictkeys_entry_size;
        key_at = l.dictentry_key;
        value_at = l.dictentry_value;
        keys_size = l.dictkeys_size + (ix * size) as u64 + ((size * 2 / 3) as u64) * entry_size;
    } else {
        let (Some(log2_off), Some(ixb_off), Some(kind_off)) = (
            l.dictkeys_log2_size,
            l.dictkeys_log2_index_bytes,
            l.dictkeys_kind,
        ) else {
            return Err(bad(dict, "no key-table layout"));
        };
        let log2 = mem.read_u8(keys.wrapping_add(log2_off))?;
        let log2_ix = mem.read_u8(keys.wrapping_add(ixb_off))?;
        let kind = mem.read_u8(keys.wrapping_add(kind_off))?;
        if log2 > 40 || log2_ix > 43 {
            return Err(bad(dict, "size out of range"));
        }
        if nentries as u64 > ((1u64 << log2) << 1) / 3 {
            return Err(bad(dict, "more entries than its table holds"));
        }
        entries_at = keys.wrapping_add(l.dictkeys_indices + (1u64 << log2_ix));
        (entry_size, key_at, value_at) = entry_shape(l, u64::from(kind))
            .ok_or_else(|| bad(dict, "a key table of no known kind"))?;
        let size = 1u64 << log2;
        keys_size = l.dictkeys_size + (1u64 << log2_ix) + ((size << 1) / 3) * entry_size;
    }
    let mut extra_size: u64 = 0;
    if values != 0 {
        let slots = if let Some(size_off) = l.dictkeys_size_field {
            // 3.8-3.10: USABLE_FRACTION(dk_size) value slots (dk_size read again: the target
            // runs, so it is checked again)
            let size = mem.read_i64(keys.wrapping_add(size_off))?;
            if !(1..=MAX_ENTRIES * 2).contains(&size) {
                return Err(bad(dict, "size out of range"));
            }
            size * 2 / 3
        } else {
            // 3.11+: the entries used plus those still usable
            if !(0..MAX_ENTRIES).contains(&usable) {
                return Err(bad(dict, "usable count out of range"));
            }
            nentries + usable
        };
        extra_size = slots as u64 * 8;
    }
    if refcnt == 1 {
        extra_size = extra_size.saturating_add(keys_size);
    }
    Ok(DictTable {
        entries_at,
        entries: nentries as u64,
        entry_size,
        key_at,
        value_at,
        split_values: (values != 0).then(|| values.wrapping_add(l.dictvalues_values.unwrap_or(0))),
        extra_size,
    })
}

/// Reads the entries of the dict at `dict` (all at once: for small dicts such as
/// `sys.modules`, up to 2^20 entries; the census reads dicts in pieces from [`table`]).
pub fn read_dict<M: ProcessMemory>(mem: &M, l: &Layout, dict: u64) -> Result<DictContents> {
    let t = table(mem, l, dict)?;
    if t.entries > 1 << 20 {
        return Err(bad(dict, "more entries than a small dict holds"));
    }
    let n = t.entries as usize;
    let raw = mem.read_vec(t.entries_at, n * t.entry_size as usize)?;
    let word = |b: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    let split_values = match t.split_values {
        Some(base) => Some(mem.read_vec(base, n * 8)?),
        None => None,
    };
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let e = i * t.entry_size as usize;
        let key = word(&raw, e + t.key_at as usize);
        let value = match &split_values {
            Some(v) => word(v, i * 8),
            None => word(&raw, e + t.value_at as usize),
        };
        if key != 0 && value != 0 {
            items.push((key, value));
        }
    }
    Ok(DictContents {
        items,
        extra_size: t.extra_size,
    })
}

/// `(entry size, key offset, value offset)` of a 3.11+ key table of kind `dk_kind`:
/// `PyDictKeyEntry` (hash, key, value) for general keys, `PyDictUnicodeEntry` (key, value)
/// for the others (unicode and split tables).
fn entry_shape(l: &Layout, kind: u64) -> Option<(u64, u64, u64)> {
    if Some(kind) == l.dict_kind_general {
        return Some((l.dictkeys_entry_size, l.dictentry_key, l.dictentry_value));
    }
    Some((
        l.dictkeys_unicode_entry_size?,
        l.dictunicode_key?,
        l.dictunicode_value?,
    ))
}

/// Size of a key table as `_PyDict_KeysSize` computes it (used for heap types' cached keys).
pub fn keys_size<M: ProcessMemory>(mem: &M, l: &Layout, keys: u64) -> Result<u64> {
    if keys >= MAX_ADDR {
        return Err(bad(keys, "a pointer out of the address space"));
    }
    if let Some(size_off) = l.dictkeys_size_field {
        let size = mem.read_i64(keys.wrapping_add(size_off))?;
        if !(1..=MAX_ENTRIES * 2).contains(&size) {
            return Err(bad(keys, "size out of range"));
        }
        let ix: i64 = match size {
            0..=0xff => 1,
            0x100..=0xffff => 2,
            0x1_0000..=0xffff_ffff => 4,
            _ => 8,
        };
        return Ok(l.dictkeys_size
            + (ix * size) as u64
            + ((size * 2 / 3) as u64) * l.dictkeys_entry_size);
    }
    let (Some(log2_off), Some(ixb_off), Some(kind_off)) = (
        l.dictkeys_log2_size,
        l.dictkeys_log2_index_bytes,
        l.dictkeys_kind,
    ) else {
        return Err(bad(keys, "no key-table layout"));
    };
    let log2 = mem.read_u8(keys.wrapping_add(log2_off))?;
    let log2_ix = mem.read_u8(keys.wrapping_add(ixb_off))?;
    let kind = mem.read_u8(keys.wrapping_add(kind_off))?;
    if log2 > 40 || log2_ix > 43 {
        return Err(bad(keys, "size out of range"));
    }
    let (es, _, _) =
        entry_shape(l, u64::from(kind)).ok_or_else(|| bad(keys, "a key table of no known kind"))?;
    Ok(l.dictkeys_size + (1u64 << log2_ix) + (((1u64 << log2) << 1) / 3) * es)
}
