"""Numba CPU dense products. Shapes as in ``kernels.linear``; float32, C-contiguous inputs.

One row of the output per parallel iteration; the innermost loop runs over contiguous memory so
LLVM vectorises it. A transposed operand is first copied to row-major, so the same two loop
nests serve all four transpose cases.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True, fastmath=True)
def _gemm_nn(a, b, c):
    """c (m, n) = a (m, k) @ b (k, n): i-p-j order, a row of c at a time."""
    m, k = a.shape
    n = b.shape[1]
    for i in prange(m):
        ci = c[i]
        ci[:] = 0.0
        for p in range(k):
            aip = a[i, p]
            bp = b[p]
            for j in range(n):
                ci[j] += aip * bp[j]


@njit(cache=True, parallel=True, fastmath=True)
def _gemm_nt(a, b, c):
    """c (m, n) = a (m, k) @ b (n, k).T: a dot product over contiguous rows per element."""
    m, k = a.shape
    n = b.shape[0]
    for i in prange(m):
        ai = a[i]
        for j in range(n):
            bj = b[j]
            acc = np.float32(0.0)
            for p in range(k):
                acc += ai[p] * bj[p]
            c[i, j] = acc


def matmul(a, b, trans_a, trans_b):
    if trans_a:
        a = np.ascontiguousarray(a.T)
    c = np.empty((a.shape[0], b.shape[0] if trans_b else b.shape[1]), np.float32)
    (_gemm_nt if trans_b else _gemm_nn)(a, b, c)
    return c


@njit(cache=True, parallel=True, fastmath=True)
def _add_bias(y, bias):
    for i in prange(y.shape[0]):
        for j in range(y.shape[1]):
            y[i, j] += bias[j]


def linear(x, weight, bias):
    y = np.empty((x.shape[0], weight.shape[0]), np.float32)
    _gemm_nt(x, weight, y)
    if bias is not None:
        _add_bias(y, bias)
    return y


@njit(cache=True, fastmath=True)
def sum_rows(g):
    out = np.zeros(g.shape[1], np.float32)
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            out[j] += g[i, j]
    return out
