"""Activation functions and their backward passes, with the semantics of ``torch.nn.functional``.

Elementwise ops (relu, leaky_relu, elu, selu, gelu, sigmoid, tanh) reach the backends as 1-D
views and are reshaped back; softmax and log_softmax reach them as (rows, cols) arrays reduced
along the last axis, ``dim`` having been moved there first. The backends share a few kernels:
relu is leaky_relu with slope 0, selu is elu with SELU's alpha and scale, and softmax and
log_softmax are one kernel with a ``log`` flag.

Backward passes follow PyTorch's derivative formulas (``tools/autograd/derivatives.yaml``):
relu, leaky_relu, elu, selu and gelu take the forward input ``x``; sigmoid, tanh, softmax and
log_softmax take the forward output, as ``torch.ops.aten.sigmoid_backward`` and friends do.

NaN and infinities propagate through the formulas as IEEE arithmetic gives them, as in PyTorch
(a NaN in a softmax row makes the whole row NaN); nothing checks for them. Finite inputs of any
magnitude give finite outputs: exponentials only see non-positive arguments.
"""
from __future__ import annotations

import numbers
from functools import partial

import numpy as np

from kernels import _checks as ck
from kernels._dispatch import implementation, resolve

_impl = partial(implementation, "activation")

# Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017, eq. (2); PyTorch's values.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

_GELU_FORMS = ("none", "tanh")


def _map(op, be, x, *params):
    """Run an elementwise op on a checked array through its 1-D view."""
    return _impl(op, be)(x.reshape(x.size), *params).reshape(x.shape)


def _unary(op, x, be, *params):
    x = ck.float_array(x, "x", be, min_ndim=1)
    return _map(op, be, x, *params)


def _backward(op, grad_output, t, t_name, be, *params):
    """Check ``grad_output`` against the saved tensor ``t`` (x or output) and run ``op``."""
    t = ck.float_array(t, t_name, be, min_ndim=1)
    g = ck.float_array(grad_output, "grad_output", be, shape=tuple(t.shape), dtype=t.dtype, like=t_name)
    y = _impl(op, be)(g.reshape(g.size), t.reshape(t.size), *params)
    return y.reshape(t.shape)


def relu(x, *, backend: str | None = None):
    """Rectified linear unit ``max(x, 0)`` (Nair & Hinton, ICML 2010).

    x: any shape with at least one dimension; float32 (float64 also on ``numpy``), C-contiguous.
    Returns a new array of x's shape and dtype (a device array for device input).

    Raises TypeError (array type, dtype) and ValueError (0-D, empty, non-contiguous), naming x.
    """
    be = resolve(backend, x)
    return _unary("leaky_relu", x, be, 0.0)


def relu_backward(grad_output, x, *, backend: str | None = None):
    """Gradient of ``relu``: ``grad_output`` where x > 0, else 0 (0 at x == 0, as PyTorch's
    ``threshold_backward``).

    grad_output and x: the same shape and dtype, as ``relu`` accepts. Returns grad_x.
    Raises TypeError and ValueError naming the argument (shape or dtype mismatch included).
    """
    be = resolve(backend, grad_output, x)
    return _backward("leaky_relu_backward", grad_output, x, "x", be, 0.0)


def leaky_relu(x, negative_slope: float = 0.01, *, backend: str | None = None):
    """Leaky ReLU ``x if x > 0 else negative_slope * x`` (Maas et al., ICML 2013).

    x as for ``relu``; negative_slope a finite real. Returns an array of x's shape and dtype.
    Raises TypeError/ValueError naming x or negative_slope.
    """
    be = resolve(backend, x)
    slope = ck.real(negative_slope, "negative_slope")
    return _unary("leaky_relu", x, be, slope)


def leaky_relu_backward(grad_output, x, negative_slope: float = 0.01, *, backend: str | None = None):
    """Gradient of ``leaky_relu``: ``grad_output`` where x > 0, else ``negative_slope * grad_output``.

    Shapes and errors as for ``relu_backward``; negative_slope as for ``leaky_relu``.
    """
    be = resolve(backend, grad_output, x)
    slope = ck.real(negative_slope, "negative_slope")
    return _backward("leaky_relu_backward", grad_output, x, "x", be, slope)


