"""Shared test machinery: backends under test, shape strategies, and the one checking helper.

``check_backends`` runs an op on every usable backend and compares it with the NumPy reference
evaluated in float64 on the same inputs; ``numeric_grad`` gives central finite differences in
float64 for the backward checks.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

import kernels

BACKENDS = kernels.backends()
FAST_BACKENDS = [b for b in BACKENDS if b != "cuda"]
OTHER_BACKENDS = [b for b in BACKENDS if b != "numpy"]

# Sizes that hit edge cases: 1, primes, and values on both sides of tile and vector widths.
SIZES = [1, 2, 3, 5, 7, 8, 13, 16, 17, 31, 33, 64, 97]
SMALL_SIZES = [s for s in SIZES if s <= 32]  # the CUDA simulator is slow: stay at 32 or below

# float32 kernels against the float64 reference: tolerances scale with the reduction length.
RTOL = 2e-4
ATOL = 2e-5


def sizes(backend: str):
    """Hypothesis strategy for one dimension's size, small on the CUDA simulator."""
    return st.sampled_from(SMALL_SIZES if backend == "cuda" else SIZES)


def f32(rng, *shape, scale=1.0):
    """A random float32 C-contiguous array, normal with the given scale."""
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def to64(x):
    return None if x is None else (x.astype(np.float64) if x.dtype == np.float32 else x)


def host(x):
    """A host NumPy array from any result (device arrays copied back)."""
    if x is None or isinstance(x, (np.ndarray, float, int)):
        return x
    return x.copy_to_host()


def check_backends(fn, args, backend, *, rtol=RTOL, atol=ATOL, **kwargs):
    """Compare ``fn(*args, backend=backend)`` with ``fn(*float64 args, backend='numpy')``.

    Works for ops returning an array or a tuple of arrays (None entries must match).
    """
    got = fn(*args, backend=backend, **kwargs)
    want = fn(*[to64(a) if isinstance(a, np.ndarray) else a for a in args], backend="numpy", **kwargs)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        g = host(g)
        assert g.shape == w.shape
        if isinstance(w, np.ndarray) and w.dtype.kind == "f":
            assert g.dtype == np.float32, f"{backend} returned {g.dtype}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar ``f(x)`` with respect to float64 array ``x``."""
    x = x.astype(np.float64).copy()
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = f(x)
        flat[i] = old - eps
        lo = f(x)
        flat[i] = old
        gflat[i] = (hi - lo) / (2 * eps)
    return g


def torch_or_skip():
    """The PyTorch module, the test oracle; skip when it is not installed."""
    return pytest.importorskip("torch")


backend_params = pytest.mark.parametrize("backend", BACKENDS)


def saved_weights(path):
    """A model file's weights as name -> (dtype, shape, bytes), and its metadata: equal for
    bit-identical weights, whatever order the safetensors library wrote the header in."""
    from pynn.serialization import FORMAT, read_tensors

    tensors, metadata = read_tensors(path, format=FORMAT)
    return {k: (v.dtype, v.shape, v.tobytes()) for k, v in tensors.items()}, metadata
