#!/usr/bin/env python3
"""Generates crates/memlens-cpython/src/layouts/generated.rs from CPython builds' own definitions.

Builds: every pyenv CPython 3.8-3.13 (``pyenv prefix`` folders or ``$PYENV_ROOT/versions``), the
Debian ``/usr/include/python3.X`` headers, and Debian sid's CPython 3.14 and 3.15 as
scripts/test-pythons.sh unpacks them under ``$MEMLENS_TEST_CACHE`` (default
~/.cache/memlens-test). For each it compiles a C probe (``offsetof``/``sizeof``/macro values
stored in a ``const`` array, plus bit-field masks of ``PyASCIIObject.state`` as initialised
objects) against that build's own headers, including ``internal/``, and reads the values back
from the object file's ``.memlens_probe``/``.memlens_bits`` sections: nothing is executed, so
the same probe works with a cross compiler.

Structs CPython keeps private in ``.c`` files (3.8-3.11 ``arena_object``/``pool_header``,
3.8-3.10 ``PyDictKeysObject``, every version's ``dequeobject``/``block``, ``arrayobject``,
``bytesio``, ``PyODictObject``/``_ODictNode``, ``_PyCodeObjectExtra``) are read from DWARF with
gdb: for pyenv builds from their libpython and ``lib-dynload/array*.so``; for sid builds (whose
release build has no debug information) from the objects of sid's ``libpython3.Xd.a`` (the debug
build of the same source), after checking that the debug build lays out the public structs as
the release headers do. Arena and pool sizes come from the build's own
``sys._debugmallocstats()``.

numpy: for each numpy that scripts/test-pythons.sh installs (1.x and 2.x), the ndarray and
dtype layout from numpy's own headers (``numpy.get_include()``), checked against the running
numpy's ``ndarray.__basicsize__``.

Tables are emitted per minor version and per architecture. x86_64 is compiled with the host
gcc; aarch64 with ``aarch64-linux-gnu-gcc`` (Debian ``gcc-aarch64-linux-gnu``) against the
same headers (for sid, with the arm64 ``pyconfig.h`` of ``libpython3.X-dev:arm64``): the probe
never runs, so only the compiler's ABI (LP64, glibc's aarch64 ``pthread_mutex_t``) changes.
Values that come from DWARF or from running the interpreter exist only for the host; the
generator copies them to aarch64 only for private structs made of pointers and C integers (no
platform types), and says so in the generated file.

Builds of the same minor must agree (e.g. pyenv 3.11.7 and Debian 3.11.2 headers); a
disagreement stops the generator.

Usage: python3 scripts/gen_layouts.py [--check] [--extra MINOR=INCLUDE_DIR[=PYTHON]]...
(--check: regenerate in memory and fail if the checked-in file differs; scripts/test.sh runs
it after scripts/test-pythons.sh.)
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
CACHE = os.environ.get("MEMLENS_TEST_CACHE") or os.path.expanduser("~/.cache/memlens-test")

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
    ("tstate_datastack_chunk", "offsetof(PyThreadState, datastack_chunk)", V(11)),
    ("stackchunk_size", "offsetof(_PyStackChunk, size)", V(11)),
    ("tstate_alloc_size", "sizeof(PyThreadState)", BELOW(13)),
    ("tstate_alloc_size", "sizeof(_PyThreadStateImpl)", V(13)),
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
    ("frame_owned_by_cstack", "FRAME_OWNED_BY_CSTACK", V(12) + " && " + BELOW(15)),
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
    ("descr_type", "offsetof(PyDescrObject, d_type)", None),
    ("descr_name", "offsetof(PyDescrObject, d_name)", None),
    ("descr_qualname", "offsetof(PyDescrObject, d_qualname)", None),
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
    # --- managed dicts (3.11+): where an instance without tp_dictoffset keeps its dict or values,
    # counted back from the object (crate::dicts::managed) ---
    # 3.11: the dict at MANAGED_DICT_OFFSET, a separate values pointer before it
    # (pycore_object.h: _PyObject_ValuesPointer returns ((PyDictValues **)obj)-4)
    ("managed_dict_before", "-(MANAGED_DICT_OFFSET)", V(11) + " && " + BELOW(12)),
    ("managed_values_before", "4 * sizeof(PyDictValues *)", V(11) + " && " + BELOW(12)),
    # 3.12: one PyDictOrValues word (pycore_object.h: _PyObject_DictOrValuesPointer returns
    # ((PyDictOrValues *)obj)-3; no MANAGED_DICT_OFFSET in this version); a values pointer is
    # stored minus one, so an odd word is values (_PyDictOrValues_IsValues: `& 1`,
    # _PyDictOrValues_GetValues: `+ 1`)
    ("managed_dict_before", "3 * sizeof(PyDictOrValues)", V(12) + " && " + BELOW(13)),
    ("managed_dict_values_tag", "1", V(12) + " && " + BELOW(13)),
    # 3.13+: the dict at MANAGED_DICT_OFFSET; values inline after the object
    # (Py_TPFLAGS_INLINE_VALUES), in use while PyDictValues.valid is set
    ("managed_dict_before", "-(MANAGED_DICT_OFFSET)", V(13)),
    ("dictvalues_valid", "offsetof(PyDictValues, valid)", V(13)),
    # 3.12 embeds pymalloc's state in the interpreter, 3.13+ points to it (crate::pymalloc)
    ("obmalloc_by_pointer",
     "_Generic(((PyInterpreterState *)0)->obmalloc, struct _obmalloc_state *: 1, default: 0)",
     V(12)),
    # How a code object's line table is read (crate::linetable): 1 = co_lnotab over byte
    # offsets (3.8-3.9, Objects/lnotab_notes.txt), 2 = 3.10's co_linetable over byte offsets
    # (f_lasti counts code units), 3 = the location table over code units (3.11+,
    # Objects/locations.md). Stated by version: no header value says it.
    ("linetable_format", "1", BELOW(10)),
    ("linetable_format", "2", V(10) + " && " + BELOW(11)),
    ("linetable_format", "3", V(11)),
    # 3.15: generation_stats is a pointer to rings of cumulative records; the current record of
    # each ring is items[index]
    ("gc_stats_young", "offsetof(struct gc_stats, young)", V(15)),
    ("gc_stats_old", "offsetof(struct gc_stats, old)", V(15)),
    ("gc_stats_old_size", "sizeof(struct gc_old_stats_buffer)", V(15)),
    ("gc_stats_young_items", "offsetof(struct gc_young_stats_buffer, items)", V(15)),
    ("gc_stats_old_items", "offsetof(struct gc_old_stats_buffer, items)", V(15)),
    ("gc_stats_young_index", "offsetof(struct gc_young_stats_buffer, index)", V(15)),
    ("gc_stats_old_index", "offsetof(struct gc_old_stats_buffer, index)", V(15)),
    ("gc_stats_young_slots", "GC_YOUNG_STATS_SIZE", V(15)),
    ("gc_stats_old_slots", "GC_OLD_STATS_SIZE", V(15)),
    ("gc_stats_rings_size", "sizeof(struct gc_stats)", V(15)),
    # --- what sys.getsizeof needs (crate::sizes) ---
    ("pointer_size", "sizeof(void *)", None),
    ("object_refcnt", "offsetof(PyObject, ob_refcnt)", None),
    ("object_refcnt_size", "sizeof(((PyObject *)0)->ob_refcnt)", None),
    ("type_methods", "offsetof(PyTypeObject, tp_methods)", None),
    ("method_def_size", "sizeof(PyMethodDef)", None),
    ("method_def_name", "offsetof(PyMethodDef, ml_name)", None),
    ("bytearray_alloc", "offsetof(PyByteArrayObject, ob_alloc)", None),
    ("bytearray_bytes_object", "offsetof(PyByteArrayObject, ob_bytes_object)", V(15)),
    ("bytes_object_size", "_PyBytesObject_SIZE", V(15)),
    ("str_unicode_size", "sizeof(PyUnicodeObject)", None),
    ("str_data", "offsetof(PyUnicodeObject, data)", None),
    ("long_non_size_bits", "_PyLong_NON_SIZE_BITS", V(12)),
    ("dictkeys_entry_size", "sizeof(PyDictKeyEntry)", V(11)),
    ("dictkeys_unicode_entry_size", "sizeof(PyDictUnicodeEntry)", V(11)),
    ("dictentry_key", "offsetof(PyDictKeyEntry, me_key)", V(11)),
    ("dictentry_value", "offsetof(PyDictKeyEntry, me_value)", V(11)),
    ("dictunicode_key", "offsetof(PyDictUnicodeEntry, me_key)", V(11)),
    ("dictunicode_value", "offsetof(PyDictUnicodeEntry, me_value)", V(11)),
    ("dict_kind_general", "DICT_KEYS_GENERAL", V(11)),
    ("set_entry_size", "sizeof(setentry)", None),
    ("set_entry_key", "offsetof(setentry, key)", None),
    ("frameobject_size", "sizeof(PyFrameObject)", None),
    ("frameobject_frame", "offsetof(PyFrameObject, f_frame)", V(11)),
    ("frameobject_frame_data", "offsetof(PyFrameObject, _f_frame_data)", V(11)),
    ("code_argcount", "offsetof(PyCodeObject, co_argcount)", None),
    ("code_stacksize", "offsetof(PyCodeObject, co_stacksize)", None),
    ("code_nlocals", "offsetof(PyCodeObject, co_nlocals)", BELOW(11)),
    ("code_cellvars", "offsetof(PyCodeObject, co_cellvars)", BELOW(11)),
    ("code_freevars", "offsetof(PyCodeObject, co_freevars)", BELOW(11)),
    ("code_cell2arg", "offsetof(PyCodeObject, co_cell2arg)", BELOW(11)),
    ("code_code", "offsetof(PyCodeObject, co_code)", BELOW(11)),
    ("code_varnames", "offsetof(PyCodeObject, co_varnames)", BELOW(11)),
    ("code_exceptiontable", "offsetof(PyCodeObject, co_exceptiontable)", V(11)),
    ("code_localsplusnames", "offsetof(PyCodeObject, co_localsplusnames)", V(11)),
    ("code_localspluskinds", "offsetof(PyCodeObject, co_localspluskinds)", V(11)),
    ("code_opcache", "offsetof(PyCodeObject, co_opcache)", BELOW(11)),
    ("code_opcache_size", "offsetof(PyCodeObject, co_opcache_size)", BELOW(11)),
    ("opcache_entry_size", "sizeof(_PyOpcache)", BELOW(11)),
    ("code_opcache_size_size", "sizeof(((PyCodeObject *)0)->co_opcache_size)", BELOW(11)),
    ("code_unit_size", "sizeof(_Py_CODEUNIT)", None),
    ("wchar_size", "sizeof(wchar_t)", BELOW(12)),
    ("code_nlocalsplus", "offsetof(PyCodeObject, co_nlocalsplus)", V(11)),
    ("code_framesize", "offsetof(PyCodeObject, co_framesize)", V(12)),
    ("frame_specials_size", "FRAME_SPECIALS_SIZE", V(12)),
    ("code_extra", "offsetof(PyCodeObject, co_extra)", None),
    ("gen_iframe", "offsetof(PyGenObject, gi_iframe)", V(11)),
    ("gen_code", "offsetof(PyGenObject, gi_code)", V(11) + " && " + BELOW(12)),
    ("iframe_localsplus", "offsetof(_PyInterpreterFrame, localsplus)", V(11)),
    ("iframe_size", "sizeof(_PyInterpreterFrame)", V(11)),
    # --- what __sizeof__ does differently by version, stated by version (no header value says
    # it; crate::sizes) ---
    # int.__sizeof__ counts at least one digit from 3.11 (Objects/longobject.c,
    # int___sizeof___impl: Py_MAX(Py_ABS(Py_SIZE(self)), 1))
    ("long_sizeof_min_digits", "1", V(11)),
    # the pre-header sys.getsizeof adds to a static (non-heap) type object: 1 = always (3.11,
    # 3.12: every type has its metatype's pre-header), 2 = only when its metatype is not `type`
    # (3.13+: static builtin types of metatype `type` have none); absent before 3.11: none
    ("static_type_preheader", "1", V(11) + " && " + BELOW(13)),
    ("static_type_preheader", "2", V(13)),
]


# Bit-field masks of PyASCIIObject.state: (name, designated initialiser, condition).
STATE_BITS = [
    ("str_kind_mask", ".kind = 7", None),
    ("str_compact_bit", ".compact = 1", None),
    ("str_ascii_bit", ".ascii = 1", None),
    ("str_ready_bit", ".ready = 1", BELOW(12)),
]

# Values that are the same for every build of a minor version (flags, enum members, bit
# masks): a layout built from _Py_DebugOffsets alone keeps them from the minor's table; every
# other value is an offset or size of one build and comes from _Py_DebugOffsets or not at all.
CONSTANTS = {
    "frame_owned_by_cstack", "frame_owned_by_interpreter", "stackref_tag_bits",
    "member_t_object_ex", "dict_kind_unicode", "dict_kind_general", "long_non_size_bits",
    "str_kind_mask", "str_compact_bit", "str_ascii_bit", "str_ready_bit", "pointer_size",
    "managed_dict_values_tag", "obmalloc_by_pointer", "linetable_format", "long_sizeof_min_digits",
    "static_type_preheader",
}

# _Py_DebugOffsets (3.13+): (table field, member of _Py_DebugOffsets, first minor). Each pair
# is cross-checked at attach, and is what a layout built from the debug offsets alone carries.
DEBUG_PAIRS = [
    ("runtime_size", "runtime_state.size", 13),
    ("runtime_interpreters_head", "runtime_state.interpreters_head", 13),
    ("interp_next", "interpreter_state.next", 13),
    ("interp_threads_head", "interpreter_state.threads_head", 13),
    ("interp_gc", "interpreter_state.gc", 13),
    ("interp_modules", "interpreter_state.imports_modules", 13),
    ("tstate_next", "thread_state.next", 13),
    ("tstate_interp", "thread_state.interp", 13),
    ("tstate_current_frame", "thread_state.current_frame", 13),
    ("tstate_thread_id", "thread_state.thread_id", 13),
    ("tstate_native_thread_id", "thread_state.native_thread_id", 13),
    ("iframe_previous", "interpreter_frame.previous", 13),
    ("iframe_code", "interpreter_frame.executable", 13),
    ("iframe_instr", "interpreter_frame.instr_ptr", 13),
    ("iframe_localsplus", "interpreter_frame.localsplus", 13),
    ("iframe_owner", "interpreter_frame.owner", 13),
    ("iframe_size", "interpreter_frame.size", 13),
    ("code_filename", "code_object.filename", 13),
    ("code_name", "code_object.name", 13),
    ("code_qualname", "code_object.qualname", 13),
    ("code_linetable", "code_object.linetable", 13),
    ("code_firstlineno", "code_object.firstlineno", 13),
    ("code_argcount", "code_object.argcount", 13),
    ("code_code_adaptive", "code_object.co_code_adaptive", 13),
    ("object_type", "pyobject.ob_type", 13),
    ("type_size", "type_object.size", 13),
    ("type_name", "type_object.tp_name", 13),
    ("type_flags", "type_object.tp_flags", 13),
    ("type_basicsize", "type_object.tp_basicsize", 15),
    ("type_dictoffset", "type_object.tp_dictoffset", 15),
    ("heaptype_size", "heap_type_object.size", 15),
    ("heaptype_cached_keys", "heap_type_object.ht_cached_keys", 15),
    ("tuple_item", "tuple_object.ob_item", 13),
    ("var_size", "bytes_object.ob_size", 13),
    ("list_item", "list_object.ob_item", 13),
    ("set_used", "set_object.used", 14),
    ("set_table", "set_object.table", 14),
    ("set_mask", "set_object.mask", 14),
    ("set_size", "set_object.size", 14),
    ("dict_keys", "dict_object.ma_keys", 13),
    ("dict_values", "dict_object.ma_values", 13),
    ("dict_size", "dict_object.size", 13),
    ("long_tag", "long_object.lv_tag", 13),
    ("long_digits", "long_object.ob_digit", 13),
    ("bytes_sval", "bytes_object.ob_sval", 13),
    ("str_length", "unicode_object.length", 13),
    ("str_state", "unicode_object.state", 13),
    ("str_ascii_size", "unicode_object.asciiobject_size", 13),
    ("str_compact_size", "unicode_object.compactunicodeobject_size", 15),
    ("gc_collecting", "gc.collecting", 13),
    ("gc_stats", "gc.generation_stats", 15),
    ("gc_stats_rings_size", "gc.generation_stats_size", 15),
    ("gen_iframe", "gen_object.gi_iframe", 14),
]

# Private structs, read from DWARF with gdb: (name, gdb expression, min minor, max minor,
# unit). The unit says where the definition lives: "libpython" (the interpreter, or for sid the
# object file named after it), "array" (the array module).
DWARF = [
    ("module_dict", "(long)&((PyModuleObject*)0)->md_dict", 8, 10, "libpython"),
    ("dictkeys_refcnt", "(long)&((PyDictKeysObject*)0)->dk_refcnt", 8, 10, "libpython"),
    ("dictkeys_size_field", "(long)&((PyDictKeysObject*)0)->dk_size", 8, 10, "libpython"),
    ("dictkeys_lookup", "(long)&((PyDictKeysObject*)0)->dk_lookup", 8, 10, "libpython"),
    ("dictkeys_usable", "(long)&((PyDictKeysObject*)0)->dk_usable", 8, 10, "libpython"),
    ("dictkeys_nentries", "(long)&((PyDictKeysObject*)0)->dk_nentries", 8, 10, "libpython"),
    ("dictkeys_indices", "(long)&((PyDictKeysObject*)0)->dk_indices", 8, 10, "libpython"),
    ("dictkeys_size", "sizeof(PyDictKeysObject)", 8, 10, "libpython"),
    ("dictkeys_entry_size", "sizeof(PyDictKeyEntry)", 8, 10, "libpython"),
    ("dictentry_key", "(long)&((PyDictKeyEntry*)0)->me_key", 8, 10, "libpython"),
    ("dictentry_value", "(long)&((PyDictKeyEntry*)0)->me_value", 8, 10, "libpython"),
    ("arena_size_of", "sizeof(struct arena_object)", 8, 11, "libpython"),
    ("arena_address", "(long)&((struct arena_object*)0)->address", 8, 11, "libpython"),
    ("arena_pool_address", "(long)&((struct arena_object*)0)->pool_address", 8, 11, "libpython"),
    ("arena_nfreepools", "(long)&((struct arena_object*)0)->nfreepools", 8, 11, "libpython"),
    ("arena_ntotalpools", "(long)&((struct arena_object*)0)->ntotalpools", 8, 11, "libpython"),
    ("pool_size_of", "sizeof(struct pool_header)", 8, 11, "libpython"),
    ("pool_count", "(long)&((struct pool_header*)0)->ref.count", 8, 11, "libpython"),
    ("pool_szidx", "(long)&((struct pool_header*)0)->szidx", 8, 11, "libpython"),
    ("code_extra_size", "sizeof(_PyCodeObjectExtra)", 8, 99, "codeobject"),
    ("code_extra_ce_size", "(long)&((_PyCodeObjectExtra*)0)->ce_size", 8, 99, "codeobject"),
    ("deque_size", "sizeof(dequeobject)", 8, 99, "_collectionsmodule"),
    ("deque_leftindex", "(long)&((dequeobject*)0)->leftindex", 8, 99, "_collectionsmodule"),
    ("deque_block_size", "sizeof(block)", 8, 99, "_collectionsmodule"),
    ("deque_leftblock", "(long)&((dequeobject*)0)->leftblock", 8, 99, "_collectionsmodule"),
    ("deque_block_data", "(long)&((block*)0)->data", 8, 99, "_collectionsmodule"),
    ("deque_block_rightlink", "(long)&((block*)0)->rightlink", 8, 99, "_collectionsmodule"),
    ("deque_blocklen", "sizeof(((block*)0)->data) / sizeof(((block*)0)->data[0])", 8, 99,
     "_collectionsmodule"),
    ("array_size", "sizeof(arrayobject)", 8, 99, "array"),
    ("array_allocated", "(long)&((arrayobject*)0)->allocated", 8, 99, "array"),
    ("array_descr", "(long)&((arrayobject*)0)->ob_descr", 8, 99, "array"),
    ("arraydescr_itemsize", "(long)&((struct arraydescr*)0)->itemsize", 8, 99, "array"),
    ("arraydescr_itemsize_size", "sizeof(((struct arraydescr*)0)->itemsize)", 8, 99, "array"),
    ("bytesio_size", "sizeof(bytesio)", 8, 99, "bytesio"),
    ("bytesio_buf", "(long)&((bytesio*)0)->buf", 8, 99, "bytesio"),
    ("odict_size", "sizeof(PyODictObject)", 8, 99, "odictobject"),
    ("odict_first", "(long)&((PyODictObject*)0)->od_first", 8, 99, "odictobject"),
    ("odict_fast_nodes_size", "(long)&((PyODictObject*)0)->od_fast_nodes_size", 8, 99,
     "odictobject"),
    ("odict_node_size", "sizeof(_ODictNode)", 8, 99, "odictobject"),
    # 3.15's lazy imports keep the code object that declared them (the census follows them)
    ("lazy_import_builtins", "(long)&((PyLazyImportObject*)0)->lz_builtins", 15, 99,
     "lazyimportobject"),
    ("lazy_import_from", "(long)&((PyLazyImportObject*)0)->lz_from", 15, 99, "lazyimportobject"),
    ("lazy_import_attr", "(long)&((PyLazyImportObject*)0)->lz_attr", 15, 99, "lazyimportobject"),
    ("lazy_import_code", "(long)&((PyLazyImportObject*)0)->lz_code", 15, 99, "lazyimportobject"),
]

# For sid's debug-build objects: public structs whose DWARF must match the release headers
# before its private structs are trusted. (name in PROBE, gdb expression, unit)
DWARF_AGREES = [
    ("object_type", "(long)&((PyObject*)0)->ob_type", "listobject"),
    ("var_size", "(long)&((PyVarObject*)0)->ob_size", "listobject"),
    ("list_allocated", "(long)&((PyListObject*)0)->allocated", "listobject"),
    ("dict_size", "sizeof(PyDictObject)", "odictobject"),
    ("type_size", "sizeof(PyTypeObject)", "_collectionsmodule"),
]

HEADERS = """
#define Py_BUILD_CORE 1
#include <stddef.h>
#include <Python.h>
#include <frameobject.h>
#include <structmember.h>
#if PY_VERSION_HEX < 0x03090000
#include <internal/pycore_pystate.h>
#include <internal/pycore_code.h>
#else
#include <internal/pycore_runtime.h>
#include <internal/pycore_interp.h>
#include <internal/pycore_gc.h>
#endif
#if PY_VERSION_HEX >= 0x03090000 && PY_VERSION_HEX < 0x030B0000
#include <internal/pycore_code.h>
#endif
#if PY_VERSION_HEX >= 0x030B0000
#include <internal/pycore_frame.h>
#include <internal/pycore_dict.h>
#include <internal/pycore_code.h>
#include <internal/pycore_moduleobject.h>
#include <internal/pycore_object.h>
#endif
#if PY_VERSION_HEX >= 0x030C0000
#include <internal/pycore_obmalloc.h>
#include <internal/pycore_object.h>
#include <internal/pycore_long.h>
#endif
#if PY_VERSION_HEX >= 0x030E0000
#include <internal/pycore_interp_structs.h>
#include <internal/pycore_runtime_structs.h>
#include <internal/pycore_interpframe_structs.h>
#include <internal/pycore_interpframe.h>
#include <internal/pycore_debug_offsets.h>
#include <internal/pycore_stackref.h>
#endif
#if PY_VERSION_HEX >= 0x030F0000
#include <internal/pycore_bytesobject.h>
#endif
#ifndef FRAME_SPECIALS_SIZE
#define FRAME_SPECIALS_SIZE 0
#endif
"""

NUMPY_HEADERS = """
#include <stddef.h>
#include <Python.h>
#include <numpy/ndarraytypes.h>
"""

# numpy's ndarray and dtype, from numpy's own headers.
NUMPY_PROBE = [
    ("ndarray_data", "offsetof(PyArrayObject_fields, data)"),
    ("ndarray_nd", "offsetof(PyArrayObject_fields, nd)"),
    ("ndarray_dimensions", "offsetof(PyArrayObject_fields, dimensions)"),
    ("ndarray_base", "offsetof(PyArrayObject_fields, base)"),
    ("ndarray_descr", "offsetof(PyArrayObject_fields, descr)"),
    ("ndarray_flags", "offsetof(PyArrayObject_fields, flags)"),
    ("ndarray_fields_size", "sizeof(PyArrayObject_fields)"),
    ("npy_intp_size", "sizeof(npy_intp)"),
    ("npy_maxdims", "NPY_MAXDIMS"),
    ("npy_owndata", "NPY_ARRAY_OWNDATA"),
    # numpy 2 widened elsize to npy_intp and moved it (compiled for numpy's own API version,
    # PyArray_Descr is the struct that numpy itself uses)
    ("descr_elsize", "offsetof(PyArray_Descr, elsize)"),
    ("descr_elsize_size", "sizeof(((PyArray_Descr *)0)->elsize)"),
]


def probe_source():
    # its own section: headers may put other constants in .rodata
    lines = [HEADERS, '__attribute__((section(".memlens_probe"), used))',
             "const unsigned long long memlens_probe[] = {"]
    for i, (name, expr, cond) in enumerate(PROBE + debug_probe()):
        if cond:
            lines.append("#if %s" % cond)
            lines.append("  [%d] = (unsigned long long)(%s) + 1ULL," % (i, expr))
            lines.append("#endif")
        else:
            lines.append("  [%d] = (unsigned long long)(%s) + 1ULL," % (i, expr))
    # value 0 = absent; the array has one slot per probe entry
    lines.append("  [%d] = 0 };" % len(PROBE + debug_probe()))
    # bit-field masks: one initialised state object each (absent fields give all-zero bytes)
    lines.append("typedef __typeof__(((PyASCIIObject *)0)->state) memlens_state_t;")
    lines.append('__attribute__((section(".memlens_bits"), used))')
    lines.append("const memlens_state_t memlens_bits[] = {")
    for _name, init, cond in STATE_BITS:
        if cond:
            lines.append("#if %s" % cond)
            lines.append("  { %s }," % init)
            lines.append("#else")
            lines.append("  { 0 },")
            lines.append("#endif")
        else:
            lines.append("  { %s }," % init)
    lines.append("};")
    return "\n".join(lines) + "\n"


def debug_probe():
    """Where each cross-checked member sits inside _Py_DebugOffsets (`dbg_<field>`)."""
    out = [("dbg_size", "sizeof(_Py_DebugOffsets)", V(13)),
           ("dbg_version", "offsetof(_Py_DebugOffsets, version)", V(13)),
           ("dbg_free_threaded", "offsetof(_Py_DebugOffsets, free_threaded)", V(13))]
    for field, member, minor in DEBUG_PAIRS:
        out.append(("dbg_" + field, "offsetof(_Py_DebugOffsets, %s)" % member, V(minor)))
    return out


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


def compile_probe(cc, source, includes, defines=()):
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "probe.c")
        obj = os.path.join(d, "probe.o")
        open(src, "w").write(source)
        cmd = [cc, "-w", "-O0", "-c"]
        for inc in includes:
            cmd += ["-I", inc]
        cmd += ["-D" + x for x in defines]
        subprocess.run(cmd + [src, "-o", obj], check=True)
        return (elf_section(obj, ".memlens_probe"),
                elf_section(obj, ".memlens_bits") if "memlens_bits" in source else b"")


def core_defines(python):
    """The -D options the build compiled its core with beyond pyconfig.h (e.g. Debian's 3.15
    has -D_Py_TIER2, which adds fields to the interpreter state)."""
    if python is None:
        return []
    flags = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_config_var('PY_CORE_CFLAGS') or '')"],
                           capture_output=True, text=True, check=True).stdout
    return sorted({d for d in re.findall(r"(?<!\S)-D(\S+)", flags)
                   if d.split("=")[0] not in ("Py_BUILD_CORE", "_FORTIFY_SOURCE")})


def run_probe(cc, include, defines):
    entries = PROBE + debug_probe()
    # the parent folder too: Debian's pyconfig.h includes <x86_64-linux-gnu/python3.X/...>
    raw, bits = compile_probe(cc, probe_source(), [include, os.path.dirname(include)], defines)
    values = struct.unpack_from("<%dQ" % (len(entries) + 1), raw, 0)
    out = {}
    for (name, _expr, _cond), v in zip(entries, values):
        if v:
            assert name not in out, name
            out[name] = v - 1
    width = len(bits) // len(STATE_BITS)
    for i, (name, _init, _cond) in enumerate(STATE_BITS):
        mask = int.from_bytes(bits[i * width:(i + 1) * width], "little")
        if mask:
            out[name] = mask
    return out


def run_gdb(target, wanted):
    if not wanted:
        return {}
    cmd = ["gdb", "-nx", "-batch"]
    for _n, e in wanted:
        cmd += ["-ex", "print %s" % e]
    cmd.append(target)
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    vals = re.findall(r"^\$\d+ = (\d+)$", res.stdout, re.M)
    if len(vals) != len(wanted):
        raise RuntimeError("gdb gave %d values for %d queries on %s:\n%s%s" % (
            len(vals), len(wanted), target, res.stdout, res.stderr))
    return {n: int(v) for (n, _e), v in zip(wanted, vals)}


def run_dwarf(build):
    """Private structs from DWARF: the build's unit file for each wanted entry."""
    out = {}
    minor = build["minor"]
    units = {}
    for n, e, lo, hi, unit in DWARF:
        if lo <= minor <= hi:
            units.setdefault(unit, []).append((n, e))
    for unit, wanted in sorted(units.items()):
        out.update(run_gdb(build["units"](unit), wanted))
    return out


