"""Inverted dropout (Srivastava et al., JMLR 15, 2014; scaling at training time as PyTorch does).

Each element is kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``, so evaluation needs
no rescaling. The keep decision for element ``i`` is a pure function of ``(seed, i)``: the
splitmix64 generator (Steele, Lea & Flood, OOPSLA 2014) applied to ``mix(seed) + (i + 1) * golden``,
whose top 24 bits are compared with ``round(p * 2**24)``. A counter-based generator needs no
state, runs in parallel in any order, and gives bit-identical masks on every backend.

Dropped elements are multiplied by 0, as PyTorch does, so a dropped NaN or infinity gives NaN.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from kernels import _checks as ck
from kernels._dispatch import implementation, resolve

_impl = partial(implementation, "dropout")
_M64 = (1 << 64) - 1


def mix_seed(seed: int) -> int:
    """splitmix64's finaliser on a Python int (exact 64-bit arithmetic, no overflow warnings)."""
    z = seed & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _rate(p, name: str = "p") -> tuple[int, float]:
    p = ck.real(p, name, low=0.0, high=1.0)
    return round(p * (1 << 24)), (0.0 if p == 1.0 else 1.0 / (1.0 - p))


def hash_params(p, seed, name: str = "") -> tuple[int, int, float]:
    """Check ``p`` and ``seed`` (named ``name + "p"`` and ``name + "seed"`` in errors) and return
    the backend kernels' arguments ``(state, threshold, scale)``: the mixed seed, the 24-bit
    drop threshold and the scale of kept elements."""
    threshold, scale = _rate(p, name + "p")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name}seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) <= _M64:
        raise ValueError(f"{name}seed must lie in [0, 2**64), got {seed}")
    return mix_seed(int(seed)), threshold, scale


def dropout(x, p: float = 0.5, training: bool = True, *, seed: int, backend: str | None = None):
    """Zero each element of ``x`` with probability ``p``; scale the rest by ``1 / (1 - p)``.

    x: any shape, float32 (float64 also on ``numpy``), C-contiguous. ``seed``: int in
    [0, 2**64). Returns ``(y, mask)``: y has x's shape and dtype; mask is uint8 (1 = kept) of the
    same shape, the input of ``dropout_backward``. When ``training`` is False or ``p`` is 0, returns
    ``(x, None)`` unchanged, as ``torch.nn.functional.dropout`` does.

    Raises ValueError for p outside [0, 1] or a seed outside [0, 2**64), TypeError for a
    non-integer seed, and the array errors of ``kernels._checks``.
    """
    state, threshold, scale = hash_params(p, seed)
    be = resolve(backend, x)
    x = ck.float_array(x, "x", be)
    if not training or threshold == 0:
        return x, None
    y, mask = _impl("dropout", be)(x.reshape(-1), state, threshold, scale)
    return y.reshape(x.shape), mask.reshape(x.shape)


def dropout_backward(grad_output, mask, p: float = 0.5, *, backend: str | None = None):
    """Gradient of ``dropout``: ``grad_output * mask / (1 - p)``; ``grad_output`` itself when mask is None.

    grad_output: the shape of dropout's input, float32 (float64 on ``numpy``); mask: the uint8
    mask ``dropout`` returned, 0 or 1 per element. Raises TypeError and ValueError naming the
    argument (a mask value other than 0 or 1 included).
    """
    _, scale = _rate(p)
    be = resolve(backend, grad_output, mask)
    g = ck.float_array(grad_output, "grad_output", be)
    if mask is None:
        return g
    mask = ck._as_array(mask, "mask")
    if mask.dtype != np.uint8:
        raise TypeError(f"mask must have dtype uint8 (as returned by dropout), got {mask.dtype}")
    ck.shaped(mask, "mask", shape=tuple(g.shape), like="grad_output")
    ck.in_range(mask, "mask", 0, 2)
    return _impl("dropout_backward", be)(g.reshape(-1), mask.reshape(-1), scale).reshape(g.shape)
