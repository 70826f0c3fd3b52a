"""Optimizers with PyTorch's names, defaults and update rules, each step ONE kernel call.

At construction an optimizer moves the data of all its parameters into one flat buffer, and
their gradients into another (values preserved): ``p.data`` and ``p.grad`` become views into
them. ``step()`` is then a single ``kernels.<name>_step`` over the flat buffers and
``zero_grad()`` a single fill. Consequences: write parameters and gradients in place
(``p.data[...] = v``, ``p.grad += g``; modules and ``load_state_dict`` do), and build the
optimizer after ``Module.to(dtype)``. A second optimizer over parameters already laid out in
one buffer, in the same order, shares that buffer instead of moving them again.

The update formulas, with their sources, are documented on the kernels (``kernels.optim``):
SGD with momentum/Nesterov (Sutskever et al. 2013), Adam (Kingma & Ba 2015), AdamW
(Loshchilov & Hutter 2019), RMSprop (Hinton 2012), Adagrad (Duchi et al. 2011).
"""
from __future__ import annotations

import math

import numpy as np

import kernels
from kernels import _checks as ck
from pynn.module import Parameter


def _params(params) -> list[Parameter]:
    if isinstance(params, Parameter):
        params = [params]
    out, seen = [], set()
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"optimizers take Parameters, got {type(p).__name__}")
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    if not out:
        raise ValueError("optimizer got an empty parameter list")
    return out


def _shared_buffer(arrays):
    """The flat buffer the arrays are already consecutive views of, in order, or None."""
    base = arrays[0].base
    if not (isinstance(base, np.ndarray) and base.ndim == 1 and base.flags.c_contiguous
            and base.size == sum(a.size for a in arrays)):
        return None
    address = base.ctypes.data
    for a in arrays:
        if a.base is not base or a.dtype != base.dtype or not a.flags.c_contiguous or a.ctypes.data != address:
            return None
        address += a.nbytes
    return base


def _flatten(params, attr: str) -> np.ndarray:
    """One flat buffer holding ``getattr(p, attr)`` of every parameter; rebinds them to views."""
    arrays = [getattr(p, attr) for p in params]
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1:
        raise TypeError(f"parameters must share one dtype, got {sorted(map(str, dtypes))}")
    buf = _shared_buffer(arrays)
    if buf is None:
        buf = np.empty(sum(a.size for a in arrays), dtype=arrays[0].dtype)
        offset = 0
        for p, a in zip(params, arrays):
            view = buf[offset:offset + a.size].reshape(a.shape)
            view[...] = a
            setattr(p, attr, view)
            offset += a.size
    return buf