def check_debug_build(build, probe):
    """sid's private structs come from its debug build: refuse them unless that build lays
    out the public structs exactly as the release headers do."""
    for name, expr, unit in DWARF_AGREES:
        got = run_gdb(build["units"](unit), [(name, expr)])[name]
        if probe.get(name) != got:
            raise SystemExit("%s: %s is %s in the release headers, %d in the debug build's DWARF; "
                             "its private structs cannot be trusted" % (build["label"], name,
                                                                        probe.get(name), got))


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


GLIBC_PROBE = r"""
#define _GNU_SOURCE
#include <gnu/libc-version.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
/* the first 4-byte word of the calling thread's struct pthread (what pthread_self() returns,
   CPython's thread_id before 3.11) that holds its kernel thread id */
static void *find(void *out) {
  uint32_t tid = (uint32_t)syscall(SYS_gettid);
  const uint32_t *p = (const uint32_t *)pthread_self();
  *(long *)out = -1;
  for (long i = 0; i < 0x800 / 4; i++)
    if (p[i] == tid) { *(long *)out = 4 * i; break; }
  return 0;
}
int main(void) {
  long at[2];
  for (int i = 0; i < 2; i++) {
    pthread_t t;
    if (pthread_create(&t, 0, find, &at[i]) || pthread_join(t, 0)) return 1;
  }
  printf("%ld %ld %s\n", at[0], at[1], gnu_get_libc_version());
  return 0;
}
"""


