//! Well-formed CPython heaps written with a version's layout, for the seed corpora of the
//! `objects` and `interpreter` targets (a fuzzer finds its way far more easily from a valid
//! heap than from zeros). The unit tests check that memlens decodes each one as built, so the
//! seeds stay honest when the layouts change.

use memlens_cpython::layouts::Layout;

use crate::image::{Header, BASE};

/// A heap being written: bytes mapped at [`BASE`].
#[derive(Debug, Clone)]
pub struct Heap {
    /// The layout it follows.
    pub l: &'static Layout,
    /// The image.
    pub bytes: Vec<u8>,
}

/// Addresses of what [`build`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Built {
    /// The header describing the image.
    pub header: Header,
    /// `"hello"`, `"key"`, `"sys"`.
    pub strs: [u64; 3],
    /// `42`.
    pub int: u64,
    /// `["hello", 42, ("hello", "key")]`.
    pub list: u64,
    /// `("hello", "key")`.
    pub tuple: u64,
    /// `{"key": 42}`.
    pub dict: u64,
    /// `{"sys": Point()}` (`sys.modules`).
    pub modules: u64,
    /// The heap type `Point`.
    pub point_type: u64,
    /// A `Point()` instance.
    pub point: u64,
    /// The head of generation 2 (every GC object is there).
    pub gen2: u64,
    /// `bytes` object `b"abc"`.
    pub bytes_obj: u64,
}

impl Heap {
    fn new(l: &'static Layout) -> Heap {
        // The first 64 bytes are the header of the one carved pymalloc pool (BASE is
        // pool-aligned).
        Heap {
            l,
            bytes: vec![0; 64],
        }
    }

    /// Allocates `size` zeroed bytes, 16-aligned; returns the address.
    pub fn alloc(&mut self, size: u64) -> u64 {
        let at = self.bytes.len().next_multiple_of(16);
        self.bytes.resize(at + size as usize, 0);
        BASE + at as u64
    }

    /// Writes bytes at an address inside the image.
    pub fn put(&mut self, addr: u64, v: &[u8]) {
        let at = (addr - BASE) as usize;
        self.bytes[at..at + v.len()].copy_from_slice(v);
    }

    fn w64(&mut self, addr: u64, v: u64) {
        self.put(addr, &v.to_ne_bytes());
    }

    fn w32(&mut self, addr: u64, v: u32) {
        self.put(addr, &v.to_ne_bytes());
    }

    fn offset(addr: u64) -> u16 {
        u16::try_from(addr - BASE).unwrap_or(0)
    }

    /// A NUL-terminated C string.
    fn cstr(&mut self, s: &str) -> u64 {
        let a = self.alloc(s.len() as u64 + 1);
        self.put(a, s.as_bytes());
        a
    }

    /// An object of `size` bytes of type `ty`, with a GC head before it when `gc`.
    fn object(&mut self, ty: u64, size: u64, gc: bool) -> u64 {
        let pre = if gc { self.l.gc_head_size } else { 0 };
        let a = self.alloc(pre + size) + pre;
        self.w64(a, 1); // refcount
        self.w64(a + self.l.object_type, ty);
        a
    }

    fn static_type(&mut self, meta: u64, name: &str, flags: u64, basic: u64, item: u64) -> u64 {
        let l = self.l;
        let t = self.object(meta, l.type_size, false);
        let n = self.cstr(name);
        self.w64(t + l.type_name, n);
        self.w64(t + l.type_flags, flags);
        self.w64(t + l.type_basicsize, basic);
        self.w64(t + l.type_itemsize, item);
        t
    }

    /// A compact ASCII `str`.
    pub fn str(&mut self, ty: u64, s: &str) -> u64 {
        let l = self.l;
        let o = self.object(ty, l.str_ascii_size + s.len() as u64 + 1, false);
        self.w64(o + l.str_length, s.len() as u64);
        // kind 1, compact, ascii (and "ready" for 3.8-3.11)
        self.w32(o + l.str_state, (1 << 2) | (1 << 5) | (1 << 6) | (1 << 7));
        self.put(o + l.str_ascii_size, s.as_bytes());
        o
    }

