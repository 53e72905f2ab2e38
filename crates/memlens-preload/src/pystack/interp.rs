//! The interpreter found in this process: its version, layout and the offsets the walk reads,
//! and where its current thread state is read.

use super::*;

/// What was found of the interpreter in this process.
pub struct Python {
    /// `(3, minor)`.
    pub version: (u8, u8),
    pub(super) layout: &'static Layout,
    pub(super) off: Offsets,
    pub(super) code_type: usize,
    pub(super) str_type: usize,
    pub(super) this_tstate: unsafe extern "C" fn() -> usize,
    /// `PyThreadState_GetUnchecked` (3.13+) or `_PyThreadState_UncheckedGet`: the
    /// interpreter's current thread state (the GIL holder's on 3.8-3.11, this thread's
    /// attached one on 3.12+), cheaper than the `PyGILState` lookup; used only when the
    /// caller holds the GIL of the only interpreter, where both are this thread's.
    pub(super) current_tstate: Option<unsafe extern "C" fn() -> usize>,
    /// Where that function reads the current thread state, when it is one load of a field of
    /// `_PyRuntime` (3.8-3.11's `gilstate.tstate_current`, x86-64: [`current_field`]), read
    /// here without the call; 0 otherwise.
    pub(super) current_at: usize,
}

/// The offsets the walk reads, taken out of the layout once (plain numbers in one place: the
/// walk runs on every sampled allocation, every allocation in `all` mode). For each minor
/// version the layout tables know, they are also a constant ([`minor_offsets`]), so the walk
/// of the interpreter found reads them as immediates ([`Python::walk`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Offsets {
    /// 0: frame objects (3.8-3.10), 1: `tstate->cframe->current_frame` (3.11-3.12),
    /// 2: `tstate->current_frame` (3.13+).
    pub(super) kind: u8,
    /// `tstate->frame`, `tstate->cframe` or `tstate->current_frame`.
    pub(super) top: usize,
    /// `cframe->current_frame`.
    pub(super) cur: usize,
    /// `f_back` / `previous`.
    pub(super) back: usize,
    /// `f_code` / `f_executable`.
    pub(super) code: usize,
    /// `f_lasti` / `prev_instr` / `instr_ptr`.
    pub(super) pos: usize,
    /// `owner` (3.11+).
    pub(super) owner: usize,
    /// The frame owners that are not Python frames, one bit each (owner `k`: bit `k`; none
    /// before 3.12, so the test folds away in their constant walks).
    pub(super) skip: u64,
    /// The tag bits of `f_executable` (3.14+).
    pub(super) tag: usize,
    /// `co_code_adaptive`.
    pub(super) adaptive: usize,
    pub(super) ob_type: usize,
    pub(super) co_file: usize,
    pub(super) co_name: usize,
    pub(super) co_first: usize,
}

/// `Some(v)`'s `v` as an offset, or `or` (a `const fn` `map_or`).
pub(super) const fn or(v: Option<u64>, or: usize) -> usize {
    match v {
        Some(v) => v as usize,
        None => or,
    }
}

