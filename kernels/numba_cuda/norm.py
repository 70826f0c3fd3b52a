"""Numba CUDA batch normalisation. Shapes and formulas as in ``kernels.norm``: x and grad_output
are float32 (N, C, S), per-channel arrays (C,).

Each direction is two launches. First one block of ``_BLOCK`` threads per channel: the threads
stride over the channel's N * S values, and a shared-memory tree reduction (Kirk & Hwu,
*Programming Massively Parallel Processors*, 4th ed., ch. 10) combines their partial sums of
``p - pc`` and ``(p - pc) * (q - qc)``; thread 0 then turns the sums into the statistics, updates
the running ones, and writes per-channel coefficients. Then one thread per element writes
``a * p + b * (q - qc) + k``. As on the CPU, the forward shifts x by the channel's first value
(one pass for mean and variance without the cancellation of E[x^2] - E[x]^2) and the backward
takes p = grad_output, q - qc = x - mean. The tree has a fixed shape, so results are the same
run to run. Host running statistics are copied to the device, updated there and copied back
into the caller's arrays.
"""
import math

import numpy as np
from numba import cuda, float32

from kernels.numba_cuda import _launch
from kernels.numba_cuda._launch import result, to_device

# Threads per channel, a compile-time constant since it sizes the shared arrays. Four warps keep
# enough loads in flight to stream a channel, and leave room for several blocks per SM.
_BLOCK = 128
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


# Inlined: a separately compiled device function would ask the GPU for its compute capability,
# which tests/test_cuda_ptx.py does not have.
@cuda.jit(device=True, inline=True)
def _channel_sums(p, pc, q, qc, ch, buf1, buf2):
    """Block-wide ``(sum(p - pc), sum((p - pc) * (q - qc)))`` over channel ch, returned to every thread."""
    t = cuda.threadIdx.x
    n, _, s = p.shape
    a1 = _ZERO
    a2 = _ZERO
    for i in range(t, n * s, _BLOCK):
        r = i // s
        j = i - r * s
        d = p[r, ch, j] - pc
        a1 += d
        a2 += d * (q[r, ch, j] - qc)
    buf1[t] = a1
    buf2[t] = a2
    cuda.syncthreads()
    h = _BLOCK // 2
    while h > 0:
        if t < h:
            buf1[t] += buf1[t + h]
            buf2[t] += buf2[t + h]
        cuda.syncthreads()
        h //= 2
    return buf1[0], buf2[0]


@cuda.jit
def _forward_stats(x, weight, bias, running_mean, running_var, mean, invstd, a, b, k, has_weight, has_bias,
                   update, training, momentum, eps):
    """Block ch: the batch (training) or running statistics of channel ch and y's coefficients."""
    buf1 = cuda.shared.array(_BLOCK, float32)
    buf2 = cuda.shared.array(_BLOCK, float32)
    ch = cuda.blockIdx.x
    shift = s1 = s2 = _ZERO
    if training:  # uniform across the block, so every thread reaches the barriers inside
        shift = x[0, ch, 0]
        s1, s2 = _channel_sums(x, shift, x, shift, ch, buf1, buf2)
    if cuda.threadIdx.x != 0:
        return
    if training:
        m = float32(x.shape[0] * x.shape[2])
        d = s1 / m
        var = max(s2 / m - d * d, _ZERO)
        mu = shift + d
        if update:
            mom = float32(momentum)
            running_mean[ch] = (_ONE - mom) * running_mean[ch] + mom * mu
            running_var[ch] = (_ONE - mom) * running_var[ch] + mom * var * (m / (m - _ONE))
    else:
        mu = running_mean[ch]
        var = running_var[ch]
    mean[ch] = mu
    inv = _ONE / math.sqrt(var + float32(eps))
    invstd[ch] = inv
    a[ch] = _ZERO
    b[ch] = inv * weight[ch] if has_weight else inv
    k[ch] = bias[ch] if has_bias else _ZERO


