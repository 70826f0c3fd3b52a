"""``pynn bench``: the speed of every kernel on every backend, against this machine's roofline.

First the machine's two ceilings are measured: the FP32 fused multiply-add peak in GFLOP/s
(register-only FMA chains on every Numba thread) and the memory bandwidth in GB/s (McCalpin's
STREAM triad, ``a = b + s * c`` on arrays far larger than the last-level cache, counting
3 x 4 bytes per element and reporting the best of several runs, as STREAM does). Then each case
(an op at a shape) runs on every chosen backend, on a plain NumPy expression of the op (or the
numpy backend, which is plain NumPy, where no one-line expression exists) and on PyTorch when it
is installed. Each contender is called once to warm up (Numba compiles or loads its cache), then
repeatedly for a time budget; the median of those calls is its time.

A case's arithmetic intensity is its flop count over the bytes it must read and write at least
once (compulsory traffic; a two-pass kernel moves more). Its attainable rate is the roofline
``min(peak, intensity * bandwidth)`` (Williams, Waterman & Patterson, "Roofline: an insightful
visual performance model for multicore architectures", CACM 52(4), 2009), and ``pct_roofline``
is the achieved GFLOP/s over that; a case whose operands stay in the last-level cache between
calls can pass 100%, the bandwidth ceiling being DRAM's. A case is memory-bound when ``intensity * bandwidth < peak``;
the table then shows GB/s, else GFLOP/s. ``vs_numpy`` and ``vs_torch`` are speed-ups: the
baseline's median time over the row's (above 1: the row is faster).

Flop counts: 2 M N K for a matrix product (bias terms, of lower order, are not counted);
2 N C_out H_out W_out C_in kH kW for a convolution and twice that for its backward (input and
weight gradients); for the memory-bound ops the count stated beside each builder below, with
exp, sqrt and a division one flop each. Times in seconds, rates in 1e9 flop/s and 1e9 byte/s.
"""
from __future__ import annotations

import functools
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import kernels

BUDGET_S, QUICK_BUDGET_S = 0.15, 0.003  # timed calls per contender last at least this long
MIN_REPS, QUICK_MIN_REPS = 5, 3
# OpenBLAS's and OpenMP's workers spin for about 0.1 s after a call and would slow whatever runs
# next on two cores: contenders are spaced by this pause.
SETTLE_S = 0.2
PLAIN, TORCH = "plain-numpy", "torch"

# --- the machine's ceilings ----------------------------------------------------------------------

_CHAINS = 12  # independent 8-lane FMA chains per thread: 12 of the 16 AVX2 registers
TRIAD_ELEMENTS = 16 * 2**20  # 64 MiB per float32 array, twice a 32 MiB L3


@functools.cache
def _machine_kernels():
    """Compile (or load from Numba's cache) the FMA-peak and STREAM-triad kernels.

    Numba is imported here, not with the module: ``pynn``'s command line imports this module
    for every command.
    """
    import numba
    from kernels.numba_cpu import gemm as v  # explicit <8 x float> values and llvm.fmuladd

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def fma_chains(seed, iters, out):
        """Each thread runs 12 independent chains c = c * a + b of 8 lanes; out[t] keeps them live.

        Keeping both FMA pipes of a Zen or Skylake core busy through the 4-cycle latency needs 8
        chains in flight; 12 leave room, so the loop is bound by FMA throughput alone.
        """
        for t in numba.prange(out.size):
            a, b = v._load8(seed, 0), v._load8(seed, 8)
            c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = c9 = c10 = c11 = v._load8(seed, 16)
            for _ in range(iters):
                c0, c1, c2, c3 = v._fma8(c0, a, b), v._fma8(c1, a, b), v._fma8(c2, a, b), v._fma8(c3, a, b)
                c4, c5, c6, c7 = v._fma8(c4, a, b), v._fma8(c5, a, b), v._fma8(c6, a, b), v._fma8(c7, a, b)
                c8, c9, c10, c11 = v._fma8(c8, a, b), v._fma8(c9, a, b), v._fma8(c10, a, b), v._fma8(c11, a, b)
            s = v._add8(v._add8(v._add8(c0, c1), v._add8(c2, c3)), v._add8(v._add8(c4, c5), v._add8(c6, c7)))
            out[t] = v._hsum8(v._add8(s, v._add8(v._add8(c8, c9), v._add8(c10, c11))))

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def triad(a, b, c, s):
        for i in numba.prange(a.size):
            a[i] = b[i] + s * c[i]

    return fma_chains, triad, numba