def glibc_pthread_tid():
    """(offset of `tid` in glibc's struct pthread, glibc version) on this x86_64 host, found by
    running two threads that look for their own kernel thread id in it; None elsewhere."""
    if os.uname().machine != "x86_64":
        print("warning: not an x86_64 host: no glibc pthread tid offset", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "tid.c"), os.path.join(d, "tid")
        open(src, "w").write(GLIBC_PROBE)
        subprocess.run(["gcc", "-w", "-O0", "-pthread", src, "-o", exe], check=True)
        a, b, version = subprocess.run([exe], capture_output=True, text=True,
                                       check=True).stdout.split()
    if a != b or int(a) < 0:
        raise SystemExit("glibc probe: the two threads found tid at %s and %s" % (a, b))
    return int(a), version


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
        lib = os.path.join(prefix, "lib", "libpython3.%d.so.1.0" % minor)
        dynload = os.path.join(prefix, "lib", "python3.%d" % minor, "lib-dynload")

        def units(unit, lib=lib, dynload=dynload):
            if unit == "array":
                return glob.glob(os.path.join(dynload, "array.*.so"))[0]
            return lib  # _collections, _io, odict, code: built into libpython
        builds.append({
            "label": "pyenv " + os.path.basename(prefix),
            "minor": minor,
            "include": os.path.join(prefix, "include", "python3.%d" % minor),
            "aarch64_include": os.path.join(prefix, "include", "python3.%d" % minor),
            "units": units,
            "python": os.path.join(prefix, "bin", "python3.%d" % minor),
        })
    return builds


