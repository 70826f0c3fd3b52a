"""Batch normalisation and its backward pass, with the semantics of ``torch.nn.functional.batch_norm``.

Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing Internal
Covariate Shift", ICML 2015. For each channel c, over its M = N * S values (S the product of the
spatial sizes), section 3 (Algorithm 1) defines

    mu = mean(x),  sigma^2 = mean((x - mu)^2) (biased),  x_hat = (x - mu) / sqrt(sigma^2 + eps),
    y = gamma * x_hat + beta,

and its backward through mu and sigma^2 (section 3), in closed form with invstd = 1 / sqrt(sigma^2 + eps):

    dbeta = sum(dy),  dgamma = sum(dy * x_hat),
    dx = gamma * invstd * (dy - dbeta / M - x_hat * dgamma / M).

At inference (section 3.1) mu and sigma^2 are the running estimates, constants, so
dx = gamma * invstd * dy. The running estimates follow PyTorch: an exponential moving average
``running = (1 - momentum) * running + momentum * batch_stat`` with the unbiased batch variance
``sigma^2 * M / (M - 1)`` (the paper's Algorithm 2 uses the same correction).

The backends receive x as a C-contiguous (N, C, S) view and per-channel (C,) arrays. NaN and
infinities are not checked for: they propagate through the statistics (a NaN in a channel makes
its mean, variance, outputs and running statistics NaN), as in PyTorch.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from kernels import _checks as ck
from kernels._dispatch import implementation, resolve

_impl = partial(implementation, "norm")


def _channels_view(x):
    """(N, C, *spatial) -> (N, C, S); free, x being C-contiguous."""
    n, c = x.shape[0], x.shape[1]
    return x.reshape(n, c, x.size // (n * c))


def _per_channel(v, name, be, x, *, required=False):
    """Check an optional (C,) array of x's dtype; None passes unless ``required``."""
    if v is None:
        if required:
            raise ValueError(f"{name} is required, got None")
        return None
    return ck.float_array(v, name, be, shape=(x.shape[1],), dtype=x.dtype, like="x")


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, backend: str | None = None):
    """Batch normalisation per channel (``torch.nn.functional.batch_norm``).

    x: (N, C), (N, C, L), (N, C, H, W) or any (N, C, *); statistics per channel C over every
    other axis. running_mean, running_var, weight, bias: (C,) or None. All float32 (float64
    also on ``numpy``), one dtype, C-contiguous.

    training=True normalises with the batch mean and biased variance and, when running_mean
    and running_var are given, updates them IN PLACE with ``momentum`` and the unbiased
    variance. training=False normalises with running_mean and running_var (required then).
    Returns ``(y, save_mean, save_invstd)``: y of x's shape, and the (C,) mean and
    ``1 / sqrt(var + eps)`` used, which ``batch_norm_backward`` takes. Device arrays in, device
    arrays out; host running statistics given to the cuda backend are updated in place too.

    Raises TypeError (array type, dtype, non-number hyper-parameter) and ValueError (fewer than
    2 dimensions, per-channel arrays not of shape (C,), empty or non-contiguous arrays,
    running_mean given without running_var or the reverse, training=False without them, a
    read-only running statistic in training, momentum outside [0, 1], eps < 0, and training
    with one value per channel, N * S == 1, as PyTorch does).
    """
    be = resolve(backend, x, running_mean, running_var, weight, bias)
    x = ck.float_array(x, "x", be, min_ndim=2)
    running_mean = _per_channel(running_mean, "running_mean", be, x)
    running_var = _per_channel(running_var, "running_var", be, x)
    weight = _per_channel(weight, "weight", be, x)
    bias = _per_channel(bias, "bias", be, x)
    momentum = ck.real(momentum, "momentum", low=0.0, high=1.0)
    eps = ck.real(eps, "eps", low=0.0)
    training = bool(training)
    if (running_mean is None) != (running_var is None):
        raise ValueError(
            "running_mean and running_var must be given together, got "
            f"running_mean={'None' if running_mean is None else 'an array'} and "
            f"running_var={'None' if running_var is None else 'an array'}"
        )
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var are required when training=False, got None")
    if training:
        if x.size == x.shape[1]:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        for name, v in (("running_mean", running_mean), ("running_var", running_var)):
            if isinstance(v, np.ndarray) and not v.flags.writeable:
                raise ValueError(f"{name} is read-only, but training=True updates it in place")
    y, save_mean, save_invstd = _impl("batch_norm", be)(
        _channels_view(x), running_mean, running_var, weight, bias, training, momentum, eps
    )
    return y.reshape(x.shape), save_mean, save_invstd


def batch_norm_backward(grad_output, x, weight, save_mean, save_invstd, *, training: bool = True,
                        backend: str | None = None):
    """Gradients of ``batch_norm``: returns ``(grad_x, grad_weight, grad_bias)``.

    grad_output and x: the same shape, as ``batch_norm`` accepts; weight: (C,) or None, as
    passed to ``batch_norm``; save_mean, save_invstd: (C,), as ``batch_norm`` returned them.
    training: the mode of the forward call. With training=True grad_x flows through the batch
    statistics (Ioffe & Szegedy's closed form, see the module docstring); with training=False
    ``grad_x = grad_output * weight * save_invstd``. grad_weight = sum(grad_output * x_hat) and
    grad_bias = sum(grad_output) over every axis but C; both are None when weight is None.

    Raises TypeError and ValueError naming the argument, as ``batch_norm`` does (grad_output of
    another shape or dtype than x's included).
    """
    be = resolve(backend, grad_output, x, weight, save_mean, save_invstd)
    x = ck.float_array(x, "x", be, min_ndim=2)
    g = ck.float_array(grad_output, "grad_output", be, shape=tuple(x.shape), dtype=x.dtype, like="x")
    weight = _per_channel(weight, "weight", be, x)
    save_mean = _per_channel(save_mean, "save_mean", be, x, required=True)
    save_invstd = _per_channel(save_invstd, "save_invstd", be, x, required=True)
    grad_x, grad_weight, grad_bias = _impl("batch_norm_backward", be)(
        _channels_view(g), _channels_view(x), weight, save_mean, save_invstd, bool(training)
    )
    return grad_x.reshape(x.shape), grad_weight, grad_bias