def _best_time(fn, reps: int) -> float:
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine_peaks(quick: bool = False) -> dict:
    """Measure this machine's FP32 FMA peak and STREAM triad bandwidth with Numba's threads.

    Returns ``{"fma_peak_gflops", "triad_gbytes_per_s", "threads", "cpu"}``: the best rate of
    several runs of each (a few hundred ms in all; ``quick``: a few tens), in 1e9 flop/s and
    1e9 byte/s; the Numba thread count used; LLVM's name for the host CPU. The FMA loop holds
    its operands in registers (Williams et al.'s in-core ceiling); the triad follows McCalpin's
    STREAM (https://www.cs.virginia.edu/stream/), 12 bytes per element, write-allocate traffic
    not counted.
    """
    fma_chains, triad, numba = _machine_kernels()
    threads = numba.get_num_threads()
    seed = np.repeat(np.float32([1 - 2**-10, 2**-10, 1]), 8)  # c = 1 is the chains' fixed point
    out = np.empty(threads, np.float32)
    fma_chains(seed, 1, out)
    iters = 2_000_000 if quick else 10_000_000
    fma_s = _best_time(lambda: fma_chains(seed, iters, out), 2 if quick else 6)
    a = np.empty(TRIAD_ELEMENTS, np.float32)
    b, c = np.ones_like(a), np.full_like(a, 2)
    triad(a, b, c, np.float32(3))
    triad_s = _best_time(lambda: triad(a, b, c, np.float32(3)), 3 if quick else 12)
    from llvmlite import binding
    return {
        "fma_peak_gflops": threads * iters * _CHAINS * 8 * 2 / fma_s / 1e9,
        "triad_gbytes_per_s": 3 * 4 * TRIAD_ELEMENTS / triad_s / 1e9,
        "threads": threads,
        "cpu": binding.get_host_cpu_name(),
    }


# --- cases ---------------------------------------------------------------------------------------

@dataclass
class Case:
    """One op at one shape: its counts, its operands and a call per kind of contender.

    ``ours(arrays, backend)`` calls the public ``kernels`` op; ``plain(arrays)`` is the plain
    NumPy expression of it, or None where the numpy backend is the baseline; ``torch(torch,
    tensors)`` is PyTorch's equivalent, or None. ``arrays`` maps names to NumPy arrays, which
    the cuda contender receives as device arrays and PyTorch as tensors sharing their memory.
    """

    op: str
    dims: tuple[int, ...]
    flops: float
    nbytes: float
    arrays: dict
    ours: Callable
    plain: Callable | None
    torch: Callable | None

    @property
    def shape(self) -> str:
        return "x".join(map(str, self.dims))


_rng = np.random.default_rng(0)


def _randn(*shape, scale=1.0):
    return (_rng.standard_normal(shape) * scale).astype(np.float32)


def _matmul(m, k, n):
    return dict(
        flops=2.0 * m * k * n, nbytes=4.0 * (m * k + k * n + m * n),
        arrays=dict(a=_randn(m, k), b=_randn(k, n)),
        ours=lambda a, be: kernels.matmul(a["a"], a["b"], backend=be),
        plain=lambda a: a["a"] @ a["b"],
        torch=lambda T, t: T.matmul(t["a"], t["b"]),
    )


def _linear(n, i, o):
    return dict(
        flops=2.0 * n * i * o, nbytes=4.0 * (n * i + o * i + o + n * o),
        arrays=dict(x=_randn(n, i), w=_randn(o, i, scale=i**-0.5), b=_randn(o)),
        ours=lambda a, be: kernels.linear(a["x"], a["w"], a["b"], backend=be),
        plain=lambda a: a["x"] @ a["w"].T + a["b"],
        torch=lambda T, t: T.nn.functional.linear(t["x"], t["w"], t["b"]),
    )


