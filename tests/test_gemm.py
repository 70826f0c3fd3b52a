"""The GEMM study versions of ``kernels.numba_cpu.gemm`` and the C kernel, against NumPy in
float64, on shapes around every blocking size, all four transpose cases, one and two threads.

Tolerance: float32 products of standard normals summed over k terms, against the float64
product: rtol 1e-4 plus atol 1e-5 * k (errors grow with the reduction length; a wrong index
gives errors of order one).
"""
import re

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.numba_cpu import gemm as G
from tests.support import BACKENDS

# 1, primes, and both sides of MR (5, 6), NR (16), MC (120, 240), the packing thresholds (96,
# 128, 256) and KC (256, 320).
SIZES = [1, 2, 5, 6, 7, 13, 16, 17, 31, 97, 119, 121, 127, 128, 129, 239, 241, 255, 257, 319, 321]
KERNELS = dict(G.VERSIONS)
if "c" in BACKENDS:
    from kernels.c.linear import matmul as c_matmul

    KERNELS["c"] = c_matmul


def _operands(rng, m, k, n, trans_a, trans_b):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    return a, b


def _check(fn, m, k, n, trans_a, trans_b, seed=0):
    a, b = _operands(np.random.default_rng(seed), m, k, n, trans_a, trans_b)
    a0, b0 = a.copy(), b.copy()
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    got = fn(a, b, trans_a, trans_b)
    assert got.dtype == np.float32 and got.shape == (m, n) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * k)
    assert np.array_equal(a, a0) and np.array_equal(b, b0)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Numba's thread count for the test (the C kernel's OpenMP pool is left as it is)."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(request.param, numba.config.NUMBA_NUM_THREADS))
    yield request.param
    numba.set_num_threads(before)


@pytest.mark.parametrize("name", list(KERNELS))
def test_every_version_matches_numpy_on_random_shapes(name, threads):
    fn = KERNELS[name]
    examples = 8 if name == "v1_naive" else 20

    @settings(max_examples=examples)
    @given(m=st.sampled_from(SIZES), k=st.sampled_from(SIZES), n=st.sampled_from(SIZES),
           trans_a=st.booleans(), trans_b=st.booleans())
    def check(m, k, n, trans_a, trans_b):
        _check(fn, m, k, n, trans_a, trans_b, seed=m * 10007 + k * 101 + n)

    check()


# Shapes that take each path of the final kernel: packed or in-place op(b), packed op(a),
# several K slices, tasks split by columns or by rows, the serial path for small products, and
# dot products for few rows of C (with x @ w^T; serial at batch 1, split over tasks when large).
PATHS = {
    "pack_b_and_a": (241, 321, 257),
    "in_place_b_several_k_slices": (64, 700, 100),
    "mlp_forward": (64, 784, 256),
    "split_rows": (300, 400, 10),
    "serial_small": (64, 128, 10),
    "degenerate_k": (32, 9, 1000),
    "dots_batch1": (1, 784, 256),
    "dots_tasks": (4, 4001, 301),
}


@pytest.mark.parametrize("name", ["v4_packed", "v5_simd"] + (["c"] if "c" in KERNELS else []))
@pytest.mark.parametrize("shape", list(PATHS.values()), ids=list(PATHS))
@pytest.mark.parametrize("trans_a", [False, True], ids=["a", "aT"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["b", "bT"])
def test_blocked_kernels_on_every_path(name, shape, trans_a, trans_b, threads):
    _check(KERNELS[name], *shape, trans_a, trans_b)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m", [130, 3])
def test_gemm_into_accumulates(trans_a, trans_b, m, threads):
    rng = np.random.default_rng(5)
    k, n = 650, 70
    a, b = _operands(rng, m, k, n, trans_a, trans_b)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    c = c0.copy()
    G.gemm_into(a, b, trans_a, trans_b, c, accumulate=True)
    want = c0 + (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-5 * k)


def test_transpose8_moves_every_element():
    src = np.arange(400, dtype=np.float32)
    dst = np.full(200, -1, np.float32)

    @numba.njit
    def run(src, dst):
        G._transpose8(src, 7, 23, dst, 3, 19)

    run(src, dst)
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    np.testing.assert_array_equal(dst[3 + rows * 19 + cols], src[7 + cols * 23 + rows])
    touched = np.zeros(200, bool)
    touched[3 + rows * 19 + cols] = True
    assert (dst[~touched] == -1).all()


def test_micro_kernel_compiles_to_vector_fma():
    """The 6x16 block is held in ymm registers and updated with packed FMAs (on AVX2 hosts)."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features().flatten()
    if "+fma" not in features or "+avx2" not in features:
        pytest.skip("the host CPU has no AVX2/FMA")

    @numba.njit(fastmath=True)
    def block(x, y, c):
        G._micro_6x16(x.size // 6, x, 0, 1, 6, 6, y, 0, 16, c, 0, 16, 16, True)

    rng = np.random.default_rng(6)
    x, y = rng.standard_normal(64 * 6).astype(np.float32), rng.standard_normal(64 * 16).astype(np.float32)
    c = np.zeros(6 * 16, np.float32)
    block(x, y, c)
    np.testing.assert_allclose(c.reshape(6, 16), x.reshape(64, 6).T @ y.reshape(64, 16), rtol=1e-4, atol=1e-4)
    asm = block.inspect_asm(block.signatures[0])
    assert len(re.findall(r"vfmadd\d{3}ps\s+%ymm", asm)) >= 12
