"""Dense products: ``matmul`` with transposes, ``linear`` (x @ W.T + b) and its backward, and a
whole stack of dense layers with ReLU and dropout in one call (``mlp``, ``mlp_backward``).

The three GEMMs of a dense layer (Goodfellow, Bengio & Courville, *Deep Learning*, 2016, 6.5):
forward ``y = x W^T + b``; input gradient ``dx = dy W``; weight gradient ``dW = dy^T x``;
bias gradient ``db = sum_n dy[n]``.

NaN and infinities in the inputs propagate through the sums as IEEE arithmetic gives them, as
in PyTorch; nothing checks for them.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from kernels import _checks as ck
from kernels._dispatch import implementation, resolve
from kernels.dropout import hash_params

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


MLP_ACTIVATIONS = ("relu", "none")


def _stack(be, x, weights, biases, activation, dropout):
    """Check the arguments ``mlp`` and ``mlp_backward`` share; returns x as (rows, in_0), the
    weights and biases as tuples, and per hidden layer the dropout kernel arguments or None."""
    if not isinstance(weights, (list, tuple)):
        raise TypeError(f"weights must be a list or tuple of arrays, got {type(weights).__name__}")
    if not weights:
        raise ValueError("weights is empty; an MLP needs at least one layer")
    if biases is None:
        biases = [None] * len(weights)
    if not isinstance(biases, (list, tuple)):
        raise TypeError(f"biases must be None or a list or tuple, got {type(biases).__name__}")
    if len(biases) != len(weights):
        raise ValueError(f"biases has {len(biases)} entries for {len(weights)} weights")
    ck.choice(activation, "activation", MLP_ACTIVATIONS)
    ws, bs = [], []
    for i, (w, b) in enumerate(zip(weights, biases)):
        w = ck.float_array(w, f"weights[{i}]", be, ndim=2, dtype=ws[0].dtype if ws else None, like="weights[0]")
        if ws and w.shape[1] != ws[-1].shape[0]:
            raise ValueError(f"weights[{i}] {tuple(w.shape)} does not take the {ws[-1].shape[0]} outputs of "
                             f"weights[{i - 1}] {tuple(ws[-1].shape)}")
        if b is not None:
            b = ck.float_array(b, f"biases[{i}]", be, shape=(w.shape[0],), dtype=w.dtype, like=f"weights[{i}]")
        ws.append(w)
        bs.append(b)
    hidden = len(ws) - 1
    if dropout is None:
        dropout = [None] * hidden
    if not isinstance(dropout, (list, tuple)):
        raise TypeError(f"dropout must be None or a list or tuple of (p, seed) pairs, got {type(dropout).__name__}")
    if len(dropout) != hidden:
        raise ValueError(f"dropout has {len(dropout)} entries for {hidden} hidden layers")
    drops = []
    for i, d in enumerate(dropout):
        if d is not None and not (isinstance(d, (list, tuple)) and len(d) == 2):
            raise TypeError(f"dropout[{i}] must be None or a (p, seed) pair, got {d!r:.100}")
        params = None if d is None else hash_params(*d, name=f"dropout[{i}] ")
        drops.append(None if params is None or params[1] == 0 else params)
    x = ck.float_array(x, "x", be, min_ndim=1, dtype=ws[0].dtype, like="weights[0]")
    x2 = _flatten_rows(x, ws[0].shape[1], "x", ws[0].shape)
    return x, x2, tuple(ws), tuple(bs), tuple(drops)


def mlp(x, weights, biases=None, *, activation: str = "relu", dropout=None, return_hidden: bool = False,
        backend: str | None = None):
    """Forward pass of a stack of dense layers in one call: ``h = x``, then for each layer
    ``h = linear(h, W_i, b_i)``, and after every layer but the last ``h = relu(h)`` (with
    ``activation="relu"``) and ``h = dropout(h, p_i, seed=s_i)`` (where ``dropout[i]`` is given).

    The result equals those ops called layer by layer, bit for bit on each backend (the
    reference is exactly that composition), without a Python round trip per layer: the numba
    backend runs small batches as one compiled call and finishes each layer's GEMM output (bias,
    activation, dropout mask) in one pass. This is the fused MLP of NVIDIA Apex (``apex.mlp``)
    on the CPU.

    x: (*, in_features); weights: a list or tuple of L >= 1 arrays, weights[i] of shape
    (out_i, in_i) with in_0 = in_features and in_{i+1} = out_i; biases: None, or a list of L
    entries, each None or an (out_i,) array. float32 (float64 also on ``numpy``), C-contiguous,
    one dtype. activation: "relu" or "none". dropout: None, or L - 1 entries, each None or a
    ``(p, seed)`` pair as ``kernels.dropout`` takes (training mode). Returns y of shape
    (*, out_{L-1}); with ``return_hidden``, ``(y, hidden)`` where hidden is a tuple of the L - 1
    hidden outputs, shape (rows, out_i), the input of ``mlp_backward``.

    Raises TypeError (not a list, dtype, seed type) and ValueError (empty list, entry counts,
    shapes that do not chain, rank, empty, non-contiguous, unknown activation, p outside [0, 1],
    seed outside [0, 2**64)), naming the argument.
    """
    be = resolve(backend, x, *weights) if isinstance(weights, (list, tuple)) else resolve(backend, x)
    x, x2, ws, bs, drops = _stack(be, x, weights, biases, activation, dropout)
    y, hidden = _impl("mlp", be)(x2, ws, bs, activation == "relu", drops)
    y = y.reshape(tuple(x.shape[:-1]) + (ws[-1].shape[0],))
    return (y, hidden) if return_hidden else y


def _accumulators(grad_weights, weights):
    """Check the arrays ``mlp_backward`` adds the weight gradients into."""
    if not isinstance(grad_weights, (list, tuple)):
        raise TypeError(f"grad_weights must be None or a list or tuple of arrays, got {type(grad_weights).__name__}")
    if len(grad_weights) != len(weights):
        raise ValueError(f"grad_weights has {len(grad_weights)} arrays for {len(weights)} weights")
    out = []
    for i, (a, w) in enumerate(zip(grad_weights, weights)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"grad_weights[{i}] must be a numpy.ndarray (host memory), got {type(a).__name__}")
        a = ck.float_array(a, f"grad_weights[{i}]", "numpy", shape=tuple(w.shape), dtype=w.dtype, like=f"weights[{i}]")
        if not a.flags.writeable:
            raise ValueError(f"grad_weights[{i}] is read-only; the gradients are added into it in place")
        out.append(a)
    return tuple(out)


def mlp_backward(grad_output, x, weights, hidden, *, activation: str = "relu", dropout=None,
                 input_grad: bool = True, grad_weights=None, backend: str | None = None):
    """Gradients of ``mlp``: returns ``(grad_x, grad_weights, grad_biases)``.

    grad_output: (*, out_{L-1}); x, weights, activation and dropout as passed to ``mlp``;
    hidden: the tuple ``mlp(..., return_hidden=True)`` returned. grad_weights and grad_biases are
    tuples of L arrays, (out_i, in_i) and (out_i,) (the latter is the gradient a bias would get,
    whether or not the layer has one); grad_x has x's shape, or is None, and not computed, when
    ``input_grad`` is False. ``grad_weights``, when given, is a list of L writable host arrays,
    (out_i, in_i), float32 (float64 on ``numpy``): the weight gradients are added into them in
    place, as autograd accumulates into ``.grad``, saving a pass over each, and returned.

    Backpropagation layer by layer (Rumelhart, Hinton & Williams 1986): through dropout by the
    same mask, recomputed from its seed; through ReLU where the hidden output is positive (where
    the ReLU's input was, for a kept element); then the three GEMMs of ``linear_backward``.
    Equal, bit for bit on each backend, to those ops called layer by layer.

    Raises TypeError and ValueError as ``mlp`` does; ValueError when hidden does not hold L - 1
    arrays of shape (rows, out_i) or grad_output does not match the output; and for
    ``grad_weights`` TypeError (not host arrays, dtype) or ValueError (count, shape, read-only).
    """
    be = resolve(backend, grad_output, x, *weights) if isinstance(weights, (list, tuple)) else resolve(backend, x)
    x, x2, ws, _, drops = _stack(be, x, weights, None, activation, dropout)
    rows = x2.shape[0]
    if not isinstance(hidden, (list, tuple)):
        raise TypeError(f"hidden must be the tuple mlp(..., return_hidden=True) returned, got {type(hidden).__name__}")
    if len(hidden) != len(ws) - 1:
        raise ValueError(f"hidden has {len(hidden)} arrays for {len(ws) - 1} hidden layers")
    hidden = tuple(ck.float_array(h, f"hidden[{i}]", be, shape=(rows, w.shape[0]), dtype=x.dtype, like="x and weights")
                   for i, (h, w) in enumerate(zip(hidden, ws)))
    out_shape = tuple(x.shape[:-1]) + (ws[-1].shape[0],)
    g = ck.float_array(grad_output, "grad_output", be, shape=out_shape, dtype=x.dtype, like="the output of mlp")
    if grad_weights is not None:
        grad_weights = _accumulators(grad_weights, ws)
    gx, gws, gbs = _impl("mlp_backward", be)(g.reshape(rows, -1), x2, ws, hidden, activation == "relu", drops,
                                              bool(input_grad), grad_weights)
    return (None if gx is None else gx.reshape(x.shape)), gws, gbs


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