def _linear_backward(n, i, o):
    """Input, weight and bias gradients: two GEMMs (the bias sum is not counted)."""
    return dict(
        flops=4.0 * n * i * o, nbytes=4.0 * (n * o + 2 * n * i + 2 * o * i + o),
        arrays=dict(g=_randn(n, o), x=_randn(n, i), w=_randn(o, i, scale=i**-0.5)),
        ours=lambda a, be: kernels.linear_backward(a["g"], a["x"], a["w"], backend=be),
        plain=lambda a: (a["g"] @ a["w"], a["g"].T @ a["x"], a["g"].sum(axis=0)),
        # What autograd runs for F.linear: two matrix products and a sum.
        torch=lambda T, t: (t["g"].mm(t["w"]), t["g"].t().mm(t["x"]), t["g"].sum(0)),
    )


def _mlp(n, *widths):
    """The fused dense stack (``kernels.mlp``, inference) with ReLU between the layers: its GEMMs'
    flops; bytes of the input, the weights and biases, and the output."""
    pairs = list(zip(widths, widths[1:]))
    arrays = {"x": _randn(n, widths[0])}
    for k, (i, o) in enumerate(pairs):
        arrays[f"w{k}"], arrays[f"b{k}"] = _randn(o, i, scale=i**-0.5), _randn(o)
    layers = range(len(pairs))

    def plain(a):
        h = a["x"]
        for k in layers:
            h = h @ a[f"w{k}"].T + a[f"b{k}"]
            h = np.maximum(h, 0) if k < len(pairs) - 1 else h
        return h

    def torch_mlp(T, t):
        h = t["x"]
        for k in layers:
            h = T.nn.functional.linear(h, t[f"w{k}"], t[f"b{k}"])
            h = T.relu(h) if k < len(pairs) - 1 else h
        return h

    return dict(
        flops=2.0 * n * sum(i * o for i, o in pairs),
        nbytes=4.0 * (n * widths[0] + sum(i * o + o for i, o in pairs) + n * widths[-1]),
        arrays=arrays,
        ours=lambda a, be: kernels.mlp(a["x"], [a[f"w{k}"] for k in layers], [a[f"b{k}"] for k in layers], backend=be),
        plain=plain,
        torch=torch_mlp,
    )


def _conv_dims(n, c, h, w, co, k):
    """Stride 1 and padding k // 2 (``same`` for odd k): returns (padding, H_out, W_out, macs)."""
    p = k // 2
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    return p, ho, wo, float(n * co * ho * wo * c * k * k)


def _conv2d(n, c, h, w, co, k):
    p, ho, wo, macs = _conv_dims(n, c, h, w, co, k)
    return dict(
        flops=2.0 * macs, nbytes=4.0 * (n * c * h * w + co * c * k * k + co + n * co * ho * wo),
        arrays=dict(x=_randn(n, c, h, w), w=_randn(co, c, k, k, scale=(c * k * k) ** -0.5), b=_randn(co)),
        ours=lambda a, be: kernels.conv2d(a["x"], a["w"], a["b"], padding=p, backend=be),
        plain=None,
        torch=lambda T, t: T.nn.functional.conv2d(t["x"], t["w"], t["b"], padding=p),
    )


def _conv2d_backward(n, c, h, w, co, k):
    """Input, weight and bias gradients: two convolutions' worth of flops (the bias sum not counted)."""
    p, ho, wo, macs = _conv_dims(n, c, h, w, co, k)
    return dict(
        flops=4.0 * macs, nbytes=4.0 * (n * co * ho * wo + 2 * n * c * h * w + 2 * co * c * k * k + co),
        arrays=dict(g=_randn(n, co, ho, wo), x=_randn(n, c, h, w), w=_randn(co, c, k, k, scale=(c * k * k) ** -0.5)),
        ours=lambda a, be: kernels.conv2d_backward(a["g"], a["x"], a["w"], padding=p, backend=be),
        plain=None,
        # The single op autograd runs for F.conv2d's three gradients.
        torch=lambda T, t: T.ops.aten.convolution_backward(
            t["g"], t["x"], t["w"], [co], [1, 1], [p, p], [1, 1], False, [0, 0], 1, [True, True, True]),
    )


