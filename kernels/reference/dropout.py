"""NumPy reference of inverted dropout with the counter-based splitmix64 mask (see kernels.dropout).

x and grad are 1-D; ``state`` is the already-mixed seed; an element is kept when the top 24 bits
of its hash are at least ``threshold``.
"""
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def keep_mask(n, state, threshold):
    """uint8 (n,): 1 where element i is kept."""
    z = np.uint64(state) + (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(40)) >= np.uint64(threshold)).astype(np.uint8)


def dropout(x, state, threshold, scale):
    mask = keep_mask(x.size, state, threshold)
    return x * mask * x.dtype.type(scale), mask


def dropout_backward(grad, mask, scale):
    return grad * mask * grad.dtype.type(scale)