/// The walk's offsets in layout `l`; `None` when it lacks one the walk needs. (A `const fn`:
/// [`minor_offsets`].)
pub(super) const fn offsets(l: &Layout) -> Option<Offsets> {
    let base = Offsets {
        kind: 0,
        top: 0,
        cur: 0,
        back: 0,
        code: 0,
        pos: 0,
        owner: 0,
        skip: 0,
        tag: or(l.stackref_tag_bits, 0),
        adaptive: 0,
        ob_type: l.object_type as usize,
        co_file: l.code_filename as usize,
        co_name: or(l.code_qualname, l.code_name as usize),
        co_first: l.code_firstlineno as usize,
    };
    if let (Some(top), Some(back), Some(code), Some(pos)) =
        (l.tstate_frame, l.frame_back, l.frame_code, l.frame_lasti)
    {
        return Some(Offsets {
            top: top as usize,
            back: back as usize,
            code: code as usize,
            pos: pos as usize,
            ..base
        });
    }
    let (Some(code), Some(back), Some(pos), Some(owner), Some(adaptive)) = (
        l.iframe_code,
        l.iframe_previous,
        l.iframe_instr,
        l.iframe_owner,
        l.code_code_adaptive,
    ) else {
        return None;
    };
    let (kind, top, cur) = match (
        l.tstate_cframe,
        l.cframe_current_frame,
        l.tstate_current_frame,
    ) {
        (Some(cf), Some(cur), _) => (1, cf, cur),
        (_, _, Some(cur)) => (2, cur, 0),
        _ => return None,
    };
    // An owner number of 64 or more would not fit the bit set: no layout has one (none skipped).
    let mut skip = 0u64;
    if let Some(v @ 0..64) = l.frame_owned_by_cstack {
        skip |= 1 << v;
    }
    if let Some(v @ 0..64) = l.frame_owned_by_interpreter {
        skip |= 1 << v;
    }
    Some(Offsets {
        kind,
        top: top as usize,
        cur: cur as usize,
        back: back as usize,
        code: code as usize,
        pos: pos as usize,
        owner: owner as usize,
        skip,
        adaptive: adaptive as usize,
        ..base
    })
}

/// The layouts of this architecture.
pub(super) const fn layouts() -> &'static [Layout] {
    if cfg!(target_arch = "aarch64") {
        generated::AARCH64
    } else {
        generated::X86_64
    }
}

/// The layout [`detect`] takes for `version`: the first of the version not made from a
/// binary's debug offsets.
const fn layout_of(version: (u8, u8)) -> Option<&'static Layout> {
    let table = layouts();
    let mut i = 0;
    while i < table.len() {
        let l = &table[i];
        if l.version.0 == version.0 && l.version.1 == version.1 && !l.from_debug_offsets {
            return Some(l);
        }
        i += 1;
    }
    None
}

/// [`minor_offsets`] of `M`, as an item (a reference to it is a constant's).
pub(super) struct Minor<const M: u8>;

impl<const M: u8> Minor<M> {
    pub(super) const OFF: Option<Offsets> = minor_offsets(M);
}

/// The offsets of minor version `3.M`'s layout, as a constant (those of the interpreter
/// found when it is that minor: the same layout, [`layout_of`]).
pub(super) const fn minor_offsets(minor: u8) -> Option<Offsets> {
    match layout_of((3, minor)) {
        Some(l) => offsets(l),
        None => None,
    }
}

impl Python {
    /// The offset of `interpreters.head` in `_PyRuntime` (the newest interpreter; the main
    /// one while no subinterpreter exists).
    pub fn interpreters_head(&self) -> u64 {
        self.layout.runtime_interpreters_head
    }

    /// The offset of `interp` in a `PyThreadState`.
    pub fn tstate_interp(&self) -> u64 {
        self.layout.tstate_interp
    }

    /// The offset of `next` in a `PyInterpreterState`.
    pub fn interp_next(&self) -> u64 {
        self.layout.interp_next
    }
}

