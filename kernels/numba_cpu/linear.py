"""Numba CPU dense products. Shapes as in ``kernels.linear``; float32, C-contiguous inputs.

Both products run on the packed, register-blocked GEMM of ``kernels.numba_cpu.gemm`` (its
docstrings give the design and the measured steps); transposed operands are handled by its
packing, never copied.
"""
import numpy as np
from numba import njit

from kernels.numba_cpu.gemm import gemm, gemm_into


def matmul(a, b, trans_a, trans_b):
    # The convolution kernels pass views; the GEMM addresses its operands as flat arrays.
    return gemm(np.ascontiguousarray(a), np.ascontiguousarray(b), trans_a, trans_b)


@njit(cache=True)
def _rows_of(bias, rows):
    """(rows, F) array whose every row is ``bias``: the GEMM then accumulates onto it."""
    y = np.empty((rows, bias.shape[0]), np.float32)
    for i in range(rows):
        y[i] = bias
    return y


def linear(x, weight, bias):
    if bias is None:
        return gemm(x, weight, False, True)
    y = _rows_of(bias, x.shape[0])
    gemm_into(x, weight, False, True, y, accumulate=True)
    return y


@njit(cache=True, fastmath=True)
def sum_rows(g):
    out = np.zeros(g.shape[1], np.float32)
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            out[j] += g[i, j]
    return out
