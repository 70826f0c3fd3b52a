"""Numba CPU dense products. Shapes as in ``kernels.linear``; float32, C-contiguous inputs.

Both products run on the packed, register-blocked GEMM of ``kernels.numba_cpu.gemm`` (its
docstrings give the design and the measured steps); transposed operands are handled by its
packing, never copied. The dense stack (``mlp``, ``mlp_backward``) fuses what the composition
of ``kernels._mlp`` does per layer: bias, ReLU and the dropout mask in one pass over each GEMM
output, and in the backward pass the mask recomputed from its seed; the results are those of
the composition bit for bit (the same GEMM calls, the same arithmetic per element).
"""
import functools

import numba
import numpy as np
from numba import njit, prange

from kernels import _memory
from kernels.numba_cpu.dropout import _kept
from kernels.numba_cpu.gemm import SMALL_M, _dots_serial, gemm, gemm_into

PARALLEL_ELEMENTS = 2**15  # below this an elementwise pass costs less than waking a thread


def matmul(a, b, trans_a, trans_b):
    # The convolution kernels pass views; the GEMM addresses its operands as flat arrays.
    return gemm(np.ascontiguousarray(a), np.ascontiguousarray(b), trans_a, trans_b)


def linear(x, weight, bias):
    if bias is None:
        return gemm(x, weight, False, True)
    y = _memory.empty((x.shape[0], bias.shape[0]))
    y[...] = bias  # the GEMM accumulates onto the bias rows
    gemm_into(x, weight, False, True, y, accumulate=True)
    return y


@njit(cache=True)
def _mask_rows(y, h, relu, state, threshold, scale, forward, r0, r1):
    """Rows r0..r1 of a hidden layer, in place, element by element as the unfused ops compute it.

    Forward (``h`` is ``y``, the GEMM output with its bias): ReLU as ``leaky_relu(v, 0)`` (NaN
    stays NaN), then dropout as ``_dropout`` does, the mask hashed from the element's flat index.
    Backward (``y`` the gradient at the layer's output, ``h`` its finished output): through
    dropout by the same mask, then ReLU's gradient where h > 0, as ``dropout_backward`` then
    ``leaky_relu_backward(g, h, 0)`` give it.
    """
    cols = y.shape[1]
    for r in range(r0, r1):
        for j in range(cols):
            v = y[r, j]
            if relu and forward:
                v = v if v > 0 else v * np.float32(0.0)
            if threshold:
                v = v * (scale if _kept(state, r * cols + j, threshold) else np.float32(0.0))
            if relu and not forward:
                v = v if h[r, j] > 0 else v * np.float32(0.0)
            y[r, j] = v


@njit(cache=True, parallel=True)
def _mask_parallel(y, h, relu, state, threshold, scale, forward, tasks):
    for t in prange(tasks):
        _mask_rows(y, h, relu, state, threshold, scale, forward, y.shape[0] * t // tasks, y.shape[0] * (t + 1) // tasks)


def _mask(y, h, relu, dropout, forward):
    """``_mask_rows`` over all of ``y`` on one thread, or split by rows when it is large."""
    args = (y, h, relu, *_hash_args(dropout), forward)
    tasks = _tasks(y.size)
    if tasks > 1:
        _mask_parallel(*args, tasks)
    else:
        _mask_rows(*args, 0, y.shape[0])


def _tasks(elements):
    """Threads for an elementwise pass over ``elements`` floats (the query costs about 1 us)."""
    return numba.get_num_threads() if elements >= PARALLEL_ELEMENTS else 1


@njit(cache=True)
def _mlp_dots(x, weights, biases, relu, states, thresholds, scales):
    """A stack on a few rows (``SMALL_M``: inference) in one compiled call, every product as dot
    products and each output finished while still in cache. Serial, and the threaded GEMM is
    never called from here: a cached function that calls a parallel one crashes when Numba
    loads it back from its cache, and compiling the GEMM would cost a cold start seconds."""
    h = x
    hidden = []
    for i in range(len(weights)):
        y = np.empty((h.shape[0], weights[i].shape[0]), np.float32)
        for r in range(y.shape[0]):
            y[r] = biases[i]  # the products accumulate onto the bias rows, as linear does
        _dots_serial(h, weights[i], y, True, 1)
        if i < len(weights) - 1:
            _mask_rows(y, y, relu, states[i], thresholds[i], scales[i], True, 0, y.shape[0])
            hidden.append(y)
        h = y
    return h, hidden


@functools.lru_cache(maxsize=16)
def _dropout_arrays(dropout):
    """Per layer (the last included, unused) the dropout states, thresholds and scales as arrays,
    read-only; cached, as inference passes the same all-None tuple every call."""
    arrays = tuple(np.array([d[k] if d else 0 for d in dropout] + [0], t)
                   for k, t in enumerate((np.uint64, np.uint64, np.float32)))
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _hash_args(d):
    """Dropout's (state, threshold, scale) as the kernels' types; threshold 0 for none."""
    state, threshold, scale = d or (0, 0, 0.0)
    return np.uint64(state), np.uint64(threshold), np.float32(scale)


def mlp(x, weights, biases, relu, dropout):
    biases = tuple(np.zeros(w.shape[0], np.float32) if b is None else b for w, b in zip(weights, biases))
    rows = x.shape[0]
    if rows <= SMALL_M:
        y, hidden = _mlp_dots(x, weights, biases, relu, *_dropout_arrays(dropout))
        return y, tuple(hidden)
    h, hidden = x, []
    for i, (w, b) in enumerate(zip(weights, biases)):
        y = _memory.empty((rows, w.shape[0]))
        y[...] = b
        gemm_into(h, w, False, True, y, accumulate=True)
        if i < len(weights) - 1:
            _mask(y, y, relu, dropout[i], True)
            hidden.append(y)
        h = y
    return h, tuple(hidden)


def mlp_backward(g, x, weights, hidden, relu, dropout, input_grad, accumulate):
    inputs = (x,) + hidden
    layers = len(weights)
    grad_w, grad_b, grad_x = [None] * layers, [None] * layers, None
    grad_b[-1] = sum_rows(g)
    for i in range(layers - 1, -1, -1):
        if accumulate is None:
            grad_w[i] = gemm(g, inputs[i], True, False)
        else:  # the GEMM adds into the layer's gradient: no new array, no second pass
            gemm_into(g, inputs[i], True, False, accumulate[i], accumulate=True)
            grad_w[i] = accumulate[i]
        if i == 0:
            grad_x = gemm(g, weights[0], False, False) if input_grad else None
            break
        g = gemm(g, weights[i], False, False)
        _mask(g, hidden[i - 1], relu, dropout[i - 1], False)
        grad_b[i - 1] = sum_rows(g)
    return grad_x, tuple(grad_w), tuple(grad_b)


@njit(cache=True, fastmath=True)
def sum_rows(g):
    out = np.zeros(g.shape[1], np.float32)
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            out[j] += g[i, j]
    return out
