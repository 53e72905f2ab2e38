"""The C library's mmap, munmap and mremap through ctypes, with their C types, for the targets
that map memory at marked lines (trace_unmap.py, trace_unmap_many.py and trace_fork_free.py
import it from their own directory, sys.path[0]). FAILED is MAP_FAILED as ctypes returns it.
"""
import ctypes

FAILED = ctypes.c_void_p(-1).value

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.restype = ctypes.c_int
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
