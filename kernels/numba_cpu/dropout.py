"""Numba CPU inverted dropout; the mask hash is the splitmix64 of kernels.reference.dropout.

All hash arithmetic stays in uint64: Numba turns a uint64 mixed with an int64 into float64.
"""
import numpy as np
from numba import njit, prange

from kernels import _memory

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always")
def _kept(state, i, threshold):
    z = state + np.uint64(i + 1) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _C1
    z = (z ^ (z >> np.uint64(27))) * _C2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)) >= threshold


@njit(cache=True, parallel=True)
def _dropout(x, state, threshold, scale, y, mask):
    for i in prange(x.size):
        keep = _kept(state, i, threshold)
        mask[i] = np.uint8(keep)
        y[i] = x[i] * (scale if keep else np.float32(0.0))  # x * mask * scale: NaN stays NaN, as in PyTorch


def dropout(x, state, threshold, scale):
    y = _memory.empty(x.shape)
    mask = _memory.empty((x.size,), np.uint8)
    _dropout(x, np.uint64(state), np.uint64(threshold), np.float32(scale), y, mask)
    return y, mask


@njit(cache=True, parallel=True)
def _dropout_backward(grad, mask, scale, out):
    for i in prange(grad.size):
        out[i] = grad[i] * (scale if mask[i] else np.float32(0.0))


def dropout_backward(grad, mask, scale):
    out = np.empty_like(grad)
    _dropout_backward(grad, mask, np.float32(scale), out)
    return out
