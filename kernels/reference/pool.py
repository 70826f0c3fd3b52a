"""NumPy reference of the pooling ops: the specification (float32 and float64).

Tensors are (planes, H, W) as ``kernels.pool`` passes them; windows are (kh, kw, sh, sw, ph,
pw). Each op loops over the kernel's kh * kw offsets: at offset (i, j), the strided view
``padded[:, i::sh, j::sw]`` (cut to H_out x W_out) holds that cell of every window at once.
"""
import numpy as np

from kernels.pool import out_size


def _taps(kh, kw, sh, sw, ho, wo):
    """Yield (i, j, rows, cols): each kernel offset and the slices of the padded plane it reads."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw)


def _pad(x, ph, pw, value):
    return np.pad(x, ((0, 0), (ph, ph), (pw, pw)), constant_values=value)


def max_pool2d(x, kh, kw, sh, sw, ph, pw, return_indices):
    """x (P, H, W) -> y (P, H_out, W_out), and int64 flat indices h * W + w of the maxima."""
    p, h, w = x.shape
    ho, wo = out_size(h, w, kh, kw, sh, sw, ph, pw)
    top = np.arange(ho)[:, None] * sh - ph  # window origins, in input coordinates
    left = np.arange(wo)[None, :] * sw - pw
    padded = _pad(x, ph, pw, -np.inf)  # -inf never beats the start value below
    # PyTorch starts from -inf at the window's first cell inside the input, then takes a cell
    # when it is larger or NaN: so ties keep the first cell, and the last NaN wins.
    y = np.full((p, ho, wo), -np.inf, x.dtype)
    idx = np.broadcast_to(np.maximum(top, 0) * w + np.maximum(left, 0), (p, ho, wo)).astype(np.int64)
    for i, j, rows, cols in _taps(kh, kw, sh, sw, ho, wo):
        v = padded[:, rows, cols]
        take = (v > y) | np.isnan(v)
        y = np.where(take, v, y)
        idx = np.where(take, (top + i) * w + (left + j), idx)
    return y, (idx if return_indices else None)


def max_pool2d_backward(g, idx, h, w):
    """g, idx (P, H_out, W_out) -> grad_x (P, H, W): g added at each index (repeats add up)."""
    p = g.shape[0]
    gx = np.zeros((p, h * w), g.dtype)
    np.add.at(gx, (np.arange(p)[:, None], idx.reshape(p, -1)), g.reshape(p, -1))
    return gx.reshape(p, h, w)


def _divisor(h, w, kh, kw, sh, sw, ph, pw, count_include_pad):
    """Each window's divisor: kh * kw, or with count_include_pad False its cells inside the input."""
    if count_include_pad:
        return kh * kw
    ho, wo = out_size(h, w, kh, kw, sh, sw, ph, pw)
    inside = _pad(np.ones((1, h, w)), ph, pw, 0.0)
    return sum(inside[:, rows, cols] for _, _, rows, cols in _taps(kh, kw, sh, sw, ho, wo))


def avg_pool2d(x, kh, kw, sh, sw, ph, pw, count_include_pad):
    """x (P, H, W) -> y (P, H_out, W_out): window sums over zero padding, divided by the divisor."""
    p, h, w = x.shape
    ho, wo = out_size(h, w, kh, kw, sh, sw, ph, pw)
    padded = _pad(x, ph, pw, 0.0)
    total = sum(padded[:, rows, cols] for _, _, rows, cols in _taps(kh, kw, sh, sw, ho, wo))
    return (total / _divisor(h, w, kh, kw, sh, sw, ph, pw, count_include_pad)).astype(x.dtype)


def avg_pool2d_backward(g, h, w, kh, kw, sh, sw, ph, pw, count_include_pad):
    """g (P, H_out, W_out) -> grad_x (P, H, W): g / divisor added to every cell of its window."""
    p, ho, wo = g.shape
    share = (g / _divisor(h, w, kh, kw, sh, sw, ph, pw, count_include_pad)).astype(g.dtype)
    padded = np.zeros((p, h + 2 * ph, w + 2 * pw), g.dtype)
    for _, _, rows, cols in _taps(kh, kw, sh, sw, ho, wo):
        padded[:, rows, cols] += share
    return np.ascontiguousarray(padded[:, ph:ph + h, pw:pw + w])
