//! Per-class tallies of instances that carry an instance dict (or 3.11+ managed or inline
//! values), with what a `__slots__` layout of the same attributes would take: the input of
//! the `slots` advice (`memlens_model::advice`). One row per class name, so the memory they
//! take is bounded by the number of types, like the census's own rows.

use memlens_remote::ProcessMemory;

use super::{Kind, TypeInfo, Walker};
use crate::dicts::{self, Managed};
use crate::error::Result;
use memlens_model::census::ClassDicts;

/// The standard `PyTypeObject` (3.8 and later): `tp_flags` at 168, `tp_dictoffset` at 288,
/// and `tp_weaklistoffset` 80 bytes before `tp_dictoffset`. Layouts that disagree get no
/// `slots` tallies rather than a guessed offset.
const TYPE_FLAGS: u64 = 168;
const TYPE_DICTOFFSET: u64 = 288;
const WEAKLIST_BEFORE_DICTOFFSET: u64 = 80;

/// Where `visit` keeps the tallies: a row per census row (`TypeInfo::slot`).
#[derive(Debug, Default)]
pub(super) struct Classes {
    rows: Vec<ClassDicts>,
}

impl Classes {
    /// The rows with instances.
    pub(super) fn finish(self, names: &[super::TypeCount]) -> Vec<ClassDicts> {
        let mut out: Vec<ClassDicts> = self
            .rows
            .into_iter()
            .enumerate()
            .filter(|(_, r)| r.instances > 0 || r.unread > 0)
            .map(|(i, mut r)| {
                r.type_name = names
                    .get(i)
                    .map(|n| n.type_name.clone())
                    .unwrap_or_default();
                r
            })
            .collect();
        out.sort_by(|a, b| {
            let sa = a.bytes.saturating_sub(a.slotted_bytes);
            let sb = b.bytes.saturating_sub(b.slotted_bytes);
            sb.cmp(&sa).then(a.type_name.cmp(&b.type_name))
        });
        out
    }
}

fn word(b: &[u8], at: u64) -> u64 {
    super::word(b, at)
}