def elu(x, alpha: float = 1.0, *, backend: str | None = None):
    """Exponential linear unit ``x if x > 0 else alpha * (exp(x) - 1)`` (Clevert et al., ICLR 2016).

    x as for ``relu``; alpha a finite real. Returns an array of x's shape and dtype.
    Raises TypeError/ValueError naming x or alpha.
    """
    be = resolve(backend, x)
    a = ck.real(alpha, "alpha")
    return _unary("elu", x, be, a, 1.0)


def elu_backward(grad_output, x, alpha: float = 1.0, *, backend: str | None = None):
    """Gradient of ``elu``: ``grad_output`` where x > 0, else ``grad_output * alpha * exp(x)``.

    Shapes and errors as for ``relu_backward``; alpha as for ``elu``.
    """
    be = resolve(backend, grad_output, x)
    a = ck.real(alpha, "alpha")
    return _backward("elu_backward", grad_output, x, "x", be, a, 1.0)


def selu(x, *, backend: str | None = None):
    """Scaled ELU ``scale * elu(x, alpha)`` with the constants of Klambauer et al. (NeurIPS 2017):
    alpha = 1.67326..., scale = 1.05070... (``SELU_ALPHA``, ``SELU_SCALE``).

    Shapes, dtypes and errors as for ``relu``.
    """
    be = resolve(backend, x)
    return _unary("elu", x, be, SELU_ALPHA, SELU_SCALE)


def selu_backward(grad_output, x, *, backend: str | None = None):
    """Gradient of ``selu``: ``scale * grad_output`` where x > 0, else ``scale * alpha * exp(x) *
    grad_output``. Shapes and errors as for ``relu_backward``."""
    be = resolve(backend, grad_output, x)
    return _backward("elu_backward", grad_output, x, "x", be, SELU_ALPHA, SELU_SCALE)


def gelu(x, approximate: str = "none", *, backend: str | None = None):
    """Gaussian error linear unit ``x * Phi(x)`` (Hendrycks & Gimpel, 2016).

    ``approximate="none"``: the exact form ``0.5 x (1 + erf(x / sqrt 2))``; ``"tanh"``: the
    paper's approximation ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``. x as for ``relu``.
    Raises TypeError/ValueError naming x, and ValueError naming approximate for another string.
    """
    be = resolve(backend, x)
    form = ck.choice(approximate, "approximate", _GELU_FORMS)
    return _unary("gelu", x, be, form == "tanh")


def gelu_backward(grad_output, x, approximate: str = "none", *, backend: str | None = None):
    """Gradient of ``gelu``: ``grad_output * d/dx gelu(x)`` for the chosen form (exact:
    ``Phi(x) + x phi(x)``). Shapes and errors as for ``relu_backward`` and ``gelu``."""
    be = resolve(backend, grad_output, x)
    form = ck.choice(approximate, "approximate", _GELU_FORMS)
    return _backward("gelu_backward", grad_output, x, "x", be, form == "tanh")


