"""Malformed calls of every public kernel and layer, on every backend.

One table row per op gives the symbolic shapes of its tensor arguments and its valid
hyper-parameters; hypothesis draws the sizes, builds a valid call and corrupts one argument in
one way. The expected outcome of each kind of corruption:

- type: a list, a float, a string or a masked array where an array belongs: TypeError.
- ndim: a rank the argument does not take: ValueError.
- shape: one size that disagrees with another argument (or with the hyper-parameters): ValueError.
- dtype: float64, float16, integer, bool, object or complex where float32 belongs, or a
  non-integer index: TypeError; float64 on the numpy backend is valid when no other float
  tensor takes part, and must then give float64 results equal to the float32 ones.
- layout: a strided, negative-stride, Fortran-order or zero-stride (broadcast) view: ValueError.
- empty: one size 0: ValueError.
- overflow: a zero-stride view of more than 2**31 elements (no memory behind it): ValueError.
- values: NaN in a float tensor gives NaN exactly where the NumPy reference (float64) does and
  equal values elsewhere; +-inf gives non-finite values exactly where the reference does (inf
  or NaN: inf - inf depends on the order of evaluation); ValueError where the docstring says so.
- range: an index or mask value out of range: ValueError.
- hyper: a bad hyper-parameter or backend name: the TypeError or ValueError of the row.
- constructor (layers and losses): a bad constructor argument: TypeError or ValueError.

Every error must name the corrupted argument and be raised before any backend runs. Layers and
losses get the same corruptions of their forward inputs and of ``grad_output``. The counts of
calls tried are printed at the end of the module (``pytest -s``). The C kernels' signatures are
checked for 64-bit sizes at the end.
"""
from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
import pynn
from kernels import _dispatch
from tests.support import ATOL, BACKENDS, FAST_BACKENDS, RTOL, host

NAN, INF = math.nan, math.inf
TRIED: Counter = Counter()  # malformed calls, by kind
WELL_FORMED: Counter = Counter()  # edge cases that are valid calls, checked against their documented result
VALID = "valid"  # the expectation of a call that is well formed after all


@dataclass(frozen=True)
class Arg:
    """A tensor argument: sizes by symbol (shared symbols must agree) or literal int.

    kind: float, index (int64 values below ``high(sizes)``) or mask (uint8 0/1).
    min_rank: None for a fixed rank, else the least rank accepted. fill: the valid values.
    """

    dims: tuple
    kind: str = "float"
    min_rank: int | None = None
    fill: str = "normal"
    high: Callable | None = None


@dataclass(frozen=True)
class Op:
    """A public kernel: its tensor arguments, valid hyper-parameters (a function of the sizes),
    bad hyper-parameters ``{name: [(value, exception)]}``, symbols computed from others
    (``derive``) or tied to hyper-parameters (``bound``), size ranges, tensors updated in place,
    tensors whose non-finite values raise ValueError, and tensors whose dtype selects their
    meaning (cross-entropy's target: integers are class indices of shape (N,), floats are
    probabilities of shape (N, C)), for which a wrong rank or dtype may read as the other
    meaning's wrong dtype or shape: TypeError or ValueError. ``f64_ok``: see ``_f64_valid``."""

    fn: Callable
    args: dict
    hyper: Callable = lambda s: {}
    bad: dict = field(default_factory=dict)
    derive: Callable = lambda s: {}
    bound: frozenset = frozenset()
    ranges: dict = field(default_factory=dict)
    inplace: tuple = ()
    finite: tuple = ()
    dtype_selects_meaning: tuple = ()
    f64_ok: tuple | None = None


# Bad hyper-parameter values shared by many rows.
REAL = [(NAN, ValueError), (INF, ValueError), ("0.1", TypeError), (None, TypeError), (True, TypeError)]
NONNEG = REAL + [(-1.0, ValueError)]
PAIR1 = [(0, ValueError), (-1, ValueError), ((1, 0), ValueError), (1.5, TypeError), ((1, 1, 1), TypeError),
         ("2", TypeError), (True, TypeError), (None, TypeError)]
PAD = [(-1, ValueError), ((0, -1), ValueError), (1.5, TypeError), ((0,), TypeError), ("0", TypeError)]
POOL_PAD = PAD + [(2, ValueError)]  # more than half of the 2x2 window
STEP = [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("1", TypeError)]
REDUCTION = [("avg", ValueError), (None, ValueError), ("MEAN", ValueError)]
DIM = [(1.5, TypeError), ("0", TypeError), (2, ValueError), (-3, ValueError), (True, TypeError)]
PROB = REAL + [(-0.1, ValueError), (1.5, ValueError)]
SEED = [(-1, ValueError), (2**64, ValueError), (1.5, TypeError), (True, TypeError), ("1", TypeError), (None, TypeError)]
APPROX = [("fast", ValueError), (None, ValueError), (True, ValueError)]
BETAS = [((0.9,), ValueError), ((1.0, 0.999), ValueError), ((0.9, NAN), ValueError), (0.9, TypeError),
         (("a", 0.9), TypeError)]
GROUPS = [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("1", TypeError)]
SHAPE4 = [((2, 2, 3), TypeError), ("abcd", TypeError), ((2.0, 2, 4, 4), TypeError), (None, TypeError),
          ((2, 2, 0, 4), ValueError)]
GRAD_SCALAR = [(NAN, ValueError), (INF, ValueError), ("1", TypeError), (None, TypeError),
               (np.ones(2, np.float32), ValueError), (np.ones((), np.int64), TypeError)]

