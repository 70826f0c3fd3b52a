"""cffi wrappers of ``csrc/loss.c``: checked float32 C-contiguous arrays and int64 class indices.

Each loss is a forward C function writing one loss per row or element and a backward one
writing the input gradient; the two cross-entropy target kinds and the four elementwise losses
each share one wrapper shape.
"""
from functools import partial

import numpy as np

from kernels.c import lib, ptr


def _rows(fn, x, target):
    """x (N, C), target (N,) int64 or (N, C) -> (N,) losses."""
    out = np.empty(x.shape[0], np.float32)
    fn(ptr(x), ptr(target), ptr(out), *x.shape)
    return out


def _rows_backward(fn, grad, x, target, scale):
    out = np.empty_like(x)
    fn(ptr(grad), ptr(x), ptr(target), scale, ptr(out), *x.shape)
    return out


def _elements(fn, x, t):
    out = np.empty_like(x)
    fn(ptr(x), ptr(t), ptr(out), x.size)
    return out


def _elements_backward(fn, grad, x, t, scale):
    out = np.empty_like(x)
    fn(ptr(grad), ptr(x), ptr(t), scale, ptr(out), x.size)
    return out


cross_entropy_index = partial(_rows, lib.pynn_cross_entropy_index)
cross_entropy_prob = partial(_rows, lib.pynn_cross_entropy_prob)
cross_entropy_index_backward = partial(_rows_backward, lib.pynn_cross_entropy_index_backward)
cross_entropy_prob_backward = partial(_rows_backward, lib.pynn_cross_entropy_prob_backward)
mse_loss = partial(_elements, lib.pynn_mse_loss)
mse_loss_backward = partial(_elements_backward, lib.pynn_mse_loss_backward)
l1_loss = partial(_elements, lib.pynn_l1_loss)
l1_loss_backward = partial(_elements_backward, lib.pynn_l1_loss_backward)
binary_cross_entropy = partial(_elements, lib.pynn_binary_cross_entropy)
binary_cross_entropy_backward = partial(_elements_backward, lib.pynn_binary_cross_entropy_backward)
binary_cross_entropy_with_logits = partial(_elements, lib.pynn_binary_cross_entropy_with_logits)
binary_cross_entropy_with_logits_backward = partial(
    _elements_backward, lib.pynn_binary_cross_entropy_with_logits_backward
)
