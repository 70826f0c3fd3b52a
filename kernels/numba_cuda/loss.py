"""Numba CUDA losses, float32; ops and signatures as in ``kernels.reference.loss``.

Elementwise losses: one thread per element, the loss chosen by an op code that is the same for
every thread (no divergence). Cross-entropy: one thread per row, which suits the usual few to a
few hundred classes. A backward call without per-term gradients reads a one-element array of
ones with step 0. Logs are guarded rather than taken of 0, which the simulator would refuse.
"""
import math
from functools import partial

import numpy as np
from numba import cuda, float32

from kernels.numba_cuda import _launch
from kernels.numba_cuda._launch import result, to_device

_MSE, _L1, _BCE, _BCE_LOGITS = range(4)
_LOG_FLOOR = float32(-100.0)  # PyTorch's clamp of log in binary_cross_entropy


@cuda.jit(device=True, inline=True)
def _value(op, x, t):
    if op == _MSE:
        return (x - t) * (x - t)
    if op == _L1:
        return abs(x - t)
    if op == _BCE:
        log_x = max(math.log(x), _LOG_FLOOR) if x > 0 else _LOG_FLOOR
        log_1mx = max(math.log1p(-x), _LOG_FLOOR) if x < 1 else _LOG_FLOOR
        return -(t * log_x + (float32(1.0) - t) * log_1mx)
    return max(x, float32(0.0)) - x * t + math.log1p(math.exp(-abs(x)))


@cuda.jit(device=True, inline=True)
def _derivative(op, x, t):
    if op == _MSE:
        return float32(2.0) * (x - t)
    if op == _L1:
        return float32(1.0) if x > t else (float32(-1.0) if x < t else float32(0.0))
    if op == _BCE:
        return (x - t) / max((float32(1.0) - x) * x, float32(1e-12))
    e = math.exp(-abs(x))  # sigmoid without overflow for either sign
    return (float32(1.0) / (float32(1.0) + e) if x >= 0 else e / (float32(1.0) + e)) - t


@cuda.jit
def _pointwise(op, x, t, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = _value(op, x[i], t[i])


@cuda.jit
def _pointwise_backward(op, grad, step, x, t, scale, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = grad[i * step] * scale * _derivative(op, x[i], t[i])


def _per_term(grad):
    """(device grad, step) for the kernels: ones with step 0 when there is no grad array."""
    return (cuda.to_device(np.ones(1, np.float32)), 0) if grad is None else (grad, 1)


def _forward(op, x, t):
    (x, t), on_host = to_device(x, t)
    out = cuda.device_array(x.size, np.float32)
    _pointwise[_launch.blocks(x.size), _launch.THREADS](op, x, t, out)
    return result(out, on_host)


def _backward(op, grad, x, t, scale):
    (grad, x, t), on_host = to_device(grad, x, t)
    out = cuda.device_array(x.size, np.float32)
    g, step = _per_term(grad)
    _pointwise_backward[_launch.blocks(x.size), _launch.THREADS](op, g, step, x, t, float32(scale), out)
    return result(out, on_host)


mse_loss, mse_loss_backward = partial(_forward, _MSE), partial(_backward, _MSE)
l1_loss, l1_loss_backward = partial(_forward, _L1), partial(_backward, _L1)
binary_cross_entropy, binary_cross_entropy_backward = partial(_forward, _BCE), partial(_backward, _BCE)
binary_cross_entropy_with_logits = partial(_forward, _BCE_LOGITS)
binary_cross_entropy_with_logits_backward = partial(_backward, _BCE_LOGITS)


@cuda.jit(device=True, inline=True)
def _shift(x, i):
    """(max, log sum exp(x[i] - max)) of row i: log_softmax = x[i, j] - max - the second."""
    m = x[i, 0]
    for j in range(1, x.shape[1]):
        m = max(m, x[i, j])
    s = float32(0.0)
    for j in range(x.shape[1]):
        s += math.exp(x[i, j] - m)
    return m, math.log(s)


@cuda.jit
def _ce_index(x, target, out):
    i = cuda.grid(1)
    if i < x.shape[0]:
        m, log_s = _shift(x, i)
        out[i] = log_s - (x[i, target[i]] - m)


@cuda.jit
def _ce_prob(x, target, out):
    i = cuda.grid(1)
    if i < x.shape[0]:
        m, log_s = _shift(x, i)
        acc = float32(0.0)
        for j in range(x.shape[1]):
            acc += target[i, j] * (log_s - (x[i, j] - m))
        out[i] = acc


@cuda.jit(device=True, inline=True)
def _scaled_softmax(x, i, coef, out):
    m, log_s = _shift(x, i)
    for j in range(x.shape[1]):
        out[i, j] = coef * math.exp(x[i, j] - m - log_s)


@cuda.jit
def _ce_index_backward(grad, step, x, target, scale, out):
    i = cuda.grid(1)
    if i < x.shape[0]:
        g = grad[i * step] * scale
        _scaled_softmax(x, i, g, out)
        out[i, target[i]] -= g


@cuda.jit
def _ce_prob_backward(grad, step, x, target, scale, out):
    i = cuda.grid(1)
    if i < x.shape[0]:
        g = grad[i * step] * scale
        total = float32(0.0)
        for j in range(x.shape[1]):
            total += target[i, j]
        _scaled_softmax(x, i, g * total, out)
        for j in range(x.shape[1]):
            out[i, j] -= g * target[i, j]


def _rows(kernel, x, target):
    (x, target), on_host = to_device(x, target)
    out = cuda.device_array(x.shape[0], np.float32)
    kernel[_launch.blocks(x.shape[0]), _launch.THREADS](x, target, out)
    return result(out, on_host)


def _rows_backward(kernel, grad, x, target, scale):
    (grad, x, target), on_host = to_device(grad, x, target)
    out = cuda.device_array(x.shape, np.float32)
    g, step = _per_term(grad)
    kernel[_launch.blocks(x.shape[0]), _launch.THREADS](g, step, x, target, float32(scale), out)
    return result(out, on_host)


cross_entropy_index = partial(_rows, _ce_index)
cross_entropy_prob = partial(_rows, _ce_prob)
cross_entropy_index_backward = partial(_rows_backward, _ce_index_backward)
cross_entropy_prob_backward = partial(_rows_backward, _ce_prob_backward)

_F1 = "float32[::1]"
_F2 = "float32[:, ::1]"
# Argument types of every kernel in this module, compiled for sm_90 by tests/test_cuda_ptx.py.
SIGNATURES = {
    "_pointwise": f"(int64, {_F1}, {_F1}, {_F1})",
    "_pointwise_backward": f"(int64, {_F1}, int64, {_F1}, {_F1}, float32, {_F1})",
    "_ce_index": f"({_F2}, int64[::1], {_F1})",
    "_ce_prob": f"({_F2}, {_F2}, {_F1})",
    "_ce_index_backward": f"({_F1}, int64, {_F2}, int64[::1], float32, {_F2})",
    "_ce_prob_backward": f"({_F1}, int64, {_F2}, {_F2}, float32, {_F2})",
}
