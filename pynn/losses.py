"""Loss objects with PyTorch's names and semantics, computed by the ``kernels`` loss ops.

``loss = loss_fn(input, target)`` returns the loss (a Python float for ``reduction="mean"`` or
``"sum"``, the per-term ndarray for ``"none"``) and keeps the arguments; ``loss_fn.backward()``
returns the gradient of that loss (of ``sum(loss)`` for ``"none"``, unless ``grad_output``
weights the terms) with respect to ``input``, to feed ``model.backward``.

Shapes and dtypes (float32; float64 on the numpy backend):
- CrossEntropyLoss: input (N, C) logits; target (N,) int64 class indices or (N, C) probabilities.
- MSELoss, L1Loss: input and target of one shape.
- BCELoss: input probabilities in [0, 1] and a target of the same shape.
- BCEWithLogitsLoss: input logits and a target of the same shape (more stable than Sigmoid + BCELoss).
The kernels raise TypeError/ValueError naming the argument for anything else.
"""
from __future__ import annotations

import numpy as np

import kernels
from kernels import _checks as ck


class Loss:
    """A loss computed by ``kernels.<_kernel>`` and ``kernels.<_kernel>_backward``."""

    _kernel: str

    def __init__(self, reduction: str = "mean"):
        self.reduction = ck.choice(reduction, "reduction", ("mean", "sum", "none"))
        self._args = None

    def __call__(self, input, target):
        value = getattr(kernels, self._kernel)(input, target, reduction=self.reduction)
        self._args = (input, target, value)
        return value if self.reduction == "none" else float(value)

    def backward(self, grad_output=None):
        """Gradient with respect to the last call's input (its shape and dtype).

        grad_output: the upstream gradient of the loss, 1.0 by default (ones for ``"none"``).
        Raises RuntimeError before any call.
        """
        if self._args is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before the loss was computed")
        input, target, value = self._args
        if grad_output is None:
            grad_output = np.ones_like(value) if self.reduction == "none" else 1.0
        backward = getattr(kernels, self._kernel + "_backward")
        return backward(grad_output, input, target, reduction=self.reduction)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy of logits (``torch.nn.CrossEntropyLoss``); mean over the N rows."""

    _kernel = "cross_entropy"


class MSELoss(Loss):
    """Mean squared error ``(x - t)^2`` (``torch.nn.MSELoss``); mean over all elements."""

    _kernel = "mse_loss"


class L1Loss(Loss):
    """Mean absolute error ``|x - t|`` (``torch.nn.L1Loss``); mean over all elements."""

    _kernel = "l1_loss"


class BCELoss(Loss):
    """Binary cross-entropy of probabilities, logs clamped at -100 (``torch.nn.BCELoss``)."""

    _kernel = "binary_cross_entropy"


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy of sigmoid(logits), computed stably (``torch.nn.BCEWithLogitsLoss``)."""

    _kernel = "binary_cross_entropy_with_logits"
