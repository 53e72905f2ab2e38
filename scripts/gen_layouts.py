#!/usr/bin/env python3
"""Generates crates/memlens-cpython/src/layouts/generated.rs from installed CPython builds.

For every CPython 3.8-3.13 found under pyenv (``pyenv prefix`` folders, or
``$PYENV_ROOT/versions``) and the Debian ``/usr/include/python3.X`` headers, it compiles a C
probe (``offsetof``/``sizeof``/macro values stored in a ``const`` array) against that build's
own headers, including ``internal/``, and reads the values back from the object file's
``.memlens_probe`` section (nothing is executed, so the same probe works with a cross compiler). Structs that
CPython keeps private in ``.c`` files (3.8-3.11 ``arena_object``/``pool_header``, 3.8-3.10
``PyDictKeysObject``/``PyModuleObject``) are read from the DWARF of the build's libpython with
gdb. Arena and pool sizes come from the build's own ``sys._debugmallocstats()``.

Tables are emitted per minor version and per architecture. x86_64 is compiled with the host
gcc; aarch64 with ``aarch64-linux-gnu-gcc`` (Debian ``gcc-aarch64-linux-gnu``) against the
same headers: the probe never runs, so only the compiler's ABI (LP64, glibc's aarch64
``pthread_mutex_t``) changes. Values that come from DWARF or from running the interpreter
exist only for the host; the generator copies them to aarch64 only for private structs made of
pointers and 32-bit integers (no platform types), and says so in the generated file.

Builds of the same minor must agree (e.g. pyenv 3.11.7 and Debian 3.11.2 headers); a
disagreement stops the generator.

Usage: python3 scripts/gen_layouts.py [--check] [--extra MINOR=INCLUDE_DIR[=PYTHON]]...
(--check: fail if the file would change; pass the same --extra arguments.)

3.14 (no pyenv build here) was generated from Debian sid's libpython3.14-dev 3.14.10 headers,
and its interpreter was run for sys._debugmallocstats() and the tests, without installing
anything system-wide:

    mkdir -p /tmp/sid/lists/partial /tmp/sid/cache/archives/partial
    echo "deb http://deb.debian.org/debian sid main" > /tmp/sid/sources.list
    A="-o Dir::Etc::SourceList=/tmp/sid/sources.list -o Dir::Etc::SourceParts=/dev/null
       -o Dir::State::Lists=/tmp/sid/lists -o Dir::Cache=/tmp/sid/cache"
    apt-get $A update && (cd /tmp/sid && apt-get $A download libpython3.14-dev \
        libpython3.14 libpython3.14-minimal libpython3.14-stdlib python3.14-minimal libc6 \
        zlib1g libexpat1)
    for d in /tmp/sid/*.deb; do dpkg -x $d /tmp/sid/root; done
    # /tmp/sid/python3.14: exec the sid ld.so with --library-path on usr/bin/python3.14
    python3 scripts/gen_layouts.py --extra 14=/tmp/sid/root/usr/include/python3.14=/tmp/sid/python3.14

aarch64 has no 3.14 table: Debian's multiarch pyconfig.h ships only the host's variant.
"""

import glob
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "memlens-cpython", "src", "layouts", "generated.rs")

V = lambda minor: "PY_VERSION_HEX >= 0x030%X0000" % minor  # noqa: E731
BELOW = lambda minor: "PY_VERSION_HEX < 0x030%X0000" % minor  # noqa: E731

