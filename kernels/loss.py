"""Loss functions and their input gradients, with PyTorch's semantics (``torch.nn.functional``).

Backends compute one loss per sample (cross-entropy: one per row) or per element; this module
checks the arguments, flattens, and reduces: ``"sum"`` adds the losses in float64, ``"mean"``
divides that by their count (the batch size N for cross-entropy, the element count otherwise)
and ``"none"`` returns them as they are. A reduced loss is a 0-d array of the input's dtype.

Backward backends take ``(grad, input, target, scale)``: the upstream gradient of every loss
term is ``grad[i] * scale``, where ``grad`` is None for ``"mean"``/``"sum"`` (every term then gets
the scalar ``scale``: ``grad_output / count`` for the mean) and the array of per-term upstream
gradients for ``"none"`` (with ``scale`` 1).

NaN and infinities propagate through the formulas as IEEE arithmetic gives them, as in PyTorch,
except in the input of ``binary_cross_entropy``, which must hold probabilities in [0, 1] (NaN
raises ValueError there). A logit of -inf in a class other than the target's leaves the
cross-entropy of a class-index target finite, as PyTorch's does.
"""
from __future__ import annotations

import numbers
from functools import partial

import numpy as np

from kernels import _checks as ck
from kernels._dispatch import implementation, is_device_array, resolve

_impl = partial(implementation, "loss")
REDUCTIONS = ("mean", "sum", "none")


def _reduce(losses, reduction, shape):
    """Reduce per-term losses (host or device, 1-D) as ``reduction`` says."""
    if reduction == "none":
        return losses.reshape(shape)
    on_device = is_device_array(losses)
    host = losses.copy_to_host() if on_device else losses
    total = host.sum(dtype=np.float64)
    if reduction == "mean":
        total /= host.size
    out = np.asarray(total, dtype=host.dtype)
    if on_device:
        from numba import cuda

        return cuda.to_device(out)
    return out


def _upstream(grad_output, reduction, count, shape, be, dtype):
    """Return ``(grad, scale)`` for a backward backend from the public ``grad_output``."""
    if reduction == "none":
        g = ck.float_array(grad_output, "grad_output", be, shape=shape, dtype=dtype, like="the losses of input")
        return g.reshape(-1), 1.0
    if not isinstance(grad_output, numbers.Real):
        g = ck.float_array(grad_output, "grad_output", be, shape=())
        grad_output = float(g.copy_to_host() if is_device_array(g) else g)
    scale = ck.real(grad_output, "grad_output")
    return None, scale / count if reduction == "mean" else scale


def _class_target(target, input, be):
    """Check a cross-entropy target: (N,) class indices in [0, C), or (N, C) probabilities."""
    n, c = input.shape
    if np.dtype(getattr(target, "dtype", np.float32)).kind in "iu":
        target = ck.int_array(target, "target", shape=(n,), low=0, high=c, like="input")
        # One index type for the compiled backends (device arrays are left where they are).
        return target.astype(np.int64, copy=False) if isinstance(target, np.ndarray) else target
    if getattr(target, "ndim", None) == 1:
        raise TypeError(
            f"target of shape (N,) holds class indices and must have dtype int64 (or int32), got {target.dtype}"
        )
    return ck.float_array(target, "target", be, shape=(n, c), dtype=input.dtype, like="input")


def _cross_entropy_args(input, target, reduction, be):
    ck.choice(reduction, "reduction", REDUCTIONS)
    input = ck.float_array(input, "input", be, ndim=2)
    target = _class_target(target, input, be)
    op = "cross_entropy_index" if target.ndim == 1 else "cross_entropy_prob"
    return input, target, op


def cross_entropy(input, target, reduction: str = "mean", *, backend: str | None = None):
    """Cross-entropy between softmax(input) and the target (``torch.nn.functional.cross_entropy``).

    input: (N, C) logits, float32 (float64 also on ``numpy``). target: (N,) int64 or int32 class
    indices in [0, C), or (N, C) class probabilities of input's dtype. The loss of row n is
    ``-log_softmax(input[n])[target[n]]`` for indices and ``-sum_c target[n, c] *
    log_softmax(input[n])[c]`` for probabilities; log-softmax is computed with the row maximum
    subtracted first (``logsumexp``), so logits of any finite magnitude give finite results.
    Returns a 0-d array for ``"mean"`` (averaged over N) and ``"sum"``, an (N,) array for ``"none"``.

    Raises TypeError (array type, dtype, a float target of shape (N,)) and ValueError (shape,
    empty, non-contiguous, a class index outside [0, C), an unknown reduction), naming the argument.
    """
    be = resolve(backend, input, target)
    input, target, op = _cross_entropy_args(input, target, reduction, be)
    return _reduce(_impl(op, be)(input, target), reduction, (input.shape[0],))


def cross_entropy_backward(grad_output, input, target, reduction: str = "mean", *, backend: str | None = None):
    """Gradient of ``cross_entropy`` with respect to input: returns grad_input (N, C).

    Row n of grad_input is ``g[n] * (softmax(input[n]) * sum(y[n]) - y[n])``, where y is the
    one-hot target or the probability target (for probabilities summing to one this is the usual
    ``softmax - y``) and g[n] the upstream gradient of row n's loss: grad_output / N for
    ``"mean"``, grad_output for ``"sum"`` (grad_output a real number or a 0-d array), and
    grad_output[n] for ``"none"`` (grad_output (N,), input's dtype).

    Raises TypeError and ValueError as ``cross_entropy`` does, naming the argument.
    """
    be = resolve(backend, grad_output, input, target)
    input, target, op = _cross_entropy_args(input, target, reduction, be)
    n = input.shape[0]
    grad, scale = _upstream(grad_output, reduction, n, (n,), be, input.dtype)
    return _impl(op + "_backward", be)(grad, input, target, scale)


