"""Argument checks at the public boundary: nothing malformed reaches C or a GPU.

Every message names the argument, what was received and what was expected.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from kernels._dispatch import is_device_array

_REFERENCE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_F32 = (np.dtype(np.float32),)


def _as_array(x, name):
    if type(x) is np.ndarray:
        return x
    if isinstance(x, np.ndarray):
        # Only a subclass can be masked; asking first keeps numpy.ma (tens of ms to import)
        # out of a process that never makes one.
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError(f"{name} is a masked array, whose mask the kernels would ignore; pass {name}.filled(value)")
        # Subclasses (np.matrix, np.memmap) change what reshape and reductions mean: plain view.
        return x.view(np.ndarray)
    if is_device_array(x):
        from numba import cuda

        return x if hasattr(x, "copy_to_host") else cuda.as_cuda_array(x)
    raise TypeError(f"{name} must be a numpy.ndarray or a CUDA device array, got {type(x).__name__}")


def _c_contiguous(x) -> bool:
    if isinstance(x, np.ndarray):
        return x.flags.c_contiguous
    return x.is_c_contiguous()


def float_array(x, name: str, backend: str, *, ndim=None, min_ndim=None, shape=None, dtype=None, like=None):
    """Check one floating-point tensor argument and return it (device objects wrapped).

    ``backend`` decides the dtypes allowed: float32 everywhere, float64 too on ``numpy``.
    ``ndim``/``min_ndim`` bound the rank; ``shape`` is the exact shape required (``None`` entries
    match any size); ``dtype`` is the dtype the other tensors of the call already have; ``like``
    names the tensor that ``shape`` and ``dtype`` come from, so that a mismatch names both.

    Raises TypeError for a non-array (a masked array included: its mask would be ignored) or a
    wrong dtype, ValueError for a wrong rank or shape, an empty array, or a non-C-contiguous
    array (zero-stride broadcast views included, whatever their nominal size). Other ndarray
    subclasses are read as plain arrays.
    """
    x = _as_array(x, name)
    if backend != "cuda" and not isinstance(x, np.ndarray):
        raise TypeError(f"{name} is a CUDA device array, which the {backend} backend cannot read")
    allowed = _REFERENCE_FLOATS if backend == "numpy" else _F32
    if x.dtype not in allowed:
        names = " or ".join(str(d) for d in allowed)
        raise TypeError(f"{name} must have dtype {names} on the {backend} backend, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype}, but {like or 'the other tensors of this call'} has {dtype}; "
            "the tensors of one call share one dtype"
        )
    shaped(x, name, ndim=ndim, min_ndim=min_ndim, shape=shape, like=like)
    return x


def shaped(x, name, *, ndim=None, min_ndim=None, shape=None, like=None):
    """Check rank, shape, emptiness and C-contiguity of an array already known to be an array.

    ``like`` names the tensor ``shape`` is derived from, for the message.
    """
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if shape is not None:
        ok = shape == x.shape or len(shape) == x.ndim and all(s is None or s == t for s, t in zip(shape, x.shape))
        if not ok:
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            source = f", to match {like}" if like else ""
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}{source}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); kernels need at least one element")
    if not _c_contiguous(x):
        raise ValueError(
            f"{name} must be C-contiguous; pass numpy.ascontiguousarray({name}) "
            f"(got strides {tuple(x.strides)} for shape {tuple(x.shape)})"
        )
    return x


def int_array(x, name: str, *, ndim=None, shape=None, low=None, high=None, like=None):
    """Check an integer index tensor (class labels): int64 or int32, values in [low, high)."""
    x = _as_array(x, name)
    if x.dtype not in (np.dtype(np.int64), np.dtype(np.int32)):
        raise TypeError(f"{name} must have dtype int64 (or int32), got {x.dtype}")
    shaped(x, name, ndim=ndim, shape=shape, like=like)
    return in_range(x, name, low, high)


def in_range(x, name: str, low, high):
    """Check the values of a checked integer array lie in [low, high) (device arrays are copied)."""
    host = x if isinstance(x, np.ndarray) else x.copy_to_host()
    if low is not None and host.min() < low or high is not None and host.max() >= high:
        raise ValueError(
            f"{name} values must lie in [{low}, {high}), got min {host.min()} and max {host.max()}"
        )
    return x


def real(value, name: str, *, low=-math.inf, high=math.inf, low_open=False, high_open=False) -> float:
    """Check a finite real hyper-parameter lies in the stated interval and return it as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    below = v <= low if low_open else v < low
    above = v >= high if high_open else v > high
    if not math.isfinite(v) or below or above:
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {lb}{low}, {high}{hb}, got {value}")
    return v


def choice(value, name: str, options):
    """Check a string option."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def is_int(v) -> bool:
    """True for a Python or NumPy integer, not a bool."""
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def int_pair(value, name: str, low: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``low``, as an (h, w) pair of ints.

    Raises TypeError for anything else and ValueError for a value below ``low``.
    """
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(is_int(v) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return int(pair[0]), int(pair[1])