def sigmoid(x, *, backend: str | None = None):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, evaluated as ``exp(-|x|)``-based branches so no
    exp overflows for any finite x. Shapes, dtypes and errors as for ``relu``."""
    be = resolve(backend, x)
    return _unary("sigmoid", x, be)


def sigmoid_backward(grad_output, output, *, backend: str | None = None):
    """Gradient of ``sigmoid`` from its OUTPUT y: ``grad_output * y * (1 - y)`` (as PyTorch's
    ``sigmoid_backward``). grad_output and output: the same shape and dtype; errors name them."""
    be = resolve(backend, grad_output, output)
    return _backward("sigmoid_backward", grad_output, output, "output", be)


def tanh(x, *, backend: str | None = None):
    """Hyperbolic tangent. Shapes, dtypes and errors as for ``relu``."""
    be = resolve(backend, x)
    return _unary("tanh", x, be)


def tanh_backward(grad_output, output, *, backend: str | None = None):
    """Gradient of ``tanh`` from its OUTPUT y: ``grad_output * (1 - y^2)`` (as PyTorch's
    ``tanh_backward``). Shapes and errors as for ``sigmoid_backward``."""
    be = resolve(backend, grad_output, output)
    return _backward("tanh_backward", grad_output, output, "output", be)


def _axis(dim, ndim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim must lie in [{-ndim}, {ndim - 1}] for a {ndim}-D input, got {dim}")
    return int(dim) % ndim


def _rows(t, axis):
    """(rows, cols) view of ``t`` with ``axis`` moved last; host arrays only are moved."""
    if axis != t.ndim - 1:
        if not isinstance(t, np.ndarray):
            raise ValueError(
                f"dim={axis} is not the last dimension; device arrays are reduced along the last "
                "dimension only (move the axis before the call)"
            )
        t = np.ascontiguousarray(np.moveaxis(t, axis, -1))
    cols = t.shape[t.ndim - 1]  # the simulator's device shapes refuse negative indices
    return t.reshape(t.size // cols, cols)


def _unrows(y, shape, axis):
    """Inverse of ``_rows``: back to ``shape``, with the reduced axis returned to ``axis``."""
    moved = tuple(s for i, s in enumerate(shape) if i != axis) + (shape[axis],)
    y = y.reshape(moved)
    if axis != len(shape) - 1:
        y = np.ascontiguousarray(np.moveaxis(y, -1, axis))
    return y


def _softmax(x, dim, be, log):
    x = ck.float_array(x, "x", be, min_ndim=1)
    axis = _axis(dim, x.ndim)
    y = _impl("softmax", be)(_rows(x, axis), log)
    return _unrows(y, tuple(x.shape), axis)


def _softmax_backward(grad_output, output, dim, be, log):
    y = ck.float_array(output, "output", be, min_ndim=1)
    g = ck.float_array(grad_output, "grad_output", be, shape=tuple(y.shape), dtype=y.dtype, like="output")
    axis = _axis(dim, y.ndim)
    dx = _impl("softmax_backward", be)(_rows(g, axis), _rows(y, axis), log)
    return _unrows(dx, tuple(y.shape), axis)


def softmax(x, dim: int = -1, *, backend: str | None = None):
    """Softmax along ``dim``: ``exp(x - m) / sum(exp(x - m))`` with m the maximum along ``dim``,
    so logits of any finite magnitude give finite results (Goodfellow et al., *Deep Learning*,
    2016, 4.1).

    x: any shape with at least one dimension; float32 (float64 also on ``numpy``), C-contiguous.
    dim: an int in [-x.ndim, x.ndim); for device arrays only the last dimension. Returns an
    array of x's shape and dtype. Raises TypeError (array type, dtype, non-int dim) and
    ValueError (0-D, empty, non-contiguous, dim out of range or not last on the device).
    """
    be = resolve(backend, x)
    return _softmax(x, dim, be, False)


def softmax_backward(grad_output, output, dim: int = -1, *, backend: str | None = None):
    """Gradient of ``softmax`` from its OUTPUT y: ``y * (g - sum(g * y, dim))`` (PyTorch's
    ``_softmax_backward_data``). grad_output and output: the same shape and dtype; dim and
    errors as for ``softmax``."""
    be = resolve(backend, grad_output, output)
    return _softmax_backward(grad_output, output, dim, be, False)


def log_softmax(x, dim: int = -1, *, backend: str | None = None):
    """Log-softmax along ``dim``: ``x - m - log(sum(exp(x - m)))`` with m the maximum along
    ``dim`` (the log-sum-exp trick). Shapes, dtypes and errors as for ``softmax``."""
    be = resolve(backend, x)
    return _softmax(x, dim, be, True)


def log_softmax_backward(grad_output, output, dim: int = -1, *, backend: str | None = None):
    """Gradient of ``log_softmax`` from its OUTPUT y: ``g - exp(y) * sum(g, dim)`` (PyTorch's
    ``_log_softmax_backward_data``). Shapes and errors as for ``softmax_backward``."""
    be = resolve(backend, grad_output, output)
    return _softmax_backward(grad_output, output, dim, be, True)