# (name, C expression, preprocessor condition or None)
PROBE = [
    ("runtime_size", "sizeof(_PyRuntimeState)", None),
    ("runtime_interpreters_head", "offsetof(_PyRuntimeState, interpreters.head)", None),
    ("runtime_gc", "offsetof(_PyRuntimeState, gc)", BELOW(9)),
    ("interp_next", "offsetof(PyInterpreterState, next)", None),
    ("interp_threads_head", "offsetof(PyInterpreterState, tstate_head)", BELOW(11)),
    ("interp_threads_head", "offsetof(PyInterpreterState, threads.head)", V(11)),
    ("interp_modules", "offsetof(PyInterpreterState, modules)", BELOW(12)),
    ("interp_modules", "offsetof(PyInterpreterState, imports.modules)", V(12)),
    ("interp_gc", "offsetof(PyInterpreterState, gc)", V(9)),
    ("interp_obmalloc", "offsetof(PyInterpreterState, obmalloc)", V(12)),
    ("tstate_next", "offsetof(PyThreadState, next)", None),
    ("tstate_interp", "offsetof(PyThreadState, interp)", None),
    ("tstate_frame", "offsetof(PyThreadState, frame)", BELOW(11)),
    ("tstate_cframe", "offsetof(PyThreadState, cframe)", V(11) + " && " + BELOW(13)),
    ("tstate_current_frame", "offsetof(PyThreadState, current_frame)", V(13)),
    ("tstate_thread_id", "offsetof(PyThreadState, thread_id)", None),
    ("tstate_native_thread_id", "offsetof(PyThreadState, native_thread_id)", V(11)),
    ("cframe_current_frame", "offsetof(_PyCFrame, current_frame)", V(11) + " && " + BELOW(13)),
    ("frame_back", "offsetof(PyFrameObject, f_back)", BELOW(11)),
    ("frame_code", "offsetof(PyFrameObject, f_code)", BELOW(11)),
    ("frame_lasti", "offsetof(PyFrameObject, f_lasti)", BELOW(11)),
    ("iframe_code", "offsetof(_PyInterpreterFrame, f_code)", V(11) + " && " + BELOW(13)),
    ("iframe_code", "offsetof(_PyInterpreterFrame, f_executable)", V(13)),
    ("iframe_previous", "offsetof(_PyInterpreterFrame, previous)", V(11)),
    ("iframe_instr", "offsetof(_PyInterpreterFrame, prev_instr)", V(11) + " && " + BELOW(13)),
    ("iframe_instr", "offsetof(_PyInterpreterFrame, instr_ptr)", V(13)),
    ("iframe_owner", "offsetof(_PyInterpreterFrame, owner)", V(11)),
    ("frame_owned_by_cstack", "FRAME_OWNED_BY_CSTACK", V(12)),
    ("frame_owned_by_interpreter", "FRAME_OWNED_BY_INTERPRETER", V(14)),
    ("stackref_tag_bits", "Py_TAG_BITS", V(14)),
    ("code_filename", "offsetof(PyCodeObject, co_filename)", None),
    ("code_name", "offsetof(PyCodeObject, co_name)", None),
    ("code_qualname", "offsetof(PyCodeObject, co_qualname)", V(11)),
    ("code_firstlineno", "offsetof(PyCodeObject, co_firstlineno)", None),
    ("code_linetable", "offsetof(PyCodeObject, co_lnotab)", BELOW(10)),
    ("code_linetable", "offsetof(PyCodeObject, co_linetable)", V(10)),
    ("code_code_adaptive", "offsetof(PyCodeObject, co_code_adaptive)", V(11)),
    ("code_consts", "offsetof(PyCodeObject, co_consts)", None),
    ("code_names", "offsetof(PyCodeObject, co_names)", None),
    ("object_type", "offsetof(PyObject, ob_type)", None),
    ("var_size", "offsetof(PyVarObject, ob_size)", None),
    ("type_name", "offsetof(PyTypeObject, tp_name)", None),
    ("type_basicsize", "offsetof(PyTypeObject, tp_basicsize)", None),
    ("type_itemsize", "offsetof(PyTypeObject, tp_itemsize)", None),
    ("type_flags", "offsetof(PyTypeObject, tp_flags)", None),
    ("type_dictoffset", "offsetof(PyTypeObject, tp_dictoffset)", None),
    ("type_members", "offsetof(PyTypeObject, tp_members)", None),
    ("type_base", "offsetof(PyTypeObject, tp_base)", None),
    ("type_dict", "offsetof(PyTypeObject, tp_dict)", None),
    ("type_bases", "offsetof(PyTypeObject, tp_bases)", None),
    ("type_mro", "offsetof(PyTypeObject, tp_mro)", None),
    ("type_cache", "offsetof(PyTypeObject, tp_cache)", None),
    ("type_size", "sizeof(PyTypeObject)", None),
    ("heaptype_size", "sizeof(PyHeapTypeObject)", None),
    ("heaptype_name", "offsetof(PyHeapTypeObject, ht_name)", None),
    ("heaptype_cached_keys", "offsetof(PyHeapTypeObject, ht_cached_keys)", None),
    ("heaptype_module", "offsetof(PyHeapTypeObject, ht_module)", V(9)),
    ("member_size", "sizeof(PyMemberDef)", None),
    ("member_type", "offsetof(PyMemberDef, type)", None),
    ("member_offset", "offsetof(PyMemberDef, offset)", None),
    ("member_t_object_ex", "T_OBJECT_EX", BELOW(12)),
    ("member_t_object_ex", "Py_T_OBJECT_EX", V(12)),
    ("list_item", "offsetof(PyListObject, ob_item)", None),
    ("list_allocated", "offsetof(PyListObject, allocated)", None),
    ("tuple_item", "offsetof(PyTupleObject, ob_item)", None),
    ("dict_used", "offsetof(PyDictObject, ma_used)", None),
    ("dict_keys", "offsetof(PyDictObject, ma_keys)", None),
    ("dict_values", "offsetof(PyDictObject, ma_values)", None),
    ("dict_size", "sizeof(PyDictObject)", None),
    ("dictkeys_refcnt", "offsetof(PyDictKeysObject, dk_refcnt)", V(11)),
    ("dictkeys_log2_size", "offsetof(PyDictKeysObject, dk_log2_size)", V(11)),
    ("dictkeys_log2_index_bytes", "offsetof(PyDictKeysObject, dk_log2_index_bytes)", V(11)),
    ("dictkeys_kind", "offsetof(PyDictKeysObject, dk_kind)", V(11)),
    ("dictkeys_usable", "offsetof(PyDictKeysObject, dk_usable)", V(11)),
    ("dictkeys_nentries", "offsetof(PyDictKeysObject, dk_nentries)", V(11)),
    ("dictkeys_indices", "offsetof(PyDictKeysObject, dk_indices)", V(11)),
    ("dictkeys_size", "sizeof(PyDictKeysObject)", V(11)),
    ("dictvalues_values", "offsetof(PyDictValues, values)", V(11)),
    ("dict_kind_unicode", "DICT_KEYS_UNICODE", V(11)),
    ("bytes_sval", "offsetof(PyBytesObject, ob_sval)", None),
    ("set_fill", "offsetof(PySetObject, fill)", None),
    ("set_used", "offsetof(PySetObject, used)", None),
    ("set_mask", "offsetof(PySetObject, mask)", None),
    ("set_table", "offsetof(PySetObject, table)", None),
    ("set_smalltable", "offsetof(PySetObject, smalltable)", None),
    ("set_size", "sizeof(PySetObject)", None),
    ("str_length", "offsetof(PyASCIIObject, length)", None),
    ("str_state", "offsetof(PyASCIIObject, state)", None),
    ("str_ascii_size", "sizeof(PyASCIIObject)", None),
    ("str_compact_size", "sizeof(PyCompactUnicodeObject)", None),
    ("str_utf8_length", "offsetof(PyCompactUnicodeObject, utf8_length)", None),
    ("str_utf8", "offsetof(PyCompactUnicodeObject, utf8)", None),
    ("str_wstr", "offsetof(PyASCIIObject, wstr)", BELOW(12)),
    ("str_wstr_length", "offsetof(PyCompactUnicodeObject, wstr_length)", BELOW(12)),
    ("long_digits", "offsetof(PyLongObject, ob_digit)", BELOW(12)),
    ("long_digits", "offsetof(PyLongObject, long_value.ob_digit)", V(12)),
    ("long_tag", "offsetof(PyLongObject, long_value.lv_tag)", V(12)),
    ("long_digit_size", "sizeof(digit)", None),
    ("func_code", "offsetof(PyFunctionObject, func_code)", None),
    ("func_globals", "offsetof(PyFunctionObject, func_globals)", None),
    ("func_builtins", "offsetof(PyFunctionObject, func_builtins)", V(10)),
    ("func_module", "offsetof(PyFunctionObject, func_module)", None),
    ("func_defaults", "offsetof(PyFunctionObject, func_defaults)", None),
    ("func_kwdefaults", "offsetof(PyFunctionObject, func_kwdefaults)", None),
    ("func_doc", "offsetof(PyFunctionObject, func_doc)", None),
    ("func_name", "offsetof(PyFunctionObject, func_name)", None),
    ("func_dict", "offsetof(PyFunctionObject, func_dict)", None),
    ("func_closure", "offsetof(PyFunctionObject, func_closure)", None),
    ("func_annotations", "offsetof(PyFunctionObject, func_annotations)", None),
    ("func_qualname", "offsetof(PyFunctionObject, func_qualname)", None),
    ("func_typeparams", "offsetof(PyFunctionObject, func_typeparams)", V(12)),
    ("cell_ref", "offsetof(PyCellObject, ob_ref)", None),
    ("module_dict", "offsetof(PyModuleObject, md_dict)", V(11)),
    ("gc_head_size", "sizeof(PyGC_Head)", None),
    ("gc_generations", "offsetof(struct _gc_runtime_state, generations)", None),
    ("gc_generation_size", "sizeof(struct gc_generation)", None),
    ("gc_generation_threshold", "offsetof(struct gc_generation, threshold)", None),
    ("gc_generation_count", "offsetof(struct gc_generation, count)", None),
    ("gc_permanent", "offsetof(struct _gc_runtime_state, permanent_generation)", None),
    ("gc_stats", "offsetof(struct _gc_runtime_state, generation_stats)", None),
    ("gc_stats_size", "sizeof(struct gc_generation_stats)", None),
    ("gc_stats_collections", "offsetof(struct gc_generation_stats, collections)", None),
    ("gc_stats_collected", "offsetof(struct gc_generation_stats, collected)", None),
    ("gc_stats_uncollectable", "offsetof(struct gc_generation_stats, uncollectable)", None),
    ("gc_collecting", "offsetof(struct _gc_runtime_state, collecting)", None),
    ("obmalloc_arenas", "offsetof(struct _obmalloc_state, mgmt.arenas)", V(12)),
    ("obmalloc_maxarenas", "offsetof(struct _obmalloc_state, mgmt.maxarenas)", V(12)),
    ("obmalloc_narenas", "offsetof(struct _obmalloc_state, mgmt.narenas_currently_allocated)", V(12)),
    ("arena_size_of", "sizeof(struct arena_object)", V(12)),
    ("arena_address", "offsetof(struct arena_object, address)", V(12)),
    ("arena_pool_address", "offsetof(struct arena_object, pool_address)", V(12)),
    ("arena_nfreepools", "offsetof(struct arena_object, nfreepools)", V(12)),
    ("arena_ntotalpools", "offsetof(struct arena_object, ntotalpools)", V(12)),
    ("pool_size_of", "sizeof(struct pool_header)", V(12)),
    ("pool_count", "offsetof(struct pool_header, ref.count)", V(12)),
    ("pool_szidx", "offsetof(struct pool_header, szidx)", V(12)),
    ("pymalloc_alignment", "ALIGNMENT", V(12)),
    ("arena_size", "ARENA_SIZE", V(12)),
    ("pool_size", "POOL_SIZE", V(12)),
    ("tpflags_heaptype", "Py_TPFLAGS_HEAPTYPE", None),
    ("tpflags_have_gc", "Py_TPFLAGS_HAVE_GC", None),
    ("tpflags_managed_dict", "Py_TPFLAGS_MANAGED_DICT", V(11)),
    ("tpflags_managed_weakref", "Py_TPFLAGS_MANAGED_WEAKREF", V(12)),
    ("tpflags_inline_values", "Py_TPFLAGS_INLINE_VALUES", V(13)),
    ("tpflags_long_subclass", "Py_TPFLAGS_LONG_SUBCLASS", None),
    ("tpflags_list_subclass", "Py_TPFLAGS_LIST_SUBCLASS", None),
    ("tpflags_tuple_subclass", "Py_TPFLAGS_TUPLE_SUBCLASS", None),
    ("tpflags_bytes_subclass", "Py_TPFLAGS_BYTES_SUBCLASS", None),
    ("tpflags_unicode_subclass", "Py_TPFLAGS_UNICODE_SUBCLASS", None),
    ("tpflags_dict_subclass", "Py_TPFLAGS_DICT_SUBCLASS", None),
    ("tpflags_type_subclass", "Py_TPFLAGS_TYPE_SUBCLASS", None),
    ("managed_dict_before", "-(MANAGED_DICT_OFFSET)", V(13)),
    # _Py_DebugOffsets: where each cross-checked value sits inside the struct.
    ("dbg_size", "sizeof(_Py_DebugOffsets)", V(13)),
    ("dbg_version", "offsetof(_Py_DebugOffsets, version)", V(13)),
    ("dbg_free_threaded", "offsetof(_Py_DebugOffsets, free_threaded)", V(13)),
    ("dbg_runtime_interpreters_head", "offsetof(_Py_DebugOffsets, runtime_state.interpreters_head)", V(13)),
    ("dbg_interp_next", "offsetof(_Py_DebugOffsets, interpreter_state.next)", V(13)),
    ("dbg_interp_threads_head", "offsetof(_Py_DebugOffsets, interpreter_state.threads_head)", V(13)),
    ("dbg_interp_gc", "offsetof(_Py_DebugOffsets, interpreter_state.gc)", V(13)),
    ("dbg_interp_modules", "offsetof(_Py_DebugOffsets, interpreter_state.imports_modules)", V(13)),
    ("dbg_tstate_next", "offsetof(_Py_DebugOffsets, thread_state.next)", V(13)),
    ("dbg_tstate_current_frame", "offsetof(_Py_DebugOffsets, thread_state.current_frame)", V(13)),
    ("dbg_tstate_thread_id", "offsetof(_Py_DebugOffsets, thread_state.thread_id)", V(13)),
    ("dbg_tstate_native_thread_id", "offsetof(_Py_DebugOffsets, thread_state.native_thread_id)", V(13)),
    ("dbg_iframe_previous", "offsetof(_Py_DebugOffsets, interpreter_frame.previous)", V(13)),
    ("dbg_iframe_code", "offsetof(_Py_DebugOffsets, interpreter_frame.executable)", V(13)),
    ("dbg_iframe_instr", "offsetof(_Py_DebugOffsets, interpreter_frame.instr_ptr)", V(13)),
    ("dbg_iframe_owner", "offsetof(_Py_DebugOffsets, interpreter_frame.owner)", V(13)),
    ("dbg_code_filename", "offsetof(_Py_DebugOffsets, code_object.filename)", V(13)),
    ("dbg_code_name", "offsetof(_Py_DebugOffsets, code_object.name)", V(13)),
    ("dbg_code_qualname", "offsetof(_Py_DebugOffsets, code_object.qualname)", V(13)),
    ("dbg_code_linetable", "offsetof(_Py_DebugOffsets, code_object.linetable)", V(13)),
    ("dbg_code_firstlineno", "offsetof(_Py_DebugOffsets, code_object.firstlineno)", V(13)),
    ("dbg_code_code_adaptive", "offsetof(_Py_DebugOffsets, code_object.co_code_adaptive)", V(13)),
    ("dbg_object_type", "offsetof(_Py_DebugOffsets, pyobject.ob_type)", V(13)),
    ("dbg_type_name", "offsetof(_Py_DebugOffsets, type_object.tp_name)", V(13)),
    ("dbg_tuple_item", "offsetof(_Py_DebugOffsets, tuple_object.ob_item)", V(13)),
    ("dbg_list_item", "offsetof(_Py_DebugOffsets, list_object.ob_item)", V(13)),
    ("dbg_dict_keys", "offsetof(_Py_DebugOffsets, dict_object.ma_keys)", V(13)),
    ("dbg_dict_values", "offsetof(_Py_DebugOffsets, dict_object.ma_values)", V(13)),
    ("dbg_str_length", "offsetof(_Py_DebugOffsets, unicode_object.length)", V(13)),
    ("dbg_str_state", "offsetof(_Py_DebugOffsets, unicode_object.state)", V(13)),
    ("dbg_gc_collecting", "offsetof(_Py_DebugOffsets, gc.collecting)", V(13)),
]

