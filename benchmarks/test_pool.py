"""Pooling on the CNN's shapes: max_pool2d(2) forward (with indices, as training needs them)
and backward on the outputs of its two convolutions, and global average pooling on (64, 64, 7, 7);
every CPU backend beside PyTorch. Throughput is in GB/s of the arrays each op reads and writes
(float32 tensors, int64 indices)."""
import numpy as np
import pytest

import kernels
from benchmarks.conftest import CPU_BACKENDS, record, torch

COMPARED = CPU_BACKENDS + (["torch"] if torch is not None else [])
CNN = [(64, 32, 28, 28), (64, 64, 14, 14)]
GLOBAL = (64, 64, 7, 7)


def _input(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def _timed(benchmark, fn, *args, **kwargs):
    fn(*args, **kwargs)  # compile outside timing
    benchmark(fn, *args, **kwargs)


@pytest.mark.parametrize("backend", COMPARED)
@pytest.mark.parametrize("shape", CNN, ids=str)
def test_max_pool_forward(benchmark, rng, backend, shape):
    x = _input(rng, shape)
    out = x.size // 4
    record(benchmark, f"max_pool2d(2) forward {shape}", nbytes=4.0 * x.size + 12.0 * out)
    if backend == "torch":
        _timed(benchmark, torch.nn.functional.max_pool2d, torch.from_numpy(x), 2, return_indices=True)
    else:
        _timed(benchmark, kernels.max_pool2d, x, 2, return_indices=True, backend=backend)


@pytest.mark.parametrize("backend", COMPARED)
@pytest.mark.parametrize("shape", CNN, ids=str)
def test_max_pool_backward(benchmark, rng, backend, shape):
    x = _input(rng, shape)
    y, idx = kernels.max_pool2d(x, 2, return_indices=True, backend="numpy")
    g = _input(rng, y.shape)
    record(benchmark, f"max_pool2d(2) backward {shape}", nbytes=12.0 * g.size + 4.0 * x.size)
    if backend == "torch":
        t_g, t_x, t_idx = torch.from_numpy(g), torch.from_numpy(x), torch.from_numpy(idx)
        op = torch.ops.aten.max_pool2d_with_indices_backward
        _timed(benchmark, op, t_g, t_x, [2, 2], [2, 2], [0, 0], [1, 1], False, t_idx)
    else:
        _timed(benchmark, kernels.max_pool2d_backward, g, idx, shape, backend=backend)


@pytest.mark.parametrize("backend", COMPARED)
def test_global_avg_pool_forward(benchmark, rng, backend):
    x = _input(rng, GLOBAL)
    record(benchmark, f"adaptive_avg_pool2d(1) forward {GLOBAL}", nbytes=4.0 * (x.size + x.size // 49))
    if backend == "torch":
        _timed(benchmark, torch.nn.functional.adaptive_avg_pool2d, torch.from_numpy(x), 1)
    else:
        _timed(benchmark, kernels.adaptive_avg_pool2d, x, 1, backend=backend)


@pytest.mark.parametrize("backend", COMPARED)
def test_global_avg_pool_backward(benchmark, rng, backend):
    x = _input(rng, GLOBAL)
    g = _input(rng, GLOBAL[:2] + (1, 1))
    record(benchmark, f"adaptive_avg_pool2d(1) backward {GLOBAL}", nbytes=4.0 * (x.size + g.size))
    if backend == "torch":
        _timed(benchmark, torch.ops.aten._adaptive_avg_pool2d_backward, torch.from_numpy(g), torch.from_numpy(x))
    else:
        _timed(benchmark, kernels.adaptive_avg_pool2d_backward, g, GLOBAL, backend=backend)
