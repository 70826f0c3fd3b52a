"""Numba CPU pooling. Tensors are (planes, H, W) float32, C-contiguous, as ``kernels.pool``
passes them; windows are (kh, kw, sh, sw, ph, pw).

Pooling is bandwidth-bound: every kernel takes one channel plane per parallel iteration (a
plane of the CNN's layers is a few KB and stays in L1 while it is worked on), and backward
passes scatter into their own plane, so no atomics are needed. Arrays are read through flat
views with unsigned indices: Numba wraps negative signed indices around, a test on every access
that kept these loops scalar and made them about three times slower.

Max pooling follows the reference's rule "take a cell when it is larger or NaN", which compiles
to branches that mispredict on random data. A plane without NaN (checked first, in one
vectorised pass) only needs "larger", which compiles to selects; for 2x2 stride-2 windows (the
CNN's) such a plane takes a branch-free loop of its own, several times faster than the
general one. No fastmath on max pooling (NaN must win); average pooling lets LLVM reorder its
sums (``reassoc``), nothing more.
"""
import numpy as np
from numba import njit, prange

from kernels import _memory
from kernels.pool import out_size

_U = np.uint64  # index type: unsigned indices skip Numba's negative-index wraparound


@njit(cache=True, inline="always")
def _span(o, s, p, k, n):
    """The input cells [lo, hi) under window o of kernel k, stride s, padding p on an axis of n."""
    start = o * s - p
    return max(start, 0), min(start + k, n)


