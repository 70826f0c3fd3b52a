"""cffi wrappers of ``csrc/dropout.c``; inputs are checked 1-D float32 (and uint8 mask) arrays."""
import numpy as np

from kernels.c import lib, ptr


def dropout(x, state, threshold, scale):
    y = np.empty_like(x)
    mask = np.empty(x.size, np.uint8)
    lib.pynn_dropout(ptr(x), ptr(y), ptr(mask), x.size, state, threshold, scale)
    return y, mask


def dropout_backward(grad, mask, scale):
    out = np.empty_like(grad)
    lib.pynn_dropout_backward(ptr(grad), ptr(mask), ptr(out), grad.size, scale)
    return out