/// The interpreter of this process: `None` when it is not a Python process or one whose minor
/// version has no layout. Must run once the libraries are loaded (the constructor).
pub fn detect() -> Option<Python> {
    let sym = |name: &std::ffi::CStr| {
        // SAFETY: dlsym over the global scope with a NUL-terminated name.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
    };
    let (ver, gil, code_type, str_type) = (
        sym(c"Py_GetVersion"),
        sym(c"PyGILState_GetThisThreadState"),
        sym(c"PyCode_Type"),
        sym(c"PyUnicode_Type"),
    );
    if ver == 0 || gil == 0 || code_type == 0 || str_type == 0 {
        return None;
    }
    // SAFETY: Py_GetVersion's C type; it formats constant strings into a static buffer and
    // may be called before the interpreter is initialised.
    let text = unsafe {
        let f: unsafe extern "C" fn() -> *const libc::c_char = std::mem::transmute(ver);
        let p = f();
        if p.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(p).to_bytes()
    };
    let version = parse_version(text)?;
    let current = match sym(c"PyThreadState_GetUnchecked") {
        0 => sym(c"_PyThreadState_UncheckedGet"),
        p => p,
    };
    // A free-threaded build (3.13t+) has another object header: no layout here for it.
    if text.windows(14).any(|w| w == b"free-threading") {
        return None;
    }
    let layout = layout_of(version)?;
    Some(Python {
        version,
        layout,
        off: offsets(layout)?,
        code_type,
        str_type,
        // SAFETY: PyGILState_GetThisThreadState's C type (PyThreadState *(void)).
        this_tstate: unsafe { std::mem::transmute::<usize, unsafe extern "C" fn() -> usize>(gil) },
        // SAFETY: PyThreadState_GetUnchecked's C type (PyThreadState *(void)), as the old name.
        current_tstate: (current != 0).then(|| unsafe {
            std::mem::transmute::<usize, unsafe extern "C" fn() -> usize>(current)
        }),
        current_at: match sym(c"_PyRuntime") {
            0 => 0,
            rt => current_field(current, rt, layout.runtime_size as usize).unwrap_or(0),
        },
    })
}

/// The address `_PyThreadState_UncheckedGet` at `f` loads its result from, when its code is
/// exactly one load of an aligned word of `_PyRuntime` (`[rt, rt + size)`) and a return; else
/// `None` (the function is then called). On 3.8-3.11 it returns
/// `_PyRuntime.gilstate.tstate_current`, whose offset no layout table has; its x86-64 code is
/// `mov rax, [rip + d]` then `ret` in an executable linked with the interpreter, or, in a
/// shared libpython, `mov rax, [rip + d]` (the GOT slot holding `&_PyRuntime`) then
/// `mov rax, [rax + d]` and `ret` (either after an `endbr64`). Anything else (3.12+'s
/// thread-local, another compiler's code, another architecture) is not recognised.
pub(super) fn current_field(f: usize, rt: usize, size: usize) -> Option<usize> {
    if !cfg!(target_arch = "x86_64") || f == 0 {
        return None;
    }
    // SAFETY: `f` is the function's entry, in the interpreter's mapped code; each byte is
    // read only when the ones before it are the start of the instruction expected there,
    // whose rest is then code of the function too.
    let byte = |a: usize| unsafe { rd_u8(a) };
    // SAFETY: a GOT slot of the interpreter's (found below), mapped and aligned.
    let word = |a: usize| unsafe { rd(a) };
    decode_current(f, byte, word).filter(|&a| a >= rt && a < rt + size && a % 8 == 0)
}

/// [`current_field`]'s decoding of the code at `f`, reading its bytes with `byte` and a GOT
/// slot with `word`: the address loaded.
fn decode_current(
    f: usize,
    byte: impl Fn(usize) -> u8,
    word: impl Fn(usize) -> usize,
) -> Option<usize> {
    let is = |at: usize, b: &[u8]| b.iter().enumerate().all(|(i, &v)| byte(at + i) == v);
    let disp32 =
        |at: usize| i32::from_le_bytes([byte(at), byte(at + 1), byte(at + 2), byte(at + 3)]);
    let mut at = f;
    if is(at, &[0xf3, 0x0f, 0x1e, 0xfa]) {
        at += 4; // endbr64
    }
    if !is(at, &[0x48, 0x8b, 0x05]) {
        return None; // mov rax, [rip + disp32]
    }
    let slot = (at + 7).wrapping_add_signed(disp32(at + 3) as isize);
    at += 7;
    if is(at, &[0xc3]) {
        return Some(slot); // ret: the word loaded is the field itself
    }
    let off = if is(at, &[0x48, 0x8b, 0x40]) {
        at += 4; // mov rax, [rax + disp8]
        byte(at - 1) as i8 as isize
    } else if is(at, &[0x48, 0x8b, 0x80]) {
        at += 7; // mov rax, [rax + disp32]
        disp32(at - 4) as isize
    } else {
        return None;
    };
    is(at, &[0xc3]).then(|| word(slot).wrapping_add_signed(off))
}