# Private structs, read from DWARF with gdb: (name, gdb expression, min minor, max minor).
DWARF = [
    ("module_dict", "(long)&((PyModuleObject*)0)->md_dict", 8, 10),
    ("dictkeys_refcnt", "(long)&((PyDictKeysObject*)0)->dk_refcnt", 8, 10),
    ("dictkeys_size_field", "(long)&((PyDictKeysObject*)0)->dk_size", 8, 10),
    ("dictkeys_lookup", "(long)&((PyDictKeysObject*)0)->dk_lookup", 8, 10),
    ("dictkeys_usable", "(long)&((PyDictKeysObject*)0)->dk_usable", 8, 10),
    ("dictkeys_nentries", "(long)&((PyDictKeysObject*)0)->dk_nentries", 8, 10),
    ("dictkeys_indices", "(long)&((PyDictKeysObject*)0)->dk_indices", 8, 10),
    ("dictkeys_size", "sizeof(PyDictKeysObject)", 8, 10),
    ("arena_size_of", "sizeof(struct arena_object)", 8, 11),
    ("arena_address", "(long)&((struct arena_object*)0)->address", 8, 11),
    ("arena_pool_address", "(long)&((struct arena_object*)0)->pool_address", 8, 11),
    ("arena_nfreepools", "(long)&((struct arena_object*)0)->nfreepools", 8, 11),
    ("arena_ntotalpools", "(long)&((struct arena_object*)0)->ntotalpools", 8, 11),
    ("pool_size_of", "sizeof(struct pool_header)", 8, 11),
    ("pool_count", "(long)&((struct pool_header*)0)->ref.count", 8, 11),
    ("pool_szidx", "(long)&((struct pool_header*)0)->szidx", 8, 11),
]