def debian_builds():
    out = []
    for inc in sorted(glob.glob("/usr/include/python3.*")):
        m = re.fullmatch(r"/usr/include/python3\.(\d+)", inc)
        if m and os.path.exists(os.path.join(inc, "internal")):
            out.append({"label": "debian " + os.path.basename(inc), "minor": int(m.group(1)),
                        "include": inc, "aarch64_include": None, "units": None, "python": None})
    return out


def sid_builds():
    """CPython 3.14+ from Debian sid, as scripts/test-pythons.sh unpacks them."""
    out = []
    for dest in sorted(glob.glob(os.path.join(CACHE, "sid", "python3.*"))):
        minor = int(dest.rsplit(".", 1)[1])
        done = glob.glob(os.path.join(dest, ".done-*"))
        if not done:
            continue
        version = os.path.basename(done[0])[len(".done-"):]
        root = os.path.join(dest, "root")
        inc = os.path.join(root, "usr", "include", "python3.%d" % minor)
        arm = os.path.join(root, "usr", "include", "aarch64-linux-gnu", "python3.%d" % minor)
        out.append({
            "label": "debian sid %s" % version,
            "minor": minor,
            "include": inc,
            "aarch64_include": inc if os.path.isdir(arm) else None,
            "units": lambda unit, dest=dest: os.path.join(
                dest, "dwarf", ("arraymodule" if unit == "array" else unit) + ".o"),
            "debug_build": True,
            "python": os.path.join(root, "usr", "bin", "python3.%d" % minor),
        })
    for minor in (14, 15):
        if not any(b["minor"] == minor for b in out):
            print("warning: no sid 3.%d in %s (run scripts/test-pythons.sh)" % (minor, CACHE),
                  file=sys.stderr)
    return out


