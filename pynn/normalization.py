"""Batch normalization layers, ``torch.nn.BatchNorm1d`` and ``torch.nn.BatchNorm2d``.

Source: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", ICML 2015, Algorithm 1 (training) and Algorithm 2 (inference):
``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel, the statistics taken over
every axis but the channel axis 1. In training mode they are the batch's (biased variance),
and the running statistics move towards them:
``running = (1 - momentum) * running + momentum * batch`` with the unbiased batch variance,
as PyTorch does; ``momentum=None`` gives the cumulative average ``1 / num_batches_tracked``.
In eval mode the running statistics are used, unless ``track_running_stats`` is False, in
which case batch statistics are used in both modes and no running statistics exist.

The arithmetic is ``kernels.batch_norm`` and ``kernels.batch_norm_backward`` on the ambient
backend; ``state_dict`` holds exactly PyTorch's keys: ``weight``, ``bias`` (when ``affine``),
``running_mean``, ``running_var`` and the int64 scalar ``num_batches_tracked`` (when
``track_running_stats``), so a PyTorch state_dict loads directly.
"""
from __future__ import annotations

import numpy as np

import kernels
from kernels import _checks as ck
from pynn.layers import _size
from pynn.module import Module, Parameter, register


class _BatchNorm(Module):
    """The layer for inputs of the ranks in ``_ranks``, channels on axis 1."""

    _hyper = ("num_features", "eps", "momentum", "affine", "track_running_stats")
    _ranks: tuple[int, ...]
    _layout: str

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.num_features = c = _size(num_features, "num_features")
        self.eps = ck.real(eps, "eps", low=0.0, low_open=True)
        self.momentum = None if momentum is None else ck.real(momentum, "momentum", low=0.0, high=1.0)
        for name, flag in (("affine", affine), ("track_running_stats", track_running_stats)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(np.ones(c)) if affine else None
        self.bias = Parameter(np.zeros(c)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, np.float32))
            self.register_buffer("running_var", np.ones(c, np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def _check(self, x) -> None:
        shape = getattr(x, "shape", None)
        if shape is None:
            raise TypeError(f"{type(self).__name__} expects an array x of shape {self._layout}, got {type(x).__name__}")
        if len(shape) not in self._ranks:
            raise ValueError(f"{type(self).__name__} expects x of shape {self._layout}, got {tuple(shape)}")
        if shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects x with {self.num_features} "
                             f"channels on axis 1, got shape {tuple(shape)}")

    def forward(self, x):
        self._check(x)
        batch_stats = self.training or not self.track_running_stats
        update = self.training and self.track_running_stats
        momentum = self.momentum
        if update and momentum is None:
            momentum = 1.0 / (self.num_batches_tracked.item() + 1)
        y, mean, invstd = kernels.batch_norm(
            x, self.running_mean, self.running_var,
            None if self.weight is None else self.weight.data, None if self.bias is None else self.bias.data,
            training=batch_stats, momentum=momentum if update else 0.0, eps=self.eps)
        if update:
            self.num_batches_tracked += 1
        self._x, self._mean, self._invstd, self._batch_stats = x, mean, invstd, batch_stats
        return y

    def backward(self, grad_output, input_grad: bool = True):
        gx, gw, gb = kernels.batch_norm_backward(
            grad_output, self._saved("_x"), None if self.weight is None else self.weight.data,
            self._mean, self._invstd, training=self._batch_stats)
        if self.weight is not None:
            self.weight.grad += gw
            self.bias.grad += gb
        return gx if input_grad else None


@register
class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) inputs (features, or channels of sequences).

    Parameters ``weight`` (ones) and ``bias`` (zeros), shape (C,). Raises TypeError/ValueError
    for a non-positive ``num_features`` or ``eps``, a ``momentum`` outside [0, 1], and in
    forward for an input of another rank or channel count.
    """

    _ranks, _layout = (2, 3), "(N, C) or (N, C, L)"


@register
class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) images, per channel ("spatial batch normalization").

    Parameters ``weight`` (ones) and ``bias`` (zeros), shape (C,). Raises as ``BatchNorm1d``.
    """

    _ranks, _layout = (4,), "(N, C, H, W)"