HEADERS = """
#define Py_BUILD_CORE 1
#include <stddef.h>
#include <Python.h>
#include <frameobject.h>
#include <structmember.h>
#if PY_VERSION_HEX < 0x03090000
#include <internal/pycore_pystate.h>
#else
#include <internal/pycore_runtime.h>
#include <internal/pycore_interp.h>
#include <internal/pycore_gc.h>
#endif
#if PY_VERSION_HEX >= 0x030B0000
#include <internal/pycore_frame.h>
#include <internal/pycore_dict.h>
#include <internal/pycore_code.h>
#include <internal/pycore_moduleobject.h>
#endif
#if PY_VERSION_HEX >= 0x030C0000
#include <internal/pycore_obmalloc.h>
#include <internal/pycore_object.h>
#endif
#if PY_VERSION_HEX >= 0x030E0000
#include <internal/pycore_interp_structs.h>
#include <internal/pycore_runtime_structs.h>
#include <internal/pycore_interpframe_structs.h>
#include <internal/pycore_debug_offsets.h>
#include <internal/pycore_stackref.h>
#endif
"""


def probe_source():
    # its own section: headers may put other constants in .rodata
    lines = [HEADERS, '__attribute__((section(".memlens_probe"), used))',
             "const unsigned long long memlens_probe[] = {"]
    for i, (name, expr, cond) in enumerate(PROBE):
        if cond:
            lines.append("#if %s" % cond)
            lines.append("  [%d] = (unsigned long long)(%s) + 1ULL," % (i, expr))
            lines.append("#endif")
        else:
            lines.append("  [%d] = (unsigned long long)(%s) + 1ULL," % (i, expr))
    # value 0 = absent; the array has one slot per probe entry
    lines.append("  [%d] = 0 };" % len(PROBE))
    return "\n".join(lines) + "\n"