XY = ("A", "B")
CHW = ("N", "C", "H", "W")
POOLED = ("N", "C", "HO", "WO")
IMAGE = {"H": (4, 5), "W": (4, 5)}


def _halved(s):
    return {"HO": (s["H"] - 2) // 2 + 1, "WO": (s["W"] - 2) // 2 + 1}


def _float(*dims, **kw):
    return Arg(dims, **kw)


def _any(*dims, fill="normal"):
    """A tensor of any rank (dropout, pointwise losses, optimizers)."""
    return Arg(dims, min_rank=0, fill=fill)


def _act(*dims, fill="normal"):
    """A tensor of rank at least 1 (activations)."""
    return Arg(dims, min_rank=1, fill=fill)


def _unary(fn, bad=None, **hyper):
    return Op(fn, {"x": _act(*XY)}, lambda s: dict(hyper), bad or {})


def _unary_backward(fn, saved="x", fill="normal", bad=None, **hyper):
    return Op(fn, {"grad_output": _act(*XY), saved: _act(*XY, fill=fill)}, lambda s: dict(hyper), bad or {})


def _pointwise(fn, fill="normal", **kw):
    finite = ("input",) if fill == "prob" else ()
    return Op(fn, {"input": _any(*XY, fill=fill), "target": _any(*XY, fill="prob")}, lambda s: {"reduction": "mean"},
              {"reduction": REDUCTION}, finite=finite, **kw)


def _pointwise_backward(fn, fill="normal"):
    finite = ("input",) if fill == "prob" else ()
    args = {"grad_output": _any(*XY), "input": _any(*XY, fill=fill), "target": _any(*XY, fill="prob")}
    return Op(fn, args, lambda s: {"reduction": "none"}, {"reduction": REDUCTION}, finite=finite)


def _classes():
    return Arg(("N",), kind="index", high=lambda s: s["C"])


def _ce(fn, target, backward=False):
    """Cross-entropy reads a target of shape (N,) as class indices, whatever its dtype."""
    args = {"input": _float("N", "C"), "target": target}
    if backward:
        args = {"grad_output": _float("N"), **args}
    return Op(fn, args, lambda s: {"reduction": "none" if backward else "mean"}, {"reduction": REDUCTION},
              dtype_selects_meaning=("target",))


def _optim(fn, states, bad, **hyper):
    """An optimizer step: param, grad and the named states (fill per state), all of one shape."""
    args = {"param": _any(*XY), "grad": _any(*XY), **{k: _any(*XY, fill=f) for k, f in states.items()}}
    return Op(fn, args, lambda s: dict(hyper), bad, inplace=("param", *states))


def _mlp(x, *, backend, activation="relu", dropout=None, **layers):
    """``kernels.mlp`` over two layers whose arrays arrive as ``weights[i]``/``biases[i]``, the
    names its messages use."""
    return K.mlp(x, [layers["weights[0]"], layers["weights[1]"]], [layers["biases[0]"], layers["biases[1]"]],
                 activation=activation, dropout=dropout, backend=backend)


def _mlp_backward(grad_output, x, *, backend, activation="relu", dropout=None, **layers):
    """``kernels.mlp_backward`` of a two-layer stack, arrays named as its messages name them;
    returns its arrays as one flat tuple."""
    gx, gws, gbs = K.mlp_backward(grad_output, x, [layers["weights[0]"], layers["weights[1]"]], [layers["hidden[0]"]],
                                  activation=activation, dropout=dropout, backend=backend)
    return (gx, *gws, *gbs)


DROPOUT_SPEC = [([(1.5, 7)], ValueError), ([(0.5, -1)], ValueError), ([(0.5, 1.5)], TypeError), ([0.5], TypeError),
                ([], ValueError), ("0.5", TypeError)]

K = kernels
OPS = {
    "matmul": Op(K.matmul, {"a": _float("M", "K"), "b": _float("K", "N")}),
    "linear": Op(K.linear, {"x": _act("N", "I"), "weight": _float("O", "I"), "bias": _float("O")}),
    "linear_backward": Op(K.linear_backward,
                          {"grad_output": _act("N", "O"), "x": _act("N", "I"), "weight": _float("O", "I")}),
    "mlp": Op(_mlp, {"x": _act("N", "I"), "weights[0]": _float("H", "I"), "biases[0]": _float("H"),
                     "weights[1]": _float("O", "H"), "biases[1]": _float("O")},
              lambda s: {"activation": "relu", "dropout": [(0.5, 7)]},
              {"activation": [("tanh", ValueError), (None, ValueError)], "dropout": DROPOUT_SPEC}),
    "mlp_backward": Op(_mlp_backward, {"grad_output": _act("N", "O"), "x": _act("N", "I"),
                                       "weights[0]": _float("H", "I"), "weights[1]": _float("O", "H"),
                                       "hidden[0]": _float("N", "H")},
                       lambda s: {"activation": "relu", "dropout": [(0.5, 7)]},
                       {"activation": [("tanh", ValueError)], "dropout": DROPOUT_SPEC}),
    "dropout": Op(K.dropout, {"x": _any(*XY)}, lambda s: {"p": 0.5, "seed": 7},
                  {"p": PROB, "seed": SEED}),
    "dropout_backward": Op(K.dropout_backward, {"grad_output": _any(*XY), "mask": Arg(XY, kind="mask")},
                           lambda s: {"p": 0.5}, {"p": PROB}),
    "relu": _unary(K.relu),
    "relu_backward": _unary_backward(K.relu_backward),
    "leaky_relu": _unary(K.leaky_relu, {"negative_slope": REAL}, negative_slope=0.1),
    "leaky_relu_backward": _unary_backward(K.leaky_relu_backward, bad={"negative_slope": REAL}, negative_slope=0.1),
    "elu": _unary(K.elu, {"alpha": REAL}, alpha=1.5),
    "elu_backward": _unary_backward(K.elu_backward, bad={"alpha": REAL}, alpha=1.5),
    "selu": _unary(K.selu),
    "selu_backward": _unary_backward(K.selu_backward),
    "gelu": _unary(K.gelu, {"approximate": APPROX}, approximate="tanh"),
    "gelu_backward": _unary_backward(K.gelu_backward, bad={"approximate": APPROX}),
    "sigmoid": _unary(K.sigmoid),
    "sigmoid_backward": _unary_backward(K.sigmoid_backward, "output", "prob"),
    "tanh": _unary(K.tanh),
    "tanh_backward": _unary_backward(K.tanh_backward, "output", "prob"),
    "softmax": _unary(K.softmax, {"dim": DIM}, dim=-1),
    "softmax_backward": _unary_backward(K.softmax_backward, "output", "prob", {"dim": DIM}, dim=0),
    "log_softmax": _unary(K.log_softmax, {"dim": DIM}, dim=0),
    "log_softmax_backward": _unary_backward(K.log_softmax_backward, "output", bad={"dim": DIM}, dim=-1),
    "cross_entropy[index]": _ce(K.cross_entropy, _classes()),
    "cross_entropy[prob]": _ce(K.cross_entropy, _float("N", "C", fill="prob")),
    "cross_entropy_backward[index]": _ce(K.cross_entropy_backward, _classes(), backward=True),
    "cross_entropy_backward[prob]": _ce(K.cross_entropy_backward, _float("N", "C", fill="prob"), backward=True),
    "cross_entropy_backward[mean]": Op(K.cross_entropy_backward, {"input": _float("N", "C"), "target": _classes()},
                                       lambda s: {"grad_output": 1.0}, {"grad_output": GRAD_SCALAR}),
    "mse_loss": _pointwise(K.mse_loss),
    "mse_loss_backward": _pointwise_backward(K.mse_loss_backward),
    "mse_loss_backward[mean]": Op(K.mse_loss_backward, {"input": _any(*XY), "target": _any(*XY)},
                                  lambda s: {"grad_output": 2.0}, {"grad_output": GRAD_SCALAR}),
    "l1_loss": _pointwise(K.l1_loss),
    "l1_loss_backward": _pointwise_backward(K.l1_loss_backward),
    "binary_cross_entropy": _pointwise(K.binary_cross_entropy, "prob"),
    "binary_cross_entropy_backward": _pointwise_backward(K.binary_cross_entropy_backward, "prob"),
    "binary_cross_entropy_with_logits": _pointwise(K.binary_cross_entropy_with_logits),
    "binary_cross_entropy_with_logits_backward": _pointwise_backward(K.binary_cross_entropy_with_logits_backward),
    "sgd_step": _optim(K.sgd_step, {"momentum_buffer": "normal"},
                       {"lr": NONNEG, "step": STEP, "momentum": [(-0.5, ValueError), (0.0, ValueError)],
                        "dampening": [(0.5, ValueError)] + REAL, "weight_decay": NONNEG},
                       lr=0.1, step=2, momentum=0.9, nesterov=True),
    "adam_step": _optim(K.adam_step, {"exp_avg": "normal", "exp_avg_sq": "positive"},
                        {"lr": NONNEG, "step": STEP, "betas": BETAS, "eps": NONNEG, "weight_decay": NONNEG},
                        step=3, weight_decay=0.01),
    "adamw_step": _optim(K.adamw_step, {"exp_avg": "normal", "exp_avg_sq": "positive"},
                         {"lr": NONNEG, "step": STEP, "betas": BETAS, "eps": NONNEG}, step=3),
    "rmsprop_step": _optim(K.rmsprop_step, {"square_avg": "positive", "momentum_buffer": "normal", "grad_avg": "small"},
                           {"lr": NONNEG, "alpha": NONNEG, "eps": NONNEG, "momentum": [(0.0, ValueError)] + NONNEG},
                           momentum=0.9, centered=True),
    "adagrad_step": _optim(K.adagrad_step, {"state_sum": "positive"},
                           {"lr": NONNEG, "step": STEP, "lr_decay": NONNEG, "eps": NONNEG}, step=2),
    "batch_norm": Op(K.batch_norm,
                     {"x": Arg(("N", "C", "L"), min_rank=2), "running_mean": _float("C"),
                      "running_var": _float("C", fill="positive"), "weight": _float("C"), "bias": _float("C")},
                     lambda s: {"training": True, "momentum": 0.1, "eps": 1e-5},
                     {"momentum": PROB, "eps": NONNEG}, inplace=("running_mean", "running_var")),
    "batch_norm_backward": Op(K.batch_norm_backward,
                              {"grad_output": Arg(("N", "C", "L"), min_rank=2), "x": Arg(("N", "C", "L"), min_rank=2),
                               "weight": _float("C"), "save_mean": _float("C"),
                               "save_invstd": _float("C", fill="positive")},
                              lambda s: {"training": True}),
    "conv2d": Op(K.conv2d, {"x": _float(*CHW), "weight": _float("O", "C", "KH", "KW"), "bias": _float("O")},
                 bad={"stride": PAIR1, "padding": PAD, "dilation": PAIR1 + [(5, ValueError)], "groups": GROUPS},
                 ranges={**IMAGE, "KH": (2, 3), "KW": (2, 3)}),
    "conv2d_backward": Op(K.conv2d_backward,
                          {"grad_output": _float("N", "O", "HO", "WO"), "x": _float(*CHW),
                           "weight": _float("O", "C", "KH", "KW")},
                          bad={"stride": PAIR1, "padding": PAD, "dilation": PAIR1, "groups": GROUPS},
                          derive=lambda s: {"HO": s["H"] - s["KH"] + 1, "WO": s["W"] - s["KW"] + 1},
                          ranges={**IMAGE, "KH": (2, 3), "KW": (2, 3)}),
    "max_pool2d": Op(K.max_pool2d, {"x": _float(*CHW)}, lambda s: {"kernel_size": 2, "return_indices": True},
                     {"kernel_size": PAIR1 + [(6, ValueError)], "stride": PAIR1[:-1], "padding": POOL_PAD},
                     ranges=IMAGE),
    "max_pool2d_backward": Op(K.max_pool2d_backward,
                              {"grad_output": _float(*POOLED),
                               "indices": Arg(POOLED, kind="index", high=lambda s: s["H"] * s["W"])},
                              lambda s: {"input_shape": (s["N"], s["C"], s["H"], s["W"])}, {"input_shape": SHAPE4},
                              derive=_halved, bound=frozenset("NC"), ranges=IMAGE),
    "avg_pool2d": Op(K.avg_pool2d, {"x": _float(*CHW)}, lambda s: {"kernel_size": 2},
                     {"kernel_size": PAIR1 + [(6, ValueError)], "stride": PAIR1[:-1], "padding": POOL_PAD},
                     ranges=IMAGE),
    "avg_pool2d_backward": Op(K.avg_pool2d_backward, {"grad_output": _float(*POOLED)},
                              lambda s: {"input_shape": (s["N"], s["C"], s["H"], s["W"]), "kernel_size": 2},
                              {"input_shape": SHAPE4, "kernel_size": PAIR1, "padding": POOL_PAD},
                              derive=_halved, bound=frozenset("NC"), ranges=IMAGE),
    "adaptive_avg_pool2d": Op(K.adaptive_avg_pool2d, {"x": _float(*CHW)}, lambda s: {"output_size": 1},
                              {"output_size": [(2, ValueError), (0, ValueError), ((1, 2), ValueError),
                                               (1.5, TypeError)]}),
    "adaptive_avg_pool2d_backward": Op(K.adaptive_avg_pool2d_backward, {"grad_output": _float("N", "C", 1, 1)},
                                       lambda s: {"input_shape": (s["N"], s["C"], s["H"], s["W"])},
                                       {"input_shape": SHAPE4}, bound=frozenset("NC"), ranges=IMAGE),
}


# --- sizes, valid calls ------------------------------------------------------------------------

def _symbols(spec):
    return {d for a in spec.args.values() for d in a.dims if isinstance(d, str)}


def _derived(spec) -> set:
    return set(spec.derive(dict.fromkeys(_symbols(spec) | set(spec.ranges), 4)))


def _bound(spec) -> set:
    """Symbols that a single tensor cannot change alone: shared, derived or tied to a hyper-parameter."""
    seen = Counter(d for a in spec.args.values() for d in set(a.dims) if isinstance(d, str))
    return {d for d, n in seen.items() if n > 1} | _derived(spec) | set(spec.bound)


def _sizes(spec, data) -> dict:
    s = {}
    for sym in sorted((_symbols(spec) | set(spec.ranges)) - _derived(spec)):
        low, high = spec.ranges.get(sym, (2, 4))
        s[sym] = data.draw(st.integers(low, high), label=sym)
    s.update(spec.derive(s))
    return s


def _shape(arg, s):
    return tuple(s[d] if isinstance(d, str) else d for d in arg.dims)


def _tensor(arg, shape, s, rng):
    if arg.kind == "index":
        return rng.integers(0, arg.high(s), shape).astype(np.int64)
    if arg.kind == "mask":
        return rng.integers(0, 2, shape).astype(np.uint8)
    fill = {
        "normal": lambda: rng.standard_normal(shape),
        "prob": lambda: rng.uniform(0.05, 0.95, shape),
        "positive": lambda: rng.uniform(0.5, 1.5, shape),
        "small": lambda: 0.1 * rng.standard_normal(shape),
    }[arg.fill]
    return fill().astype(np.float32)


def _valid_call(spec, s, rng) -> dict:
    return {**{k: _tensor(a, _shape(a, s), s, rng) for k, a in spec.args.items()}, **spec.hyper(s)}


# --- corruptions: (argument, new value, expectation) ---------------------------------------------

FLOAT_DTYPES = [np.float64, np.float16, np.int64, np.int32, np.bool_, object, np.complex64]
INT_DTYPES = {"index": [np.float32, np.float64, np.bool_, np.uint8, np.int16, object],
              "mask": [np.bool_, np.int64, np.float32, object]}


def _pick(data, options, label):
    return data.draw(st.sampled_from(sorted(options, key=repr)), label=label)


def _type(spec, call, s, data, backend):
    name = _pick(data, spec.args, "argument")
    x = call[name]
    how = _pick(data, ["list", "float", "str", "masked"], "replacement")
    new = {"list": lambda: x.tolist(), "float": lambda: 1.0, "str": lambda: "x",
           "masked": lambda: np.ma.masked_array(x, mask=np.zeros(x.shape, bool))}[how]()
    return name, new, TypeError


def _ndim_variants(spec, name):
    arg = spec.args[name]
    bound = _bound(spec)
    all_bound = all(isinstance(d, int) or d in bound for d in arg.dims)
    variants = []
    if arg.min_rank is None or all_bound:
        variants += ["more", "fewer"]
    if arg.min_rank:
        variants.append("below")
    return variants


def _ndim(spec, call, s, data, backend):
    name = _pick(data, [n for n in spec.args if _ndim_variants(spec, n)], "argument")
    how = _pick(data, _ndim_variants(spec, name), "rank")
    x = call[name]
    if how == "more":
        new = np.ascontiguousarray(np.stack([x, x]))
    elif how == "fewer":
        new = x.reshape((-1,) + x.shape[2:]) if x.ndim >= 2 else np.asarray(x.reshape(-1)[0])
    else:  # one rank below the least accepted
        below = spec.args[name].min_rank - 1
        new = x.reshape(x.shape[: below - 1] + (-1,)) if below else np.asarray(x.reshape(-1)[0])
    return name, new, _either(spec, name, ValueError)


def _bound_axes(spec):
    bound = _bound(spec)
    return [(n, i) for n, a in spec.args.items() for i, d in enumerate(a.dims) if isinstance(d, int) or d in bound]


def _disagree(spec, call, s, data, backend):
    name, axis = _pick(data, _bound_axes(spec), "argument, axis")
    shape = list(call[name].shape)
    shape[axis] += data.draw(st.integers(1, 2), label="extra")
    return name, _tensor(spec.args[name], tuple(shape), s, np.random.default_rng(0)), ValueError


def _either(spec, name, exc):
    return (TypeError, ValueError) if name in spec.dtype_selects_meaning else exc


def _f64_valid(spec, name, backend):
    """float64 is a valid dtype on numpy when no other float tensor takes part (``f64_ok``
    names such arguments where the call has tensors the table does not see: a layer's weights)."""
    if spec.f64_ok is not None:
        return backend == "numpy" and name in spec.f64_ok
    floats = [n for n, a in spec.args.items() if a.kind == "float"]
    return backend == "numpy" and floats == [name]


def _dtype(spec, call, s, data, backend):
    name = _pick(data, spec.args, "argument")
    kind = spec.args[name].kind
    dtype = _pick(data, FLOAT_DTYPES if kind == "float" else INT_DTYPES[kind], "dtype")
    x = call[name]
    new = x.astype(dtype) if dtype is not object else np.array(x.tolist(), dtype=object).reshape(x.shape)
    want = VALID if dtype is np.float64 and _f64_valid(spec, name, backend) else _either(spec, name, TypeError)
    return name, new, want


def _layout(spec, call, s, data, backend):
    axes = [(n, i) for n in spec.args for i, size in enumerate(call[n].shape) if size >= 2]
    name, axis = _pick(data, axes, "argument, axis")
    x = call[name]
    wide = sum(size >= 2 for size in x.shape) >= 2  # Fortran order differs from C order
    how = _pick(data, ["strided", "reversed", "broadcast"] + ["fortran"] * wide, "layout")
    if how == "strided":
        new = np.repeat(x, 2, axis=axis)[(slice(None),) * axis + (slice(None, None, 2),)]
    elif how == "reversed":
        new = np.flip(x, axis)
    elif how == "broadcast":
        new = np.broadcast_to(np.take(x, [0], axis=axis), x.shape)
    else:
        new = np.asfortranarray(x)
    assert not new.flags.c_contiguous
    return name, new, ValueError


def _empty(spec, call, s, data, backend):
    name, axis = _pick(data, [(n, i) for n in spec.args for i in range(call[n].ndim)], "argument, axis")
    shape = list(call[name].shape)
    shape[axis] = 0
    return name, np.zeros(shape, call[name].dtype), ValueError


def _overflow(spec, call, s, data, backend):
    name, axis = _pick(data, [(n, i) for n in spec.args for i in range(call[n].ndim)], "argument, axis")
    x = call[name]
    shape = list(x.shape)
    shape[axis] = 2**31 // max(1, x.size // x.shape[axis]) + 1
    new = np.broadcast_to(np.take(x, [0], axis=axis), shape)
    assert math.prod(new.shape) > 2**31
    return name, new, ValueError


BAD_BACKEND = [("gpu", ValueError), (3, ValueError)]


def _hyper(spec, call, s, data, backend):
    name = _pick(data, list(spec.bad) + ["backend"], "hyper-parameter")
    value, exc = _pick(data, spec.bad.get(name, BAD_BACKEND), "value")
    return name, value, exc


def _out_of_range(spec, call, s, data, backend):
    name = _pick(data, [n for n, a in spec.args.items() if a.kind != "float"], "argument")
    arg, x = spec.args[name], call[name].copy()
    bad = [-1, arg.high(s)] if arg.kind == "index" else [2, 255]
    x.reshape(-1)[data.draw(st.integers(0, x.size - 1), label="position")] = _pick(data, bad, "value")
    return name, x, ValueError


CORRUPT = {"type": _type, "ndim": _ndim, "shape": _disagree, "dtype": _dtype, "layout": _layout,
           "empty": _empty, "overflow": _overflow, "hyper": _hyper}


def _applicable(spec, kind) -> bool:
    if kind == "ndim":
        return any(_ndim_variants(spec, n) for n in spec.args)
    if kind == "shape":
        return bool(_bound_axes(spec))
    if kind == "range":
        return any(a.kind != "float" for a in spec.args.values())
    return True


# --- running calls -----------------------------------------------------------------------------

class _NoBackend(dict):
    """The dispatch table while a malformed call runs: reaching a backend fails the test."""

    def get(self, key, default=None):
        raise AssertionError(f"a malformed call reached the {key[1]} backend of {key[0]}")


def _names(msg, name) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", msg) is not None


def _refused(call_fn, name, exc, kind, monkeypatch):
    TRIED[kind] += 1
    with monkeypatch.context() as m:
        m.setattr(_dispatch, "_table", _NoBackend())
        with pytest.raises(exc) as info:
            call_fn()
    assert _names(str(info.value), name), f"message does not name {name!r}: {info.value}"


def _copy(call):
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in call.items()}


