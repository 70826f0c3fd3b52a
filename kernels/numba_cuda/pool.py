"""Numba CUDA pooling. Tensors are (planes, H, W) float32, as ``kernels.pool`` passes them;
windows are (kh, kw, sh, sw, ph, pw).

Forward passes run one thread per output element, scanning its window in the reference's
order. The average-pooling backward pass gathers: one thread per input cell sums the shares of
the windows that contain it, so the result does not depend on scheduling. Max pooling's
backward pass only has the indices, not the window, so it cannot find the windows covering a
cell; it scatters instead, one thread per output element adding into its argmax cell with an
atomic add. Where windows do not overlap (stride >= kernel, the usual case) every cell receives
at most one value and the result is still deterministic.
"""
import math

import numpy as np
from numba import cuda, float32

from kernels.numba_cuda import _launch
from kernels.numba_cuda._launch import result, to_device
from kernels.pool import out_size

_NEG_INF = float32(-math.inf)


@cuda.jit(device=True, inline=True)
def _span(o, s, p, k, n):
    """The input cells [lo, hi) under window o of kernel k, stride s, padding p on an axis of n."""
    start = o * s - p
    return max(start, 0), min(start + k, n)


@cuda.jit(device=True, inline=True)
def _covering(i, s, p, k, n_out):
    """The windows [lo, hi) of kernel k, stride s, padding p that contain input cell i."""
    # window o covers i when o * s - p <= i < o * s - p + k
    return max(0, -((k - 1 - i - p) // s)), min(n_out, (i + p) // s + 1)


@cuda.jit(device=True, inline=True)
def _divisor(h0, h1, w0, w1, kh, kw, count_include_pad):
    # Windows never reach past the padding (no ceil_mode): counting it gives the kernel area.
    return float32(kh * kw if count_include_pad else (h1 - h0) * (w1 - w0))


@cuda.jit
def _max_pool(x, y, idx, kh, kw, sh, sw, ph, pw, with_idx):
    t = cuda.grid(1)
    p, ho, wo = y.shape
    if t < p * ho * wo:
        q, o = t // (ho * wo), t % (ho * wo)
        oh, ow = o // wo, o % wo
        w = x.shape[2]
        h0, h1 = _span(oh, sh, ph, kh, x.shape[1])
        w0, w1 = _span(ow, sw, pw, kw, w)
        m = _NEG_INF
        k = h0 * w + w0  # PyTorch's start: the window's first cell inside the input
        for i in range(h0, h1):
            for j in range(w0, w1):
                v = x[q, i, j]
                if v > m or v != v:  # larger, or NaN: ties keep the first, the last NaN wins
                    m = v
                    k = i * w + j
        y[q, oh, ow] = m
        if with_idx:
            idx[q, oh, ow] = k


def max_pool2d(x, kh, kw, sh, sw, ph, pw, return_indices):
    (x,), on_host = to_device(x)
    p, h, w = x.shape
    shape = (p, *out_size(h, w, kh, kw, sh, sw, ph, pw))
    y = cuda.device_array(shape, np.float32)
    idx = cuda.device_array(shape if return_indices else (1, 1, 1), np.int64)  # unused when not wanted
    _max_pool[_launch.blocks(y.size), _launch.THREADS](x, y, idx, kh, kw, sh, sw, ph, pw, return_indices)
    return result(y, on_host), (result(idx, on_host) if return_indices else None)


@cuda.jit
def _zero(a):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] = 0.0


@cuda.jit
def _max_pool_backward(g, idx, gx):
    """g, idx (planes, H_out * W_out); gx (planes, H * W), zeroed."""
    t = cuda.grid(1)
    p, n = g.shape
    if t < p * n:
        q, o = t // n, t % n
        cuda.atomic.add(gx, (q, idx[q, o]), g[q, o])


def max_pool2d_backward(g, idx, h, w):
    (g, idx), on_host = to_device(g, idx)
    p = g.shape[0]
    gx = cuda.device_array((p, h * w), np.float32)
    _zero[_launch.blocks(gx.size), _launch.THREADS](gx.reshape(gx.size))
    n = g.shape[1] * g.shape[2]
    _max_pool_backward[_launch.blocks(p * n), _launch.THREADS](g.reshape(p, n), idx.reshape(p, n), gx)
    return result(gx.reshape(p, h, w), on_host)


@cuda.jit
def _avg_pool(x, y, kh, kw, sh, sw, ph, pw, count_include_pad):
    t = cuda.grid(1)
    p, ho, wo = y.shape
    if t < p * ho * wo:
        q, o = t // (ho * wo), t % (ho * wo)
        oh, ow = o // wo, o % wo
        h0, h1 = _span(oh, sh, ph, kh, x.shape[1])
        w0, w1 = _span(ow, sw, pw, kw, x.shape[2])
        acc = float32(0.0)
        for i in range(h0, h1):
            for j in range(w0, w1):
                acc += x[q, i, j]
        y[q, oh, ow] = acc / _divisor(h0, h1, w0, w1, kh, kw, count_include_pad)


def avg_pool2d(x, kh, kw, sh, sw, ph, pw, count_include_pad):
    (x,), on_host = to_device(x)
    p, h, w = x.shape
    y = cuda.device_array((p, *out_size(h, w, kh, kw, sh, sw, ph, pw)), np.float32)
    _avg_pool[_launch.blocks(y.size), _launch.THREADS](x, y, kh, kw, sh, sw, ph, pw, count_include_pad)
    return result(y, on_host)


@cuda.jit
def _avg_pool_backward(g, gx, kh, kw, sh, sw, ph, pw, count_include_pad):
    t = cuda.grid(1)
    p, h, w = gx.shape
    if t < p * h * w:
        q, c = t // (h * w), t % (h * w)
        r, c = c // w, c % w
        ho, wo = g.shape[1], g.shape[2]
        oh0, oh1 = _covering(r, sh, ph, kh, ho)
        ow0, ow1 = _covering(c, sw, pw, kw, wo)
        acc = float32(0.0)
        for oh in range(oh0, oh1):
            h0, h1 = _span(oh, sh, ph, kh, h)
            for ow in range(ow0, ow1):
                w0, w1 = _span(ow, sw, pw, kw, w)
                acc += g[q, oh, ow] / _divisor(h0, h1, w0, w1, kh, kw, count_include_pad)
        gx[q, r, c] = acc


def avg_pool2d_backward(g, h, w, kh, kw, sh, sw, ph, pw, count_include_pad):
    (g,), on_host = to_device(g)
    gx = cuda.device_array((g.shape[0], h, w), np.float32)
    _avg_pool_backward[_launch.blocks(gx.size), _launch.THREADS](g, gx, kh, kw, sh, sw, ph, pw, count_include_pad)
    return result(gx, on_host)


# Argument types of every kernel in this module, compiled for sm_90 by tests/test_cuda_ptx.py.
_WINDOW = "int64, int64, int64, int64, int64, int64, boolean"
SIGNATURES = {
    "_max_pool": f"(float32[:, :, ::1], float32[:, :, ::1], int64[:, :, ::1], {_WINDOW})",
    "_zero": "(float32[::1],)",
    "_max_pool_backward": "(float32[:, ::1], int64[:, ::1], float32[:, ::1])",
    "_avg_pool": f"(float32[:, :, ::1], float32[:, :, ::1], {_WINDOW})",
    "_avg_pool_backward": f"(float32[:, :, ::1], float32[:, :, ::1], {_WINDOW})",
}
