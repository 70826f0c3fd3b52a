"""Pooling: every backend against the NumPy reference (forward, indices, backward), the reference
against PyTorch (forward, indices and autograd gradients), the backward passes against finite
differences, NaN and tie rules, and bad calls against clear errors.

Max pooling selects values, so its outputs and indices must equal the reference exactly; sums
(average pooling, overlapping max-pool gradients) use support's RTOL/ATOL. Values are drawn on
a grid of halves so that windows hold ties.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from tests.support import BACKENDS, check_backends, host, numeric_grad, sizes, torch_or_skip

# The simulator runs a Python thread per element, and two planes of support's 32x32 would be
# thousands: CUDA stays at a few hundred output elements.
CUDA_SIZES = [1, 2, 3, 5, 8]


@pytest.fixture
def few_threads(monkeypatch):
    """Small CUDA blocks, so the simulator's small arrays still span several blocks."""
    if "cuda" in BACKENDS:
        from kernels.numba_cuda import _launch

        monkeypatch.setattr(_launch, "THREADS", 16)


def _examples(backend, body):
    settings(max_examples=6 if backend == "cuda" else 25)(given(data=st.data())(body))()


def _config(data, backend):
    """A random (x, window) pair: odd sizes, batch 1, kernels 1-3 (non-square too), strides
    1-3, padding up to half the kernel, an input at least as large as the padded window."""
    dims = st.sampled_from(CUDA_SIZES) if backend == "cuda" else sizes(backend)
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    window = (
        (kh, kw),
        (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))),
        (data.draw(st.integers(0, kh // 2)), data.draw(st.integers(0, kw // 2))),
    )
    n = data.draw(st.sampled_from([1, 2]))
    c = data.draw(st.sampled_from([1, 2] if backend == "cuda" else [1, 3]))
    h, w = max(data.draw(dims), kh), max(data.draw(dims), kw)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    return _grid(rng, n, c, h, w), window, rng


def _grid(rng, *shape):
    """float32 values on a grid of halves in [-2, 2]: windows hold ties."""
    return (rng.integers(-4, 5, shape) / 2).astype(np.float32)


def _max_equal(x, window, backend):
    """max_pool2d on ``backend`` gives exactly the reference's values and indices."""
    y, idx = (host(a) for a in kernels.max_pool2d(x, *window, return_indices=True, backend=backend))
    y_ref, idx_ref = kernels.max_pool2d(x.astype(np.float64), *window, return_indices=True, backend="numpy")
    assert y.dtype == np.float32 and idx.dtype == np.int64 and idx.shape == y.shape
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(host(kernels.max_pool2d(x, *window, backend=backend)), y_ref)
    return idx_ref


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool_matches_reference(backend, few_threads):
    def body(data):
        x, window, rng = _config(data, backend)
        if data.draw(st.booleans()):  # NaN and -inf anywhere, padded windows included
            x.reshape(-1)[rng.integers(0, x.size, 2)] = [np.nan, -np.inf]
        idx = _max_equal(x, window, backend)
        g = rng.standard_normal(idx.shape).astype(np.float32)
        check_backends(kernels.max_pool2d_backward, (g, idx, x.shape), backend)

    _examples(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_avg_pool_matches_reference(backend, few_threads):
    def body(data):
        x, window, rng = _config(data, backend)
        include = data.draw(st.booleans())
        check_backends(kernels.avg_pool2d, (x, *window), backend, count_include_pad=include)
        g = rng.standard_normal(kernels.avg_pool2d(x, *window, backend="numpy").shape).astype(np.float32)
        check_backends(kernels.avg_pool2d_backward, (g, x.shape, *window), backend, count_include_pad=include)

    _examples(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adaptive_avg_pool_matches_reference(backend, few_threads):
    def body(data):
        x, _, rng = _config(data, backend)
        check_backends(kernels.adaptive_avg_pool2d, (x, data.draw(st.sampled_from([1, (1, 1)]))), backend)
        g = rng.standard_normal((*x.shape[:2], 1, 1)).astype(np.float32)
        check_backends(kernels.adaptive_avg_pool2d_backward, (g, x.shape), backend)

    _examples(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 2, 7, 5), (2, 1, 28, 28)])
def test_max_pool_2x2_with_nan_and_infinities(backend, shape, few_threads):
    """The CNN's 2x2 stride-2 windows (the CPU backends' fast path), with ties, -inf and NaN in
    some planes (which those backends route to the general loop), odd sizes dropping a row."""
    if backend == "cuda" and shape[-1] == 28:
        pytest.skip("too large for the simulator")
    rng = np.random.default_rng(sum(shape))
    x = _grid(rng, *shape)
    flat = x.reshape(shape[0] * shape[1], -1)
    flat[0, :4] = np.nan  # a whole window of NaN: the last NaN wins
    flat[0, 5] = -np.inf
    flat[-1, ::3] = -np.inf
    if len(flat) > 2:
        flat[1, 1] = np.nan
    _max_equal(x, (2,), backend)
    _max_equal(x, (2, 2, 0), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlapping_windows_add_their_gradients(backend, few_threads):
    x = np.zeros((1, 2, 3, 3), np.float32)
    x[:, :, 1, 1] = 1.0  # the centre wins all nine 3x3 windows of stride 1 and padding 1
    y, idx = kernels.max_pool2d(x, 3, 1, 1, return_indices=True, backend=backend)
    assert (host(idx) == 4).all()
    g = np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3)
    gx = host(kernels.max_pool2d_backward(g, idx, x.shape, backend=backend))
    want = np.zeros_like(x)
    want[0, :, 1, 1] = g[0].sum(axis=(1, 2))
    np.testing.assert_allclose(gx, want, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_windows_of_minus_infinity_point_at_their_first_input_cell(backend):
    x = np.full((1, 1, 3, 4), -np.inf, np.float32)
    y, idx = (host(a) for a in kernels.max_pool2d(x, 3, 1, 1, return_indices=True, backend=backend))
    assert np.isneginf(y).all()
    np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1, 2], [0, 0, 1, 2], [4, 4, 5, 6]])


