"""In-place optimizer updates: SGD, Adam, AdamW, RMSprop and Adagrad.

Each function is one step of PyTorch 2.13's single-tensor implementation (``foreach=False`` in
``torch/optim/{sgd,adam,rmsprop,adagrad}.py``), with the same formulas, defaults and argument
checks. ``param``, ``grad`` and every state tensor have one shape (any), one dtype (float32;
float64 also on ``numpy``) and are C-contiguous; ``param`` and the states are updated in place
and the functions return None. The update is elementwise, so ``param`` may be one flat buffer
holding every parameter of a model: one call per step then updates them all. State tensors
start as zeros, as PyTorch's optimizers create them.

Common errors: TypeError for a non-array, a wrong dtype or a non-number hyper-parameter;
ValueError, naming the argument, for shapes that differ from ``param``'s, an empty or
non-contiguous array, a hyper-parameter out of range, or a state tensor missing (or given
when the options do not use it). NaN and infinities in the tensors are not checked for: they
propagate into ``param`` and the states through the update formulas, as in PyTorch.
"""
from __future__ import annotations

import math
import numbers
from functools import partial

from kernels import _checks as ck
from kernels._dispatch import implementation, resolve

_impl = partial(implementation, "optim")


def _tensors(be, param, grad, **states):
    """Check ``param``, ``grad`` and the states (None allowed) and return flat 1-D views of each."""
    param = ck.float_array(param, "param", be)
    like = {"shape": tuple(param.shape), "dtype": param.dtype, "like": "param"}
    flat = [param, ck.float_array(grad, "grad", be, **like)]
    flat += [None if x is None else ck.float_array(x, name, be, **like) for name, x in states.items()]
    return [None if x is None else x.reshape(x.size) for x in flat]