def _max_pool2d(n, c, h, w):
    """2x2 windows, stride 2, with int64 indices: 3 comparisons per output."""
    out = n * c * (h // 2) * (w // 2)
    return dict(
        flops=3.0 * out, nbytes=4.0 * n * c * h * w + 12.0 * out,
        arrays=dict(x=_randn(n, c, h, w)),
        ours=lambda a, be: kernels.max_pool2d(a["x"], 2, return_indices=True, backend=be),
        plain=None,
        torch=lambda T, t: T.nn.functional.max_pool2d(t["x"], 2, return_indices=True),
    )


def _max_pool2d_backward(n, c, h, w):
    """One addition per output gradient into a zeroed input gradient."""
    out = n * c * (h // 2) * (w // 2)
    x = _randn(n, c, h, w)
    _, idx = kernels.max_pool2d(x, 2, return_indices=True, backend="numpy")
    return dict(
        flops=float(out), nbytes=12.0 * out + 4.0 * n * c * h * w,
        arrays=dict(g=_randn(*idx.shape), idx=idx, x=x),
        ours=lambda a, be: kernels.max_pool2d_backward(a["g"], a["idx"], (n, c, h, w), backend=be),
        plain=None,
        torch=lambda T, t: T.ops.aten.max_pool2d_with_indices_backward(
            t["g"], t["x"], [2, 2], [2, 2], [0, 0], [1, 1], False, t["idx"]),
    )


def _relu(*dims):
    """One comparison per element."""
    size = math.prod(dims)
    return dict(
        flops=float(size), nbytes=8.0 * size,
        arrays=dict(x=_randn(*dims)),
        ours=lambda a, be: kernels.relu(a["x"], backend=be),
        plain=lambda a: np.maximum(a["x"], 0),
        torch=lambda T, t: T.nn.functional.relu(t["x"]),
    )


def _plain_softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _softmax(n, c):
    """Per element: a comparison for the maximum, a subtraction, exp, an addition and a division."""
    return dict(
        flops=5.0 * n * c, nbytes=8.0 * n * c,
        arrays=dict(x=_randn(n, c)),
        ours=lambda a, be: kernels.softmax(a["x"], backend=be),
        plain=lambda a: _plain_softmax(a["x"]),
        torch=lambda T, t: T.nn.functional.softmax(t["x"], -1),
    )


def _plain_cross_entropy(x, target):
    z = x - x.max(axis=1, keepdims=True)
    return (np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), target]).mean()


def _cross_entropy(n, c):
    """Mean loss of int64 class targets: per logit a comparison, a subtraction, exp and an
    addition; per row a log, a subtraction and the mean's addition."""
    target = _rng.integers(0, c, n)
    return dict(
        flops=4.0 * n * c + 3.0 * n, nbytes=4.0 * n * c + 8.0 * n + 4.0,
        arrays=dict(x=_randn(n, c), target=target),
        ours=lambda a, be: kernels.cross_entropy(a["x"], a["target"], backend=be),
        plain=lambda a: _plain_cross_entropy(a["x"], a["target"]),
        torch=lambda T, t: T.nn.functional.cross_entropy(t["x"], t["target"]),
    )


def _adam_step(p):
    """In place on param, exp_avg, exp_avg_sq: 13 flops per parameter (3 for the first moment,
    4 for the second, 6 for the update); reads 4 and writes 3 arrays."""
    return dict(
        flops=13.0 * p, nbytes=28.0 * p,
        arrays=dict(p=_randn(p), g=_randn(p), m=_randn(p, scale=0.1), v=np.abs(_randn(p, scale=0.1)),
                    step=np.array(10, np.float32)),
        ours=lambda a, be: kernels.adam_step(a["p"], a["g"], a["m"], a["v"], step=10, backend=be),
        plain=None,
        torch=_torch_adam,
    )


def _torch_adam(T, t):
    """torch.optim.Adam's single-tensor update in its functional form; the step count rises."""
    from torch.optim.adam import adam  # torch.optim does not keep the submodule as an attribute

    adam([t["p"]], [t["g"]], [t["m"]], [t["v"]], [], [t["step"]], foreach=False, amsgrad=False, beta1=0.9,
         beta2=0.999, lr=1e-3, weight_decay=0.0, eps=1e-8, maximize=False)