def _as64(call):
    return {k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32 else v
            for k, v in call.items()}


def _results(out, call, inplace):
    """Every array a call produced: its return value(s) and the tensors it updates in place."""
    out = out if isinstance(out, tuple) else (out,)
    return [host(o) for o in out] + [call[k] for k in inplace]


def _assert_same(got, want, exact_nan=True):
    """Equal within float32 tolerance, NaN where ``want`` has NaN. With ``exact_nan`` False (an
    infinity went in), only non-finite where ``want`` is: inf - inf may become NaN or not,
    depending on the order of evaluation, which backends may choose."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is None:
            continue
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if not exact_nan:
            finite = np.isfinite(w)
            np.testing.assert_array_equal(np.isfinite(g), finite, "non-finite results elsewhere than the reference's")
            g, w = g[finite], w[finite]
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def _run_op(op, call, backend):
    call = _copy(call)
    return _results(op.fn(**call, backend=backend), call, op.inplace)


def _examples(backend, kind):
    return 3 if backend == "cuda" else 5  # the simulator is slow


def _drive(body, backend, kind):
    settings(max_examples=_examples(backend, kind))(given(data=st.data())(body))()


KINDS = list(CORRUPT) + ["range", "values"]
# The checks treat cuda as numba and c but for the dtypes allowed: the other kinds of malformed
# call would repeat the compiled backends' cases.
CUDA_KINDS = ("dtype", "values")
KERNEL_CASES = [(n, k, b) for n in OPS for k in KINDS if _applicable(OPS[n], k)
                for b in BACKENDS if b != "cuda" or k in CUDA_KINDS]


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    for title, counts in (("malformed calls tried", TRIED), ("well-formed edge calls checked", WELL_FORMED)):
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
        print(f"\n{title}: {sum(counts.values())} ({kinds})")


@pytest.mark.parametrize("name,kind,backend", KERNEL_CASES)
def test_malformed_kernel_call(name, kind, backend, monkeypatch):
    op = OPS[name]

    def body(data):
        s = _sizes(op, data)
        call = _valid_call(op, s, np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed")))
        if kind == "values":
            _nonfinite(op, call, backend, data, monkeypatch)
            return
        arg, value, want = (_out_of_range if kind == "range" else CORRUPT[kind])(op, call, s, data, backend)
        if arg == "backend":
            _refused(lambda: op.fn(**call, backend=value), arg, want, kind, monkeypatch)
        elif want is VALID:
            WELL_FORMED["float64 alone on numpy"] += 1
            got = _run_op(op, {**call, arg: value}, backend)
            assert got[0].dtype == np.float64
            _assert_same(got, _run_op(op, call, backend))
        else:
            _refused(lambda: op.fn(**{**call, arg: value}, backend=backend), arg, want, kind, monkeypatch)

    _drive(body, backend, kind)


def _nonfinite(op, call, backend, data, monkeypatch):
    """One NaN or infinity in one float tensor: the result equals the reference's, NaN for NaN."""
    name = _pick(data, [n for n, a in op.args.items() if a.kind == "float"], "argument")
    x = call[name] = call[name].copy()
    # The CUDA simulator runs math.sqrt and math.log in Python, which raise for the negative
    # infinities (inf - inf, -inf + x) that device code turns into NaN; NaN passes through both.
    value = _pick(data, [NAN] if backend == "cuda" else [NAN, INF, -INF], "value")
    x.reshape(-1)[data.draw(st.integers(0, x.size - 1), label="position")] = value
    if name in op.finite:
        _refused(lambda: op.fn(**call, backend=backend), name, ValueError, "values", monkeypatch)
        return
    TRIED["values"] += 1
    with warnings.catch_warnings():  # the CUDA simulator computes in NumPy scalars, which warn
        warnings.simplefilter("ignore", RuntimeWarning)
        with np.errstate(all="ignore"):
            want = _run_op(op, _as64(call), "numpy")
            got = _run_op(op, call, backend)
    _assert_same(got, want, exact_nan=math.isnan(value))