def extra_builds():
    """`--extra MINOR=INCLUDE_DIR[=PYTHON]`: headers of a build not found by the scans,
    optionally with a command that runs that interpreter (for sys._debugmallocstats())."""
    out = []
    args = sys.argv[1:]
    for i, a in enumerate(args):
        if a == "--extra" and i + 1 < len(args):
            parts = args[i + 1].split("=")
            out.append({"label": "extra " + parts[1], "minor": int(parts[0]), "include": parts[1],
                        "aarch64_include": None, "units": None,
                        "python": parts[2] if len(parts) > 2 else None})
    return out


def numpy_builds():
    """numpy installs of scripts/test-pythons.sh: (label, major, python, include dirs)."""
    out = []
    for venv in sorted(glob.glob(os.path.join(CACHE, "numpy", "python3.*"))):
        done = glob.glob(os.path.join(venv, ".done-*"))
        if not done:
            continue
        version = os.path.basename(done[0])[len(".done-"):]
        python = os.path.join(venv, "bin", "python")
        pyinc = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
        npinc = subprocess.run([python, "-c", "import numpy; print(numpy.get_include())"],
                               capture_output=True, text=True, check=True).stdout.strip()
        out.append({"label": "numpy %s" % version, "major": int(version.split(".")[0]),
                    "python": python, "includes": [pyinc, npinc]})
    return out