@njit(cache=True, inline="always")
def _columns(j, sw, pw, w, wo):
    """The output columns [lo, hi) whose kernel column j falls inside the input's w columns."""
    return max(0, -((j - pw) // sw)), min(wo, (w - 1 + pw - j) // sw + 1)


@njit(cache=True, inline="always")
def _has_nan(xf, start, n):
    count = 0
    for j in range(start, start + n):
        count += np.int32(xf[_U(j)] != xf[_U(j)])
    return count > 0


@njit(cache=True, inline="always")
def _max_plane(xf, yf, kf, xq, yq, h, w, ho, wo, kh, kw, sh, sw, ph, pw, with_idx, nan_aware):
    """Max pooling of one plane, one output row at a time: each kernel cell (i, j) in scan
    order updates the whole row of running maxima, so the inner loop has no dependency chain."""
    for oh in range(ho):
        top = oh * sh - ph
        yo = yq + oh * wo
        for ow in range(wo):
            yf[_U(yo + ow)] = -np.inf
            if with_idx:  # PyTorch's start: the window's first cell inside the input
                kf[_U(yo + ow)] = max(top, 0) * w + max(ow * sw - pw, 0)
        for i in range(max(0, -top), min(kh, h - top)):
            for j in range(kw):
                lo, hi = _columns(j, sw, pw, w, wo)
                cell = (top + i) * w - pw + j  # flat input cell of output column 0
                for ow in range(lo, hi):
                    c = cell + ow * sw
                    v = xf[_U(xq + c)]
                    m = yf[_U(yo + ow)]
                    take = (v > m) | (nan_aware & (v != v))
                    yf[_U(yo + ow)] = v if take else m
                    if with_idx:
                        kf[_U(yo + ow)] = c if take else kf[_U(yo + ow)]


@njit(cache=True, inline="always")
def _max_plane_2x2(xf, yf, kf, xq, yq, w, ho, wo, with_idx):
    """2x2 stride-2 max pooling of a NaN-free plane: the larger of each row's two cells, then of
    the two rows, keeps the first maximum in scan order. The index is computed arithmetically
    from the comparisons: LLVM turns a chain of int64 selects into branches."""
    for oh in range(ho):
        r0 = xq + 2 * oh * w
        yo = yq + oh * wo
        for ow in range(wo):
            a, b = xf[_U(r0 + 2 * ow)], xf[_U(r0 + 2 * ow + 1)]
            c, d = xf[_U(r0 + w + 2 * ow)], xf[_U(r0 + w + 2 * ow + 1)]
            right, low_right = b > a, d > c
            top = b if right else a
            bottom = d if low_right else c
            low = bottom > top
            yf[_U(yo + ow)] = bottom if low else top
            if with_idx:
                r = np.int64(right)
                kf[_U(yo + ow)] = 2 * (oh * w + ow) + r + np.int64(low) * (w + np.int64(low_right) - r)


@njit(cache=True, parallel=True)
def _max_pool(x, y, idx, kh, kw, sh, sw, ph, pw, with_idx):
    p, h, w = x.shape
    ho, wo = y.shape[1], y.shape[2]
    xf, yf, kf = x.reshape(-1), y.reshape(-1), idx.reshape(-1)
    fast_2x2 = kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
    for q in prange(p):
        xq, yq = q * h * w, q * ho * wo
        nan = _has_nan(xf, xq, h * w)
        if fast_2x2 and not nan:
            _max_plane_2x2(xf, yf, kf, xq, yq, w, ho, wo, with_idx)
        else:
            _max_plane(xf, yf, kf, xq, yq, h, w, ho, wo, kh, kw, sh, sw, ph, pw, with_idx, nan)


def max_pool2d(x, kh, kw, sh, sw, ph, pw, return_indices):
    p, h, w = x.shape
    shape = (p, *out_size(h, w, kh, kw, sh, sw, ph, pw))
    y = _memory.empty(shape)
    idx = _memory.empty(shape, np.int64) if return_indices else np.empty((1, 1, 1), np.int64)  # never written when unused
    _max_pool(x, y, idx, kh, kw, sh, sw, ph, pw, return_indices)
    return y, (idx if return_indices else None)


@njit(cache=True, parallel=True)
def _max_pool_backward(g, idx, gx):
    p, ho, wo = g.shape
    h, w = gx.shape[1:]
    gf, kf, xf = g.reshape(-1), idx.reshape(-1), gx.reshape(-1)
    for q in prange(p):
        xf[q * h * w : (q + 1) * h * w] = 0.0
        for o in range(q * ho * wo, (q + 1) * ho * wo):
            xf[_U(q * h * w + kf[_U(o)])] += gf[_U(o)]


def max_pool2d_backward(g, idx, h, w):
    gx = _memory.empty((g.shape[0], h, w))
    _max_pool_backward(g, idx, gx)
    return gx


@njit(cache=True, inline="always")
def _divisor(h0, h1, w0, w1, kh, kw, count_include_pad):
    """A window's divisor. Windows never reach past the padding (no ceil_mode), so counting the
    padding gives the kernel area, as PyTorch's formula does."""
    return np.float32(kh * kw if count_include_pad else (h1 - h0) * (w1 - w0))


@njit(cache=True, inline="always")
def _runs(h0, h1, w0, w1, w):
    """The window rows [h0, h1) x columns [w0, w1) of a plane of width w as runs of contiguous
    cells: (first row, end row, first column, end column). A window of whole rows (global
    pooling) is a single long run, which LLVM vectorises."""
    if w0 == 0 and w1 == w:
        return 0, 1, h0 * w, h1 * w
    return h0, h1, w0, w1


@njit(cache=True, inline="always")
def _window_sum(xf, plane, h0, h1, w0, w1, w):
    """Sum of a window of the plane at offset ``plane`` of the flat array xf."""
    r0, r1, c0, c1 = _runs(h0, h1, w0, w1, w)
    acc = np.float32(0.0)
    for i in range(r0, r1):
        for j in range(plane + i * w + c0, plane + i * w + c1):
            acc += xf[_U(j)]
    return acc


@njit(cache=True, inline="always")
def _window_add(xf, plane, h0, h1, w0, w1, w, value):
    """Add value to every cell of a window of the plane at offset ``plane`` of xf."""
    r0, r1, c0, c1 = _runs(h0, h1, w0, w1, w)
    for i in range(r0, r1):
        for j in range(plane + i * w + c0, plane + i * w + c1):
            xf[_U(j)] += value


@njit(cache=True, parallel=True, fastmath={"reassoc"})
def _avg_pool(x, y, kh, kw, sh, sw, ph, pw, count_include_pad):
    p, h, w = x.shape
    ho, wo = y.shape[1], y.shape[2]
    xf, yf = x.reshape(-1), y.reshape(-1)
    for q in prange(p):
        for oh in range(ho):
            h0, h1 = _span(oh, sh, ph, kh, h)
            for ow in range(wo):
                w0, w1 = _span(ow, sw, pw, kw, w)
                acc = _window_sum(xf, q * h * w, h0, h1, w0, w1, w)
                yf[_U((q * ho + oh) * wo + ow)] = acc / _divisor(h0, h1, w0, w1, kh, kw, count_include_pad)


def avg_pool2d(x, kh, kw, sh, sw, ph, pw, count_include_pad):
    p, h, w = x.shape
    y = _memory.empty((p, *out_size(h, w, kh, kw, sh, sw, ph, pw)))
    _avg_pool(x, y, kh, kw, sh, sw, ph, pw, count_include_pad)
    return y


@njit(cache=True, parallel=True)
def _avg_pool_backward(g, gx, kh, kw, sh, sw, ph, pw, count_include_pad):
    p, ho, wo = g.shape
    h, w = gx.shape[1:]
    gf, xf = g.reshape(-1), gx.reshape(-1)
    for q in prange(p):
        xf[q * h * w : (q + 1) * h * w] = 0.0
        for oh in range(ho):
            h0, h1 = _span(oh, sh, ph, kh, h)
            for ow in range(wo):
                w0, w1 = _span(ow, sw, pw, kw, w)
                share = gf[_U((q * ho + oh) * wo + ow)] / _divisor(h0, h1, w0, w1, kh, kw, count_include_pad)
                _window_add(xf, q * h * w, h0, h1, w0, w1, w, share)


def avg_pool2d_backward(g, h, w, kh, kw, sh, sw, ph, pw, count_include_pad):
    gx = _memory.empty((g.shape[0], h, w))
    _avg_pool_backward(g, gx, kh, kw, sh, sw, ph, pw, count_include_pad)
    return gx
