"""Dense products: every CPU backend beside NumPy's BLAS and PyTorch, on square matmuls and the
three GEMMs of each layer of the MLP 784-256-128-10 at batch 64."""
import numpy as np
import pytest

import kernels
from benchmarks.conftest import CPU_BACKENDS, record, torch

SQUARES = [128, 256, 512, 1024, 2048]
# (M, K, N, trans_a, trans_b) of forward, input-gradient and weight-gradient GEMMs, batch 64.
MLP = []
for fan_in, fan_out in ((784, 256), (256, 128), (128, 10)):
    MLP += [(64, fan_in, fan_out, False, True), (64, fan_out, fan_in, False, False), (fan_out, 64, fan_in, True, False)]
COMPARED = CPU_BACKENDS + (["torch"] if torch is not None else [])


def _operands(rng, m, k, n, trans_a, trans_b):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    return a, b


def _run(benchmark, backend, a, b, trans_a, trans_b, rounds):
    if backend == "torch":
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        ta, tb = (ta.T if trans_a else ta), (tb.T if trans_b else tb)
        benchmark.pedantic(torch.matmul, (ta, tb), rounds=rounds, warmup_rounds=1)
    else:
        kernels.matmul(a, b, trans_a=trans_a, trans_b=trans_b, backend=backend)  # compile outside timing
        benchmark.pedantic(
            kernels.matmul, (a, b), dict(trans_a=trans_a, trans_b=trans_b, backend=backend),
            rounds=rounds, warmup_rounds=1,
        )


@pytest.mark.parametrize("backend", COMPARED)
@pytest.mark.parametrize("n", SQUARES)
def test_matmul_square(benchmark, rng, backend, n):
    a, b = _operands(rng, n, n, n, False, False)
    record(benchmark, f"matmul {n}x{n}x{n}", flops=2.0 * n**3)
    _run(benchmark, backend, a, b, False, False, rounds=max(3, int(2e9 / n**3)))


@pytest.mark.parametrize("backend", COMPARED)
@pytest.mark.parametrize("shape", MLP, ids=lambda s: "{}x{}x{}{}{}".format(*s[:3], "-tA" if s[3] else "", "-tB" if s[4] else ""))
def test_matmul_mlp_shapes(benchmark, rng, backend, shape):
    m, k, n, ta, tb = shape
    a, b = _operands(rng, m, k, n, ta, tb)
    record(benchmark, f"matmul MLP {m}x{k}x{n} tA={ta} tB={tb}", flops=2.0 * m * n * k)
    _run(benchmark, backend, a, b, ta, tb, rounds=200)
