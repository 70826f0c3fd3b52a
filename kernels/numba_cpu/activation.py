"""Numba CPU activations. Shapes as in ``kernels.activation``; float32, C-contiguous inputs.

Elementwise loops run in parallel (they touch every element of a layer's output); softmax runs
one row per parallel iteration. No fastmath: inf and NaN must propagate as in the reference.
Hyper-parameters are cast to float32 so the arithmetic stays in float32.
"""
import math

import numpy as np
from numba import njit, prange

from kernels.reference import activation as ref

_SQRT_HALF, _INV_SQRT_2PI, _TANH_K, _TANH_C = (
    np.float32(v) for v in (ref.SQRT_HALF, ref.INV_SQRT_2PI, ref.TANH_K, ref.TANH_C)
)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_THREE = np.float32(3.0)


@njit(cache=True, parallel=True)
def leaky_relu(x, negative_slope):
    s = np.float32(negative_slope)
    y = np.empty_like(x)
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v > 0 else v * s
    return y


@njit(cache=True, parallel=True)
def leaky_relu_backward(g, x, negative_slope):
    s = np.float32(negative_slope)
    dx = np.empty_like(x)
    for i in prange(x.size):
        dx[i] = g[i] if x[i] > 0 else g[i] * s
    return dx


@njit(cache=True, parallel=True)
def elu(x, alpha, scale):
    a, k = np.float32(alpha), np.float32(scale)
    y = np.empty_like(x)
    for i in prange(x.size):
        v = x[i]
        y[i] = k * v if v > 0 else k * a * math.expm1(v)
    return y


@njit(cache=True, parallel=True)
def elu_backward(g, x, alpha, scale):
    a, k = np.float32(alpha), np.float32(scale)
    dx = np.empty_like(x)
    for i in prange(x.size):
        v = x[i]
        dx[i] = g[i] * k if v > 0 else g[i] * k * a * math.exp(v)
    return dx


@njit(cache=True, parallel=True)
def gelu(x, tanh_approx):
    y = np.empty_like(x)
    for i in prange(x.size):
        v = x[i]
        if tanh_approx:
            y[i] = _HALF * v * (_ONE + math.tanh(_TANH_K * (v + _TANH_C * v * v * v)))
        else:
            y[i] = _HALF * v * (_ONE + math.erf(v * _SQRT_HALF))
    return y


@njit(cache=True, parallel=True)
def gelu_backward(g, x, tanh_approx):
    dx = np.empty_like(x)
    for i in prange(x.size):
        v = x[i]
        if tanh_approx:
            t = math.tanh(_TANH_K * (v + _TANH_C * v * v * v))
            d = _HALF * (_ONE + t) + _HALF * v * (_ONE - t * t) * _TANH_K * (_ONE + _THREE * _TANH_C * v * v)
        else:
            d = _HALF * (_ONE + math.erf(v * _SQRT_HALF)) + v * _INV_SQRT_2PI * math.exp(-_HALF * v * v)
        dx[i] = g[i] * d
    return dx


@njit(cache=True, parallel=True)
def sigmoid(x):
    y = np.empty_like(x)
    for i in prange(x.size):
        v = x[i]
        e = math.exp(-abs(v))  # in (0, 1]: never overflows
        y[i] = (_ONE if v >= 0 else e) / (_ONE + e)
    return y


@njit(cache=True, parallel=True)
def sigmoid_backward(g, y):
    dx = np.empty_like(y)
    for i in prange(y.size):
        dx[i] = g[i] * y[i] * (_ONE - y[i])
    return dx


@njit(cache=True, parallel=True)
def tanh(x):
    y = np.empty_like(x)
    for i in prange(x.size):
        y[i] = math.tanh(x[i])
    return y


@njit(cache=True, parallel=True)
def tanh_backward(g, y):
    dx = np.empty_like(y)
    for i in prange(y.size):
        dx[i] = g[i] * (_ONE - y[i] * y[i])
    return dx


@njit(cache=True, parallel=True)
def softmax(x, log):
    """Row-wise softmax (log-softmax when ``log``) of x (rows, cols), max-subtracted."""
    rows, cols = x.shape
    y = np.empty_like(x)
    for r in prange(rows):
        xr, yr = x[r], y[r]
        m = xr[0]
        for j in range(1, cols):
            m = max(m, xr[j])
        s = np.float32(0.0)
        for j in range(cols):
            s += math.exp(xr[j] - m)
        if log:
            ls = math.log(s)
            for j in range(cols):
                yr[j] = (xr[j] - m) - ls
        else:
            inv = _ONE / s
            for j in range(cols):
                yr[j] = math.exp(xr[j] - m) * inv
    return y


@njit(cache=True, parallel=True)
def softmax_backward(g, y, log):
    """Row-wise input gradient from the output y (rows, cols) of softmax (or log-softmax)."""
    rows, cols = y.shape
    dx = np.empty_like(y)
    for r in prange(rows):
        gr, yr, dr = g[r], y[r], dx[r]
        s = np.float32(0.0)
        for j in range(cols):
            s += gr[j] if log else gr[j] * yr[j]
        for j in range(cols):
            dr[j] = gr[j] - math.exp(yr[j]) * s if log else yr[j] * (gr[j] - s)
    return dx
