"""Numba CPU losses, float32; ops and signatures as in ``kernels.reference.loss``.

The four elementwise losses share one forward and one backward loop, the loss chosen by an op
code (a loop-invariant branch). No fastmath: the losses rely on inf and NaN behaving as IEEE
says (log(0) = -inf before the clamp of binary cross-entropy). A backward call without
per-term gradients reads a one-element array of ones with step 0.
"""
from functools import partial

import numpy as np
from numba import njit, prange

_MSE, _L1, _BCE, _BCE_LOGITS = range(4)
_LOG_FLOOR = np.float32(-100.0)  # PyTorch's clamp of log in binary_cross_entropy
_EPS = np.float32(1e-12)
_ONE = np.ones(1, np.float32)


def _per_term(grad):
    return (_ONE, 0) if grad is None else (grad, 1)


@njit(cache=True, inline="always")
def _sigmoid(x):
    e = np.exp(-abs(x))  # never overflows
    return np.float32(1.0) / (np.float32(1.0) + e) if x >= 0 else e / (np.float32(1.0) + e)


@njit(cache=True, inline="always")
def _value(op, x, t):
    if op == _MSE:
        return (x - t) * (x - t)
    if op == _L1:
        return abs(x - t)
    if op == _BCE:
        one = np.float32(1.0)
        return -(t * max(np.log(x), _LOG_FLOOR) + (one - t) * max(np.log1p(-x), _LOG_FLOOR))
    return max(x, np.float32(0.0)) - x * t + np.log1p(np.exp(-abs(x)))


@njit(cache=True, inline="always")
def _derivative(op, x, t):
    if op == _MSE:
        return np.float32(2.0) * (x - t)
    if op == _L1:
        return np.float32(x > t) - np.float32(x < t)  # 0 for NaN, as PyTorch's sign
    if op == _BCE:
        return (x - t) / max((np.float32(1.0) - x) * x, _EPS)
    return _sigmoid(x) - t


@njit(cache=True, parallel=True)
def _pointwise(op, x, t, out):
    for i in prange(x.size):
        out[i] = _value(op, x[i], t[i])


@njit(cache=True, parallel=True)
def _pointwise_backward(op, grad, step, x, t, scale, out):
    for i in prange(x.size):
        out[i] = grad[i * step] * scale * _derivative(op, x[i], t[i])


def _forward(op, x, t):
    out = np.empty_like(x)
    _pointwise(op, x, t, out)
    return out


def _backward(op, grad, x, t, scale):
    out = np.empty_like(x)
    _pointwise_backward(op, *_per_term(grad), x, t, np.float32(scale), out)
    return out


mse_loss, mse_loss_backward = partial(_forward, _MSE), partial(_backward, _MSE)
l1_loss, l1_loss_backward = partial(_forward, _L1), partial(_backward, _L1)
binary_cross_entropy, binary_cross_entropy_backward = partial(_forward, _BCE), partial(_backward, _BCE)
binary_cross_entropy_with_logits = partial(_forward, _BCE_LOGITS)
binary_cross_entropy_with_logits_backward = partial(_backward, _BCE_LOGITS)


# Cross-entropy: one row per iteration, serial (a batch of rows is small work).
@njit(cache=True, inline="always")
def _shift(row):
    """(max, log sum exp(row - max)): log_softmax(row)[j] = row[j] - max - the second."""
    m = row.max()
    s = np.float32(0.0)
    for v in row:
        s += np.exp(v - m)
    return m, np.log(s)


@njit(cache=True)
def cross_entropy_index(x, target):
    out = np.empty(x.shape[0], np.float32)
    for i in range(x.shape[0]):
        m, log_s = _shift(x[i])
        out[i] = log_s - (x[i, target[i]] - m)
    return out


@njit(cache=True)
def cross_entropy_prob(x, target):
    out = np.empty(x.shape[0], np.float32)
    for i in range(x.shape[0]):
        m, log_s = _shift(x[i])
        acc = np.float32(0.0)
        for j in range(x.shape[1]):
            acc += target[i, j] * (log_s - (x[i, j] - m))
        out[i] = acc
    return out


@njit(cache=True, inline="always")
def _scaled_softmax(row, coef, out):
    m, log_s = _shift(row)
    for j in range(row.size):
        out[j] = coef * np.exp(row[j] - m - log_s)


@njit(cache=True)
def _ce_index_backward(grad, step, x, target, scale, out):
    for i in range(x.shape[0]):
        g = grad[i * step] * scale
        _scaled_softmax(x[i], g, out[i])
        out[i, target[i]] -= g


@njit(cache=True)
def _ce_prob_backward(grad, step, x, target, scale, out):
    for i in range(x.shape[0]):
        g = grad[i * step] * scale
        _scaled_softmax(x[i], g * target[i].sum(), out[i])
        for j in range(x.shape[1]):
            out[i, j] -= g * target[i, j]


def _ce_backward(kernel, grad, x, target, scale):
    out = np.empty_like(x)
    kernel(*_per_term(grad), x, target, np.float32(scale), out)
    return out


cross_entropy_index_backward = partial(_ce_backward, _ce_index_backward)
cross_entropy_prob_backward = partial(_ce_backward, _ce_prob_backward)
