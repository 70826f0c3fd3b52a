"""Numba CPU batch normalisation. Shapes and formulas as in ``kernels.norm``: x and grad_output
are float32 (N, C, S), per-channel arrays (C,).

Both directions are two passes over the data through two shared kernels. ``_sums`` reduces,
per channel, ``sum(p - pc)`` and ``sum((p - pc) * (q - qc))``: the forward takes p = q = x shifted
by the channel's first value (one pass for mean and variance that does not cancel as
E[x^2] - E[x]^2 does; Chan, Golub & LeVeque, "Algorithms for computing the sample variance",
1983), the backward p = grad_output and q = x - mean. ``_combine`` then writes
``a * p + b * (q - qc) + k`` with per-channel coefficients. Each channel's sums run in one
thread in a fixed order with float64 accumulators, so results do not depend on the thread
count. Channels are processed in blocks covering about ``_COLS`` contiguous floats of each
sample: one channel per block for images, a block of columns for (N, C) inputs.
"""
import math

import numpy as np
from numba import njit, prange

from kernels import _memory

_COLS = 64
# Reassociation lets LLVM vectorise the sums; no nnan/ninf, so NaN and inf propagate as in PyTorch.
_FAST = {"reassoc", "contract", "nsz", "arcp"}
_ABSENT = np.empty(0, np.float32)  # stands for None: one compiled signature per kernel
_ABSENT64 = np.empty(0)


def _or_absent(v):
    return _ABSENT if v is None else v


@njit(cache=True, parallel=True, fastmath=_FAST)
def _sums(p, pc, q, qc, block, s1, s2):
    n, c, s = p.shape
    for blk in prange((c + block - 1) // block):
        c0 = blk * block
        c1 = min(c, c0 + block)
        for ch in range(c0, c1):
            s1[ch] = 0.0
            s2[ch] = 0.0
        if s == 1:  # (N, C): the block's channels are contiguous in each row; vectorise across them
            for i in range(n):
                for ch in range(c0, c1):
                    d = p[i, ch, 0] - pc[ch]
                    s1[ch] += d
                    s2[ch] += d * (q[i, ch, 0] - qc[ch])
            continue
        for i in range(n):
            for ch in range(c0, c1):
                pk, qk = pc[ch], qc[ch]
                a1 = 0.0
                a2 = 0.0
                for j in range(s):
                    d = p[i, ch, j] - pk
                    a1 += d
                    a2 += d * (q[i, ch, j] - qk)
                s1[ch] += a1
                s2[ch] += a2


@njit(cache=True, parallel=True, fastmath=_FAST)
def _combine(p, q, qc, a, b, k, out):
    n, c, s = p.shape
    # Parallel over samples: a prange over (sample, channel) pairs would pay a division per
    # element of an (N, C) input.
    for i in prange(n):
        if s == 1:
            for ch in range(c):
                out[i, ch, 0] = a[ch] * p[i, ch, 0] + b[ch] * (q[i, ch, 0] - qc[ch]) + k[ch]
            continue
        for ch in range(c):
            ac, bc, kc, qk = a[ch], b[ch], k[ch], qc[ch]
            for j in range(s):
                out[i, ch, j] = ac * p[i, ch, j] + bc * (q[i, ch, j] - qk) + kc


@njit(cache=True)
def _forward_coefficients(training, s1, s2, shift, m, running_mean, running_var, update, weight, bias, momentum,
                          eps, mean, invstd, a, b, k):
    """The batch statistics from the shifted sums (training) or the running ones, the running
    update, and y = 0 * x + b * (x - mean) + k's coefficients."""
    for ch in range(mean.size):
        if training:
            d = s1[ch] / m
            mu = shift[ch] + d
            var = max(s2[ch] / m - d * d, 0.0)
            if update:
                running_mean[ch] = (1.0 - momentum) * running_mean[ch] + momentum * mu
                running_var[ch] = (1.0 - momentum) * running_var[ch] + momentum * var * (m / (m - 1.0))
        else:
            mu = np.float64(running_mean[ch])
            var = np.float64(running_var[ch])
        mean[ch] = mu
        invstd[ch] = 1.0 / math.sqrt(var + eps)
        a[ch] = 0.0
        b[ch] = invstd[ch] * weight[ch] if weight.size else invstd[ch]
        k[ch] = bias[ch] if bias.size else 0.0


def _coefficient_arrays(c):
    return (np.empty(c, np.float32) for _ in range(3))


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    n, c, s = x.shape
    mean, invstd = np.empty(c, np.float32), np.empty(c, np.float32)
    a, b, k = _coefficient_arrays(c)
    shift, s1, s2 = _ABSENT, _ABSENT64, _ABSENT64
    if training:
        shift = np.ascontiguousarray(x[0, :, 0])
        s1, s2 = np.empty(c), np.empty(c)
        _sums(x, shift, x, shift, max(1, _COLS // s), s1, s2)
    _forward_coefficients(training, s1, s2, shift, float(n * s), _or_absent(running_mean), _or_absent(running_var),
                          training and running_mean is not None, _or_absent(weight), _or_absent(bias), momentum, eps,
                          mean, invstd, a, b, k)
    y = _memory.empty(x.shape)
    _combine(x, x, mean, a, b, k, y)
    return y, mean, invstd


@njit(cache=True)
def _backward_coefficients(s1, s2, m, weight, invstd, training, a, b, k, grad_weight, grad_bias):
    """dx = a * g + b * (x - mean) + k, the closed form of ``kernels.norm`` regrouped per channel."""
    for ch in range(invstd.size):
        a[ch] = invstd[ch] * weight[ch] if weight.size else invstd[ch]
        b[ch] = -a[ch] * invstd[ch] * invstd[ch] * s2[ch] / m if training else 0.0
        k[ch] = -a[ch] * s1[ch] / m if training else 0.0
        if weight.size:
            grad_weight[ch] = s2[ch] * invstd[ch]
            grad_bias[ch] = s1[ch]


def batch_norm_backward(g, x, weight, save_mean, save_invstd, training):
    n, c, s = x.shape
    a, b, k = _coefficient_arrays(c)
    grad_weight = grad_bias = None
    if weight is not None:
        grad_weight, grad_bias = np.empty(c, np.float32), np.empty(c, np.float32)
    s1, s2 = np.zeros(c), np.zeros(c)  # stay zero in eval mode without weight: nothing to reduce
    if training or weight is not None:
        _sums(g, np.zeros(c, np.float32), x, save_mean, max(1, _COLS // s), s1, s2)
    _backward_coefficients(s1, s2, float(n * s), _or_absent(weight), save_invstd, training, a, b, k,
                           _or_absent(grad_weight), _or_absent(grad_bias))
    grad_x = _memory.empty(x.shape)
    _combine(g, x, save_mean, a, b, k, grad_x)
    return grad_x, grad_weight, grad_bias