@settings(max_examples=30)
@given(data=st.data())
def test_reference_equals_torch(data):
    torch = torch_or_skip()
    F = torch.nn.functional
    x, (k, s, p), rng = _config(data, "numpy")
    x = x.astype(np.float64)
    if data.draw(st.booleans()):
        x.reshape(-1)[rng.integers(0, x.size, 2)] = np.nan
    t = torch.tensor(x, requires_grad=True)
    ty, tidx = F.max_pool2d(t, k, s, p, return_indices=True)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y, idx = kernels.max_pool2d(x, k, s, p, return_indices=True, backend="numpy")
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    gx = kernels.max_pool2d_backward(g, idx, x.shape, backend="numpy")
    np.testing.assert_allclose(gx, t.grad.numpy(), rtol=1e-12)

    x = np.nan_to_num(x)
    for include in (True, False):
        t = torch.tensor(x, requires_grad=True)
        ty = F.avg_pool2d(t, k, s, p, count_include_pad=include)
        ty.backward(torch.tensor(g))
        y = kernels.avg_pool2d(x, k, s, p, count_include_pad=include, backend="numpy")
        gx = kernels.avg_pool2d_backward(g, x.shape, k, s, p, count_include_pad=include, backend="numpy")
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gx, t.grad.numpy(), rtol=1e-12, atol=1e-14)

    t = torch.tensor(x, requires_grad=True)
    ty = F.adaptive_avg_pool2d(t, 1)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y = kernels.adaptive_avg_pool2d(x, 1, backend="numpy")
    gx = kernels.adaptive_avg_pool2d_backward(g, x.shape, backend="numpy")
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gx, t.grad.numpy(), rtol=1e-12)


