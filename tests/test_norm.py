"""Batch normalisation: every backend against the NumPy reference (outputs, saved statistics,
updated running statistics, gradients), the reference against PyTorch in both modes, the
backward against finite differences, large means without cancellation, results independent of
the thread count, device arrays on the cuda backend, and bad calls against clear errors.

Tolerances: float32 backends against the float64 reference use support's RTOL/ATOL, with ATOL
scaled by the largest ``weight * invstd`` since y and grad_x are proportional to it; the float64
reference against float64 PyTorch agrees to 1e-10; central differences (eps 1e-6) in float64 to
1e-6 / 1e-8.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from tests.support import ATOL, BACKENDS, RTOL, check_backends, f32, host, numeric_grad, sizes, to64, torch_or_skip


@pytest.fixture
def few_threads(monkeypatch):
    """Small CUDA blocks, so the simulator's small arrays span several blocks and each thread of
    a channel's reduction strides over several values. ``_BLOCK`` sizes shared arrays, a
    compile-time constant on a real GPU, so it is lowered on the simulator only."""
    if "cuda" in BACKENDS:
        from numba import config

        from kernels.numba_cuda import _launch
        from kernels.numba_cuda import norm as cuda_norm

        monkeypatch.setattr(_launch, "THREADS", 16)
        if config.ENABLE_CUDASIM:
            monkeypatch.setattr(cuda_norm, "_BLOCK", 16)


def _shape(data, backend):
    """A 2-, 3- or 4-D shape of odd and even sizes, at most a few hundred elements on the simulator."""
    budget = 256 if backend == "cuda" else 4096
    shape = []
    for _ in range(data.draw(st.sampled_from([2, 3, 4]))):
        left = budget // math.prod(shape)
        shape.append(data.draw(sizes(backend).filter(lambda s, left=left: s <= left)))
    return tuple(shape)


def _inputs(rng, shape, with_weight, with_bias, with_running):
    """x with a different mean and spread per channel; weight, bias, running stats or None."""
    c = shape[1]
    per_channel = (1, c) + (1,) * (len(shape) - 2)
    x = (f32(rng, *shape) * rng.uniform(0.5, 3.0, c).reshape(per_channel)
         + rng.uniform(-4.0, 4.0, c).reshape(per_channel)).astype(np.float32)
    w = f32(rng, c) if with_weight else None
    b = f32(rng, c) if with_bias else None
    rm = f32(rng, c) if with_running else None
    rv = (np.abs(f32(rng, c)) + 0.5).astype(np.float32) if with_running else None
    return x, w, b, rm, rv


def _copy(v):
    return None if v is None else v.copy()


def _check(backend, shape, training, with_weight, with_bias, with_running, seed):
    """One configuration on ``backend`` against the float64 reference, forward and backward."""
    rng = np.random.default_rng(seed)
    x, w, b, rm, rv = _inputs(rng, shape, with_weight, with_bias, with_running)
    if training and x.size == shape[1]:
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            kernels.batch_norm(x, rm, rv, w, b, True, backend=backend)
        return
    got_rm, got_rv = _copy(rm), _copy(rv)
    y, mean, invstd = kernels.batch_norm(x, got_rm, got_rv, w, b, training, momentum=0.3, backend=backend)
    want_rm, want_rv = to64(rm), to64(rv)
    want = kernels.batch_norm(to64(x), want_rm, want_rv, to64(w), to64(b), training, momentum=0.3, backend="numpy")
    scale = max(1.0, float(np.max(want[2] * (1.0 if w is None else np.abs(w)))))
    tol = {"rtol": RTOL, "atol": ATOL * scale}
    for got, ref in zip((y, mean, invstd), want):
        got = host(got)
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, **tol)
    if with_running:
        np.testing.assert_allclose(got_rm, want_rm, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(got_rv, want_rv, rtol=RTOL, atol=ATOL)
    # The backward gets the same float32 saved statistics on every backend.
    _, save_mean, save_invstd = kernels.batch_norm(x, _copy(rm), _copy(rv), w, b, training, backend="numpy")
    g = f32(rng, *shape)
    check_backends(kernels.batch_norm_backward, (g, x, w, save_mean, save_invstd), backend, training=training, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_reference(backend, few_threads):
    @settings(max_examples=6 if backend == "cuda" else 25)
    @given(data=st.data())
    def body(data):
        training = data.draw(st.booleans(), label="training")
        with_running = data.draw(st.booleans(), label="running stats") or not training
        _check(backend, _shape(data, backend), training, data.draw(st.booleans(), label="weight"),
               data.draw(st.booleans(), label="bias"), with_running, data.draw(st.integers(0, 2**32 - 1)))

    body()


# Batch 1 with spatial size > 1; (N, C) with more columns than one CPU column block (64);
# (N, C, 1); channels longer than a 128-thread CUDA block (189 values).
FIXED = [(1, 3, 4, 5), (1, 2, 7), (5, 97), (3, 70, 1), (3, 2, 7, 9)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", FIXED)
def test_fixed_shapes_match_reference(backend, shape, few_threads):
    if backend == "cuda" and shape[1] > 8:
        pytest.skip("too many channels for the simulator; the hypothesis test covers the cuda backend")
    for training in (True, False):
        _check(backend, shape, training, True, True, True, seed=sum(shape))
    _check(backend, shape, True, False, False, False, seed=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_variance_does_not_cancel_for_large_means(backend, few_threads):
    # E[x^2] - E[x]^2 in float32 loses the variance here: x^2 ~ 1e6 has an ulp of 0.06.
    rng = np.random.default_rng(12)
    shape = (2, 3, 4, 5) if backend == "cuda" else (8, 3, 16, 16)
    x = (1e3 + f32(rng, *shape)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y, mean, invstd = (host(v) for v in kernels.batch_norm(x, rm, rv, training=True, backend=backend))
    rm64, rv64 = np.zeros(3), np.ones(3)
    want_y, want_mean, want_invstd = kernels.batch_norm(to64(x), rm64, rv64, training=True, backend="numpy")
    np.testing.assert_allclose(invstd, want_invstd, rtol=1e-5)
    np.testing.assert_allclose(rv, rv64, rtol=1e-5)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-7)
    # A float32 mean near 1000 is itself only good to half an ulp, 3e-5.
    np.testing.assert_allclose(y, want_y, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in ("numba", "c")])
def test_results_do_not_depend_on_threads(backend):
    import numba

    rng = np.random.default_rng(13)
    x, w, b, _, _ = _inputs(rng, (16, 8, 20, 20), True, True, False)
    g = f32(rng, *x.shape)

    def run():
        y, mean, invstd = kernels.batch_norm(x, None, None, w, b, True, backend=backend)
        return (y, mean, invstd, *kernels.batch_norm_backward(g, x, w, mean, invstd, backend=backend))

    first = run()
    threads = numba.get_num_threads()
    # Numba runs the repeat on one thread; C's OpenMP pool is sized at start-up, so there it is a plain repeat.
    numba.set_num_threads(1)
    try:
        second = run()
    finally:
        numba.set_num_threads(threads)
    for u, v in zip(first, second):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("shape", [(6, 4), (3, 5, 7), (2, 3, 4, 5), (1, 3, 2, 3)])
@pytest.mark.parametrize("training,running", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("affine", [True, False])
def test_reference_equals_torch(shape, training, running, affine):
    torch = torch_or_skip()
    rng = np.random.default_rng(len(shape))
    x, w, b, rm, rv = (to64(v) for v in _inputs(rng, shape, affine, affine, running))
    g = rng.standard_normal(shape)
    tx = torch.tensor(x, requires_grad=True)
    tw, tb = (None if v is None else torch.tensor(v, requires_grad=True) for v in (w, b))
    trm, trv = (None if v is None else torch.tensor(v) for v in (rm, rv))
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training, 0.3, 1e-3)
    ty.backward(torch.tensor(g))
    y, mean, invstd = kernels.batch_norm(x, rm, rv, w, b, training, 0.3, 1e-3, backend="numpy")
    grads = kernels.batch_norm_backward(g, x, w, mean, invstd, training=training, backend="numpy")
    theirs = [ty.detach(), trm, trv, tx.grad] + [None if t is None else t.grad for t in (tw, tb)]
    for ours, want in zip((y, rm, rv, *grads), theirs):
        if want is None:
            assert ours is None
            continue
        np.testing.assert_allclose(ours, want.numpy(), rtol=1e-10, atol=1e-12)
    if training:
        _, t_mean, t_invstd = torch.native_batch_norm(torch.tensor(x), None, None, None, None, True, 0.3, 1e-3)
        np.testing.assert_allclose(mean, t_mean.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(invstd, t_invstd.numpy(), rtol=1e-10)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_backward_equals_finite_differences(shape, training, affine):
    rng = np.random.default_rng(14)
    x, w, b, rm, rv = (to64(v) for v in _inputs(rng, shape, affine, affine, not training))
    weights = rng.standard_normal(shape)  # a fixed linear functional of y makes the loss scalar

    def loss(x_, w_, b_):
        return float((kernels.batch_norm(x_, rm, rv, w_, b_, training, backend="numpy")[0] * weights).sum())

    _, mean, invstd = kernels.batch_norm(x, rm, rv, w, b, training, backend="numpy")
    gx, gw, gb = kernels.batch_norm_backward(weights, x, w, mean, invstd, training=training, backend="numpy")
    np.testing.assert_allclose(gx, numeric_grad(lambda v: loss(v, w, b), x), rtol=1e-6, atol=1e-8)
    if affine:
        np.testing.assert_allclose(gw, numeric_grad(lambda v: loss(x, v, b), w), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(gb, numeric_grad(lambda v: loss(x, w, v), b), rtol=1e-6, atol=1e-8)
    else:
        assert gw is None and gb is None


def test_cuda_device_arrays_stay_on_device(few_threads):
    if "cuda" not in BACKENDS:
        pytest.skip("no cuda backend")
    from numba import cuda

    rng = np.random.default_rng(15)
    x, w, b, rm, rv = _inputs(rng, (3, 2, 5), True, True, True)
    d_rm, d_rv = cuda.to_device(rm), cuda.to_device(rv)
    d_x, d_w, d_b = (cuda.to_device(v) for v in (x, w, b))
    y, mean, invstd = kernels.batch_norm(d_x, d_rm, d_rv, d_w, d_b, True)  # device input picks cuda
    assert not any(isinstance(v, np.ndarray) for v in (y, mean, invstd))
    want_rm, want_rv = rm.copy(), rv.copy()
    want = kernels.batch_norm(x, want_rm, want_rv, w, b, True, backend="numpy")
    for got, ref in zip((y, mean, invstd, d_rm, d_rv), (*want, want_rm, want_rv)):
        np.testing.assert_allclose(got.copy_to_host(), ref, rtol=RTOL, atol=ATOL)
    grads = kernels.batch_norm_backward(cuda.to_device(x), d_x, d_w, mean, invstd)
    assert not any(isinstance(v, np.ndarray) for v in grads)
    want_grads = kernels.batch_norm_backward(x, x, w, *want[1:], backend="numpy")
    for got, ref in zip(grads, want_grads):
        np.testing.assert_allclose(got.copy_to_host(), ref, rtol=RTOL, atol=ATOL)
    # Device x with host running statistics: those are updated in place on the host.
    host_rm, host_rv = rm.copy(), rv.copy()
    kernels.batch_norm(d_x, host_rm, host_rv, training=True)
    kernels.batch_norm(x, rm, rv, training=True, backend="numpy")
    np.testing.assert_allclose(host_rm, rm, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(host_rv, rv, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_calls_raise_clear_errors(backend):
    x = np.ones((4, 3, 2), np.float32)
    c3 = np.ones(3, np.float32)
    rm, rv = c3.copy(), c3.copy()

    def bn(*args, **kwargs):
        return kernels.batch_norm(*args, backend=backend, **kwargs)

    with pytest.raises(ValueError, match="at least 2 dimensions"):
        bn(np.ones(4, np.float32), training=True)
    with pytest.raises(TypeError, match="x must have dtype"):
        bn(x.astype(np.int32), rm, rv)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        bn(x.tolist(), rm, rv)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        bn(np.ones((4, 3, 4), np.float32)[:, :, ::2], rm, rv)
    with pytest.raises(ValueError, match="x is empty"):
        bn(np.ones((0, 3), np.float32), rm, rv)
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\), got \(4,\)"):
        bn(x, rm, rv, np.ones(4, np.float32))
    with pytest.raises(TypeError, match=r"running_var (has|must have) dtype.*float64"):
        bn(x, rm, np.ones(3), training=True)
    with pytest.raises(ValueError, match="given together"):
        bn(x, rm, None, training=True)
    with pytest.raises(ValueError, match="required when training=False"):
        bn(x)
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 3\)"):
        bn(np.ones((1, 3), np.float32), training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(np.ones((1, 3, 1, 1), np.float32), rm, rv, training=True)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0.0, 1.0\], got 1.5"):
        bn(x, rm, rv, training=True, momentum=1.5)
    with pytest.raises(TypeError, match="momentum must be a real number"):
        bn(x, rm, rv, training=True, momentum="0.1")
    with pytest.raises(ValueError, match="eps must lie"):
        bn(x, rm, rv, eps=-1e-5)
    frozen = rm.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean is read-only"):
        bn(x, frozen, rv, training=True)
    np.testing.assert_array_equal(rm, c3)  # nothing ran before the errors
    np.testing.assert_array_equal(rv, c3)

    def bwd(*args, **kwargs):
        return kernels.batch_norm_backward(*args, backend=backend, **kwargs)

    with pytest.raises(ValueError, match=r"grad_output must have shape \(4, 3, 2\)"):
        bwd(np.ones((4, 3), np.float32), x, None, c3, c3)
    with pytest.raises(TypeError, match=r"grad_output (has|must have) dtype.*float64"):
        bwd(x.astype(np.float64), x, None, c3, c3)
    with pytest.raises(ValueError, match="save_mean is required"):
        bwd(x, x, None, None, c3)
    with pytest.raises(ValueError, match=r"save_invstd must have shape \(3,\)"):
        bwd(x, x, c3, c3, np.ones(2, np.float32))
    if backend != "numpy":
        with pytest.raises(TypeError, match="float32"):
            bn(x.astype(np.float64), rm.astype(np.float64), rv.astype(np.float64))


def test_numpy_keeps_float64_and_eval_saves_running_stats():
    x = np.linspace(-3, 3, 24).reshape(2, 3, 4)
    rm, rv = np.array([0.5, -1.0, 2.0]), np.array([1.0, 4.0, 0.25])
    y, mean, invstd = kernels.batch_norm(x, rm, rv, eps=0.0, backend="numpy")
    assert y.dtype == mean.dtype == invstd.dtype == np.float64
    np.testing.assert_array_equal(mean, rm)
    np.testing.assert_allclose(invstd, [1.0, 0.5, 2.0], rtol=1e-15)
    assert mean is not rm
