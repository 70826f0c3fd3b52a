"""The GEMM study: every version of ``kernels.numba_cpu.gemm``, the public numba and c
``matmul``, NumPy (OpenBLAS) and PyTorch side by side, in GFLOP/s, on squares, the three GEMMs
of each layer of the MLP 784-256-128-10 at batch 64, and the conv layers' im2col-shaped
products (the second conv of the CNN, and a 3x3 first conv with K = 9).

Two threads is the default; for one thread run a separate process with
``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1``. Slow early versions are kept
off the sizes where one call would take seconds.
"""
import time

import numpy as np
import pytest

import kernels
from benchmarks.conftest import CPU_BACKENDS, record, torch
from kernels.numba_cpu import gemm as G

SQUARES = [256, 512, 1024, 2048]
# (M, K, N, trans_a, trans_b): forward x @ W.T, grad_x = dy @ W, grad_W = dy.T @ x.
MLP = []
for fan_in, fan_out in ((784, 256), (256, 128), (128, 10)):
    MLP += [(64, fan_in, fan_out, False, True), (64, fan_out, fan_in, False, False), (fan_out, 64, fan_in, True, False)]
CONV = [(64, 288, 12544, False, False), (32, 9, 50176, False, False)]
SHAPES = [(n, n, n, False, False) for n in SQUARES] + MLP + CONV
# The largest product (2 m n k) each version is run on.
MAX_FLOPS = {"v1_naive": 1e8, "v2_loop_order": 3e9, "v3_register_blocked": 2e10}
CONTENDERS = list(G.VERSIONS) + [f"matmul[{b}]" for b in CPU_BACKENDS] + (["torch"] if torch is not None else [])


@pytest.fixture(autouse=True)
def _idle_pools():
    """OpenBLAS workers spin for about 0.1 s after a call and would slow whatever runs next."""
    time.sleep(0.3)


def _id(shape):
    m, k, n, ta, tb = shape
    return f"{m}x{k}x{n}" + ("-tA" if ta else "") + ("-tB" if tb else "")


def _call(contender, a, b, trans_a, trans_b):
    """A no-argument callable running one product, after a first call that compiles."""
    if contender == "torch":
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        ta, tb = (ta.T if trans_a else ta), (tb.T if trans_b else tb)
        return lambda: torch.matmul(ta, tb)
    if contender.startswith("matmul["):
        backend = contender[7:-1]
        if backend == "numpy":  # NumPy's own BLAS call, without the public checks
            x, y = (a.T if trans_a else a), (b.T if trans_b else b)
            return lambda: x @ y
        fn = kernels.matmul
        fn(a, b, trans_a=trans_a, trans_b=trans_b, backend=backend)
        return lambda: fn(a, b, trans_a=trans_a, trans_b=trans_b, backend=backend)
    fn = G.VERSIONS[contender]
    fn(a, b, trans_a, trans_b)
    return lambda: fn(a, b, trans_a, trans_b)


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=[_id(s) for s in SHAPES])
def test_gemm(benchmark, rng, shape, contender):
    m, k, n, trans_a, trans_b = shape
    flops = 2.0 * m * n * k
    if flops > MAX_FLOPS.get(contender, np.inf):
        pytest.skip(f"{contender} would take seconds per call at {_id(shape)}")
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    record(benchmark, f"gemm {_id(shape)}", flops=flops)
    benchmark.pedantic(_call(contender, a, b, trans_a, trans_b), rounds=max(5, min(200, int(3e9 / flops))),
                       warmup_rounds=1)