def elf_section(path, wanted):
    """Returns the bytes of a named section of an ELF64 little-endian object file."""
    data = open(path, "rb").read()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "ELF64 LE expected"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    secs = []
    for i in range(shnum):
        name, typ, flags, addr, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        secs.append((name, off, size, typ))
    stroff = secs[shstrndx][1]
    for name, off, size, typ in secs:
        n = data[stroff + name:data.index(b"\0", stroff + name)].decode()
        if n == wanted or n.startswith(wanted + "."):
            return data[off:off + size]
    raise RuntimeError("no section %s in %s" % (wanted, path))


def run_probe(cc, include):
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "probe.c")
        obj = os.path.join(d, "probe.o")
        open(src, "w").write(probe_source())
        # the parent folder too: Debian's pyconfig.h includes <x86_64-linux-gnu/python3.X/...>
        subprocess.run([cc, "-w", "-O0", "-c", "-I", include, "-I", os.path.dirname(include), src,
                        "-o", obj], check=True)
        raw = elf_section(obj, ".memlens_probe")
    values = struct.unpack_from("<%dQ" % (len(PROBE) + 1), raw, 0)
    out = {}
    for (name, _expr, _cond), v in zip(PROBE, values):
        if v:
            assert name not in out, name
            out[name] = v - 1
    return out