    fn int(&mut self, ty: u64, v: u32) -> u64 {
        let l = self.l;
        let o = self.object(ty, l.long_digits + l.long_digit_size, false);
        match l.long_tag {
            Some(tag) => self.w64(o + tag, 1 << 3),
            None => self.w64(o + l.var_size, 1),
        }
        self.w32(o + l.long_digits, v);
        o
    }

    /// A combined-table dict of up to 5 entries.
    fn dict(&mut self, ty: u64, items: &[(u64, u64)]) -> u64 {
        let l = self.l;
        let d = self.object(ty, l.dict_size, true);
        self.w64(d + l.dict_used, items.len() as u64);
        let n = items.len() as u64;
        let keys = match l.dictkeys_size_field {
            Some(size_off) => {
                // 3.8-3.10: dk_size 8, 1-byte indices, 24-byte entries (hash, key, value)
                let k = self.alloc(l.dictkeys_indices + 8 + 5 * 24);
                self.w64(k + size_off, 8);
                self.put(k + l.dictkeys_indices, &[0xff; 8]);
                for (i, (key, value)) in items.iter().enumerate() {
                    let e = k + l.dictkeys_indices + 8 + i as u64 * 24;
                    self.w64(e, 0x1234 + i as u64);
                    self.w64(e + 8, *key);
                    self.w64(e + 16, *value);
                    self.put(k + l.dictkeys_indices + i as u64, &[i as u8]);
                }
                k
            }
            None => {
                // 3.11+: log2 size 3, 1-byte indices (log2 index bytes 3), unicode kind
                let k = self.alloc(l.dictkeys_indices + 8 + 5 * 16);
                let (Some(log2), Some(ixb), Some(kind)) = (
                    l.dictkeys_log2_size,
                    l.dictkeys_log2_index_bytes,
                    l.dictkeys_kind,
                ) else {
                    return d;
                };
                self.put(k + log2, &[3]);
                self.put(k + ixb, &[3]);
                self.put(k + kind, &[1]);
                self.put(k + l.dictkeys_indices, &[0xff; 8]);
                for (i, (key, value)) in items.iter().enumerate() {
                    let e = k + l.dictkeys_indices + 8 + i as u64 * 16;
                    self.w64(e, *key);
                    self.w64(e + 8, *value);
                    self.put(k + l.dictkeys_indices + i as u64, &[i as u8]);
                }
                k
            }
        };
        self.w64(keys + l.dictkeys_refcnt, 1);
        self.w64(keys + l.dictkeys_nentries, n);
        self.w64(keys + l.dictkeys_usable, 5 - n);
        self.w64(d + l.dict_keys, keys);
        d
    }

    /// Links GC objects into the circular list at `head`.
    fn gc_list(&mut self, head: u64, objects: &[u64]) {
        let pre = self.l.gc_head_size;
        let mut prev = head;
        for &o in objects {
            let node = o - pre;
            self.w64(prev, node);
            self.w64(node + 8, prev);
            prev = node;
        }
        self.w64(prev, head);
        self.w64(head + 8, prev);
    }
}

