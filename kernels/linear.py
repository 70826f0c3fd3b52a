"""Dense products: ``matmul`` with transposes, ``linear`` (x @ W.T + b) and its backward.

The three GEMMs of a dense layer (Goodfellow, Bengio & Courville, *Deep Learning*, 2016, 6.5):
forward ``y = x W^T + b``; input gradient ``dx = dy W``; weight gradient ``dW = dy^T x``;
bias gradient ``db = sum_n dy[n]``.

NaN and infinities in the inputs propagate through the sums as IEEE arithmetic gives them, as
in PyTorch; nothing checks for them.
"""
from __future__ import annotations

from kernels import _checks as ck
from functools import partial

from kernels._dispatch import implementation, resolve

_impl = partial(implementation, "linear")


def matmul(a, b, *, trans_a: bool = False, trans_b: bool = False, backend: str | None = None):
    """Matrix product ``op(a) @ op(b)``, where ``op`` transposes when the flag is set.

    a: (M, K), or (K, M) with ``trans_a``; b: (K, N), or (N, K) with ``trans_b``; float32
    (float64 also on ``numpy``), C-contiguous. Returns a new (M, N) array of the same dtype
    (a device array when the inputs are on the device).

    Raises TypeError (dtype, array type) and ValueError (rank, inner sizes that disagree, empty,
    non-contiguous).
    """
    be = resolve(backend, a, b)
    a = ck.float_array(a, "a", be, ndim=2)
    b = ck.float_array(b, "b", be, ndim=2, dtype=a.dtype, like="a")
    ka = a.shape[0] if trans_a else a.shape[1]
    kb = b.shape[1] if trans_b else b.shape[0]
    if ka != kb:
        raise ValueError(
            f"inner sizes of a {tuple(a.shape)} (trans_a={trans_a}) and b {tuple(b.shape)} "
            f"(trans_b={trans_b}) disagree: {ka} != {kb}"
        )
    return _impl("matmul", be)(a, b, bool(trans_a), bool(trans_b))


def _flatten_rows(x, features, name, weight_shape):
    """View (*, features) as (rows, features); x is C-contiguous so this is free."""
    if x.shape[-1] != features:
        raise ValueError(
            f"{name} must have shape (*, {features}) to match weight {tuple(weight_shape)}, got {tuple(x.shape)}"
        )
    return x.reshape(x.size // features, features)


def linear(x, weight, bias=None, *, backend: str | None = None):
    """Affine map ``y = x @ weight.T + bias`` (``torch.nn.functional.linear``).

    x: (*, in_features); weight: (out_features, in_features); bias: (out_features,) or None.
    float32 (float64 also on ``numpy``), C-contiguous. Returns (*, out_features).

    Raises TypeError and ValueError as ``matmul`` does, naming the argument.
    """
    be = resolve(backend, x, weight, bias)
    weight = ck.float_array(weight, "weight", be, ndim=2)
    x = ck.float_array(x, "x", be, min_ndim=1, dtype=weight.dtype, like="weight")
    out_f, in_f = weight.shape
    if bias is not None:
        bias = ck.float_array(bias, "bias", be, shape=(out_f,), dtype=weight.dtype, like="weight")
    x2 = _flatten_rows(x, in_f, "x", weight.shape)
    y = _impl("linear", be)(x2, weight, bias)
    return y.reshape(tuple(x.shape[:-1]) + (out_f,))


def linear_backward(grad_output, x, weight, *, bias: bool = True, input_grad: bool = True,
                    backend: str | None = None):
    """Gradients of ``linear``: returns ``(grad_x, grad_weight, grad_bias)``.

    grad_output: (*, out_features); x: (*, in_features) as passed to ``linear``; weight:
    (out_features, in_features). ``grad_bias`` is (out_features,), or None when ``bias`` is
    False; grad_x is None, and not computed, when ``input_grad`` is False (the input is data).
    grad_x = dy W, grad_weight = dy^T x, grad_bias = sum over rows of dy.

    Raises TypeError and ValueError naming the argument, as ``linear`` does.
    """
    be = resolve(backend, grad_output, x, weight)
    weight = ck.float_array(weight, "weight", be, ndim=2)
    out_f, in_f = weight.shape
    x = ck.float_array(x, "x", be, min_ndim=1, dtype=weight.dtype, like="weight")
    g = ck.float_array(grad_output, "grad_output", be, min_ndim=1, dtype=weight.dtype, like="weight")
    if tuple(g.shape[:-1]) != tuple(x.shape[:-1]):
        raise ValueError(
            f"grad_output {tuple(g.shape)} and x {tuple(x.shape)} must agree in all but the last dimension"
        )
    x2 = _flatten_rows(x, in_f, "x", weight.shape)
    g2 = _flatten_rows(g, out_f, "grad_output", weight.shape)
    mm = _impl("matmul", be)
    grad_x = mm(g2, weight, False, False).reshape(x.shape) if input_grad else None
    grad_w = mm(g2, x2, True, False)
    grad_b = _impl("sum_rows", be)(g2) if bias else None
    return grad_x, grad_w, grad_b