def run_dwarf(lib, minor):
    wanted = [(n, e) for n, e, lo, hi in DWARF if lo <= minor <= hi]
    if not wanted:
        return {}
    cmd = ["gdb", "-nx", "-batch"]
    for _n, e in wanted:
        cmd += ["-ex", "print %s" % e]
    cmd.append(lib)
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    vals = re.findall(r"^\$\d+ = (\d+)$", res.stdout, re.M)
    if len(vals) != len(wanted):
        raise RuntimeError("gdb gave %d values for %d queries on %s:\n%s%s" % (
            len(vals), len(wanted), lib, res.stdout, res.stderr))
    return {n: int(v) for (n, _e), v in zip(wanted, vals)}


def malloc_sizes(python):
    res = subprocess.run([python, "-c", "import sys; sys._debugmallocstats()"],
                         capture_output=True, text=True, check=True)
    text = res.stdout + res.stderr
    arena = int(re.search(r"arenas \* (\d+) bytes/arena", text).group(1))
    pool = re.search(r"unused pools \* (\d+) bytes", text)
    # every supported version carves 64 pools per arena (ARENA_SIZE / POOL_SIZE)
    pool = int(pool.group(1)) if pool else arena // 64
    # the size-class table's first row: class 0's block size is ALIGNMENT
    align = int(re.search(r"^\s+0\s+(\d+)\s", text, re.M).group(1))
    return {"arena_size": arena, "pool_size": pool, "pymalloc_alignment": align}