def _pointwise_args(input, target, reduction, be):
    ck.choice(reduction, "reduction", REDUCTIONS)
    input = ck.float_array(input, "input", be)
    target = ck.float_array(target, "target", be, shape=tuple(input.shape), dtype=input.dtype, like="input")
    return input, target


def _check_probabilities(input):
    host = input.copy_to_host() if is_device_array(input) else input
    if not ((host >= 0) & (host <= 1)).all():
        raise ValueError(
            f"input of binary_cross_entropy must hold probabilities in [0, 1], got min {host.min()} "
            f"and max {host.max()}; pass logits to binary_cross_entropy_with_logits instead"
        )


def _pointwise_loss(op, input, target, reduction, backend):
    be = resolve(backend, input, target)
    input, target = _pointwise_args(input, target, reduction, be)
    if op == "binary_cross_entropy":
        _check_probabilities(input)
    losses = _impl(op, be)(input.reshape(-1), target.reshape(-1))
    return _reduce(losses, reduction, tuple(input.shape))


def _pointwise_backward(op, grad_output, input, target, reduction, backend):
    be = resolve(backend, grad_output, input, target)
    input, target = _pointwise_args(input, target, reduction, be)
    if op == "binary_cross_entropy":
        _check_probabilities(input)
    grad, scale = _upstream(grad_output, reduction, input.size, tuple(input.shape), be, input.dtype)
    out = _impl(op + "_backward", be)(grad, input.reshape(-1), target.reshape(-1), scale)
    return out.reshape(input.shape)


def mse_loss(input, target, reduction: str = "mean", *, backend: str | None = None):
    """Mean squared error (``torch.nn.functional.mse_loss``): ``(x - t)**2`` per element.

    input, target: arrays of one (any) shape, float32 (float64 also on ``numpy``), C-contiguous.
    Returns a 0-d array of input's dtype for ``"mean"`` (over all elements) and ``"sum"``, an
    array of input's shape for ``"none"``.

    Raises TypeError (array type, dtype) and ValueError (shapes that differ, empty,
    non-contiguous, an unknown reduction), naming the argument.
    """
    return _pointwise_loss("mse_loss", input, target, reduction, backend)


def mse_loss_backward(grad_output, input, target, reduction: str = "mean", *, backend: str | None = None):
    """Gradient of ``mse_loss`` with respect to input: ``g * 2 * (x - t)``, of input's shape.

    g is the upstream gradient of each element's loss: grad_output (a real number or a 0-d
    array) divided by the element count for ``"mean"``, grad_output for ``"sum"``, and the
    matching element of grad_output (input's shape and dtype) for ``"none"``.
    Raises TypeError and ValueError as ``mse_loss`` does.
    """
    return _pointwise_backward("mse_loss", grad_output, input, target, reduction, backend)


def l1_loss(input, target, reduction: str = "mean", *, backend: str | None = None):
    """Mean absolute error (``torch.nn.functional.l1_loss``): ``|x - t|`` per element.

    Shapes, dtypes, reductions and errors as for ``mse_loss``.
    """
    return _pointwise_loss("l1_loss", input, target, reduction, backend)


def l1_loss_backward(grad_output, input, target, reduction: str = "mean", *, backend: str | None = None):
    """Gradient of ``l1_loss``: ``g * sign(x - t)``, 0 where x == t as in PyTorch.

    grad_output, g and errors as for ``mse_loss_backward``.
    """
    return _pointwise_backward("l1_loss", grad_output, input, target, reduction, backend)


def binary_cross_entropy(input, target, reduction: str = "mean", *, backend: str | None = None):
    """Binary cross-entropy of probabilities (``torch.nn.functional.binary_cross_entropy``).

    Per element ``-(t * log(x) + (1 - t) * log(1 - x))``, each log clamped to at least -100 as
    PyTorch does, so x of exactly 0 or 1 gives a finite loss. input holds probabilities in
    [0, 1]; shapes, dtypes and reductions as for ``mse_loss``.

    Raises ValueError for an input value outside [0, 1] or NaN, and otherwise as ``mse_loss`` does.
    """
    return _pointwise_loss("binary_cross_entropy", input, target, reduction, backend)


def binary_cross_entropy_backward(grad_output, input, target, reduction: str = "mean", *, backend: str | None = None):
    """Gradient of ``binary_cross_entropy``: ``g * (x - t) / max((1 - x) * x, 1e-12)``.

    The clamp of the denominator is PyTorch's (``binary_cross_entropy_backward``). grad_output
    and g as for ``mse_loss_backward``; errors as for ``binary_cross_entropy``.
    """
    return _pointwise_backward("binary_cross_entropy", grad_output, input, target, reduction, backend)


def binary_cross_entropy_with_logits(input, target, reduction: str = "mean", *, backend: str | None = None):
    """Binary cross-entropy of sigmoid(input) (``torch.nn.functional.binary_cross_entropy_with_logits``).

    Per element the stable form ``max(x, 0) - x * t + log1p(exp(-|x|))``, finite for logits of
    any finite magnitude. Shapes, dtypes, reductions and errors as for ``mse_loss``.
    """
    return _pointwise_loss("binary_cross_entropy_with_logits", input, target, reduction, backend)


def binary_cross_entropy_with_logits_backward(
    grad_output, input, target, reduction: str = "mean", *, backend: str | None = None
):
    """Gradient of ``binary_cross_entropy_with_logits``: ``g * (sigmoid(x) - t)``.

    sigmoid is evaluated without overflow for either sign of x. grad_output, g and errors as for
    ``mse_loss_backward``.
    """
    return _pointwise_backward("binary_cross_entropy_with_logits", grad_output, input, target, reduction, backend)