def _norm_operands(n, c, *spatial):
    x = _randn(n, c, *spatial)
    return dict(x=x, w=_randn(c), b=_randn(c), rm=np.zeros(c, np.float32), rv=np.ones(c, np.float32))


def _batch_norm(n, c, *spatial):
    """Training mode: per element the sum, the square and its sum, then y = x * scale + shift."""
    size = n * c * math.prod(spatial)
    return dict(
        flops=5.0 * size, nbytes=8.0 * size,
        arrays=_norm_operands(n, c, *spatial),
        ours=lambda a, be: kernels.batch_norm(a["x"], a["rm"], a["rv"], a["w"], a["b"], True, backend=be),
        plain=None,
        torch=lambda T, t: T.nn.functional.batch_norm(t["x"], t["rm"], t["rv"], t["w"], t["b"], True),
    )


def _batch_norm_backward(n, c, *spatial):
    """Training mode: per element x_hat (2), the sums of g and g * x_hat (3) and grad_x (4)."""
    size = n * c * math.prod(spatial)
    a = _norm_operands(n, c, *spatial)
    _, a["mean"], a["invstd"] = kernels.batch_norm(a["x"], None, None, a["w"], a["b"], True, backend="numpy")
    a["g"] = _randn(*a["x"].shape)
    return dict(
        flops=9.0 * size, nbytes=12.0 * size,
        arrays=a,
        ours=lambda a, be: kernels.batch_norm_backward(a["g"], a["x"], a["w"], a["mean"], a["invstd"], backend=be),
        plain=None,
        # The single op autograd runs for F.batch_norm's gradients.
        torch=lambda T, t: T.ops.aten.native_batch_norm_backward(
            t["g"], t["x"], t["w"], t["rm"], t["rv"], t["mean"], t["invstd"], True, 1e-5, [True, True, True]),
    )


@dataclass(frozen=True)
class _Op:
    build: Callable
    grammar: str  # the sizes of --shape OP:DIMS, "x"-separated
    meaning: str
    sizes: tuple[int, int]  # the least and most sizes DIMS may have
    defaults: tuple  # the shapes that matter: those of pynn.models' mlp and cnn


_MLP = ((64, 784, 256), (64, 256, 128), (64, 128, 10))
_CNN_CONVS = ((64, 1, 28, 28, 32, 3), (64, 32, 14, 14, 64, 3))
_CNN_MAPS = ((64, 32, 28, 28), (64, 64, 14, 14))
MLP_PARAMETERS = 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10

OPS = {
    "matmul": _Op(_matmul, "MxKxN", "(M, K) @ (K, N)", (3, 3), ((256, 256, 256), (1024, 1024, 1024))),
    "linear": _Op(_linear, "NxINxOUT", "x (N, IN), weight (OUT, IN), bias", (3, 3), _MLP),
    "linear_backward": _Op(_linear_backward, "NxINxOUT", "as linear", (3, 3), _MLP),
    "mlp": _Op(_mlp, "NxD0xD1[xD2...]", "x (N, D0) through layers D0-D1-..., ReLU between", (3, 9),
               ((1, 784, 256, 128, 10), (64, 784, 256, 128, 10))),
    "conv2d": _Op(_conv2d, "NxCxHxWxCOUTxK", "x (N, C, H, W), weight (COUT, C, K, K), stride 1, padding K//2",
                  (6, 6), _CNN_CONVS),
    "conv2d_backward": _Op(_conv2d_backward, "NxCxHxWxCOUTxK", "as conv2d", (6, 6), _CNN_CONVS),
    "max_pool2d": _Op(_max_pool2d, "NxCxHxW", "2x2 windows, stride 2, H and W >= 2", (4, 4), _CNN_MAPS),
    "max_pool2d_backward": _Op(_max_pool2d_backward, "NxCxHxW", "as max_pool2d", (4, 4), _CNN_MAPS),
    "relu": _Op(_relu, "D1[xD2...]", "any shape", (1, 8), ((64, 256), (64, 32, 28, 28))),
    "softmax": _Op(_softmax, "NxC", "along C", (2, 2), ((64, 10),)),
    "cross_entropy": _Op(_cross_entropy, "NxC", "logits (N, C), class targets, mean", (2, 2), ((64, 10),)),
    "adam_step": _Op(_adam_step, "P", "P parameters in one buffer", (1, 1), ((MLP_PARAMETERS,),)),
    "batch_norm": _Op(_batch_norm, "NxC[xHxW...]", "training mode, N x H x W >= 2", (2, 8), ((64, 32, 28, 28),)),
    "batch_norm_backward": _Op(_batch_norm_backward, "NxC[xHxW...]", "as batch_norm", (2, 8), ((64, 32, 28, 28),)),
}