def pyenv_builds():
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    builds = []
    for minor in range(8, 14):
        found = sorted(glob.glob(os.path.join(root, "versions", "3.%d.*" % minor)))
        found = [f for f in found if re.fullmatch(r"3\.\d+\.\d+", os.path.basename(f))]
        if not found:
            print("warning: no pyenv 3.%d" % minor, file=sys.stderr)
            continue
        prefix = found[-1]
        try:
            prefix = subprocess.run(["pyenv", "prefix", os.path.basename(prefix)], capture_output=True,
                                    text=True, check=True).stdout.strip() or prefix
        except (OSError, subprocess.CalledProcessError):
            pass
        builds.append({
            "label": "pyenv " + os.path.basename(prefix),
            "minor": minor,
            "include": os.path.join(prefix, "include", "python3.%d" % minor),
            "lib": os.path.join(prefix, "lib", "libpython3.%d.so.1.0" % minor),
            "python": os.path.join(prefix, "bin", "python3.%d" % minor),
        })
    return builds


def debian_builds():
    out = []
    for inc in sorted(glob.glob("/usr/include/python3.*")):
        m = re.fullmatch(r"/usr/include/python3\.(\d+)", inc)
        if m and os.path.exists(os.path.join(inc, "internal")):
            out.append({"label": "debian " + os.path.basename(inc), "minor": int(m.group(1)),
                        "include": inc, "lib": None, "python": None})
    return out


def extra_builds():
    """`--extra MINOR=INCLUDE_DIR[=PYTHON]`: headers of a build not found by the scans (e.g.
    Debian sid's libpython3.14-dev unpacked with dpkg -x), optionally with a command that runs
    that interpreter (for sys._debugmallocstats())."""
    out = []
    args = sys.argv[1:]
    for i, a in enumerate(args):
        if a == "--extra" and i + 1 < len(args):
            parts = args[i + 1].split("=")
            out.append({"label": "extra " + parts[1], "minor": int(parts[0]), "include": parts[1],
                        "lib": None, "python": parts[2] if len(parts) > 2 else None})
    return out