def _step(step) -> int:
    """Check the 1-based step count."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an integer, got {type(step).__name__}")
    if step < 1:
        raise ValueError(f"step must be >= 1 (the count of steps taken, this one included), got {step}")
    return int(step)


def _state_needed(x, name: str, needed: bool, reason: str) -> None:
    """A state tensor must be given exactly when the options use it."""
    if needed and x is None:
        raise ValueError(f"{name} is required when {reason}")
    if not needed and x is not None:
        raise ValueError(f"{name} must be None unless {reason}")


def sgd_step(param, grad, momentum_buffer=None, *, lr, step, momentum=0.0, dampening=0.0,
             weight_decay=0.0, nesterov=False, maximize=False, backend=None):
    """One step of stochastic gradient descent with optional momentum (``torch.optim.SGD``).

    With ``g = -grad`` if ``maximize`` else ``grad``, ``g += weight_decay * param``; with
    momentum ``b = g`` at ``step`` 1, else ``b = momentum * b + (1 - dampening) * g``; then
    ``g = g + momentum * b`` (Nesterov momentum, Sutskever et al., ICML 2013) or ``g = b``;
    finally ``param -= lr * g``.

    momentum_buffer: required iff ``momentum != 0``. ``step`` is the 1-based step count.
    Raises ValueError for lr < 0, momentum < 0, weight_decay < 0, and ``nesterov`` without
    momentum > 0 and dampening == 0, as PyTorch does; others as in the module docstring.
    """
    lr = ck.real(lr, "lr", low=0.0)
    step = _step(step)
    momentum = ck.real(momentum, "momentum", low=0.0)
    dampening = ck.real(dampening, "dampening")
    weight_decay = ck.real(weight_decay, "weight_decay", low=0.0)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(f"nesterov=True requires momentum > 0 and dampening == 0, got momentum={momentum}, "
                         f"dampening={dampening}")
    _state_needed(momentum_buffer, "momentum_buffer", momentum != 0, "momentum != 0")
    be = resolve(backend, param, grad, momentum_buffer)
    p, g, buf = _tensors(be, param, grad, momentum_buffer=momentum_buffer)
    _impl("sgd_step", be)(p, g, buf, lr, momentum, dampening, weight_decay, step == 1, bool(nesterov),
                          bool(maximize))


def _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, maximize, backend,
          decoupled):
    """Adam and AdamW: check, compute the bias corrections once in float64, dispatch."""
    lr = ck.real(lr, "lr", low=0.0)
    step = _step(step)
    if not isinstance(betas, (tuple, list)):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {type(betas).__name__}")
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    beta1 = ck.real(betas[0], "betas[0]", low=0.0, high=1.0, high_open=True)
    beta2 = ck.real(betas[1], "betas[1]", low=0.0, high=1.0, high_open=True)
    eps = ck.real(eps, "eps", low=0.0)
    weight_decay = ck.real(weight_decay, "weight_decay", low=0.0)
    be = resolve(backend, param, grad, exp_avg, exp_avg_sq)
    p, g, m, v = _tensors(be, param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    step_size = lr / (1.0 - beta1**step)
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    _impl("adam_step", be)(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt,
                           bool(maximize), decoupled)


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
              weight_decay=0.0, maximize=False, backend=None):
    """One step of Adam (Kingma & Ba, ICLR 2015; ``torch.optim.Adam``, amsgrad off).

    With ``g = -grad`` if ``maximize`` else ``grad`` and ``g += weight_decay * param`` (L2
    penalty): ``m = beta1 m + (1 - beta1) g``, ``v = beta2 v + (1 - beta2) g^2``,
    ``param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`` with ``t = step``.

    exp_avg, exp_avg_sq: the moments ``m`` and ``v``. Raises ValueError for lr < 0, eps < 0,
    a beta outside [0, 1), weight_decay < 0 or step < 1; others as in the module docstring.
    """
    _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, maximize, backend, False)


def adamw_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
               weight_decay=1e-2, maximize=False, backend=None):
    """One step of AdamW (Loshchilov & Hutter, ICLR 2019; ``torch.optim.AdamW``, amsgrad off).

    Adam with decoupled weight decay: ``param *= 1 - lr * weight_decay`` first, and the moments
    see the plain gradient. Arguments, defaults (but ``weight_decay=1e-2``) and errors as
    ``adam_step``.
    """
    _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, maximize, backend, True)


def rmsprop_step(param, grad, square_avg, momentum_buffer=None, grad_avg=None, *, lr=1e-2, alpha=0.99,
                 eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False, backend=None):
    """One step of RMSprop (Hinton, *Neural Networks for Machine Learning*, lecture 6e, 2012;
    ``torch.optim.RMSprop``).

    With ``g = -grad`` if ``maximize`` else ``grad`` and ``g += weight_decay * param``:
    ``s = alpha s + (1 - alpha) g^2``; centered: ``a = alpha a + (1 - alpha) g`` and
    ``d = sqrt(s - a^2) + eps``, else ``d = sqrt(s) + eps``; with momentum
    ``b = momentum b + g / d`` and ``param -= lr * b``, else ``param -= lr * g / d``.

    square_avg: ``s``; momentum_buffer: ``b``, required iff momentum > 0; grad_avg: ``a``,
    required iff ``centered``. Raises ValueError for lr, eps, momentum, weight_decay or alpha
    below 0 (PyTorch's bounds); others as in the module docstring.
    """
    lr = ck.real(lr, "lr", low=0.0)
    alpha = ck.real(alpha, "alpha", low=0.0)
    eps = ck.real(eps, "eps", low=0.0)
    weight_decay = ck.real(weight_decay, "weight_decay", low=0.0)
    momentum = ck.real(momentum, "momentum", low=0.0)
    _state_needed(momentum_buffer, "momentum_buffer", momentum > 0, "momentum > 0")
    _state_needed(grad_avg, "grad_avg", bool(centered), "centered=True")
    be = resolve(backend, param, grad, square_avg, momentum_buffer, grad_avg)
    p, g, s, b, a = _tensors(be, param, grad, square_avg=square_avg, momentum_buffer=momentum_buffer,
                             grad_avg=grad_avg)
    _impl("rmsprop_step", be)(p, g, s, b, a, lr, alpha, eps, weight_decay, momentum, bool(maximize))


def adagrad_step(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
                 maximize=False, backend=None):
    """One step of Adagrad (Duchi, Hazan & Singer, JMLR 2011; ``torch.optim.Adagrad``).

    With ``g = -grad`` if ``maximize`` else ``grad`` and ``g += weight_decay * param``:
    ``state_sum += g^2`` and ``param -= clr * g / (sqrt(state_sum) + eps)``, where
    ``clr = lr / (1 + (step - 1) * lr_decay)``.

    Raises ValueError for lr, lr_decay, weight_decay or eps below 0, or step < 1; others as in
    the module docstring.
    """
    lr = ck.real(lr, "lr", low=0.0)
    step = _step(step)
    lr_decay = ck.real(lr_decay, "lr_decay", low=0.0)
    weight_decay = ck.real(weight_decay, "weight_decay", low=0.0)
    eps = ck.real(eps, "eps", low=0.0)
    be = resolve(backend, param, grad, state_sum)
    p, g, s = _tensors(be, param, grad, state_sum=state_sum)
    clr = lr / (1.0 + (step - 1) * lr_decay)
    _impl("adagrad_step", be)(p, g, s, clr, weight_decay, eps, bool(maximize))