SHAPE_HELP = "shapes (--shape OP:DIMS, DIMS positive sizes joined by x):\n" + "\n".join(
    f"  {name + ':' + op.grammar:<36} {op.meaning}" for name, op in OPS.items()
)


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``OP:DIMS`` (e.g. ``matmul:512x512x512``; grammar per op in ``SHAPE_HELP``) into
    ``(op, dims)``. Raises ValueError naming the text, the op's grammar and what was wrong."""
    op, sep, dims_text = str(text).partition(":")
    if op not in OPS:
        raise ValueError(f"shape {text!r}: unknown op {op!r}; expected OP:DIMS with OP one of {', '.join(OPS)}")
    spec = OPS[op]
    expected = f"{op}:{spec.grammar} ({spec.meaning})"
    parts = dims_text.split("x") if sep else []
    if not all(p.isdecimal() and int(p) > 0 for p in parts):
        raise ValueError(f"shape {text!r}: expected {expected}, with positive integer sizes")
    dims = tuple(int(p) for p in parts)
    low, high = spec.sizes
    if not low <= len(dims) <= high:
        count = str(low) if low == high else f"{low} to {high}"
        raise ValueError(f"shape {text!r}: expected {expected}, {count} sizes, got {len(dims)}")
    if op.startswith("max_pool2d") and min(dims[2:]) < 2:
        raise ValueError(f"shape {text!r}: a 2x2 window needs H and W >= 2, got {dims[2]}x{dims[3]}")
    if op.startswith("batch_norm") and math.prod(dims) == dims[1]:
        raise ValueError(f"shape {text!r}: training batch norm needs more than one value per channel")
    return op, dims


def build_case(op: str, dims: tuple[int, ...]) -> Case:
    """The case of ``op`` at ``dims`` (sizes as ``parse_shape`` returns them), operands allocated."""
    return Case(op=op, dims=tuple(dims), **OPS[op].build(*dims))


# --- timing --------------------------------------------------------------------------------------

def _median_time(fn, sync, quick: bool) -> tuple[float, float, int]:
    """(median seconds, fastest seconds, calls) of ``fn`` after one warm-up call; ``sync`` waits
    for a GPU. The fastest call is kept beside the median: on a shared machine a parallel region
    now and then waits a scheduler tick (4 ms at 250 Hz) for a thread another process holds."""
    fn()
    sync()
    budget, reps = (QUICK_BUDGET_S, QUICK_MIN_REPS) if quick else (BUDGET_S, MIN_REPS)
    times = []
    end = time.perf_counter() + budget
    while len(times) < reps or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), len(times)


def _host_sync():
    """Host calls have finished when they return."""


def _contenders(case: Case, backends: list[str], torch):
    """(label, call, sync) of each contender of ``case``: the baseline first, PyTorch last."""
    out = []
    if case.plain is not None:
        out.append((PLAIN, functools.partial(case.plain, case.arrays), _host_sync))
    for be in (backends if case.plain is not None or "numpy" in backends else ["numpy", *backends]):
        arrays, sync = case.arrays, _host_sync
        if be == "cuda":
            from numba import cuda
            arrays = {k: cuda.to_device(v) for k, v in case.arrays.items()}
            sync = cuda.synchronize
        out.append((be, functools.partial(case.ours, arrays, be), sync))
    if torch is not None and case.torch is not None:
        tensors = {k: torch.from_numpy(v) for k, v in case.arrays.items()}
        out.append((TORCH, functools.partial(case.torch, torch, tensors), _host_sync))
    return out