def main():
    check = "--check" in sys.argv
    cross = shutil.which("aarch64-linux-gnu-gcc")
    tables = {"x86_64": {}, "aarch64": {}}
    sources = {}
    for b in pyenv_builds() + debian_builds() + extra_builds():
        minor = b["minor"]
        for arch, cc in (("x86_64", "gcc"), ("aarch64", cross)):
            if cc is None or (arch != "x86_64" and b["lib"] is None):
                # Debian's pyconfig.h is multiarch and includes only the host's variant
                continue
            vals = run_probe(cc, b["include"])
            prev = tables[arch].get(minor)
            if prev is not None:
                common = set(prev) & set(vals)
                diff = {k: (prev[k], vals[k]) for k in common if prev[k] != vals[k]}
                if diff:
                    raise SystemExit("%s %s disagrees with %s: %s" % (arch, b["label"], sources[minor], diff))
                prev.update({k: v for k, v in vals.items() if k not in prev})
            else:
                tables[arch][minor] = vals
        if b["lib"] or b["python"]:
            extra = run_dwarf(b["lib"], minor) if b["lib"] else {}
            sizes = malloc_sizes(b["python"])
            for k, v in sizes.items():
                have = tables["x86_64"][minor].get(k)
                if have is not None and have != v:
                    raise SystemExit("%s: %s is %d in the headers, %d at run time" % (b["label"], k, have, v))
            extra.update(sizes)
            tables["x86_64"][minor].update(extra)
            if cross and minor in tables["aarch64"]:
                # private structs of pointers and C integers: LP64 gives the same offsets
                tables["aarch64"][minor].update(extra)
            sources.setdefault(minor, b["label"])
        else:
            sources.setdefault(minor, b["label"])
    text = emit(tables, sources, cross is not None)
    if check:
        old = open(OUT).read() if os.path.exists(OUT) else ""
        if old != text:
            raise SystemExit("generated layouts are out of date: run scripts/gen_layouts.py")
        return
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    open(OUT, "w").write(text)
    print("wrote", OUT, {a: sorted(t) for a, t in tables.items()})


def emit(tables, sources, have_cross):
    names = []
    for arch in tables.values():
        for t in arch.values():
            for k in t:
                if k not in names:
                    names.append(k)
    every = [n for n in names if all(n in t for a in tables.values() for t in a.values())]
    out = ["// @generated by scripts/gen_layouts.py from installed CPython headers; do not edit.",
           "// Sources: " + ", ".join("3.%d: %s" % (m, s) for m, s in sorted(sources.items())),
           "// aarch64: " + ("compiled with aarch64-linux-gnu-gcc against the same headers; private"
                             " structs (DWARF) and arena/pool sizes copied from x86_64 (LP64, no"
                             " platform types)" if have_cross else "no cross compiler: none"),
           "",
           "/// Offsets, sizes and constants of one CPython minor version on one architecture.",
           "/// Fields absent from some version are `Option`s.",
           "#[derive(Debug, Clone, Copy, PartialEq, Eq)]",
           "#[allow(missing_docs)]",
           "pub struct Layout {",
           "    /// `(3, minor)`.",
           "    pub version: (u8, u8),"]
    for n in names:
        out.append("    pub %s: %s," % (n, "u64" if n in every else "Option<u64>"))
    out.append("}")
    out.append("")
    for arch in ("x86_64", "aarch64"):
        rows = tables[arch]
        out.append("/// Tables for %s Linux, one per minor version." % arch)
        out.append("pub static %s: &[Layout] = &[" % arch.upper())
        for minor in sorted(rows):
            t = rows[minor]
            out.append("    Layout {")
            out.append("        version: (3, %d)," % minor)
            for n in names:
                if n in every:
                    out.append("        %s: %d," % (n, t[n]))
                elif n in t:
                    out.append("        %s: Some(%d)," % (n, t[n]))
                else:
                    out.append("        %s: None," % n)
            out.append("    },")
        out.append("];")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
