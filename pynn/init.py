"""Weight initialisers, in place on an ndarray (or a Parameter's ``data``), as ``torch.nn.init``.

Every draw comes from ``pynn.random.default_generator()``, so ``pynn.manual_seed`` makes them
reproducible. Fans follow PyTorch: for a weight of shape (out, in, *kernel),
``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``.

Sources: Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural
networks", AISTATS 2010 (xavier_*: Var(w) = 2 / (fan_in + fan_out)); He et al., "Delving Deep
into Rectifiers", ICCV 2015 (kaiming_*: Var(w) = gain^2 / fan); LeCun, Bottou, Orr & Mueller,
"Efficient BackProp", 1998, section 4.6 (lecun_*: Var(w) = 1 / fan_in). A uniform U(-b, b) has
variance b^2 / 3, hence the bounds ``b = sqrt(3) * std``.
"""
from __future__ import annotations

import math

import numpy as np

from pynn.module import Parameter
from pynn.random import default_generator

_GAINS = {"linear": 1.0, "identity": 1.0, "sigmoid": 1.0, "conv1d": 1.0, "conv2d": 1.0, "conv3d": 1.0,
          "tanh": 5.0 / 3.0, "relu": math.sqrt(2.0), "selu": 3.0 / 4.0}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (``torch.nn.init.calculate_gain``'s table).

    leaky_relu uses ``sqrt(2 / (1 + slope^2))`` with ``param`` the slope (default 0.01).
    Raises ValueError for an unknown nonlinearity or a non-numeric slope.
    """
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"negative slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity not in _GAINS:
        raise ValueError(f"unsupported nonlinearity {nonlinearity!r}; expected leaky_relu or one of {sorted(_GAINS)}")
    return _GAINS[nonlinearity]


def _array(tensor) -> np.ndarray:
    a = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
        raise TypeError(f"expected a floating-point ndarray or Parameter, got {type(tensor).__name__}")
    return a


def _calculate_fan_in_and_fan_out(tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape (out, in, *kernel); ValueError below 2-D."""
    a = _array(tensor)
    if a.ndim < 2:
        raise ValueError(f"fan in and fan out need an array of at least 2 dimensions, got shape {a.shape}")
    receptive = math.prod(a.shape[2:])
    return a.shape[1] * receptive, a.shape[0] * receptive


def _fan(tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a: float = 0.0, b: float = 1.0):
    """Fill with U(a, b) in place; returns the array."""
    arr = _array(tensor)
    arr[...] = default_generator().uniform(a, b, arr.shape)
    return arr


def normal_(tensor, mean: float = 0.0, std: float = 1.0):
    """Fill with N(mean, std^2) in place; returns the array."""
    arr = _array(tensor)
    arr[...] = default_generator().normal(mean, std, arr.shape)
    return arr


def zeros_(tensor):
    arr = _array(tensor)
    arr.fill(0)
    return arr


def ones_(tensor):
    arr = _array(tensor)
    arr.fill(1)
    return arr


def _uniform_std(tensor, std: float):
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def xavier_uniform_(tensor, gain: float = 1.0):
    """U(-b, b) with ``b = gain * sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio 2010)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return _uniform_std(tensor, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def xavier_normal_(tensor, gain: float = 1.0):
    """N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))`` (Glorot & Bengio 2010)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _kaiming_std(tensor, a, mode, nonlinearity) -> float:
    return calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """U(-b, b) with ``b = gain * sqrt(3 / fan)`` (He et al. 2015); ``a`` is the leaky_relu slope.

    ``nn.Linear``'s default weight init is ``kaiming_uniform_(w, a=sqrt(5))``, i.e. b = 1/sqrt(fan_in).
    """
    return _uniform_std(tensor, _kaiming_std(tensor, a, mode, nonlinearity))


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """N(0, std^2) with ``std = gain / sqrt(fan)`` (He et al. 2015)."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity))


def lecun_uniform_(tensor):
    """U(-b, b) with ``b = sqrt(3 / fan_in)`` (LeCun et al. 1998, "Efficient BackProp")."""
    return _uniform_std(tensor, 1.0 / math.sqrt(_fan(tensor, "fan_in")))


def lecun_normal_(tensor):
    """N(0, 1 / fan_in), untruncated (LeCun et al. 1998, "Efficient BackProp"); the SELU init
    of Klambauer et al. 2017."""
    return normal_(tensor, 0.0, 1.0 / math.sqrt(_fan(tensor, "fan_in")))