def run_numpy(cc, b):
    config = open(os.path.join(b["includes"][1], "numpy", "_numpyconfig.h")).read()
    api = re.search(r"#define NPY_API_VERSION (0x[0-9a-fA-F]+)", config).group(1)
    lines = [NUMPY_HEADERS, '__attribute__((section(".memlens_probe"), used))',
             "const unsigned long long memlens_probe[] = {"]
    for i, (_n, expr) in enumerate(NUMPY_PROBE):
        lines.append("  [%d] = (unsigned long long)(%s)," % (i, expr))
    lines.append("};")
    # the struct as numpy itself is built: every field of its own API version
    raw, _ = compile_probe(cc, "\n".join(lines) + "\n", b["includes"],
                           ["NPY_TARGET_VERSION=" + api, "NPY_NO_DEPRECATED_API=" + api])
    values = struct.unpack_from("<%dQ" % len(NUMPY_PROBE), raw, 0)
    return {n: v for (n, _e), v in zip(NUMPY_PROBE, values)}


def numpy_tables(cross):
    tables = {"x86_64": {}, "aarch64": {}}
    sources = {}
    for b in numpy_builds():
        for arch, cc in (("x86_64", "gcc"), ("aarch64", cross)):
            if cc is None:
                continue
            vals = run_numpy(cc, b)
            prev = tables[arch].get(b["major"])
            if prev is not None and prev != vals:
                raise SystemExit("%s: %s disagrees with %s" % (arch, b["label"], sources[b["major"]][0]))
            tables[arch][b["major"]] = vals
        basic = int(subprocess.run([b["python"], "-c", "import numpy; print(numpy.ndarray.__basicsize__)"],
                                   capture_output=True, text=True, check=True).stdout)
        if basic != tables["x86_64"][b["major"]]["ndarray_fields_size"]:
            raise SystemExit("%s: ndarray.__basicsize__ is %d, the headers say %d" % (
                b["label"], basic, tables["x86_64"][b["major"]]["ndarray_fields_size"]))
        labels = sources.setdefault(b["major"], [])
        if b["label"] not in labels:
            labels.append(b["label"])
    # every numpy whose headers gave the table (they agree, checked above), oldest first
    key = lambda label: [int(x) for x in label.split()[1].split(".") if x.isdigit()]
    return tables, {m: ", ".join(sorted(ls, key=key)) for m, ls in sources.items()}


