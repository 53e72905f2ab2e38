//! Reading named attributes from outside: a module's global, an instance's attribute (from its
//! `__dict__`, or the managed and inline values of 3.11+), small ints. Used for thread names
//! (`threading._active` and each `Thread._name`). The instance-dict rules per version are the
//! ones `census.rs` walks (`visit_managed`).

use memlens_remote::ProcessMemory;

use crate::dicts::{self, read_dict, Managed};
use crate::error::{Error, Result};
use crate::layouts::Layout;
use crate::objects::{read_str, MAX_NAME};
use crate::process::Interpreter;

/// Entries read at most from a key table (a bound for corrupt data).
const MAX_KEYS: i64 = 1 << 16;

fn invalid(what: String) -> Error {
    Error::Invalid { pid: 0, why: what }
}

/// Whether the `str` at `addr` is `name` (read at most `name`'s length plus one).
fn str_is<M: ProcessMemory>(mem: &M, l: &Layout, addr: u64, name: &str) -> bool {
    read_str(mem, l, addr, name.len() + 1).is_ok_and(|s| s == name)
}

/// The value of key `name` (a `str`) in the dict at `dict`.
pub fn dict_get<M: ProcessMemory>(
    mem: &M,
    l: &Layout,
    dict: u64,
    name: &str,
) -> Result<Option<u64>> {
    let d = read_dict(mem, l, dict)?;
    Ok(d.items
        .iter()
        .find(|(k, _)| str_is(mem, l, *k, name))
        .map(|(_, v)| *v))
}

/// `module.name`: a global of a module object.
pub fn module_attr<M: ProcessMemory>(
    mem: &M,
    l: &Layout,
    module: u64,
    name: &str,
) -> Result<Option<u64>> {
    let dict = mem.read_u64(module.wrapping_add(l.module_dict))?;
    if dict == 0 {
        return Ok(None);
    }
    dict_get(mem, l, dict, name)
}

/// The keys (`str` addresses) of a split key table (a heap type's cached keys, 3.11+), in
/// the order of their value slots.
pub(crate) fn split_keys<M: ProcessMemory>(mem: &M, l: &Layout, keys: u64) -> Result<Vec<u64>> {
    let (Some(ixb), Some(kind)) = (l.dictkeys_log2_index_bytes, l.dictkeys_kind) else {
        return Ok(Vec::new());
    };
    let n = mem.read_i64(keys.wrapping_add(l.dictkeys_nentries))?;
    if !(0..MAX_KEYS).contains(&n) {
        return Err(invalid(format!("key table at {keys:#x}: {n} entries")));
    }
    let log2_ix = mem.read_u8(keys + ixb)?;
    if log2_ix > 40 {
        return Err(invalid(format!("key table at {keys:#x}: index size")));
    }
    // unicode-keyed tables (kind != 0) hold (key, value) entries; general ones (hash, key, value)
    let (size, key_at) = if mem.read_u8(keys + kind)? == 0 {
        (24, 8)
    } else {
        (16, 0)
    };
    let at = keys.wrapping_add(l.dictkeys_indices + (1u64 << log2_ix));
    let raw = mem.read_vec(at, n as usize * size)?;
    Ok(raw
        .chunks_exact(size)
        .map(|e| u64::from_ne_bytes(e[key_at..key_at + 8].try_into().unwrap_or([0; 8])))
        .collect())
}

/// Where an instance keeps its attributes.
enum Storage {
    None,
    Dict(u64),
    /// A values array and the type's cached keys.
    Values(u64, u64),
}

fn storage<M: ProcessMemory>(it: &Interpreter, mem: &M, obj: u64) -> Result<Storage> {
    let l = it.layout;
    let ty = mem.read_u64(obj.wrapping_add(l.object_type))?;
    let flags = mem.read_u64(ty.wrapping_add(l.type_flags))?;
    let managed = l.tpflags_managed_dict.is_some_and(|f| flags & f != 0);
    if !managed {
        let off = mem.read_i64(ty.wrapping_add(l.type_dictoffset))?;
        if off <= 0 {
            // 0: no dict; negative (variable-size objects): not needed for the objects read here
            return Ok(Storage::None);
        }
        let d = mem.read_u64(obj + off as u64)?;
        return Ok(if d == 0 {
            Storage::None
        } else {
            Storage::Dict(d)
        });
    }
    let basicsize = || Ok(mem.read_u64(ty.wrapping_add(l.type_basicsize))?);
    Ok(match dicts::managed(mem, l, obj, flags, basicsize)? {
        Managed::None => Storage::None,
        Managed::Dict(d) => Storage::Dict(d),
        Managed::Values(v) => {
            Storage::Values(v, mem.read_u64(ty.wrapping_add(l.heaptype_cached_keys))?)
        }
    })
}

/// `obj.name` for an instance attribute (not a class attribute, not a property).
pub fn instance_attr<M: ProcessMemory>(
    it: &Interpreter,
    mem: &M,
    obj: u64,
    name: &str,
) -> Result<Option<u64>> {
    let l = it.layout;
    match storage(it, mem, obj)? {
        Storage::None => Ok(None),
        Storage::Dict(d) => dict_get(mem, l, d, name),
        Storage::Values(values, keys) => {
            if keys == 0 {
                return Ok(None);
            }
            let keys = split_keys(mem, l, keys)?;
            let Some(i) = keys
                .iter()
                .position(|k| *k != 0 && str_is(mem, l, *k, name))
            else {
                return Ok(None);
            };
            let v = mem.read_u64(values + 8 * i as u64)?;
            Ok((v != 0).then_some(v))
        }
    }
}

/// The value of a small non-negative `int` (at most 64 bits), e.g. a thread ident.
pub fn read_u64_int<M: ProcessMemory>(mem: &M, l: &Layout, addr: u64) -> Result<u64> {
    let (negative, ndigits) = match l.long_tag {
        // 3.12+: lv_tag = ndigits << 3 | sign (0 positive, 1 zero, 2 negative)
        Some(at) => {
            let tag = mem.read_u64(addr + at)?;
            (tag & 3 == 2, tag >> 3)
        }
        None => {
            let size = mem.read_i64(addr.wrapping_add(l.var_size))?;
            (size < 0, size.unsigned_abs())
        }
    };
    let bits = l.long_digit_size * 8 - 2; // 30-bit digits in 4 bytes, 15-bit in 2
    if negative || ndigits * bits > 64 + bits {
        return Err(invalid(format!("int at {addr:#x} is not a 64-bit value")));
    }
    let raw = mem.read_vec(
        addr.wrapping_add(l.long_digits),
        (ndigits * l.long_digit_size) as usize,
    )?;
    let mut v: u128 = 0;
    for d in raw.chunks_exact(l.long_digit_size as usize).rev() {
        let digit = match *d {
            [a, b, c, e] => u128::from(u32::from_ne_bytes([a, b, c, e])),
            [a, b] => u128::from(u16::from_ne_bytes([a, b])),
            _ => return Err(invalid(format!("int digits of {} bytes", d.len()))),
        };
        v = (v << bits) | digit;
    }
    u64::try_from(v).map_err(|_| invalid(format!("int at {addr:#x} is not a 64-bit value")))
}

/// A `str` attribute's text, or `None` when it is not a `str`.
pub fn str_value<M: ProcessMemory>(mem: &M, l: &Layout, addr: u64) -> Option<String> {
    read_str(mem, l, addr, MAX_NAME).ok()
}
