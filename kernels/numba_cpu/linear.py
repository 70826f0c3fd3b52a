"""Numba CPU dense products. Shapes as in ``kernels.linear``; float32, C-contiguous inputs.

Both products run on the packed, register-blocked GEMM of ``kernels.numba_cpu.gemm`` (its
docstrings give the design and the measured steps); transposed operands are handled by its
packing, never copied.
"""
import numpy as np
from numba import njit

from kernels import _memory
from kernels.numba_cpu.gemm import gemm, gemm_into


def matmul(a, b, trans_a, trans_b):
    # The convolution kernels pass views; the GEMM addresses its operands as flat arrays.
    return gemm(np.ascontiguousarray(a), np.ascontiguousarray(b), trans_a, trans_b)


def linear(x, weight, bias):
    if bias is None:
        return gemm(x, weight, False, True)
    y = _memory.empty((x.shape[0], bias.shape[0]))
    y[...] = bias  # the GEMM accumulates onto the bias rows
    gemm_into(x, weight, False, True, y, accumulate=True)
    return y


@njit(cache=True, fastmath=True)
def sum_rows(g):
    out = np.zeros(g.shape[1], np.float32)
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            out[j] += g[i, j]
    return out