/// `3.M` from the start of `Py_GetVersion()`'s text.
pub fn parse_version(text: &[u8]) -> Option<(u8, u8)> {
    let s = std::str::from_utf8(text.get(..text.len().min(16))?).ok()?;
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major: u8 = it.next()?.parse().ok()?;
    let minor: u8 = it.next()?.parse().ok()?;
    (major == 3).then_some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version(b"3.11.7 (main, Dec)"), Some((3, 11)));
        assert_eq!(parse_version(b"3.8.18"), Some((3, 8)));
        assert_eq!(parse_version(b"2.7.18"), None);
        assert_eq!(parse_version(b"junk"), None);
    }

    /// The constant offsets of each minor are those taken from the layout [`detect`] finds.
    #[test]
    fn minor_offsets_are_the_layouts() {
        for l in layouts().iter().filter(|l| !l.from_debug_offsets) {
            assert_eq!(minor_offsets(l.version.1), offsets(l), "{:?}", l.version);
        }
        for m in 8..=15 {
            assert!(layout_of((3, m)).is_some(), "3.{m}");
        }
        assert_eq!(Minor::<11>::OFF, minor_offsets(11));
        assert_eq!(minor_offsets(7), None);
    }

    /// `_PyThreadState_UncheckedGet`'s code as compilers emit it (the bytes of CPython 3.11's
    /// shared libpython and of an executable linked with it), decoded to the word it loads;
    /// any other code is not.
    #[test]
    fn current_field_decoding() {
        let f = 0x1000usize;
        let run = |code: &[u8], got: usize| {
            let code = code.to_vec();
            decode_current(
                f,
                move |a| code.get(a - f).copied().unwrap_or(0xcc),
                move |a| if a == got { 0x7000_0000 } else { 0xdead },
            )
        };
        // mov rax, [rip + 0x1ae269]; mov rax, [rax + 0x240]; ret
        let shared = [
            0x48, 0x8b, 0x05, 0x69, 0xe2, 0x1a, 0x00, 0x48, 0x8b, 0x80, 0x40, 0x02, 0x00, 0x00,
            0xc3,
        ];
        assert_eq!(run(&shared, f + 7 + 0x1ae269), Some(0x7000_0240));
        // endbr64; the same with a disp8 and a negative GOT displacement
        let short = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x8b, 0x05, 0xf0, 0xff, 0xff, 0xff, 0x48, 0x8b, 0x40,
            0x38, 0xc3,
        ];
        assert_eq!(run(&short, f + 11 - 16), Some(0x7000_0038));
        // mov rax, [rip + 0x100]; ret (an executable: the field itself)
        assert_eq!(
            run(&[0x48, 0x8b, 0x05, 0x00, 0x01, 0x00, 0x00, 0xc3], 0),
            Some(f + 7 + 0x100)
        );
        // 3.12's thread-local (a call), a load not followed by ret, nothing known
        let tls = [
            0x48, 0x83, 0xec, 0x08, 0x66, 0x48, 0x8d, 0x3d, 0, 0, 0, 0, 0xc3,
        ];
        assert_eq!(run(&tls, 0), None);
        let mut long = shared;
        long[14] = 0x90;
        assert_eq!(run(&long, f + 7 + 0x1ae269), None);
        assert_eq!(run(&[0xc3], 0), None);
        // Outside `_PyRuntime`, or misaligned: not taken.
        assert_eq!(current_field(0, 0x1000, 0x100), None);
    }

    #[test]
    fn every_minor_has_a_frame_walk() {
        for l in generated::X86_64.iter().filter(|l| !l.from_debug_offsets) {
            let old = l.tstate_frame.is_some() && l.frame_back.is_some() && l.frame_lasti.is_some();
            let new = l.iframe_code.is_some()
                && l.iframe_previous.is_some()
                && l.iframe_instr.is_some()
                && l.iframe_owner.is_some()
                && l.code_code_adaptive.is_some()
                && (l.tstate_current_frame.is_some() || l.tstate_cframe.is_some());
            assert!(old || new, "{:?}", l.version);
        }
    }
}
