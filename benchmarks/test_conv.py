"""2-D convolution: every CPU backend beside PyTorch on the two convolutions of the CNN
(conv32-pool-conv64-pool-128-10) at batch 64, forward alone and forward + backward (the input,
weight and bias gradients, all three on every contender)."""
import numpy as np
import pytest

import kernels
from benchmarks.conftest import CPU_BACKENDS, record, torch

# name -> (x shape, output channels); 3x3 kernels, padding 1, stride 1.
SHAPES = {
    "conv1 64x1x28x28->32": ((64, 1, 28, 28), 32),
    "conv2 64x32x14x14->64": ((64, 32, 14, 14), 64),
}
COMPARED = CPU_BACKENDS + (["torch"] if torch is not None else [])


def _operands(rng, name):
    (n, c_in, h, w), c_out = SHAPES[name]
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    weight = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32)
    g = rng.standard_normal((n, c_out, h, w)).astype(np.float32)
    return x, weight, bias, g, 2.0 * n * c_out * h * w * c_in * 9


def _ours(backend, x, weight, bias, g, backward):
    y = kernels.conv2d(x, weight, bias, padding=1, backend=backend)
    if backward:
        kernels.conv2d_backward(g, x, weight, padding=1, backend=backend)
    return y


def _torch(x, weight, bias, g, backward):
    F = torch.nn.functional
    tx, tw, tb = (torch.from_numpy(v).requires_grad_(backward) for v in (x, weight, bias))
    tg = torch.from_numpy(g)

    def run():
        y = F.conv2d(tx, tw, tb, padding=1)
        if backward:
            torch.autograd.grad(y, (tx, tw, tb), tg)
        return y

    return run


def _bench(benchmark, rng, backend, name, backward):
    x, weight, bias, g, flops = _operands(rng, name)
    kind = "forward+backward" if backward else "forward"
    record(benchmark, f"conv2d {kind} {name}", flops=flops * (3 if backward else 1))
    if backend == "torch":
        benchmark.pedantic(_torch(x, weight, bias, g, backward), rounds=20, warmup_rounds=2)
    else:
        _ours(backend, x, weight, bias, g, backward)  # compile outside timing
        benchmark.pedantic(_ours, (backend, x, weight, bias, g, backward), rounds=20, warmup_rounds=2)


@pytest.mark.parametrize("backend", COMPARED)
@pytest.mark.parametrize("name", SHAPES)
def test_conv2d_forward(benchmark, rng, backend, name):
    _bench(benchmark, rng, backend, name, backward=False)


@pytest.mark.parametrize("backend", COMPARED)
@pytest.mark.parametrize("name", SHAPES)
def test_conv2d_forward_backward(benchmark, rng, backend, name):
    _bench(benchmark, rng, backend, name, backward=True)
