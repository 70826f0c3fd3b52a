"""Layers: Linear, the elementwise and softmax activations, Dropout and Flatten; and the fused
dense stack (``DenseStack``) through which ``Sequential`` runs MLPs of these layers.

Every layer computes through the public ops of ``kernels`` with the ambient backend (a
``kernels.use_backend`` block, ``$PYNN_BACKEND``, or numba > c > numpy), so a model runs on
every backend. Inputs are float32 (float64 on the numpy backend, after ``Module.to``) and
C-contiguous, as the kernels require; they raise TypeError/ValueError naming the argument
otherwise. ``backward(grad_output)`` takes the gradient with respect to the last ``forward``'s
output (same shape) and returns the gradient with respect to its input.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

import kernels
from kernels import _checks as ck
from kernels.dropout import mix_seed
from pynn import init
from pynn.module import Module, Parameter, register
from pynn.random import draw_seed

_GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1


def _size(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _dim(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


@register
class Linear(Module):
    """Affine map ``y = x @ weight.T + bias`` (``torch.nn.Linear``).

    x: (*, in_features) -> y: (*, out_features). ``weight``: (out_features, in_features),
    initialised with ``kaiming_uniform_(a=sqrt(5))``, i.e. U(-1/sqrt(in), 1/sqrt(in)); ``bias``:
    (out_features,) from the same U(-1/sqrt(in), 1/sqrt(in)), PyTorch's defaults. Draws from
    ``pynn.random``. Raises TypeError/ValueError for sizes that are not positive ints.
    """

    _hyper = ("in_features", "out_features")

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = _size(in_features, "in_features")
        self.out_features = _size(out_features, "out_features")
        self.weight = Parameter(np.zeros((self.out_features, self.in_features)))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bias = None
        if bias:
            self.bias = Parameter(np.zeros(self.out_features))
            bound = 1.0 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def _kwargs(self) -> dict:
        return {**super()._kwargs(), "bias": self.bias is not None}

    def forward(self, x):
        y = kernels.linear(x, self.weight.data, None if self.bias is None else self.bias.data)
        self._x = x
        return y

    def backward(self, grad_output, input_grad: bool = True):
        gx, gw, gb = kernels.linear_backward(grad_output, self._saved("_x"), self.weight.data,
                                             bias=self.bias is not None, input_grad=input_grad)
        self.weight.grad += gw
        if self.bias is not None:
            self.bias.grad += gb
        return gx


class Activation(Module):
    """A parameter-free layer computed by ``kernels.<_kernel>`` and ``kernels.<_kernel>_backward``.

    The backward kernel receives the forward's input, or its output when ``_from_output`` is set
    (sigmoid, tanh, softmax: cheaper and as PyTorch does). The attributes named in ``_hyper``
    are passed to both kernels as keyword arguments of the same names.
    """

    _kernel: str
    _from_output = False

    def forward(self, x):
        y = getattr(kernels, self._kernel)(x, **self._kwargs())
        self._keep = y if self._from_output else x
        return y

    def backward(self, grad_output):
        backward = getattr(kernels, self._kernel + "_backward")
        return backward(grad_output, self._saved("_keep"), **self._kwargs())


@register
class ReLU(Activation):
    """``max(x, 0)`` (Nair & Hinton 2010); any shape."""

    _kernel = "relu"


@register
class LeakyReLU(Activation):
    """``x if x > 0 else negative_slope * x`` (Maas et al. 2013); any shape."""

    _kernel, _hyper = "leaky_relu", ("negative_slope",)

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = ck.real(negative_slope, "negative_slope")


@register
class ELU(Activation):
    """``x if x > 0 else alpha * (exp(x) - 1)`` (Clevert et al. 2016); any shape."""

    _kernel, _hyper = "elu", ("alpha",)

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = ck.real(alpha, "alpha")


@register
class SELU(Activation):
    """Scaled ELU with the self-normalising constants of Klambauer et al. 2017; any shape."""

    _kernel = "selu"


@register
class GELU(Activation):
    """``x * Phi(x)`` (Hendrycks & Gimpel 2016); ``approximate="tanh"`` uses the tanh form."""

    _kernel, _hyper = "gelu", ("approximate",)

    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = ck.choice(approximate, "approximate", ("none", "tanh"))


@register
class Sigmoid(Activation):
    """``1 / (1 + exp(-x))``; any shape."""

    _kernel, _from_output = "sigmoid", True


@register
class Tanh(Activation):
    """Hyperbolic tangent; any shape."""

    _kernel, _from_output = "tanh", True


@register
class Softmax(Activation):
    """``exp(x) / sum(exp(x))`` along ``dim`` (negative counts from the end); any shape."""

    _kernel, _hyper, _from_output = "softmax", ("dim",), True

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = _dim(dim, "dim")


@register
class LogSoftmax(Softmax):
    """``x - log(sum(exp(x)))`` along ``dim``; pair with NLL-style losses or use CrossEntropyLoss."""

    _kernel = "log_softmax"


@register
class Dropout(Module):
    """Inverted dropout (Srivastava et al. 2014): in training, zero each element with
    probability ``p`` and scale the rest by ``1 / (1 - p)``; the identity in eval mode.

    A base seed is drawn from ``pynn.random`` at construction; the k-th training forward uses
    the k-th output of splitmix64 (Steele, Lea & Flood 2014) seeded with it as the kernel seed,
    so masks differ between calls yet a seeded run repeats exactly on every backend. Raises
    ValueError for p outside [0, 1].
    """

    _hyper = ("p",)

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = ck.real(p, "p", low=0.0, high=1.0)
        self.seed = draw_seed()
        self.calls = 0

    def _next_seed(self) -> int:
        # Counter-based, so cheap: a SeedSequence spawn per call cost about 25 us.
        self.calls += 1
        return mix_seed((self.seed + self.calls * _GOLDEN) & _M64)

    def forward(self, x):
        seed = self._next_seed() if self.training else self.seed
        y, self._mask = kernels.dropout(x, self.p, training=self.training, seed=seed)
        self._ran = True
        return y

    def backward(self, grad_output):
        self._saved("_ran")
        return kernels.dropout_backward(grad_output, self._mask, self.p)


@register
class Flatten(Module):
    """Merge dims ``start_dim..end_dim`` into one: (N, C, H, W) -> (N, C*H*W) by default.

    A reshape of any numpy array, of any dtype or size (a view of C-contiguous input, a copy of
    other layouts); backward restores the input's shape. Raises TypeError for a non-array and
    ValueError when x lacks the dims to merge or grad_output does not have the output's shape.
    """

    _hyper = ("start_dim", "end_dim")

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = _dim(start_dim, "start_dim")
        self.end_dim = _dim(end_dim, "end_dim")

    def forward(self, x):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
        n = x.ndim
        start, end = (d + n if d < 0 else d for d in (self.start_dim, self.end_dim))
        if not 0 <= start <= end < n:
            raise ValueError(f"cannot flatten dims {self.start_dim}..{self.end_dim} of x, of shape {x.shape}")
        self._shape = x.shape
        self._out = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
        return x.reshape(self._out)

    def backward(self, grad_output):
        shape = self._saved("_shape")
        if not isinstance(grad_output, np.ndarray):
            raise TypeError(f"grad_output must be a numpy.ndarray, got {type(grad_output).__name__}")
        if grad_output.shape != self._out:
            raise ValueError(f"grad_output must have the output's shape {self._out}, got {grad_output.shape}")
        return grad_output.reshape(shape)


class DenseStack:
    """A Sequential's children of the form [Flatten] Linear [ReLU] [Dropout] ... Linear, run as
    one ``kernels.mlp`` forward and one ``kernels.mlp_backward``: the fused MLP step.

    Built by ``dense_stack`` (or None when the children do not have that form); ``Sequential``
    uses it in both modes. The results equal the layers' own forward and backward bit for bit
    (Dropout draws its seeds as its forward does, the gradients accumulate into
    ``Parameter.grad``), but the children's own saved state is not set: backpropagate through
    the Sequential, not through one child.
    """

    def __init__(self, flatten, linears, relus, dropouts, training):
        self.flatten, self.linears, self.dropouts = flatten, linears, dropouts
        self.activation = "relu" if relus else "none"
        self.training = training
        self._saved = None

    def forward(self, x):
        # Flatten(1, -1) of an array is this reshape; anything else gets Flatten's own errors.
        flat = self.flatten and isinstance(x, np.ndarray) and x.ndim >= 2 and x.size > 0
        xs = x.reshape(len(x), -1) if flat else self.flatten(x) if self.flatten else x
        weights = [m.weight.data for m in self.linears]
        biases = [None if m.bias is None else m.bias.data for m in self.linears]
        dropout = [(d.p, d._next_seed()) if d is not None and self.training else None for d in self.dropouts]
        y, hidden = kernels.mlp(xs, weights, biases, activation=self.activation, dropout=dropout, return_hidden=True)
        self._saved = (x.shape, xs, weights, hidden, dropout)
        return y

    def backward(self, grad_output, input_grad: bool = True):
        if self._saved is None:
            raise RuntimeError("Sequential.backward called before forward")
        shape, xs, weights, hidden, dropout = self._saved
        gx, _, gbs = kernels.mlp_backward(grad_output, xs, weights, hidden, activation=self.activation,
                                          dropout=dropout, input_grad=input_grad,
                                          grad_weights=[m.weight.grad for m in self.linears])
        for m, gb in zip(self.linears, gbs):
            if m.bias is not None:
                m.bias.grad += gb
        if not input_grad:
            return None
        return gx.reshape(shape)


def dense_stack(seq) -> DenseStack | None:
    """The ``DenseStack`` of a Sequential's children, or None when they are not, all in one
    mode and of exactly these classes, an optional ``Flatten()`` (dims 1 to -1) followed by
    Linear layers, each but the last followed by a ReLU (all or none of them) and then an
    optional Dropout; in eval mode, where Dropout is the identity, Dropouts may stand anywhere.
    """
    mods = list(seq)
    if not mods or len({m.training for m in mods}) != 1:
        return None
    training = mods[0].training
    if not training:
        mods = [m for m in mods if type(m) is not Dropout]  # the identity in eval mode
    flatten = None
    if mods and type(mods[0]) is Flatten and (mods[0].start_dim, mods[0].end_dim) == (1, -1):
        flatten, mods = mods[0], mods[1:]
    groups = []  # [Linear, ReLU or None, Dropout or None]
    for m in mods:
        kind = type(m)
        if kind is Linear:
            groups.append([m, None, None])
        elif groups and kind is ReLU and groups[-1][1] is None and groups[-1][2] is None:
            groups[-1][1] = m
        elif groups and kind is Dropout and groups[-1][2] is None:
            groups[-1][2] = m
        else:
            return None
    if not groups or groups[-1][1] is not None or (training and groups[-1][2] is not None):
        return None
    relus = {g[1] is not None for g in groups[:-1]}
    if len(relus) > 1:
        return None
    return DenseStack(flatten, [g[0] for g in groups], relus == {True}, [g[2] for g in groups[:-1]], training)