# --- layers and losses -------------------------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    """A pynn layer or loss: how to build it, its forward arguments (``x``, or ``input`` and
    ``target``), bad constructions ``[(argument, factory, exception)]``, the arguments that may
    be float64 alone on the numpy backend, and whether it takes any array (Flatten)."""

    make: Callable
    inputs: dict
    bad: list = field(default_factory=list)
    f64_ok: tuple = ()
    any_array: bool = False
    ranges: dict = field(default_factory=dict)
    dtype_selects_meaning: tuple = ()

    def spec(self, args):
        """The corruption view of a call with the tensor arguments ``args``."""
        return Op(None, args, ranges=self.ranges, dtype_selects_meaning=self.dtype_selects_meaning,
                  f64_ok=self.f64_ok)


def _bad_ctor(cls, name, values, **kwargs):
    return [(name, lambda v=v: cls(**{**kwargs, name: v}), exc) for v, exc in values]


P = pynn
SIZE = [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("4", TypeError), (True, TypeError)]
FEATURES = {"x": Arg(("N", "F"), min_rank=1)}
POOL_INPUT = {"x": _float(*CHW)}
POOL_BAD = [(0, ValueError), ((2, 0), ValueError), (1.5, TypeError), ("2", TypeError)]


def _pool_bad(cls, **kwargs):
    return (_bad_ctor(cls, "kernel_size", POOL_BAD, **kwargs) + _bad_ctor(cls, "stride", POOL_BAD, kernel_size=2)
            + _bad_ctor(cls, "padding", [(2, ValueError), (-1, ValueError), (0.5, TypeError)], kernel_size=2))


def _bn_bad(cls):
    return (_bad_ctor(cls, "num_features", SIZE) + _bad_ctor(cls, "eps", NONNEG + [(0.0, ValueError)], num_features=3)
            + _bad_ctor(cls, "momentum", [v for v in PROB if v[0] is not None], num_features=3)  # None: cumulative
            + _bad_ctor(cls, "affine", [("yes", TypeError), (1, TypeError)], num_features=3)
            + _bad_ctor(cls, "track_running_stats", [("yes", TypeError)], num_features=3))


def _loss(cls, input_fill="normal", target=None):
    target = target or _any(*XY, fill="prob")
    inputs = {"input": Arg(target.dims[:1] + ("C",)) if target.kind == "index" else _any(*XY, fill=input_fill),
              "target": target}
    # with class indices for a target, the input is the one float tensor of the forward call
    return Layer(lambda: cls(reduction="none"), inputs, _bad_ctor(cls, "reduction", REDUCTION),
                 ("input",) if target.kind == "index" else (), dtype_selects_meaning=("target",))


LAYERS = {
    "Linear": Layer(lambda: P.Linear(4, 3), {"x": Arg(("N", 4), min_rank=1)},
                    _bad_ctor(P.Linear, "in_features", SIZE, out_features=3)
                    + _bad_ctor(P.Linear, "out_features", SIZE, in_features=4)),
    "Conv2d": Layer(lambda: P.Conv2d(2, 3, 2), {"x": _float("N", 2, "H", "W")},
                    _bad_ctor(P.Conv2d, "in_channels", SIZE, out_channels=3, kernel_size=2)
                    + _bad_ctor(P.Conv2d, "kernel_size", PAIR1, in_channels=2, out_channels=3)
                    + _bad_ctor(P.Conv2d, "stride", PAIR1, in_channels=2, out_channels=3, kernel_size=2)
                    + _bad_ctor(P.Conv2d, "padding", PAD, in_channels=2, out_channels=3, kernel_size=2)
                    + _bad_ctor(P.Conv2d, "groups", GROUPS + [(3, ValueError)], in_channels=2, out_channels=4,
                                kernel_size=2), ranges=IMAGE),
    "MaxPool2d": Layer(lambda: P.MaxPool2d(2), POOL_INPUT, _pool_bad(P.MaxPool2d), ("x", "grad_output"),
                       ranges=IMAGE),
    "AvgPool2d": Layer(lambda: P.AvgPool2d(2), POOL_INPUT,
                       _pool_bad(P.AvgPool2d) + _bad_ctor(P.AvgPool2d, "count_include_pad", [("yes", TypeError)],
                                                          kernel_size=2), ("x", "grad_output"), ranges=IMAGE),
    "AdaptiveAvgPool2d": Layer(lambda: P.AdaptiveAvgPool2d(1), POOL_INPUT,
                               _bad_ctor(P.AdaptiveAvgPool2d, "output_size", [(2, ValueError), (1.5, TypeError)]),
                               ("x", "grad_output")),
    "BatchNorm1d": Layer(lambda: P.BatchNorm1d(3), {"x": _float("N", 3)}, _bn_bad(P.BatchNorm1d),
                         ranges={"N": (4, 5)}),  # a batch of 3 would make (2, N, 3) a valid (N, C, L)
    "BatchNorm2d": Layer(lambda: P.BatchNorm2d(3), {"x": _float("N", 3, "H", "W")}, _bn_bad(P.BatchNorm2d)),
    "ReLU": Layer(P.ReLU, FEATURES, f64_ok=("x",)),
    "LeakyReLU": Layer(P.LeakyReLU, FEATURES, _bad_ctor(P.LeakyReLU, "negative_slope", REAL), ("x",)),
    "ELU": Layer(P.ELU, FEATURES, _bad_ctor(P.ELU, "alpha", REAL), ("x",)),
    "SELU": Layer(P.SELU, FEATURES, f64_ok=("x",)),
    "GELU": Layer(P.GELU, FEATURES, _bad_ctor(P.GELU, "approximate", APPROX), ("x",)),
    "Sigmoid": Layer(P.Sigmoid, FEATURES, f64_ok=("x",)),
    "Tanh": Layer(P.Tanh, FEATURES, f64_ok=("x",)),
    "Softmax": Layer(lambda: P.Softmax(dim=1), FEATURES, _bad_ctor(P.Softmax, "dim", DIM[:2] + DIM[-1:]), ("x",)),
    "LogSoftmax": Layer(lambda: P.LogSoftmax(dim=0), FEATURES, _bad_ctor(P.LogSoftmax, "dim", DIM[:2]), ("x",)),
    "Dropout": Layer(lambda: P.Dropout(0.5), {"x": _any(*XY)}, _bad_ctor(P.Dropout, "p", PROB), ("x", "grad_output")),
    "Flatten": Layer(P.Flatten, {"x": Arg(("N", "C", "L"), min_rank=2)},
                     _bad_ctor(P.Flatten, "start_dim", [(1.5, TypeError), ("1", TypeError), (None, TypeError)])
                     + _bad_ctor(P.Flatten, "end_dim", [(-1.0, TypeError)]), any_array=True),
    "Residual": Layer(lambda: P.Residual(P.Linear(4, 4)), {"x": Arg(("N", 4), min_rank=1)},
                      [("block", lambda: P.Residual("block"), TypeError),
                       ("projection", lambda: P.Residual(P.Tanh(), projection=np.eye(2)), TypeError)]),
    "Sequential": Layer(lambda: P.Sequential(P.Linear(4, 5), P.ReLU(), P.Linear(5, 3)),
                        {"x": Arg(("N", 4), min_rank=1)}),
    "CrossEntropyLoss": _loss(P.CrossEntropyLoss, target=_classes()),
    "MSELoss": _loss(P.MSELoss),
    "L1Loss": _loss(P.L1Loss),
    "BCELoss": _loss(P.BCELoss, "prob"),
    "BCEWithLogitsLoss": _loss(P.BCEWithLogitsLoss),
}

LAYER_KINDS = ["type", "ndim", "shape", "dtype", "layout", "empty", "overflow"]
LAYER_CASES = [(n, k) for n in LAYERS for k in LAYER_KINDS] + [(n, "constructor") for n in LAYERS if LAYERS[n].bad]


def _fresh(row):
    """The row's layer built from one fixed seed, so that two builds drop the same elements."""
    pynn.manual_seed(0)
    return row.make()


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("name,kind", LAYER_CASES)
def test_malformed_layer_call(name, kind, backend, monkeypatch):
    row = LAYERS[name]

    def body(data):
        if kind == "constructor":
            arg, build, exc = _pick(data, row.bad, "construction")
            _refused(build, arg, exc, kind, monkeypatch)
            return
        with kernels.use_backend(backend):
            layer = row.make()
            forward = row.spec(row.inputs)
            s = _sizes(forward, data)
            rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
            inputs = _valid_call(forward, s, rng)
            if data.draw(st.booleans(), label="backward"):
                y = layer(*inputs.values())
                spec = row.spec({"grad_output": Arg(tuple(y.shape))})
                grad = {"grad_output": rng.standard_normal(y.shape).astype(np.float32)}
                _layer_case(spec, grad, s, data, backend, kind, row, monkeypatch,
                            lambda g: layer.backward(g["grad_output"]))
            else:
                _layer_case(forward, inputs, s, data, backend, kind, row, monkeypatch,
                            lambda a: _fresh(row)(*a.values()))

    _drive(body, backend, kind)


