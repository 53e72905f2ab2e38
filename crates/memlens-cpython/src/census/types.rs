//! Type objects as the census reads them: once each, with the fields its walk and sizes use.

use memlens_remote::ProcessMemory;

use super::{
    addr, object_level, small, word, Kind, TypeInfo, Walker, MAX_ADDR, NO_TYPE, TYPE_CACHE,
};
use crate::census::TypeCount;
use crate::error::Result;
use crate::objects::type_name;

impl<M: ProcessMemory> Walker<'_, M> {
    /// The index in `infos` of the type at `ty` (read once), `NO_TYPE` when unreadable.
    #[inline]
    pub(super) fn type_index(&mut self, ty: u64) -> Result<u32> {
        let slot = ((ty >> 4) as usize) % TYPE_CACHE;
        if self.type_cache[slot].0 == ty {
            return Ok(self.type_cache[slot].1);
        }
        let i = self.type_index_slow(ty)?;
        self.type_cache[slot] = (ty, i);
        Ok(i)
    }

    fn type_index_slow(&mut self, ty: u64) -> Result<u32> {
        if ty >= MAX_ADDR || ty % 8 != 0 {
            return Ok(NO_TYPE);
        }
        if let Some(i) = self.types.get(&ty) {
            return Ok(*i);
        }
        let i = match self.read_type(ty) {
            Ok(t) if self.infos.len() < NO_TYPE as usize => {
                self.infos.push(t);
                (self.infos.len() - 1) as u32
            }
            Ok(_) => NO_TYPE,
            Err(e) if object_level(&e) => NO_TYPE,
            Err(e) => return Err(e),
        };
        self.types.insert(ty, i);
        Ok(i)
    }

    fn read_type(&mut self, ty: u64) -> Result<TypeInfo> {
        let l = self.l;
        let raw = self.mem.read_vec(ty, l.type_size as usize)?;
        let flags = word(&raw, l.type_flags);
        let heap = flags & l.tpflags_heaptype != 0;
        let name = type_name(self.mem, l, ty)?;
        let kind = self.kind_of(ty, flags)?;
        let first = self.member_offsets.len();
        if heap {
            self.collect_members(ty)?;
        }
        let slot = self.type_row(name);
        let dictoffset = word(&raw, l.type_dictoffset) as i64;
        small(dictoffset.unsigned_abs(), "a dict offset")?;
        let facts = self.sizer.type_facts(self.mem, ty)?;
        let slots_drop = if heap && self.advice {
            self.slots_drop(ty, &raw, kind)?
        } else {
            None
        };
        Ok(TypeInfo {
            slot,
            facts,
            basicsize: small(word(&raw, l.type_basicsize), "a basic size")?,
            itemsize: small(word(&raw, l.type_itemsize), "an item size")?,
            flags,
            dictoffset,
            kind,
            heap,
            gc: flags & l.tpflags_have_gc != 0,
            members: (first, self.member_offsets.len()),
            cached_keys: if heap {
                addr(
                    self.mem.read_u64(ty + l.heaptype_cached_keys)?,
                    "cached keys",
                )?
            } else {
                0
            },
            slots_drop,
        })
    }

    /// What the walk does with objects of the type at `ty`: by the type's flags, by its
    /// address (the interpreter's static types), else along `tp_base` (sets and modules,
    /// subclasses included).
    fn kind_of(&self, ty: u64, flags: u64) -> Result<Kind> {
        let l = self.l;
        let t = self.it.types;
        let mut kind = if ty == t.list || flags & l.tpflags_list_subclass != 0 {
            Kind::List
        } else if flags & l.tpflags_tuple_subclass != 0 {
            Kind::Tuple
        } else if flags & l.tpflags_dict_subclass != 0 {
            Kind::Dict
        } else if ty == t.str {
            Kind::Str
        } else if flags & l.tpflags_long_subclass != 0 {
            Kind::Int
        } else if flags & l.tpflags_type_subclass != 0 {
            Kind::Type
        } else if ty == t.function {
            Kind::Function
        } else if ty == t.cell {
            Kind::Cell
        } else if ty == t.code {
            Kind::Code
        } else if self.it.symbol("PyLazyImport_Type") == Some(ty) {
            Kind::LazyImport
        } else if [
            "PyMethodDescr_Type",
            "PyClassMethodDescr_Type",
            "PyMemberDescr_Type",
            "PyGetSetDescr_Type",
            "PyWrapperDescr_Type",
        ]
        .iter()
        .any(|n| self.it.symbol(n) == Some(ty))
        {
            Kind::Descriptor
        } else {
            Kind::Other
        };
        if kind == Kind::Other {
            // sets and modules, subclasses included: look along tp_base
            let mut base = ty;
            for _ in 0..64 {
                if base == 0 {
                    break;
                }
                if base == t.set || base == t.frozenset {
                    kind = Kind::Set;
                    break;
                }
                if base == t.module {
                    kind = Kind::Module;
                    break;
                }
                base = addr(self.mem.read_u64(base + l.type_base)?, "a base type")?;
            }
        }
        Ok(kind)
    }

    /// Appends to `member_offsets` the offsets of the object slots (`__slots__` members,
    /// `T_OBJECT_EX`) of the heap type at `ty` and of its heap bases.
    fn collect_members(&mut self, ty: u64) -> Result<()> {
        let l = self.l;
        let mut base = ty;
        for _ in 0..64 {
            if base == 0 {
                break;
            }
            let bflags = self.mem.read_u64(base + l.type_flags)?;
            if bflags & l.tpflags_heaptype == 0 {
                break;
            }
            let n = self.mem.read_i64(base + l.var_size)?;
            let members = addr(self.mem.read_u64(base + l.type_members)?, "a member table")?;
            if n > 0 && n < 4096 && members != 0 {
                let raw = self
                    .mem
                    .read_vec(members, (n as u64 * l.member_size) as usize)?;
                for m in raw.chunks_exact(l.member_size as usize) {
                    let mtype = word(m, l.member_type) & 0xffff_ffff;
                    if mtype == l.member_t_object_ex {
                        let off = small(word(m, l.member_offset), "a member offset")?;
                        self.member_offsets.push(off);
                    }
                }
            }
            base = addr(self.mem.read_u64(base + l.type_base)?, "a base type")?;
        }
        Ok(())
    }

    /// The row of `out` counting objects of the type named `name` (types of one name share it).
    fn type_row(&mut self, name: String) -> usize {
        match self.names.get(&name) {
            Some(i) => *i,
            None => {
                self.out.push(TypeCount {
                    type_name: name.clone(),
                    count: 0,
                    bytes: 0,
                    estimated: 0,
                    data_owned: 0,
                    data_viewed: 0,
                });
                self.names.insert(name, self.out.len() - 1);
                self.out.len() - 1
            }
        }
    }
}