def _records(case: Case, times: dict, peaks: dict) -> list[dict]:
    peak, bandwidth = peaks["fma_peak_gflops"], peaks["triad_gbytes_per_s"]
    intensity = case.flops / case.nbytes
    roof = min(peak, intensity * bandwidth)
    baseline = PLAIN if PLAIN in times else "numpy"
    base = times[baseline][0]
    theirs = times.get(TORCH, (None,))[0]
    rows = []
    for label, (median, fastest, reps) in times.items():
        gflops = case.flops / median / 1e9
        rows.append({
            "op": case.op, "shape": case.shape, "backend": label,
            "median_s": median, "min_s": fastest, "calls": reps,
            "flops": case.flops, "bytes": case.nbytes, "intensity": intensity,
            "gflops": gflops, "gbytes_per_s": case.nbytes / median / 1e9,
            "bound": "memory" if intensity * bandwidth < peak else "compute",
            "roofline_gflops": roof,
            # The ceilings are the CPU's: a GPU's rate against them means nothing.
            "pct_roofline": None if label == "cuda" else 100.0 * gflops / roof,
            "baseline": label == baseline,
            "vs_numpy": base / median,
            "vs_torch": None if theirs is None else theirs / median,
        })
    return rows


# --- the report ----------------------------------------------------------------------------------

_COLUMNS = f"{'op':<20} {'shape':<18} {'backend':<12} {'time':>10} {'rate':>16} {'%roof':>6} " \
           f"{'vs numpy':>9} {'vs torch':>9}"


def _seconds(s: float) -> str:
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _ratio(r) -> str:
    return "-" if r is None else f"{r:.2f}x"


def format_row(r: dict) -> str:
    """One line of the table for a record of ``run``'s report."""
    rate = f"{r['gbytes_per_s']:.1f} GB/s" if r["bound"] == "memory" else f"{r['gflops']:.1f} GFLOP/s"
    pct = "-" if r["pct_roofline"] is None else f"{r['pct_roofline']:.0f}%"
    return (f"{r['op']:<20} {r['shape']:<18} {r['backend']:<12} {_seconds(r['median_s']):>10} {rate:>16} "
            f"{pct:>6} {_ratio(r['vs_numpy']):>9} {_ratio(r['vs_torch']):>9}")


def _peaks_line(peaks: dict) -> str:
    return (f"machine: {peaks['cpu']}, {peaks['threads']} threads; FMA peak {peaks['fma_peak_gflops']:.0f} GFLOP/s, "
            f"STREAM triad {peaks['triad_gbytes_per_s']:.1f} GB/s, ridge point "
            f"{peaks['fma_peak_gflops'] / peaks['triad_gbytes_per_s']:.1f} flop/byte")


def _import_torch():
    try:
        import torch
    except ImportError:  # PyTorch is an optional comparison
        return None
    return torch


def _versions(torch) -> dict:
    import numba
    return {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "torch": None if torch is None else torch.__version__}