def _layer_case(spec, call, s, data, backend, kind, row, monkeypatch, run):
    """Corrupt one argument of ``run(call)``: refused, or for a well-formed call the documented
    result (Flatten: the reshaped array, of any dtype, layout or subclass; float64: the float32
    result)."""
    forward = "grad_output" not in call
    if not _applicable(spec, kind) or (row.any_array and forward and kind == "overflow"):
        return  # Flatten copies a broadcast view to reshape it: 2**31 elements
    arg, value, want = CORRUPT[kind](spec, call, s, data, backend)
    reshaped = kind in ("dtype", "layout") or kind == "empty" and forward or kind == "type" and hasattr(value, "mask")
    if row.any_array and reshaped:
        want = VALID  # a masked array's reshape keeps its mask
    if want is not VALID:
        _refused(lambda: run({**call, arg: value}), arg, want, kind, monkeypatch)
        return
    WELL_FORMED[f"{kind} (layer)"] += 1
    got = run({**call, arg: value})
    if row.any_array:
        np.testing.assert_array_equal(got, value.reshape(got.shape))
    else:
        assert got.dtype == np.float64
        _assert_same([got], [run(call)])


# --- coverage of the tables, and 64-bit sizes in C -----------------------------------------------

NOT_KERNELS = {"backends", "default_backend", "is_usable", "use_backend"}


