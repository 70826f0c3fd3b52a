"""Batch normalisation in training mode, forward (with the running-statistics update) and backward,
on the CNN's feature maps and a dense layer's activations at batch 64: every CPU backend beside
PyTorch, in one run. Throughput is in GB/s of the arrays each op must read and write: x and y
forward, grad_output, x and grad_x backward."""
import numpy as np
import pytest

import kernels
from benchmarks.conftest import CPU_BACKENDS, record, torch

SHAPES = [(64, 32, 28, 28), (64, 64, 14, 14), (64, 128)]
COMPARED = CPU_BACKENDS + (["torch"] if torch is not None else [])


def _operands(rng, shape):
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    return x, g, w, b, np.zeros(c, np.float32), np.ones(c, np.float32)


@pytest.mark.parametrize("backend", COMPARED)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_forward(benchmark, rng, backend, shape):
    x, _, w, b, rm, rv = _operands(rng, shape)
    record(benchmark, f"batch_norm fwd {shape}", nbytes=2.0 * x.nbytes)
    if backend == "torch":
        tx, tw, tb, trm, trv = (torch.from_numpy(v) for v in (x, w, b, rm, rv))
        benchmark(torch.nn.functional.batch_norm, tx, trm, trv, tw, tb, True)
        return
    kernels.batch_norm(x, rm, rv, w, b, True, backend=backend)  # compile outside timing
    benchmark(kernels.batch_norm, x, rm, rv, w, b, True, backend=backend)


@pytest.mark.parametrize("backend", COMPARED)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_backward(benchmark, rng, backend, shape):
    x, g, w, b, rm, rv = _operands(rng, shape)
    _, mean, invstd = kernels.batch_norm(x, rm, rv, w, b, True, backend="numpy")
    record(benchmark, f"batch_norm bwd {shape}", nbytes=3.0 * x.nbytes)
    if backend == "torch":
        tg, tx, tw, trm, trv, tmean, tinv = (torch.from_numpy(v) for v in (g, x, w, rm, rv, mean, invstd))
        # The single op autograd calls, so the comparison excludes graph bookkeeping.
        benchmark(torch.ops.aten.native_batch_norm_backward, tg, tx, tw, trm, trv, tmean, tinv, True, 1e-5,
                  [True, True, True])
        return
    kernels.batch_norm_backward(g, x, w, mean, invstd, backend=backend)
    benchmark(kernels.batch_norm_backward, g, x, w, mean, invstd, backend=backend)
