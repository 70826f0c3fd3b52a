"""Numba CUDA activations. Shapes as in ``kernels.activation``; float32.

Elementwise ops use one thread per element. Softmax uses one block of ``_ROW`` threads per row:
each thread strides over the row's columns, and the block combines the partial maxima and sums
through shared memory, so rows of any length work. One warp per row suits classifier widths (10
to a few thousand; a larger block would leave most threads idle on short rows), and with 32
partials every thread can read all of them from shared memory (a conflict-free broadcast) after
a single barrier, instead of a tree reduction with a barrier per level (Kirk & Hwu, *Programming
Massively Parallel Processors*, 4th ed., ch. 10).
"""
import math

import numpy as np
from numba import cuda, float32

from kernels.numba_cuda import _launch
from kernels.numba_cuda._launch import result, to_device
from kernels.reference import activation as ref

_ROW = 32  # threads per softmax row (one warp); a compile-time constant: it sizes shared arrays

_SQRT_HALF, _INV_SQRT_2PI, _TANH_K, _TANH_C = (
    np.float32(v) for v in (ref.SQRT_HALF, ref.INV_SQRT_2PI, ref.TANH_K, ref.TANH_C)
)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_THREE = np.float32(3.0)
_NEG_INF = np.float32(-math.inf)


def _map(kernel, arrays, *params):
    """Launch an elementwise ``kernel(*arrays, out, *params)`` over 1-D arrays."""
    arrays, on_host = to_device(*arrays)
    n = arrays[0].shape[0]
    out = cuda.device_array(n, np.float32)
    kernel[_launch.blocks(n), _launch.THREADS](*arrays, out, *params)
    return result(out, on_host)


@cuda.jit
def _leaky_relu(x, y, s):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        y[i] = v if v > 0 else v * s


@cuda.jit
def _leaky_relu_backward(g, x, dx, s):
    i = cuda.grid(1)
    if i < x.shape[0]:
        dx[i] = g[i] if x[i] > 0 else g[i] * s


def leaky_relu(x, negative_slope):
    return _map(_leaky_relu, (x,), np.float32(negative_slope))


def leaky_relu_backward(g, x, negative_slope):
    return _map(_leaky_relu_backward, (g, x), np.float32(negative_slope))


@cuda.jit
def _elu(x, y, a, k):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        y[i] = k * v if v > 0 else k * a * math.expm1(v)


@cuda.jit
def _elu_backward(g, x, dx, a, k):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        dx[i] = g[i] * k if v > 0 else g[i] * k * a * math.exp(v)


def elu(x, alpha, scale):
    return _map(_elu, (x,), np.float32(alpha), np.float32(scale))


def elu_backward(g, x, alpha, scale):
    return _map(_elu_backward, (g, x), np.float32(alpha), np.float32(scale))


@cuda.jit
def _gelu(x, y, tanh_approx):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        if tanh_approx:
            t = math.tanh(_TANH_K * (v + _TANH_C * v * v * v))
        else:
            t = math.erf(v * _SQRT_HALF)
        y[i] = _HALF * v * (_ONE + t)


@cuda.jit
def _gelu_backward(g, x, dx, tanh_approx):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        if tanh_approx:
            t = math.tanh(_TANH_K * (v + _TANH_C * v * v * v))
            d = _HALF * (_ONE + t) + _HALF * v * (_ONE - t * t) * _TANH_K * (_ONE + _THREE * _TANH_C * v * v)
        else:
            d = _HALF * (_ONE + math.erf(v * _SQRT_HALF)) + v * _INV_SQRT_2PI * math.exp(-_HALF * v * v)
        dx[i] = g[i] * d


def gelu(x, tanh_approx):
    return _map(_gelu, (x,), bool(tanh_approx))


def gelu_backward(g, x, tanh_approx):
    return _map(_gelu_backward, (g, x), bool(tanh_approx))