impl<M: ProcessMemory> Walker<'_, M> {
    /// Tallies `obj` for advice: a candidate for `slots`, a large list or tuple, a str or
    /// bytes value. A read that fails leaves the object out of the tallies (they are lower
    /// bounds then), not out of the census.
    pub(super) fn tally(
        &mut self,
        obj: u64,
        ty: u64,
        t: &TypeInfo,
        ob_size: i64,
        size: u64,
    ) -> Result<()> {
        if t.slots_drop.is_some() {
            self.class_instance(obj, t, size)?;
        }
        let r = if matches!(t.kind, Kind::List | Kind::Tuple)
            && ob_size >= memlens_model::census::SCALAR_LIST_MIN as i64
        {
            self.scalar_list(obj, ty, t, ob_size as u64)
        } else if t.kind == Kind::Str || ty == self.it.types.bytes {
            self.value(obj, ty, size)
        } else {
            Ok(())
        };
        match r {
            Err(e) if super::object_level(&e) => {
                log::debug!("census: {obj:#x} left out of the advice tallies: {e}");
                Ok(())
            }
            r => r,
        }
    }

    /// For a heap type read from `raw` (its type object): the bytes of its instance that a
    /// `__slots__` layout would not have (the dict and weakref words inside `tp_basicsize`
    /// that the class itself added), or `None` when its instances are not candidates: not
    /// plain objects, variable-size, without an instance dict, or with a dict that a static
    /// base (an exception, a C type) provides.
    pub(super) fn slots_drop(&self, ty: u64, raw: &[u8], kind: Kind) -> Result<Option<u64>> {
        let l = self.l;
        if kind != Kind::Other || l.type_flags != TYPE_FLAGS || l.type_dictoffset != TYPE_DICTOFFSET
        {
            return Ok(None);
        }
        let weak_at = TYPE_DICTOFFSET - WEAKLIST_BEFORE_DICTOFFSET;
        let flags = word(raw, l.type_flags);
        let dictoffset = word(raw, l.type_dictoffset) as i64;
        let managed = l.tpflags_managed_dict.is_some_and(|f| flags & f != 0);
        if word(raw, l.type_itemsize) != 0 || (dictoffset == 0 && !managed) {
            return Ok(None);
        }
        // the first static base: it must have neither a dict nor (for the weakref word to
        // go) a weakref list of its own
        let mut base = ty;
        let mut static_weak = 0i64;
        for _ in 0..64 {
            base = super::addr(self.mem.read_u64(base + l.type_base)?, "a base type")?;
            if base == 0 {
                return Ok(None);
            }
            let bflags = self.mem.read_u64(base + l.type_flags)?;
            if bflags & l.tpflags_heaptype == 0 {
                if self.mem.read_i64(base + l.type_dictoffset)? != 0 {
                    return Ok(None); // the dict comes with the static base
                }
                static_weak = self.mem.read_i64(base + weak_at)?;
                break;
            }
        }
        let weak = word(raw, weak_at) as i64;
        let mut drop = 0;
        if dictoffset > 0 {
            drop += 8;
        }
        if weak > 0 && static_weak == 0 {
            drop += 8;
        }
        Ok(Some(drop))
    }

    /// Tallies an instance of a candidate class (`t.slots_drop` set) whose `sys.getsizeof`
    /// is `size`; one whose dict cannot be read is counted in `unread` (the object itself
    /// was read and counted).
    pub(super) fn class_instance(&mut self, obj: u64, t: &TypeInfo, size: u64) -> Result<()> {
        match self.tally_class(obj, t, size) {
            Ok(()) => Ok(()),
            Err(e) if super::object_level(&e) => {
                log::debug!("census: the dict of {obj:#x} could not be read: {e}");
                let r = self.class_row(t.slot);
                r.unread += 1;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn class_row(&mut self, slot: usize) -> &mut ClassDicts {
        if self.classes.rows.len() <= slot {
            self.classes.rows.resize(slot + 1, ClassDicts::default());
        }
        &mut self.classes.rows[slot]
    }

    fn tally_class(&mut self, obj: u64, t: &TypeInfo, size: u64) -> Result<()> {
        let Some(drop) = t.slots_drop else {
            return Ok(());
        };
        let l = self.l;
        let managed = l.tpflags_managed_dict.is_some_and(|f| t.flags & f != 0);
        let inline = l.tpflags_inline_values.is_some_and(|f| t.flags & f != 0);
        let mut extra = 0u64;
        let mut attrs = 0u64;
        let mut is_dict = false;
        let dict = if managed {
            match dicts::managed(self.mem, l, obj, t.flags, || Ok(t.basicsize))? {
                Managed::None => None,
                Managed::Dict(d) => Some(d),
                Managed::Values(_) => {
                    let (n, cap) = self.shared_keys(t)?;
                    attrs = n;
                    if !inline {
                        // a separate PyDictValues: a prefix of size + 2 bytes, then the values
                        extra = self.allocated(((cap + 2 + 7) & !7) + cap * 8);
                    }
                    None
                }
            }
        } else if t.dictoffset > 0 {
            match self.mem.read_u64(obj + t.dictoffset as u64)? {
                0 => None,
                d => Some(d),
            }
        } else {
            None
        };
        let mut own = size;
        if inline {
            // 3.13+: the values live after tp_basicsize in the object's own allocation, which
            // `sys.getsizeof` leaves out (_PyInlineValuesSize: a prefix, then size + 1 words)
            let (_, cap) = self.shared_keys(t)?;
            own += ((cap + 7) & !7) + (cap + 1) * 8;
        }
        let own = self.allocated(own);
        if let Some(d) = dict {
            is_dict = true;
            let dty = self.mem.read_u64(d.wrapping_add(l.object_type))?;
            let di = self.type_index(dty)?;
            let Some(dt) = self.infos.get(di as usize).copied() else {
                return Ok(()); // an unreadable dict: left out of the tallies
            };
            if dt.kind != Kind::Dict {
                return Ok(());
            }
            let dict_size = self.sizer.getsizeof(self.mem, &dt.facts, d, &[])?.size;
            extra += self.allocated(dict_size);
            let used = self.mem.read_i64(d.wrapping_add(l.dict_used))?;
            attrs = used.clamp(0, 1 << 32) as u64;
        }
        let slotted = self.allocated(l.gc_head_size + t.basicsize.saturating_sub(drop) + attrs * 8);
        let r = self.class_row(t.slot);
        r.instances += 1;
        r.bytes = r.bytes.saturating_add(own.saturating_add(extra));
        r.slotted_bytes = r.slotted_bytes.saturating_add(slotted);
        r.attributes += attrs;
        r.dicts += u64::from(is_dict);
        Ok(())
    }

    /// What an allocation of `n` bytes takes: pymalloc rounds requests up to 512 bytes to
    /// its alignment (16 bytes from 3.8, 8 before); larger ones go to malloc as they are.
    pub(super) fn allocated(&self, n: u64) -> u64 {
        let align = if self.l.version >= (3, 8) { 16 } else { 8 };
        if n <= 512 {
            n.div_ceil(align) * align
        } else {
            n
        }
    }

    /// The class's shared keys: attributes in use (`dk_nentries`) and the values' capacity
    /// (`dk_nentries + dk_usable`, what CPython sizes a values array by).
    fn shared_keys(&self, t: &TypeInfo) -> Result<(u64, u64)> {
        if t.cached_keys == 0 {
            return Ok((0, 0));
        }
        let l = self.l;
        let n = self
            .mem
            .read_i64(t.cached_keys.wrapping_add(l.dictkeys_nentries))?
            .clamp(0, 1 << 16) as u64;
        let usable = self
            .mem
            .read_i64(t.cached_keys.wrapping_add(l.dictkeys_usable))?
            .clamp(0, 1 << 16) as u64;
        Ok((n, n + usable))
    }
}
