"""C kernels from ``csrc/`` called through cffi (out-of-line API mode). float32 only.

The wrappers pass raw pointers, so they rely on ``kernels._checks`` having verified dtype, shape
and contiguity first (``ffi.from_buffer`` would accept a float64 array silently); cffi releases
the GIL around every call.

``PYNN_CKERNELS``, when set, is the path of another build of the extension to load instead of
the installed one: the sanitizer build of ``kernels/_build_c.py``.
"""
import importlib.util
import os
import sys

import numpy as np


def _load_build(path):
    """Import the extension file at ``path`` as ``kernels._ckernels`` (its init function's name)."""
    if not os.path.isfile(path):
        raise ImportError(f"PYNN_CKERNELS={path!r} is not a file")
    spec = importlib.util.spec_from_file_location("kernels._ckernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["kernels._ckernels"] = module


if os.environ.get("PYNN_CKERNELS"):
    _load_build(os.environ["PYNN_CKERNELS"])

from kernels._ckernels import ffi, lib  # noqa: E402, F401  (ImportError marks the backend unusable)

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