@cuda.jit
def _sigmoid(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        e = math.exp(-abs(v))  # in (0, 1]: never overflows
        y[i] = (_ONE if v >= 0 else e) / (_ONE + e)


@cuda.jit
def _sigmoid_backward(g, y, dx):
    i = cuda.grid(1)
    if i < y.shape[0]:
        dx[i] = g[i] * y[i] * (_ONE - y[i])


def sigmoid(x):
    return _map(_sigmoid, (x,))


def sigmoid_backward(g, y):
    return _map(_sigmoid_backward, (g, y))


@cuda.jit
def _tanh(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        y[i] = math.tanh(x[i])


@cuda.jit
def _tanh_backward(g, y, dx):
    i = cuda.grid(1)
    if i < y.shape[0]:
        dx[i] = g[i] * (_ONE - y[i] * y[i])


def tanh(x):
    return _map(_tanh, (x,))


def tanh_backward(g, y):
    return _map(_tanh_backward, (g, y))


@cuda.jit
def _softmax_rows(x, y, log):
    """Block r computes row r of softmax (log-softmax when ``log``) of x (rows, cols)."""
    # One buffer per reduction, so no barrier is needed before the second one's writes.
    bmax = cuda.shared.array(_ROW, float32)
    bsum = cuda.shared.array(_ROW, float32)
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    cols = x.shape[1]
    m = _NEG_INF
    for j in range(t, cols, _ROW):
        m = max(m, x[r, j])
    bmax[t] = m
    cuda.syncthreads()
    m = bmax[0]
    for k in range(1, _ROW):
        m = max(m, bmax[k])
    s = float32(0.0)
    for j in range(t, cols, _ROW):
        s += math.exp(x[r, j] - m)
    bsum[t] = s
    cuda.syncthreads()
    s = bsum[0]
    for k in range(1, _ROW):
        s += bsum[k]
    if log:
        ls = math.log(s)
        for j in range(t, cols, _ROW):
            y[r, j] = (x[r, j] - m) - ls
    else:
        inv = _ONE / s
        for j in range(t, cols, _ROW):
            y[r, j] = math.exp(x[r, j] - m) * inv


@cuda.jit
def _softmax_backward_rows(g, y, dx, log):
    """Block r computes row r of the input gradient from the output y (rows, cols)."""
    bsum = cuda.shared.array(_ROW, float32)
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    cols = y.shape[1]
    s = float32(0.0)
    for j in range(t, cols, _ROW):
        s += g[r, j] if log else g[r, j] * y[r, j]
    bsum[t] = s
    cuda.syncthreads()
    s = bsum[0]
    for k in range(1, _ROW):
        s += bsum[k]
    for j in range(t, cols, _ROW):
        dx[r, j] = g[r, j] - math.exp(y[r, j]) * s if log else y[r, j] * (g[r, j] - s)


def softmax(x, log):
    (x,), on_host = to_device(x)
    y = cuda.device_array(x.shape, np.float32)
    _softmax_rows[x.shape[0], _ROW](x, y, bool(log))
    return result(y, on_host)


def softmax_backward(g, y, log):
    (g, y), on_host = to_device(g, y)
    dx = cuda.device_array(y.shape, np.float32)
    _softmax_backward_rows[y.shape[0], _ROW](g, y, dx, bool(log))
    return result(dx, on_host)


_V = "float32[::1]"
_M = "float32[:, ::1]"
# Argument types of every kernel in this module, compiled for sm_90 by tests/test_cuda_ptx.py.
SIGNATURES = {
    "_leaky_relu": f"({_V}, {_V}, float32)",
    "_leaky_relu_backward": f"({_V}, {_V}, {_V}, float32)",
    "_elu": f"({_V}, {_V}, float32, float32)",
    "_elu_backward": f"({_V}, {_V}, {_V}, float32, float32)",
    "_gelu": f"({_V}, {_V}, boolean)",
    "_gelu_backward": f"({_V}, {_V}, {_V}, boolean)",
    "_sigmoid": f"({_V}, {_V})",
    "_sigmoid_backward": f"({_V}, {_V}, {_V})",
    "_tanh": f"({_V}, {_V})",
    "_tanh_backward": f"({_V}, {_V}, {_V})",
    "_softmax_rows": f"({_M}, {_M}, boolean)",
    "_softmax_backward_rows": f"({_M}, {_M}, {_M}, boolean)",
}
