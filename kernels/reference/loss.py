"""NumPy reference (the specification) of the losses: one loss per row (cross-entropy) or per
element, and the input gradient given ``(grad, input, target, scale)`` as ``kernels.loss`` says.

Computed in the input dtype. The gradients of class-index targets are the one-hot case of
probability targets'.
"""
import numpy as np

from kernels.reference.activation import quiet_exp


def _log_softmax(x):
    """(N, C) -> (N, C); the row maximum is subtracted first so exp never overflows."""
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(quiet_exp(z).sum(axis=1, keepdims=True))


def _one_hot(target, x):
    y = np.zeros_like(x)
    y[np.arange(x.shape[0]), target] = 1
    return y


def _upstream(grad, scale, x):
    """Per-term upstream gradients, shaped like the loss terms of x's leading dimension."""
    return np.full(x.shape[0], scale, x.dtype) if grad is None else grad * x.dtype.type(scale)


def cross_entropy_prob(x, target):
    """x (N, C) logits, target (N, C) probabilities -> (N,) losses."""
    return -(target * _log_softmax(x)).sum(axis=1)


def cross_entropy_index(x, target):
    """x (N, C) logits, target (N,) class indices -> (N,) losses.

    The target's entry is picked out rather than weighted by a one-hot row, so a logit of -inf
    in another class gives a finite loss (0 * -inf would be NaN), as in PyTorch.
    """
    return -_log_softmax(x)[np.arange(x.shape[0]), target]


def cross_entropy_prob_backward(grad, x, target, scale):
    """-> (N, C): g * (softmax(x) * sum(target) - target) row by row."""
    g = _upstream(grad, scale, x)[:, None]
    p = quiet_exp(_log_softmax(x))
    return g * (p * target.sum(axis=1, keepdims=True) - target)


def cross_entropy_index_backward(grad, x, target, scale):
    return cross_entropy_prob_backward(grad, x, _one_hot(target, x), scale)


def mse_loss(x, t):
    return (x - t) ** 2


def mse_loss_backward(grad, x, t, scale):
    return _upstream(grad, scale, x) * 2 * (x - t)


def l1_loss(x, t):
    return np.abs(x - t)


def l1_loss_backward(grad, x, t, scale):
    """sign(x - t) as PyTorch's: 0 where x == t, and 0 where x - t is NaN (np.sign gives NaN)."""
    return _upstream(grad, scale, x) * ((x > t).astype(x.dtype) - (x < t))


def binary_cross_entropy(x, t):
    with np.errstate(divide="ignore"):  # log(0) = -inf, then clamped to -100 as PyTorch does
        log_x = np.maximum(np.log(x), -100)
        log_1mx = np.maximum(np.log1p(-x), -100)
    return -(t * log_x + (1 - t) * log_1mx)


_EPS = np.float32(1e-12)  # PyTorch's clamp of the denominator, a float constant for every dtype


def binary_cross_entropy_backward(grad, x, t, scale):
    return _upstream(grad, scale, x) * (x - t) / np.maximum((1 - x) * x, x.dtype.type(_EPS))


def binary_cross_entropy_with_logits(x, t):
    return np.maximum(x, 0) - x * t + np.log1p(quiet_exp(-np.abs(x)))


def _sigmoid(x):
    """exp of a non-positive number only, so no overflow for either sign."""
    e = quiet_exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def binary_cross_entropy_with_logits_backward(grad, x, t, scale):
    return _upstream(grad, scale, x) * (_sigmoid(x) - t)
