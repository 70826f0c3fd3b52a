"""Pooling over the two spatial axes of NCHW tensors, with the semantics of ``torch.nn.functional``.

Max and average pooling summarise each ``kernel_size`` window, moved by ``stride`` over the
input padded by ``padding`` on each side (Goodfellow, Bengio & Courville, *Deep Learning*,
2016, 9.3; Dumoulin & Visin, "A guide to convolution arithmetic", 2016, for the output size
``(H + 2 p - k) // s + 1``). Global average pooling, one mean per channel plane, is Lin, Chen
& Yan, "Network in Network", ICLR 2014, 3.2; it runs as average pooling with the whole plane as
the window. ``ceil_mode`` and ``dilation`` are not supported (PyTorch's defaults are used).

Backends see every tensor as (planes, H, W) with planes = N * C, the unit of parallel work;
this module checks and normalises the arguments once and reshapes the results back.
NaN and infinities are not checked for: average pooling propagates them through its sums, and
max pooling follows PyTorch's rule (see ``max_pool2d``).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import numpy as np

from kernels import _checks as ck
from kernels._dispatch import implementation, resolve

_impl = partial(implementation, "pool")


def out_size(h: int, w: int, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int) -> tuple[int, int]:
    """Output height and width of a (kh, kw) window with stride (sh, sw) over an (h, w) plane
    padded by (ph, pw) on each side; the backends share this one formula."""
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


class Window(NamedTuple):
    """A checked pooling window: kernel, stride and padding along H and along W."""

    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int



def _window(kernel_size, stride=None, padding=0) -> Window:
    """Check and normalise pooling hyper-parameters; ``stride=None`` means ``kernel_size``.

    Raises TypeError for values that are not ints or pairs of ints, ValueError for a kernel or
    stride below 1, a negative padding, or a padding above half the kernel (PyTorch's rule: a
    window must always hold at least one input cell).
    """
    kh, kw = ck.int_pair(kernel_size, "kernel_size", 1)
    sh, sw = (kh, kw) if stride is None else ck.int_pair(stride, "stride", 1)
    ph, pw = ck.int_pair(padding, "padding", 0)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"padding must be at most half of kernel_size, got padding={(ph, pw)} for kernel_size={(kh, kw)}"
        )
    return Window(kh, kw, sh, sw, ph, pw)


def _checked_out_size(win: Window, h: int, w: int, name: str, shape) -> tuple[int, int]:
    ho, wo = out_size(h, w, *win)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"{name} of shape {tuple(shape)} is too small for kernel_size {(win.kh, win.kw)} with "
            f"padding {(win.ph, win.pw)}: the output would be {ho}x{wo}"
        )
    return ho, wo


def _input_shape(input_shape) -> tuple[int, int, int, int]:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) != 4 or not all(ck.is_int(v) for v in shape):
        raise TypeError(f"input_shape must be a 4-tuple of ints (N, C, H, W), got {input_shape!r}")
    if min(shape) < 1:
        raise ValueError(f"input_shape must hold positive sizes, got {shape}")
    return tuple(int(v) for v in shape)


def _grad_output(grad_output, be, n, c, ho, wo):
    """Check grad_output is (N, C, H_out, W_out) as implied by input_shape and the window."""
    g = ck.float_array(grad_output, "grad_output", be, ndim=4)
    if tuple(g.shape) != (n, c, ho, wo):
        raise ValueError(
            f"grad_output must have shape {(n, c, ho, wo)} (the pooled size of input_shape), "
            f"got {tuple(g.shape)}"
        )
    return g


def _planes(a):
    """View (N, C, H, W) as (N * C, H, W); a is C-contiguous so this is free."""
    n, c, h, w = a.shape
    return a.reshape(n * c, h, w)


def _avg(x, win, count_include_pad, be):
    n, c, h, w = x.shape
    ho, wo = _checked_out_size(win, h, w, "x", x.shape)
    y = _impl("avg_pool2d", be)(_planes(x), *win, bool(count_include_pad))
    return y.reshape(n, c, ho, wo)


def _avg_backward(g, n, c, h, w, win, count_include_pad, be):
    gx = _impl("avg_pool2d_backward", be)(_planes(g), h, w, *win, bool(count_include_pad))
    return gx.reshape(n, c, h, w)


def max_pool2d(x, kernel_size, stride=None, padding=0, *, return_indices: bool = False, backend: str | None = None):
    """Max pooling: the largest value of each window (``torch.nn.functional.max_pool2d``).

    x: (N, C, H, W), float32 (float64 also on ``numpy``), C-contiguous. kernel_size, stride and
    padding: an int or an (h, w) pair; stride None means kernel_size; padding at most half the
    kernel. Padded cells are -inf and never win. Returns y (N, C, H_out, W_out) of x's dtype,
    H_out = (H + 2 padding - kernel) // stride + 1, and with ``return_indices`` also int64
    indices of the same shape: the flat position ``h * W + w`` of each maximum in its input plane.
    Ties go to the first cell in row-major order; a NaN wins over any number, the last NaN of a
    window over earlier ones (PyTorch's CPU rule ``v > max or isnan(v)``).

    Raises TypeError (array type, dtype, non-integer window sizes) and ValueError (rank, empty,
    non-contiguous, kernel or stride below 1, padding above half the kernel, an input smaller
    than the window), naming the argument.
    """
    be = resolve(backend, x)
    win = _window(kernel_size, stride, padding)
    x = ck.float_array(x, "x", be, ndim=4)
    n, c, h, w = x.shape
    ho, wo = _checked_out_size(win, h, w, "x", x.shape)
    y, idx = _impl("max_pool2d", be)(_planes(x), *win, bool(return_indices))
    y = y.reshape(n, c, ho, wo)
    return (y, idx.reshape(n, c, ho, wo)) if return_indices else y


def max_pool2d_backward(grad_output, indices, input_shape, *, backend: str | None = None):
    """Gradient of ``max_pool2d``: grad_output added into the cells its indices name.

    grad_output: (N, C, H_out, W_out), float32 (float64 also on ``numpy``); indices: the int64
    (int32 accepted) indices ``max_pool2d(..., return_indices=True)`` returned, same shape, values
    in [0, H * W); input_shape: (N, C, H, W) of the pooled input. Where windows overlap (stride
    below kernel) a cell that wins several windows receives the sum of their gradients. Returns
    grad_x (N, C, H, W) of grad_output's dtype.

    Raises TypeError and ValueError naming the argument (shapes that disagree with input_shape,
    indices out of range included).
    """
    be = resolve(backend, grad_output, indices)
    n, c, h, w = _input_shape(input_shape)
    g = ck.float_array(grad_output, "grad_output", be, ndim=4)
    if tuple(g.shape[:2]) != (n, c):
        raise ValueError(f"grad_output must have shape ({n}, {c}, *, *) to match input_shape, got {tuple(g.shape)}")
    idx = ck.int_array(indices, "indices", shape=tuple(g.shape), low=0, high=h * w, like="grad_output")
    if isinstance(idx, np.ndarray):
        idx = idx.astype(np.int64, copy=False)  # one index type for the compiled backends
    gx = _impl("max_pool2d_backward", be)(_planes(g), _planes(idx), h, w)
    return gx.reshape(n, c, h, w)


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, count_include_pad: bool = True, backend: str | None = None):
    """Average pooling: the mean of each window (``torch.nn.functional.avg_pool2d``).

    x, kernel_size, stride, padding and the output shape as for ``max_pool2d``; padded cells
    are zeros. With ``count_include_pad`` every window divides by kernel_h * kernel_w; without
    it, by the number of its cells inside the input. Returns y (N, C, H_out, W_out) of x's dtype.

    Raises TypeError and ValueError as ``max_pool2d`` does.
    """
    be = resolve(backend, x)
    win = _window(kernel_size, stride, padding)
    x = ck.float_array(x, "x", be, ndim=4)
    return _avg(x, win, count_include_pad, be)


def avg_pool2d_backward(
    grad_output, input_shape, kernel_size, stride=None, padding=0, *, count_include_pad: bool = True,
    backend: str | None = None,
):
    """Gradient of ``avg_pool2d``: each window spreads grad_output / its divisor over its cells.

    grad_output: (N, C, H_out, W_out), float32 (float64 also on ``numpy``), where H_out, W_out
    are what ``avg_pool2d`` gives for input_shape (N, C, H, W) and the same window arguments.
    Returns grad_x (N, C, H, W) of grad_output's dtype.

    Raises TypeError and ValueError naming the argument, as ``avg_pool2d`` does, and when
    grad_output's shape disagrees with input_shape.
    """
    be = resolve(backend, grad_output)
    win = _window(kernel_size, stride, padding)
    n, c, h, w = _input_shape(input_shape)
    ho, wo = _checked_out_size(win, h, w, "input_shape", (n, c, h, w))
    g = _grad_output(grad_output, be, n, c, ho, wo)
    return _avg_backward(g, n, c, h, w, win, count_include_pad, be)


def _global(output_size):
    if ck.int_pair(output_size, "output_size", 1) != (1, 1):
        raise ValueError(
            f"output_size must be 1 or (1, 1): only global average pooling is supported, got {output_size!r}"
        )


def adaptive_avg_pool2d(x, output_size, *, backend: str | None = None):
    """Global average pooling (``torch.nn.functional.adaptive_avg_pool2d`` with output size 1):
    the mean of each channel plane (Lin et al., "Network in Network", ICLR 2014).

    x: (N, C, H, W), float32 (float64 also on ``numpy``), C-contiguous; output_size: 1 or (1, 1).
    Returns y (N, C, 1, 1) of x's dtype.

    Raises ValueError for any other output_size, and TypeError/ValueError naming x as
    ``avg_pool2d`` does.
    """
    be = resolve(backend, x)
    _global(output_size)
    x = ck.float_array(x, "x", be, ndim=4)
    return _avg(x, Window(x.shape[2], x.shape[3], 1, 1, 0, 0), True, be)


def adaptive_avg_pool2d_backward(grad_output, input_shape, *, backend: str | None = None):
    """Gradient of ``adaptive_avg_pool2d``: grad_output / (H * W) spread over each plane.

    grad_output: (N, C, 1, 1), float32 (float64 also on ``numpy``); input_shape: (N, C, H, W).
    Returns grad_x (N, C, H, W). Raises TypeError and ValueError naming the argument.
    """
    be = resolve(backend, grad_output)
    n, c, h, w = _input_shape(input_shape)
    g = _grad_output(grad_output, be, n, c, 1, 1)
    return _avg_backward(g, n, c, h, w, Window(h, w, 1, 1, 0, 0), True, be)
