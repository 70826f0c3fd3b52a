"""Numba CUDA inverted dropout, one thread per element; the mask hash is the splitmix64 of
kernels.reference.dropout, all in uint64 arithmetic."""
import numpy as np
from numba import cuda, float32, uint8, uint64

from kernels.numba_cuda import _launch
from kernels.numba_cuda._launch import result, to_device


@cuda.jit(device=True, inline=True)
def _kept(state, i, threshold):
    z = state + uint64(i + 1) * uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    z = z ^ (z >> uint64(31))
    return (z >> uint64(40)) >= threshold


@cuda.jit
def _dropout(x, state, threshold, scale, y, mask):
    i = cuda.grid(1)
    if i < x.size:
        keep = _kept(state, i, threshold)
        mask[i] = uint8(keep)
        y[i] = x[i] * (scale if keep else float32(0.0))  # x * mask * scale: NaN stays NaN, as in PyTorch


@cuda.jit
def _dropout_backward(grad, mask, scale, out):
    i = cuda.grid(1)
    if i < grad.size:
        out[i] = grad[i] * (scale if mask[i] else float32(0.0))


def dropout(x, state, threshold, scale):
    (x,), on_host = to_device(x)
    y = cuda.device_array(x.size, np.float32)
    mask = cuda.device_array(x.size, np.uint8)
    _dropout[_launch.blocks(x.size), _launch.THREADS](x, uint64(state), uint64(threshold), float32(scale), y, mask)
    return result(y, on_host), result(mask, on_host)


def dropout_backward(grad, mask, scale):
    (grad, mask), on_host = to_device(grad, mask)
    out = cuda.device_array(grad.size, np.float32)
    _dropout_backward[_launch.blocks(grad.size), _launch.THREADS](grad, mask, float32(scale), out)
    return result(out, on_host)


SIGNATURES = {
    "_dropout": "(float32[::1], uint64, uint64, float32, float32[::1], uint8[::1])",
    "_dropout_backward": "(float32[::1], uint8[::1], float32, float32[::1])",
}