def main():
    check = "--check" in sys.argv
    cross = shutil.which("aarch64-linux-gnu-gcc")
    tables = {"x86_64": {}, "aarch64": {}}
    sources = {}
    for b in pyenv_builds() + debian_builds() + sid_builds() + extra_builds():
        minor = b["minor"]
        defines = core_defines(b["python"])
        for arch, cc in (("x86_64", "gcc"), ("aarch64", cross)):
            include = b["include"] if arch == "x86_64" else b["aarch64_include"]
            if cc is None or include is None:
                # Debian's pyconfig.h is multiarch and includes only the installed variants
                continue
            vals = run_probe(cc, include, defines)
            prev = tables[arch].get(minor)
            if prev is not None:
                common = set(prev) & set(vals)
                diff = {k: (prev[k], vals[k]) for k in common if prev[k] != vals[k]}
                if diff:
                    raise SystemExit("%s %s disagrees with %s: %s" % (arch, b["label"], sources[minor], diff))
                prev.update({k: v for k, v in vals.items() if k not in prev})
            else:
                tables[arch][minor] = vals
        if b["units"] or b["python"]:
            if b.get("debug_build"):
                check_debug_build(b, tables["x86_64"][minor])
            extra = run_dwarf(b) if b["units"] else {}
            sizes = malloc_sizes(b["python"]) if b["python"] else {}
            for k, v in sizes.items():
                have = tables["x86_64"][minor].get(k)
                if have is not None and have != v:
                    raise SystemExit("%s: %s is %d in the headers, %d at run time" % (b["label"], k, have, v))
            extra.update(sizes)
            tables["x86_64"][minor].update(extra)
            if cross and minor in tables["aarch64"]:
                # private structs of pointers and C integers: LP64 gives the same offsets
                tables["aarch64"][minor].update(extra)
        sources.setdefault(minor, b["label"] + "".join(" -D" + d for d in defines if d != "NDEBUG"))
    np_tables, np_sources = numpy_tables(cross)
    text = emit(tables, sources, cross is not None, np_tables, np_sources)
    text += emit_glibc(glibc_pthread_tid())
    if check:
        old = open(OUT).read() if os.path.exists(OUT) else ""
        if old != text:
            import difflib
            diff = difflib.unified_diff(old.splitlines(), text.splitlines(), "checked in", "regenerated",
                                        lineterm="", n=1)
            sys.stderr.write("\n".join(list(diff)[:60]) + "\n")
            raise SystemExit("generated layouts are out of date: run scripts/gen_layouts.py")
        print("generated layouts are up to date")
        return
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    open(OUT, "w").write(text)
    print("wrote", OUT, {a: sorted(t) for a, t in tables.items()})


