"""Numba CUDA 2-D convolution: direct kernels, one thread per element of the result. Shapes as
in ``kernels.conv``; float32, NCHW.

Forward: a thread per output element sums its window. Input gradient: a thread per input
element gathers the output positions whose windows cover it (the position i with
i s_h + a d_h - p_h = h exists when h + p_h - a d_h is a non-negative multiple of s_h below
H_out s_h), so no two threads write one cell and no atomics are needed. Weight gradient: a
thread per weight element reduces over N, H_out and W_out; bias gradient: a thread per channel.
The group of a channel follows from the shapes: C_in / G = weight.shape[1].
"""
import numpy as np
from numba import cuda, float32

from kernels.conv import Geometry
from kernels.numba_cuda import _launch
from kernels.numba_cuda._launch import result, to_device


@cuda.jit
def _forward(x, weight, bias, y, sh, sw, ph, pw, dh, dw, use_bias):
    t = cuda.grid(1)
    n_, c_out, ho, wo = y.shape
    if t >= n_ * c_out * ho * wo:
        return
    j, i, o, n = t % wo, t // wo % ho, t // (wo * ho) % c_out, t // (wo * ho * c_out)
    _, c_in, h, w = x.shape
    _, cpg, kh, kw = weight.shape
    c0 = o // (c_out // (c_in // cpg)) * cpg
    acc = bias[o] if use_bias else float32(0.0)
    for c in range(cpg):
        for a in range(kh):
            hi = i * sh - ph + a * dh
            if 0 <= hi < h:
                for b in range(kw):
                    wj = j * sw - pw + b * dw
                    if 0 <= wj < w:
                        acc += weight[o, c, a, b] * x[n, c0 + c, hi, wj]
    y[n, o, i, j] = acc


@cuda.jit
def _grad_x(g, weight, gx, sh, sw, ph, pw, dh, dw):
    t = cuda.grid(1)
    n_, c_in, h, w = gx.shape
    if t >= n_ * c_in * h * w:
        return
    wj, hi, ci, n = t % w, t // w % h, t // (w * h) % c_in, t // (w * h * c_in)
    _, c_out, ho, wo = g.shape
    _, cpg, kh, kw = weight.shape
    opg = c_out // (c_in // cpg)
    c, o0 = ci % cpg, ci // cpg * opg
    acc = float32(0.0)
    for a in range(kh):
        u = hi + ph - a * dh
        if u < 0 or u % sh != 0 or u // sh >= ho:
            continue
        i = u // sh
        for b in range(kw):
            v = wj + pw - b * dw
            if v < 0 or v % sw != 0 or v // sw >= wo:
                continue
            j = v // sw
            for o in range(o0, o0 + opg):
                acc += weight[o, c, a, b] * g[n, o, i, j]
    gx[n, ci, hi, wj] = acc


@cuda.jit
def _grad_weight(g, x, gw, sh, sw, ph, pw, dh, dw):
    t = cuda.grid(1)
    c_out, cpg, kh, kw = gw.shape
    if t >= c_out * cpg * kh * kw:
        return
    b, a, c, o = t % kw, t // kw % kh, t // (kw * kh) % cpg, t // (kw * kh * cpg)
    n_, c_in, h, w = x.shape
    _, _, ho, wo = g.shape
    ci = o // (c_out // (c_in // cpg)) * cpg + c
    acc = float32(0.0)
    for n in range(n_):
        for i in range(ho):
            hi = i * sh - ph + a * dh
            if 0 <= hi < h:
                for j in range(wo):
                    wj = j * sw - pw + b * dw
                    if 0 <= wj < w:
                        acc += g[n, o, i, j] * x[n, ci, hi, wj]
    gw[o, c, a, b] = acc


@cuda.jit
def _grad_bias(g, gb):
    o = cuda.grid(1)
    n_, c_out, ho, wo = g.shape
    if o < c_out:
        acc = float32(0.0)
        for n in range(n_):
            for i in range(ho):
                for j in range(wo):
                    acc += g[n, o, i, j]
        gb[o] = acc


def _launch_over(kernel, out, *args):
    kernel[_launch.blocks(out.size), _launch.THREADS](*args)


def conv2d(x, weight, bias, sh, sw, ph, pw, dh, dw, groups):
    (x, weight, bias), on_host = to_device(x, weight, bias)
    ho, wo = Geometry(sh, sw, ph, pw, dh, dw, groups).output_size(*x.shape[2:], *weight.shape[2:])
    y = cuda.device_array((x.shape[0], weight.shape[0], ho, wo), np.float32)
    use_bias = bias is not None
    if not use_bias:
        bias = cuda.device_array(1, np.float32)  # never read; keeps one kernel signature
    _launch_over(_forward, y, x, weight, bias, y, sh, sw, ph, pw, dh, dw, use_bias)
    return result(y, on_host)


def conv2d_backward(g, x, weight, sh, sw, ph, pw, dh, dw, groups, bias, input_grad):
    (g, x, weight), on_host = to_device(g, x, weight)
    gx = None
    if input_grad:
        gx = cuda.device_array(x.shape, np.float32)
        _launch_over(_grad_x, gx, g, weight, gx, sh, sw, ph, pw, dh, dw)
    gw = cuda.device_array(weight.shape, np.float32)
    _launch_over(_grad_weight, gw, g, x, gw, sh, sw, ph, pw, dh, dw)
    gb = None
    if bias:
        gb = cuda.device_array(weight.shape[0], np.float32)
        _launch_over(_grad_bias, gb, g, gb)
    return (None if gx is None else result(gx, on_host)), result(gw, on_host), None if gb is None else result(gb, on_host)


_ARRAY4 = "float32[:, :, :, ::1]"
_INTS = ", int64, int64, int64, int64, int64, int64"
# Argument types of every kernel in this module, compiled for sm_90 by tests/test_cuda_ptx.py.
SIGNATURES = {
    "_forward": f"({_ARRAY4}, {_ARRAY4}, float32[::1], {_ARRAY4}{_INTS}, boolean)",
    "_grad_x": f"({_ARRAY4}, {_ARRAY4}, {_ARRAY4}{_INTS})",
    "_grad_weight": f"({_ARRAY4}, {_ARRAY4}, {_ARRAY4}{_INTS})",
    "_grad_bias": f"({_ARRAY4}, float32[::1])",
}