@cuda.jit
def _backward_coefficients(g, x, weight, mean, invstd, a, b, k, grad_weight, grad_bias, has_weight, training):
    """Block ch: dx = a g + b (x - mean) + k, the closed form of ``kernels.norm`` regrouped, and
    channel ch's grad_weight and grad_bias."""
    buf1 = cuda.shared.array(_BLOCK, float32)
    buf2 = cuda.shared.array(_BLOCK, float32)
    ch = cuda.blockIdx.x
    sum_g = _ZERO
    sum_gd = _ZERO
    if training or has_weight:  # uniform across the block
        sum_g, sum_gd = _channel_sums(g, _ZERO, x, mean[ch], ch, buf1, buf2)
    if cuda.threadIdx.x != 0:
        return
    m = float32(x.shape[0] * x.shape[2])
    inv = invstd[ch]
    ac = inv * weight[ch] if has_weight else inv
    a[ch] = ac
    b[ch] = -ac * inv * inv * sum_gd / m if training else _ZERO
    k[ch] = -ac * sum_g / m if training else _ZERO
    if has_weight:
        grad_weight[ch] = sum_gd * inv
        grad_bias[ch] = sum_g


@cuda.jit
def _combine(p, q, qc, a, b, k, out):
    i = cuda.grid(1)
    n, c, s = p.shape
    if i < n * c * s:
        row = i // s
        j = i - row * s
        ch = row % c
        r = row // c
        out[r, ch, j] = a[ch] * p[r, ch, j] + b[ch] * (q[r, ch, j] - qc[ch]) + k[ch]


def _placeholder(d):
    """A one-element device array standing for an absent per-channel array: one kernel signature."""
    return cuda.device_array(1, np.float32) if d is None else d


def _coefficients(c):
    return (cuda.device_array(c, np.float32) for _ in range(3))


def _run_combine(p, q, qc, a, b, k):
    out = cuda.device_array(p.shape, np.float32)
    _combine[_launch.blocks(p.size), _launch.THREADS](p, q, qc, a, b, k, out)
    return out


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    (d_x, d_rm, d_rv, d_w, d_b), on_host = to_device(x, running_mean, running_var, weight, bias)
    c = x.shape[1]
    mean, invstd = cuda.device_array(c, np.float32), cuda.device_array(c, np.float32)
    a, b, k = _coefficients(c)
    update = training and running_mean is not None
    _forward_stats[c, _BLOCK](d_x, _placeholder(d_w), _placeholder(d_b), _placeholder(d_rm), _placeholder(d_rv),
                              mean, invstd, a, b, k, weight is not None, bias is not None, update, training,
                              momentum, eps)
    if update:
        for h, d in ((running_mean, d_rm), (running_var, d_rv)):
            if isinstance(h, np.ndarray):
                d.copy_to_host(h)
    y = _run_combine(d_x, d_x, mean, a, b, k)
    return result(y, on_host), result(mean, on_host), result(invstd, on_host)


def batch_norm_backward(g, x, weight, save_mean, save_invstd, training):
    (d_g, d_x, d_w, d_mean, d_inv), on_host = to_device(g, x, weight, save_mean, save_invstd)
    c = x.shape[1]
    a, b, k = _coefficients(c)
    grad_weight = grad_bias = None
    if weight is not None:
        grad_weight, grad_bias = cuda.device_array(c, np.float32), cuda.device_array(c, np.float32)
    _backward_coefficients[c, _BLOCK](d_g, d_x, _placeholder(d_w), d_mean, d_inv, a, b, k,
                                      _placeholder(grad_weight), _placeholder(grad_bias), weight is not None,
                                      training)
    grad_x = _run_combine(d_g, d_x, d_mean, a, b, k)
    if weight is None:
        return result(grad_x, on_host), None, None
    return result(grad_x, on_host), result(grad_weight, on_host), result(grad_bias, on_host)


_X = "float32[:, :, ::1]"
_V = "float32[::1]"
# Argument types of every kernel in this module, compiled for sm_90 by tests/test_cuda_ptx.py.
SIGNATURES = {
    "_forward_stats": f"({_X}, {', '.join([_V] * 9)}, boolean, boolean, boolean, boolean, float64, float64)",
    "_backward_coefficients": f"({_X}, {_X}, {', '.join([_V] * 8)}, boolean, boolean)",
    "_combine": f"({_X}, {_X}, {', '.join([_V] * 4)}, {_X})",
}