def _fd_check(forward, backward, x, rng):
    """backward(w) equals the central-difference gradient of sum(forward(x) * w)."""
    w = rng.standard_normal(forward(x).shape)
    want = numeric_grad(lambda v: float((forward(v) * w).sum()), x)
    np.testing.assert_allclose(backward(w), want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("window", [((2, 2), None, 0), ((3, 2), (1, 2), (1, 1)), ((3, 3), 2, 1), (1, 1, 0)])
def test_backward_equals_finite_differences(window):
    rng = np.random.default_rng(12)
    shape = (2, 2, 5, 6)
    # distinct values at least 0.01 apart: an eps of 1e-6 never changes a window's maximum
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.01 + 0.001 * rng.random(shape)
    _, idx = kernels.max_pool2d(x, *window, return_indices=True, backend="numpy")
    _fd_check(lambda v: kernels.max_pool2d(v, *window, backend="numpy"),
              lambda w: kernels.max_pool2d_backward(w, idx, shape, backend="numpy"), x, rng)
    for include in (True, False):
        _fd_check(lambda v: kernels.avg_pool2d(v, *window, count_include_pad=include, backend="numpy"),
                  lambda w: kernels.avg_pool2d_backward(w, shape, *window, count_include_pad=include, backend="numpy"),
                  x, rng)
    _fd_check(lambda v: kernels.adaptive_avg_pool2d(v, 1, backend="numpy"),
              lambda w: kernels.adaptive_avg_pool2d_backward(w, shape, backend="numpy"), x, rng)


def test_cuda_device_arrays_stay_on_device():
    if "cuda" not in BACKENDS:
        pytest.skip("no cuda backend")
    from numba import cuda

    x = _grid(np.random.default_rng(13), 1, 2, 4, 5)
    d = cuda.to_device(x)
    y, idx = kernels.max_pool2d(d, 2, return_indices=True)  # device input picks the cuda backend
    assert not isinstance(y, np.ndarray) and not isinstance(idx, np.ndarray)
    idx_ref = _max_equal(x, (2,), "numpy")
    np.testing.assert_array_equal(idx.copy_to_host(), idx_ref)
    g = cuda.to_device(np.ones(y.shape, np.float32))
    gx = kernels.max_pool2d_backward(g, idx, x.shape)
    assert not isinstance(gx, np.ndarray)
    want = kernels.max_pool2d_backward(np.ones(y.shape), idx_ref, x.shape, backend="numpy")
    np.testing.assert_array_equal(gx.copy_to_host(), want)
    mean = kernels.adaptive_avg_pool2d(d, 1)
    np.testing.assert_allclose(mean.copy_to_host(), x.mean(axis=(2, 3), keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_calls_raise_clear_errors(backend):
    x = np.ones((2, 3, 6, 6), np.float32)
    g = np.ones((2, 3, 3, 3), np.float32)
    idx = np.zeros((2, 3, 3, 3), np.int64)
    with pytest.raises(ValueError, match=r"x must be 4-D, got shape \(3, 6, 6\)"):
        kernels.max_pool2d(x[0], 2, backend=backend)
    with pytest.raises(TypeError, match="x must have dtype"):
        kernels.avg_pool2d(x.astype(np.int32), 2, backend=backend)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        kernels.max_pool2d(np.ones((2, 3, 6, 12), np.float32)[..., ::2], 2, backend=backend)
    with pytest.raises(ValueError, match="x is empty"):
        kernels.adaptive_avg_pool2d(np.ones((0, 3, 6, 6), np.float32), 1, backend=backend)
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        kernels.max_pool2d(x, 2, 0, backend=backend)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        kernels.avg_pool2d(x, (2, 0), backend=backend)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        kernels.avg_pool2d(x, 2, padding=-1, backend=backend)
    with pytest.raises(ValueError, match=r"padding must be at most half of kernel_size, got padding=\(2, 2\)"):
        kernels.max_pool2d(x, 3, 1, 2, backend=backend)
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints, got 2.0"):
        kernels.max_pool2d(x, 2.0, backend=backend)
    with pytest.raises(TypeError, match="stride must be an int or a pair"):
        kernels.avg_pool2d(x, 2, (1, 2, 3), backend=backend)
    with pytest.raises(ValueError, match=r"x of shape \(2, 3, 6, 6\) is too small for kernel_size \(7, 7\)"):
        kernels.max_pool2d(x, 7, backend=backend)
    with pytest.raises(ValueError, match="only global average pooling"):
        kernels.adaptive_avg_pool2d(x, (2, 2), backend=backend)
    with pytest.raises(TypeError, match="input_shape must be a 4-tuple"):
        kernels.max_pool2d_backward(g, idx, (2, 3, 6), backend=backend)
    with pytest.raises(ValueError, match="input_shape must hold positive sizes"):
        kernels.adaptive_avg_pool2d_backward(g[..., :1, :1], (2, 3, 0, 6), backend=backend)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 4, \*, \*\)"):
        kernels.max_pool2d_backward(g, idx, (2, 4, 6, 6), backend=backend)
    with pytest.raises(ValueError, match=r"indices must have shape \(2, 3, 3, 3\)"):
        kernels.max_pool2d_backward(g, idx[:, :, :2], x.shape, backend=backend)
    with pytest.raises(TypeError, match="indices must have dtype int64"):
        kernels.max_pool2d_backward(g, idx.astype(np.float32), x.shape, backend=backend)
    with pytest.raises(ValueError, match=r"indices values must lie in \[0, 36\)"):
        kernels.max_pool2d_backward(g, idx + 36, x.shape, backend=backend)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 3, 4, 4\) \(the pooled size"):
        kernels.avg_pool2d_backward(g, (2, 3, 8, 8), 2, backend=backend)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 3, 1, 1\)"):
        kernels.adaptive_avg_pool2d_backward(g, x.shape, backend=backend)
    with pytest.raises(TypeError, match="grad_output"):
        kernels.avg_pool2d_backward(g.astype(np.int64), x.shape, 2, backend=backend)
    if backend != "numpy":
        with pytest.raises(TypeError, match="float32"):
            kernels.max_pool2d(x.astype(np.float64), 2, backend=backend)


def test_numpy_keeps_float64():
    x = np.linspace(-1, 1, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    y, idx = kernels.max_pool2d(x, 2, return_indices=True, backend="numpy")
    assert y.dtype == np.float64 and idx.dtype == np.int64
    assert kernels.avg_pool2d(x, 2, backend="numpy").dtype == np.float64
    assert kernels.adaptive_avg_pool2d(x, 1, backend="numpy").dtype == np.float64
    assert kernels.max_pool2d_backward(y, idx, x.shape, backend="numpy").dtype == np.float64
