"""Activations, losses, dropout and optimizer updates on the MLP's shapes (batch 64,
784-256-128-10): every CPU backend beside PyTorch, in one run. Throughput is in GB/s of the
arrays each op must read and write."""
import numpy as np
import pytest

import kernels
from benchmarks.conftest import CPU_BACKENDS, record, torch

F = torch.nn.functional if torch is not None else None
HIDDEN = (64, 256)
LOGITS = (64, 10)
N_PARAMS = 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10  # the MLP's flat parameter buffer


def _arrays(rng, shape, count):
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]


def _labels(rng):
    return rng.integers(0, LOGITS[1], LOGITS[0])


# name -> (shape, number of float arrays touched, ours(arrays, backend), torch's(tensors) or None)
CASES = {
    "relu": (HIDDEN, 2, lambda a, be: kernels.relu(a[0], backend=be), lambda t: F.relu(t[0])),
    "relu_backward": (HIDDEN, 3, lambda a, be: kernels.relu_backward(a[0], a[1], backend=be), None),
    "gelu": (HIDDEN, 2, lambda a, be: kernels.gelu(a[0], backend=be), lambda t: F.gelu(t[0])),
    "sigmoid": (HIDDEN, 2, lambda a, be: kernels.sigmoid(a[0], backend=be), lambda t: torch.sigmoid(t[0])),
    "tanh": (HIDDEN, 2, lambda a, be: kernels.tanh(a[0], backend=be), lambda t: torch.tanh(t[0])),
    "log_softmax": (HIDDEN, 2, lambda a, be: kernels.log_softmax(a[0], backend=be), lambda t: F.log_softmax(t[0], -1)),
    "dropout": (HIDDEN, 2, lambda a, be: kernels.dropout(a[0], 0.2, seed=1, backend=be), lambda t: F.dropout(t[0], 0.2)),
    "mse_loss": (HIDDEN, 2, lambda a, be: kernels.mse_loss(a[0], a[1], backend=be), lambda t: F.mse_loss(t[0], t[1])),
    "adam_step": (
        (N_PARAMS,), 4,
        lambda a, be: kernels.adam_step(a[0], a[1], a[2], np.abs(a[3]), step=10, lr=1e-3, backend=be),
        None,
    ),
}


@pytest.mark.parametrize("backend", CPU_BACKENDS + (["torch"] if torch is not None else []))
@pytest.mark.parametrize("name", list(CASES))
def test_op(benchmark, rng, name, backend):
    shape, count, ours, theirs = CASES[name]
    arrays = _arrays(rng, shape, count if name != "adam_step" else 4)
    record(benchmark, f"{name} {shape}", nbytes=4.0 * np.prod(shape) * count)
    if backend == "torch":
        if theirs is None:
            pytest.skip(f"no single PyTorch op for {name}")
        tensors = [torch.from_numpy(a) for a in arrays]
        benchmark(theirs, tensors)
        return
    ours(arrays, backend)  # compile outside timing
    benchmark(ours, arrays, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS + (["torch"] if torch is not None else []))
def test_cross_entropy_forward_backward(benchmark, rng, backend):
    (logits,) = _arrays(rng, LOGITS, 1)
    labels = _labels(rng)
    record(benchmark, f"cross_entropy fwd+bwd {LOGITS}", nbytes=4.0 * 2 * logits.size)
    if backend == "torch":
        t = torch.from_numpy(logits).requires_grad_()
        target = torch.from_numpy(labels)

        def step():
            t.grad = None
            F.cross_entropy(t, target).backward()

        benchmark(step)
        return

    def run():
        kernels.cross_entropy(logits, labels, backend=backend)
        return kernels.cross_entropy_backward(1.0, logits, labels, backend=backend)

    run()
    benchmark(run)