def run(ops=None, backends=None, shapes=(), quick: bool = False, out=None) -> dict:
    """Time every case on every contender; return the report (the JSON document).

    ops: op names of ``OPS`` to keep (None: all). backends: names of ``kernels.BACKENDS``
    (None: every usable one but cuda). shapes: ``"OP:DIMS"`` strings (``parse_shape``) run
    instead of the default shapes. quick: a few ms per contender, for smoke tests. out: a text
    stream that gets the machine line and the table as rows are measured (None: silent).

    Returns ``{"machine": machine_peaks(), "versions": {...}, "quick": bool, "records": [...]}``
    with one record per (case, contender): op, shape, backend (a backend name, ``plain-numpy``
    or ``torch``), median_s, min_s, calls, flops, bytes, intensity (flop/byte), gflops, gbytes_per_s,
    bound, roofline_gflops, pct_roofline, baseline, vs_numpy, vs_torch (see the module
    docstring). Raises ValueError for an unknown op or backend, an unusable backend, a bad shape
    or nothing left to run, before anything is timed.
    """
    unknown = sorted(set(ops or ()) - set(OPS))
    if unknown:
        raise ValueError(f"unknown op {', '.join(unknown)}; expected any of {', '.join(OPS)}")
    if backends is None:
        backends = [b for b in kernels.backends() if b != "cuda"]
    for be in backends:
        if be not in kernels.BACKENDS or not kernels.is_usable(be):
            raise ValueError(f"backend {be!r} is not usable here; usable: {', '.join(kernels.backends())}")
    backends = list(dict.fromkeys(backends))
    specs = [parse_shape(s) for s in shapes] or [(op, d) for op, spec in OPS.items() for d in spec.defaults]
    specs = [(op, d) for op, d in specs if not ops or op in ops]
    if not specs:
        raise ValueError(f"nothing to run: no --shape of the ops {', '.join(ops)}")

    def say(line):
        if out is not None:
            print(line, file=out, flush=True)

    peaks = machine_peaks(quick)
    torch = _import_torch()
    say(_peaks_line(peaks))
    say("rate: GB/s for memory-bound cases, GFLOP/s for compute-bound ones; %roof: of min(peak, intensity x "
        "bandwidth); vs numpy/torch: their median time over this row's")
    say(_COLUMNS)
    records = []
    for op, dims in specs:
        case = build_case(op, dims)
        times = {}
        for label, call, sync in _contenders(case, backends, torch):
            if not quick:
                time.sleep(SETTLE_S)
            times[label] = _median_time(call, sync, quick)
        rows = _records(case, times, peaks)
        for r in rows:
            say(format_row(r))
        records += rows
    return {"machine": peaks, "versions": _versions(torch), "quick": bool(quick), "records": records}


def roofline(report: dict, path) -> None:
    """Draw ``report`` (as ``run`` returns it) as a log-log roofline chart into the PNG ``path``.

    x: arithmetic intensity in flop/byte; y: GFLOP/s. The ceilings are the measured bandwidth
    slope and the FMA peak (Williams, Waterman & Patterson, CACM 2009); each record is a point,
    coloured by contender, and each case is labelled once beside its best point.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    peak, bandwidth = report["machine"]["fma_peak_gflops"], report["machine"]["triad_gbytes_per_s"]
    records = report["records"]
    ridge = peak / bandwidth
    xs = [r["intensity"] for r in records] + [ridge]
    grid = np.geomspace(min(xs) / 3, max(xs) * 3, 256)
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    FigureCanvasAgg(fig)  # Agg renders off-screen; pyplot's global state is left alone
    ax = fig.add_subplot()
    slope, flat = grid[grid <= ridge], grid[grid >= ridge]
    ax.loglog(np.append(slope, ridge), bandwidth * np.append(slope, ridge), color="black", linestyle="--",
              label=f"STREAM triad {bandwidth:.1f} GB/s")
    ax.loglog(np.insert(flat, 0, ridge), np.full(len(flat) + 1, peak), color="black",
              label=f"FMA peak {peak:.0f} GFLOP/s")
    labels = list(dict.fromkeys(r["backend"] for r in records))
    markers = "osD^vP*X<>"
    for i, label in enumerate(labels):
        mine = [r for r in records if r["backend"] == label]
        ax.scatter([r["intensity"] for r in mine], [r["gflops"] for r in mine], s=28, marker=markers[i % len(markers)],
                   label=label, alpha=0.85, zorder=3)
    best = {}
    for r in records:
        key = (r["op"], r["shape"])
        if key not in best or r["gflops"] > best[key]["gflops"]:
            best[key] = r
    for (op, shape), r in best.items():
        ax.annotate(f"{op} {shape}", (r["intensity"], r["gflops"]), xytext=(4, 3), textcoords="offset points",
                    fontsize=6.5)
    ax.set_xlabel("arithmetic intensity (flop/byte)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"pynn kernels on {report['machine']['cpu']}, {report['machine']['threads']} threads "
                 "(roofline: Williams, Waterman & Patterson 2009)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)


def command(args) -> int:
    """``pynn bench``: run, print the table, write ``--json`` and ``--png``; returns 0."""
    start = time.perf_counter()
    report = run(args.ops, args.backends, args.shapes, args.quick, out=sys.stdout)
    for path in (args.json, args.png):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    roofline(report, args.png)
    print(f"wrote {args.json} and {args.png} in {time.perf_counter() - start:.0f} s")
    return 0
