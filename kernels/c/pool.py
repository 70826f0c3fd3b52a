"""cffi wrappers of ``csrc/pool.c``. Inputs are checked float32 (planes, H, W) C-contiguous
arrays and int64 indices; windows are (kh, kw, sh, sw, ph, pw)."""
import numpy as np

from kernels.c import lib, ptr
from kernels.pool import out_size


def max_pool2d(x, kh, kw, sh, sw, ph, pw, return_indices):
    p, h, w = x.shape
    shape = (p, *out_size(h, w, kh, kw, sh, sw, ph, pw))
    y = np.empty(shape, np.float32)
    idx = np.empty(shape, np.int64) if return_indices else None
    lib.pynn_max_pool2d(ptr(x), ptr(y), ptr(idx), p, h, w, kh, kw, sh, sw, ph, pw)
    return y, idx


def max_pool2d_backward(g, idx, h, w):
    p, ho, wo = g.shape
    gx = np.empty((p, h, w), np.float32)
    lib.pynn_max_pool2d_backward(ptr(g), ptr(idx), ptr(gx), p, ho, wo, h, w)
    return gx


def avg_pool2d(x, kh, kw, sh, sw, ph, pw, count_include_pad):
    p, h, w = x.shape
    y = np.empty((p, *out_size(h, w, kh, kw, sh, sw, ph, pw)), np.float32)
    lib.pynn_avg_pool2d(ptr(x), ptr(y), p, h, w, kh, kw, sh, sw, ph, pw, int(count_include_pad))
    return y


def avg_pool2d_backward(g, h, w, kh, kw, sh, sw, ph, pw, count_include_pad):
    p = g.shape[0]
    gx = np.empty((p, h, w), np.float32)
    lib.pynn_avg_pool2d_backward(ptr(g), ptr(gx), p, h, w, kh, kw, sh, sw, ph, pw, int(count_include_pad))
    return gx