def test_every_public_kernel_and_layer_has_a_row():
    public = {n for n in dir(kernels) if callable(getattr(kernels, n)) and not n.startswith("_")} - NOT_KERNELS
    assert public == {n.split("[")[0] for n in OPS}
    bases = (pynn.Module, pynn.Loss)
    abstract = {pynn.Module, pynn.Loss, pynn.Activation}
    layers = {n for n in pynn.__all__ if isinstance(getattr(pynn, n), type)
              and issubclass(getattr(pynn, n), bases) and getattr(pynn, n) not in abstract}
    assert layers == set(LAYERS)


# Integer parameters of the C kernels that are flags or hash inputs, not sizes or indices.
C_FLAGS = {"trans_a", "trans_b", "log_softmax", "tanh_approx", "training", "count_include_pad", "use_gemm",
           "first", "nesterov", "maximize", "decoupled", "state", "threshold"}


def test_c_kernels_take_64_bit_sizes():
    """Every size or index a C kernel receives is int64_t (every csrc/*.h is the cffi cdef),
    and every 32-bit loop counter in csrc/*.c runs to a small compile-time or thread count."""
    import pathlib

    csrc = pathlib.Path(__file__).resolve().parent.parent / "csrc"
    params = re.findall(r"([\w ]+?)\s*\b(\w+)\s*[,)]", " ".join(p.read_text() for p in csrc.glob("*.h")))
    assert params
    for ctype, name in params:
        ctype = ctype.replace("const", "").split()
        if ctype[-1] in ("float", "double") or name in C_FLAGS:
            continue
        assert ctype[-1] == "int64_t", f"size or index {name!r} is {' '.join(ctype)} in csrc/*.h"
    loops = re.findall(r"for \((?:unsigned |int |int32_t |long )(\w+) = [^;]+; \1 < (\w+)",
                       " ".join(p.read_text() for p in csrc.glob("*.c")))
    assert {bound for _, bound in loops} <= {"MR", "NR", "nthreads"}, loops