class Optimizer:
    """Base class: flat buffers, the step count, hyper-parameters as attributes, state buffers.

    Subclasses name their kernel (``_kernel``), the attributes passed to it as keywords
    (``_hyper``), whether it takes the step count, and create their state buffers in order.
    """

    _kernel: str
    _hyper: tuple[str, ...]
    _counts_steps = True

    def __init__(self, params, **hyper):
        self.params = _params(params)
        self._data = _flatten(self.params, "data")
        self._grad = _flatten(self.params, "grad")
        for name, value in hyper.items():
            setattr(self, name, value)
        self.steps = 0
        self.state: dict[str, np.ndarray | None] = {}

    def _buffer(self, name: str, fill: float | None) -> None:
        """Add a state buffer of the flat size filled with ``fill``, or None (state not used)."""
        self.state[name] = None if fill is None else np.full_like(self._data, fill)

    def step(self) -> None:
        """Update every parameter from its gradient (one kernel call)."""
        self.steps += 1
        kwargs = {k: getattr(self, k) for k in self._hyper}
        if self._counts_steps:
            kwargs["step"] = self.steps
        getattr(kernels, self._kernel)(self._data, self._grad, *self.state.values(), **kwargs)

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero (one fill of the flat gradient buffer)."""
        self._grad.fill(0)

    def state_dict(self) -> dict:
        """``{"steps": int, "hyper": {name: JSON-able value}, "state": {name: ndarray copy}}``."""
        hyper = {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(self, k)) for k in self._hyper)}
        state = {k: v.copy() for k, v in self.state.items() if v is not None}
        return {"steps": self.steps, "hyper": hyper, "state": state}

    def load_state_dict(self, state_dict) -> None:
        """Restore a ``state_dict()``: copies the state buffers in place.

        Raises ValueError when its keys, state names or buffer shapes do not match this optimizer.
        """
        if set(state_dict) != {"steps", "hyper", "state"}:
            raise ValueError(f"optimizer state_dict needs keys steps, hyper, state; got {sorted(state_dict)}")
        own = {k for k, v in self.state.items() if v is not None}
        if set(state_dict["state"]) != own or set(state_dict["hyper"]) != set(self._hyper):
            raise ValueError(f"optimizer state {sorted(state_dict['state'])} and hyper-parameters "
                             f"{sorted(state_dict['hyper'])} do not match {sorted(own)} and {sorted(self._hyper)}")
        for k, v in state_dict["state"].items():
            v = np.asarray(v)
            if v.shape != self.state[k].shape:
                raise ValueError(f"optimizer state {k!r} has shape {v.shape}, expected {self.state[k].shape}")
        for k, v in state_dict["state"].items():
            self.state[k][...] = v
        for k, v in state_dict["hyper"].items():
            setattr(self, k, tuple(v) if isinstance(v, list) else v)
        self.steps = int(state_dict["steps"])

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper)
        return f"{type(self).__name__}({hyper})"


def _nonnegative(**values) -> None:
    for name, v in values.items():
        ck.real(v, name, low=0.0)


def _betas(betas) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair of numbers, got {betas!r}")
    return tuple(ck.real(b, f"betas[{i}]", low=0.0, high=1.0, high_open=True) for i, b in enumerate(betas))


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum (``torch.optim.SGD``)."""

    _kernel = "sgd_step"
    _hyper = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False):
        _nonnegative(lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening == 0")
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, maximize=maximize)
        self._buffer("momentum_buffer", 0.0 if momentum != 0 else None)


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``, amsgrad off); weight decay is added to the gradient."""

    _kernel = "adam_step"
    _hyper = ("lr", "betas", "eps", "weight_decay", "maximize")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, maximize: bool = False):
        _nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
        super().__init__(params, lr=lr, betas=_betas(betas), eps=eps, weight_decay=weight_decay, maximize=maximize)
        self._buffer("exp_avg", 0.0)
        self._buffer("exp_avg_sq", 0.0)


class AdamW(Adam):
    """AdamW (``torch.optim.AdamW``): Adam with decoupled weight decay, default 1e-2."""

    _kernel = "adamw_step"

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, maximize)


class RMSprop(Optimizer):
    """RMSprop, optionally centered and with momentum (``torch.optim.RMSprop``)."""

    _kernel = "rmsprop_step"
    _hyper = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    _counts_steps = False

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, maximize: bool = False):
        _nonnegative(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered, maximize=maximize)
        self._buffer("square_avg", 0.0)
        self._buffer("momentum_buffer", 0.0 if momentum > 0 else None)
        self._buffer("grad_avg", 0.0 if centered else None)


class Adagrad(Optimizer):
    """Adagrad (``torch.optim.Adagrad``); the accumulator starts at ``initial_accumulator_value``."""

    _kernel = "adagrad_step"
    _hyper = ("lr", "lr_decay", "weight_decay", "eps", "maximize")

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, maximize: bool = False):
        _nonnegative(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                     initial_accumulator_value=initial_accumulator_value)
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, maximize=maximize)
        self._buffer("state_sum", initial_accumulator_value)


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0) -> float:
    """Scale gradients in place so their joint norm is at most ``max_norm``; return the norm before.

    The joint norm is the ``norm_type``-norm of all gradients taken as one vector (``inf``: the
    largest magnitude). When it exceeds ``max_norm`` every gradient is multiplied by
    ``max_norm / (norm + 1e-6)`` (``torch.nn.utils.clip_grad_norm_``). Raises ValueError for a
    negative ``max_norm`` or a ``norm_type`` that is not positive.
    """
    max_norm = ck.real(max_norm, "max_norm", low=0.0)
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"norm_type must be positive (or inf), got {norm_type}")
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    grads = [p.grad for p in parameters]
    if not grads:
        return 0.0
    norms = [np.linalg.norm(g.reshape(-1), norm_type) for g in grads]
    total = float(max(norms) if math.isinf(norm_type) else np.linalg.norm(norms, norm_type))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= coef
    return total
