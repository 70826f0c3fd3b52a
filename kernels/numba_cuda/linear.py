"""Numba CUDA dense products: a shared-memory tiled GEMM (Kirk & Hwu, *Programming Massively
Parallel Processors*, 4th ed., ch. 5). Shapes as in ``kernels.linear``; float32.

Each block computes a TILE x TILE tile of c, stepping along k through tiles of op(a) and op(b)
staged in shared memory; out-of-range elements load as zero so any size works.
"""
import math
import sys

import numpy as np
from numba import cuda, float32

from kernels import _mlp
from kernels.numba_cuda import _launch, activation, dropout
from kernels.numba_cuda._launch import result, to_device

_T = 16  # compile-time tile edge: shared arrays need a constant size


@cuda.jit
def _gemm(a, b, bias, c, trans_a, trans_b, use_bias):
    """c[i, j] = sum_p op(a)[i, p] * op(b)[p, j] (+ bias[j])."""
    sa = cuda.shared.array((_T, _T), float32)
    sb = cuda.shared.array((_T, _T), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    i = cuda.blockIdx.y * _T + ty
    j = cuda.blockIdx.x * _T + tx
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    acc = float32(0.0)
    for t in range((k + _T - 1) // _T):
        p = t * _T + tx
        if i < m and p < k:
            sa[ty, tx] = a[p, i] if trans_a else a[i, p]
        else:
            sa[ty, tx] = 0.0
        p = t * _T + ty
        if j < n and p < k:
            sb[ty, tx] = b[j, p] if trans_b else b[p, j]
        else:
            sb[ty, tx] = 0.0
        cuda.syncthreads()
        for q in range(_T):
            acc += sa[ty, q] * sb[q, tx]
        cuda.syncthreads()
    if i < m and j < n:
        if use_bias:
            acc += bias[j]
        c[i, j] = acc


def _launch_gemm(a, b, bias, m, n, trans_a, trans_b):
    (a, b, bias), on_host = to_device(a, b, bias)
    c = cuda.device_array((m, n), np.float32)
    grid = (math.ceil(n / _T), math.ceil(m / _T))
    use_bias = bias is not None
    if not use_bias:
        bias = cuda.device_array(1, np.float32)  # never read; keeps one kernel signature
    _gemm[grid, (_T, _T)](a, b, bias, c, trans_a, trans_b, use_bias)
    return result(c, on_host)


def matmul(a, b, trans_a, trans_b):
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    return _launch_gemm(a, b, None, m, n, trans_a, trans_b)


def linear(x, weight, bias):
    return _launch_gemm(x, weight, bias, x.shape[0], weight.shape[0], False, True)


@cuda.jit
def _sum_rows(g, out):
    j = cuda.grid(1)
    if j < g.shape[1]:
        acc = float32(0.0)
        for i in range(g.shape[0]):
            acc += g[i, j]
        out[j] = acc


def sum_rows(g):
    (g,), on_host = to_device(g)
    out = cuda.device_array(g.shape[1], np.float32)
    _sum_rows[_launch.blocks(g.shape[1]), _launch.THREADS](g, out)
    return result(out, on_host)

# The dense stack: the CUDA ops composed layer by layer (kernels._mlp), on device arrays
# throughout, with one copy in and out for host inputs.
_OPS = _mlp.op_table(sys.modules[__name__], activation, dropout)


def mlp(x, weights, biases, relu, drops):
    (x, *weights), on_host = to_device(x, *weights)
    y, hidden = _mlp.forward(_OPS, x, weights, to_device(*biases)[0], relu, drops)
    return result(y, on_host), tuple(result(h, on_host) for h in hidden)


def mlp_backward(g, x, weights, hidden, relu, drops, input_grad, accumulate):
    (g, x, *arrays), on_host = to_device(g, x, *weights, *hidden)
    weights, hidden = arrays[:len(weights)], arrays[len(weights):]
    gx, gw, gb = _mlp.backward(_OPS, g, x, weights, hidden, relu, drops, input_grad, accumulate)
    return (None if gx is None else result(gx, on_host)), tuple(a if accumulate else result(a, on_host) for a in gw), \
        tuple(result(a, on_host) for a in gb)


# Argument types of every kernel in this module, compiled for sm_90 by tests/test_cuda_ptx.py.
SIGNATURES = {
    "_gemm": "(float32[:, ::1], float32[:, ::1], float32[::1], float32[:, ::1], boolean, boolean, boolean)",
    "_sum_rows": "(float32[:, ::1], float32[::1])",
}