/// Writes a heap for `l`; `symbols` says whether pymalloc's `arenas`/`maxarenas` are named
/// (3.8-3.11 with `.symtab`) or must be found by scanning `.bss`.
pub fn build(l: &'static Layout, symbols: bool) -> (Built, Vec<u8>) {
    let mut h = Heap::new(l);
    let mut b = Built::default();
    // _PyRuntime and the interpreter state
    let rt_size = (l.runtime_interpreters_head + 8).max(l.runtime_gc.map_or(0, |g| g + 256));
    let runtime = h.alloc(rt_size);
    let interp_size = (l.interp_modules + 8)
        .max(l.interp_gc.map_or(0, |g| g + 256))
        .max(l.interp_obmalloc.map_or(0, |o| o + 8))
        .max(l.interp_threads_head + 8);
    let interp = h.alloc(interp_size);
    h.w64(runtime + l.runtime_interpreters_head, interp);
    let state = match (l.interp_gc, l.runtime_gc) {
        (Some(g), _) => interp + g,
        (None, Some(g)) => runtime + g,
        _ => interp,
    };
    let heads: Vec<u64> = (0..3)
        .map(|i| state + l.gc_generations + i * l.gc_generation_size)
        .chain([state + l.gc_permanent])
        .collect();
    for &head in &heads {
        h.gc_list(head, &[]);
    }
    // builtin types
    let f = |flags: &[u64]| flags.iter().fold(0, |a, b| a | b);
    let meta = h.static_type(
        0,
        "type",
        f(&[l.tpflags_type_subclass, l.tpflags_have_gc]),
        l.heaptype_size,
        0,
    );
    h.w64(meta + l.object_type, meta);
    let list_t = h.static_type(
        meta,
        "list",
        f(&[l.tpflags_list_subclass, l.tpflags_have_gc]),
        40,
        0,
    );
    let tuple_t = h.static_type(
        meta,
        "tuple",
        f(&[l.tpflags_tuple_subclass, l.tpflags_have_gc]),
        l.tuple_item,
        8,
    );
    let dict_t = h.static_type(
        meta,
        "dict",
        f(&[l.tpflags_dict_subclass, l.tpflags_have_gc]),
        l.dict_size,
        0,
    );
    let str_t = h.static_type(
        meta,
        "str",
        l.tpflags_unicode_subclass,
        l.str_compact_size,
        0,
    );
    let bytes_t = h.static_type(meta, "bytes", l.tpflags_bytes_subclass, l.bytes_sval + 1, 1);
    let int_t = h.static_type(
        meta,
        "int",
        l.tpflags_long_subclass,
        l.long_digits,
        l.long_digit_size,
    );
    // objects
    b.strs = [
        h.str(str_t, "hello"),
        h.str(str_t, "key"),
        h.str(str_t, "sys"),
    ];
    b.int = h.int(int_t, 42);
    b.bytes_obj = h.object(bytes_t, l.bytes_sval + 4, false);
    h.w64(b.bytes_obj + l.var_size, 3);
    h.put(b.bytes_obj + l.bytes_sval, b"abc\0");
    b.tuple = h.object(tuple_t, l.tuple_item + 16, true);
    h.w64(b.tuple + l.var_size, 2);
    h.w64(b.tuple + l.tuple_item, b.strs[0]);
    h.w64(b.tuple + l.tuple_item + 8, b.strs[1]);
    b.list = h.object(list_t, 40, true);
    let items = h.alloc(24);
    for (i, o) in [b.strs[0], b.int, b.tuple].into_iter().enumerate() {
        h.w64(items + 8 * i as u64, o);
    }
    h.w64(b.list + l.var_size, 3);
    h.w64(b.list + l.list_item, items);
    h.w64(b.list + l.list_allocated, 3);
    b.dict = h.dict(dict_t, &[(b.strs[1], b.int)]);
    // a heap type and an instance of it (no dict, no slots)
    b.point_type = h.object(meta, l.heaptype_size, true);
    let pt = b.point_type;
    let name = h.str(str_t, "Point");
    let tp_name = h.cstr("Point");
    h.w64(pt + l.type_name, tp_name);
    h.w64(pt + l.heaptype_name, name);
    h.w64(pt + l.type_flags, l.tpflags_heaptype | l.tpflags_have_gc);
    h.w64(pt + l.type_basicsize, 32);
    b.point = h.object(pt, 32, true);
    b.modules = h.dict(dict_t, &[(b.strs[2], b.point)]);
    h.w64(interp + l.interp_modules, b.modules);
    b.gen2 = heads[2];
    h.gc_list(
        b.gen2,
        &[b.list, b.tuple, b.dict, b.point_type, b.point, b.modules],
    );
    // pymalloc: one arena at BASE with one carved pool (its header is the image's first
    // bytes: 3 blocks of size class 1), one unused arena slot
    let arena_array = {
        // 16-aligned like malloc's blocks, after a glibc chunk header (size, in use), for
        // the stripped-binary scan
        let array = h.alloc(16 + 2 * l.arena_size_of) + 16;
        h.w64(array - 8, ((2 * l.arena_size_of + 8 + 15) & !15) | 1);
        array
    };
    h.w64(arena_array + l.arena_address, BASE);
    h.w64(arena_array + l.arena_pool_address, BASE + l.pool_size);
    h.w32(
        arena_array + l.arena_ntotalpools,
        (l.arena_size / l.pool_size) as u32,
    );
    h.w32(BASE + l.pool_count, 3);
    h.w32(BASE + l.pool_szidx, 1);
    let mut header = Header {
        layout: crate::selector_of(l.version.1),
        runtime: Heap::offset(runtime),
        interp: Heap::offset(interp),
        ..Header::default()
    };
    match (l.interp_obmalloc, l.obmalloc_arenas, l.obmalloc_maxarenas) {
        (Some(obm), Some(a), Some(m)) => {
            let st = if l.version.1 == 12 {
                interp + obm
            } else {
                let st = h.alloc(m + 8);
                h.w64(interp + obm, st);
                st
            };
            h.w64(st + a, arena_array);
            h.w32(st + m, 2);
        }
        _ => {
            let vars = h.alloc(16);
            h.w64(vars, arena_array);
            h.w32(vars + 8, 2);
            header.flags = u8::from(symbols);
            header.arenas = Heap::offset(vars);
            header.maxarenas = Heap::offset(vars + 8);
            header.bss = (Heap::offset(vars), 16);
        }
    }
    let types = [
        list_t, tuple_t, dict_t, 0, 0, str_t, bytes_t, int_t, 0, meta, 0, 0, 0, 0,
    ];
    header.types = types.map(|t| if t == 0 { 0 } else { Heap::offset(t) });
    b.header = header;
    (b, h.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use memlens_cpython::{dicts, gc, modules, objects, pymalloc};

    #[test]
    fn memlens_decodes_every_seed_heap_as_built() {
        for l in crate::layouts() {
            for symbols in [true, false] {
                let (b, image) = build(l, symbols);
                let (it, mem) = crate::image::interpreter(&b.header, &image);
                let v = l.version;
                let s = objects::read_str(&mem, l, b.strs[0], 100).expect("str");
                assert_eq!(s, "hello", "{v:?}");
                let by = objects::read_bytes(&mem, l, b.bytes_obj, 100).expect("bytes");
                assert_eq!(by, b"abc", "{v:?}");
                assert_eq!(
                    objects::type_name(&mem, l, b.point_type).ok().as_deref(),
                    Some("Point")
                );
                let d = dicts::read_dict(&mem, l, b.dict).expect("dict");
                assert_eq!(d.items, vec![(b.strs[1], b.int)], "{v:?}");
                let mut n = 0;
                gc::walk_list(&mem, 0, b.gen2, l.gc_head_size, 1 << 20, |_| {
                    n += 1;
                    Ok(())
                })
                .expect("gc list");
                assert_eq!(n, 6, "{v:?}");
                let m = modules::read(&it, &mem).expect("modules");
                assert_eq!(m.names, vec!["sys".to_string()], "{v:?}");
                let c = crate::image::census(&it, &mem, image.len())
                    .unwrap_or_else(|e| panic!("census of {v:?} (symbols {symbols}): {e:?}"));
                for (name, count) in [
                    ("list", 1),
                    ("tuple", 1),
                    ("dict", 2),
                    ("str", 3),
                    ("int", 1),
                    ("type", 1),
                    ("Point", 1),
                ] {
                    assert_eq!(c.count_of(name), count, "{v:?} {name}: {c:?}");
                }
                assert_eq!(c.objects, 10, "{v:?} {c:?}");
                let p = pymalloc::read(&it, &mem).expect("pymalloc");
                assert_eq!((p.arenas, p.pools), (1, 1), "{v:?}");
                assert_eq!(p.used_bytes, 3 * 2 * l.pymalloc_alignment, "{v:?}");
            }
        }
    }
}