def emit(tables, sources, have_cross, np_tables, np_sources):
    names = []
    for arch in tables.values():
        for t in arch.values():
            for k in t:
                if k not in names:
                    names.append(k)
    every = [n for n in names if all(n in t for a in tables.values() for t in a.values())]
    carried = {f: m for f, m, _minor in DEBUG_PAIRS}
    out = ["// @generated by scripts/gen_layouts.py from CPython's own headers and DWARF; do not edit.",
           "// Sources: " + ", ".join("3.%d: %s" % (m, s) for m, s in sorted(sources.items())),
           "// numpy: " + ", ".join("%d.x: %s" % (m, s) for m, s in sorted(np_sources.items())),
           "// aarch64: " + ("compiled with aarch64-linux-gnu-gcc against the same headers; private"
                             " structs (DWARF) and arena/pool sizes copied from x86_64 (LP64, no"
                             " platform types)" if have_cross else "no cross compiler: none"),
           "",
           "/// What an offset the build's `_Py_DebugOffsets` does not carry is set to in a layout",
           "/// built from them alone: a read there fails (a non-canonical address).",
           "pub const POISON: u64 = 1 << 62;",
           "",
           "/// Offsets, sizes and constants of one CPython minor version on one architecture.",
           "/// Fields absent from some version are `Option`s.",
           "#[derive(Debug, Clone, Copy, PartialEq, Eq)]",
           "#[allow(missing_docs)]",
           "pub struct Layout {",
           "    /// `(3, minor)`.",
           "    pub version: (u8, u8),",
           "    /// Built from the process's `_Py_DebugOffsets` alone: only the fields they carry",
           "    /// (and the minor's constants) are real; every other offset is [`POISON`].",
           "    pub from_debug_offsets: bool,"]
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
            out.append("        from_debug_offsets: false,")
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
    out += emit_debug(names, every, carried)
    out += emit_numpy(np_tables)
    return "\n".join(out)


def emit_debug(names, every, carried):
    out = ["/// One value `_Py_DebugOffsets` carries: its member, where it sits in the struct, and",
           "/// the table's value for it.",
           "#[derive(Debug, Clone, Copy, PartialEq, Eq)]",
           "pub struct DebugPair {",
           "    /// Member of `_Py_DebugOffsets`, e.g. `thread_state.next`.",
           "    pub member: &'static str,",
           "    /// Its offset inside `_Py_DebugOffsets`.",
           "    pub at: u64,",
           "    /// The table's value.",
           "    pub expected: u64,",
           "}",
           "",
           "/// Every value of `l` that its minor's `_Py_DebugOffsets` carries.",
           "pub fn debug_pairs(l: &Layout) -> Vec<DebugPair> {",
           "    let mut v = Vec::new();"]
    for f, member, _minor in DEBUG_PAIRS:
        value = "Some(l.%s)" % f if f in every else "l.%s" % f
        out.append("    if let (Some(at), Some(expected)) = (l.dbg_%s, %s) {" % (f, value))
        out.append("        v.push(DebugPair { member: %s, at, expected });" % rust_str(member))
        out.append("    }")
    out += ["    v", "}", "",
            "/// A layout of `base`'s minor built from a process's `_Py_DebugOffsets` alone: `read(at)`",
            "/// reads the u64 at offset `at` of them. Values they do not carry are [`POISON`]",
            "/// (or `None` where the minor has no such field); the minor's constants are kept.",
            "pub fn from_debug_offsets<E>(",
            "    base: &Layout,",
            "    mut read: impl FnMut(u64) -> Result<u64, E>,",
            ") -> Result<Layout, E> {",
            "    Ok(Layout {",
            "        version: base.version,",
            "        from_debug_offsets: true,"]
    for n in names:
        opt = n not in every
        if n in carried:
            if opt:
                out.append("        %s: match base.dbg_%s {" % (n, n))
                out.append("            Some(at) => Some(read(at)?),")
                out.append("            None => base.%s.map(|_| POISON)," % n)
                out.append("        },")
            else:
                out.append("        %s: match base.dbg_%s {" % (n, n))
                out.append("            Some(at) => read(at)?,")
                out.append("            None => POISON,")
                out.append("        },")
        elif n in CONSTANTS or n.startswith("tpflags_") or n.startswith("dbg_"):
            out.append("        %s: base.%s," % (n, n))
        elif opt:
            out.append("        %s: base.%s.map(|_| POISON)," % (n, n))
        else:
            out.append("        %s: POISON," % n)
    out += ["    })", "}", ""]
    return out


def emit_numpy(np_tables):
    names = [n for n, _e in NUMPY_PROBE]
    out = ["/// numpy's `ndarray` and dtype layout for one numpy major version.",
           "#[derive(Debug, Clone, Copy, PartialEq, Eq)]",
           "#[allow(missing_docs)]",
           "pub struct NumpyLayout {",
           "    /// numpy's major version (1 or 2).",
           "    pub major: u8,"]
    out += ["    pub %s: u64," % n for n in names]
    out += ["}", ""]
    for arch in ("x86_64", "aarch64"):
        out.append("/// numpy tables for %s Linux, one per numpy major version." % arch)
        out.append("pub static NUMPY_%s: &[NumpyLayout] = &[" % arch.upper())
        for major in sorted(np_tables[arch]):
            t = np_tables[arch][major]
            out.append("    NumpyLayout {")
            out.append("        major: %d," % major)
            out += ["        %s: %d," % (n, t[n]) for n in names]
            out.append("    },")
        out.append("];")
        out.append("")
    return out


def emit_glibc(found):
    out = ["/// Where glibc's `struct pthread` (a thread's `pthread_self()`, CPython's `thread_id`",
           "/// before 3.11) keeps the kernel thread id on x86_64: found by running two threads",
           "/// against the generating host's glibc and looking for their own ids in it (`None`:",
           "/// not generated on x86_64). Other glibc versions may differ: the reader checks the",
           "/// word it finds there is one of the process's thread ids, and searches otherwise."]
    if found is None:
        out.append("pub const GLIBC_PTHREAD_TID_X86_64: Option<u64> = None;")
    else:
        out.insert(0, "// glibc %s" % found[1])
        out.append("pub const GLIBC_PTHREAD_TID_X86_64: Option<u64> = Some(%#x);" % found[0])
    return "\n" + "\n".join(out) + "\n"


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    main()
