"""C kernels from ``csrc/`` called through cffi (out-of-line API mode). float32 only.

The wrappers pass raw pointers, so they rely on ``kernels._checks`` having verified dtype, shape
and contiguity first (``ffi.from_buffer`` would accept a float64 array silently); cffi releases
the GIL around every call.
"""
import numpy as np

from kernels._ckernels import ffi, lib  # noqa: F401  (ImportError marks the backend unusable)

_CTYPES = {
    np.dtype(np.float32): "float[]",
    np.dtype(np.int64): "int64_t[]",
    np.dtype(np.int32): "int32_t[]",
    np.dtype(np.uint8): "uint8_t[]",
}


def ptr(a):
    """A typed C pointer into a checked C-contiguous array (float, int64, int32 or uint8); NULL for None."""
    if a is None:
        return ffi.NULL
    return ffi.from_buffer(_CTYPES[a.dtype], a, require_writable=False)
