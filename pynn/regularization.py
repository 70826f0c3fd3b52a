"""Explicit weight penalties: each returns its value and adds its gradient into ``p.grad``.

Call after ``model.backward`` (gradients accumulate) and add the value to the reported loss.
Pass only the parameters to penalise, usually the weights and not the biases::

    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    loss += l2_penalty(weights, 1e-4)

Both follow Goodfellow, Bengio & Courville, *Deep Learning*, 2016, sections 7.1.1-7.1.2.
"""
from __future__ import annotations

import numpy as np

from kernels import _checks as ck
from pynn.module import Parameter


def _penalty(parameters, weight, value_fn, grad_fn) -> float:
    weight = ck.real(weight, "weight", low=0.0)
    params = [parameters] if isinstance(parameters, Parameter) else list(parameters)
    total = 0.0
    for p in params:
        total += float(value_fn(p.data))
        p.grad += (weight * grad_fn(p.data)).astype(p.grad.dtype, copy=False)
    return weight * total


def l1_penalty(parameters, weight: float) -> float:
    """``weight * sum |p|``; adds the subgradient ``weight * sign(p)`` (0 at 0) to each ``p.grad``.

    Drives weights to exactly zero (sparsity). Raises ValueError for a negative weight.
    """
    return _penalty(parameters, weight, lambda a: np.abs(a).sum(dtype=np.float64), np.sign)


def l2_penalty(parameters, weight: float) -> float:
    """``weight / 2 * sum p^2``; adds ``weight * p`` to each ``p.grad``.

    With the 1/2, the gradient equals SGD's ``weight_decay=weight`` term. Raises ValueError for a
    negative weight.
    """
    return 0.5 * _penalty(parameters, weight, lambda a: np.square(a, dtype=np.float64).sum(), lambda a: a)
