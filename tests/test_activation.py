"""Activations: every backend against the NumPy reference, the reference against PyTorch, the
backward passes against finite differences, huge logits without overflow, and bad calls
against clear errors.

Tolerances: float32 backends against the float64 reference use support's RTOL/ATOL (2e-4,
2e-5); the float64 reference against float64 PyTorch agrees to 1e-10; float32 against float64
PyTorch to 2e-4 / 2e-5; central differences (eps 1e-6) in float64 to 1e-6 / 1e-8.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from tests.support import BACKENDS, check_backends, f32, host, numeric_grad, sizes, torch_or_skip

# name -> (forward, backward, hyper-parameters, backward takes the forward output, PyTorch form)
ELEMENTWISE = {
    "relu": (kernels.relu, kernels.relu_backward, {}, False, lambda F, t: F.relu(t)),
    "leaky_relu": (
        kernels.leaky_relu, kernels.leaky_relu_backward, {"negative_slope": 0.2}, False,
        lambda F, t: F.leaky_relu(t, 0.2),
    ),
    "elu": (kernels.elu, kernels.elu_backward, {"alpha": 1.5}, False, lambda F, t: F.elu(t, 1.5)),
    "selu": (kernels.selu, kernels.selu_backward, {}, False, lambda F, t: F.selu(t)),
    "gelu": (kernels.gelu, kernels.gelu_backward, {}, False, lambda F, t: F.gelu(t)),
    "gelu_tanh": (
        kernels.gelu, kernels.gelu_backward, {"approximate": "tanh"}, False,
        lambda F, t: F.gelu(t, approximate="tanh"),
    ),
    "sigmoid": (kernels.sigmoid, kernels.sigmoid_backward, {}, True, lambda F, t: t.sigmoid()),
    "tanh": (kernels.tanh, kernels.tanh_backward, {}, True, lambda F, t: t.tanh()),
}
SOFTMAX = {
    "softmax": (kernels.softmax, kernels.softmax_backward, lambda F, t, d: F.softmax(t, d)),
    "log_softmax": (kernels.log_softmax, kernels.log_softmax_backward, lambda F, t, d: F.log_softmax(t, d)),
}
STABLE = {
    "sigmoid": (kernels.sigmoid, kernels.sigmoid_backward),
    "tanh": (kernels.tanh, kernels.tanh_backward),
    **{k: v[:2] for k, v in SOFTMAX.items()},
}


def _examples(backend, body):
    """Run ``body(data)`` under hypothesis: few examples on the slow CUDA simulator."""
    settings(max_examples=5 if backend == "cuda" else 25)(given(data=st.data())(body))()


def _shape(data, backend):
    # Two dimensions at most on the simulator, which runs one Python thread per CUDA thread.
    return tuple(data.draw(st.lists(sizes(backend), min_size=1, max_size=2 if backend == "cuda" else 3)))


@pytest.fixture
def few_threads(monkeypatch):
    """Small CUDA blocks, so the simulator's small arrays still span several blocks."""
    if "cuda" in BACKENDS:
        from kernels.numba_cuda import _launch

        monkeypatch.setattr(_launch, "THREADS", 16)


def _torch_grads(torch, fn, x, g):
    """PyTorch's forward and input gradient of ``fn`` at float64 ``x`` with upstream ``g``."""
    t = torch.tensor(x, requires_grad=True)
    y = fn(torch.nn.functional, t)
    y.backward(torch.tensor(g))
    return y.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_matches_reference(backend, name, few_threads):
    fwd, bwd, kw, from_output, _ = ELEMENTWISE[name]

    def body(data):
        shape = _shape(data, backend)
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        x, g = f32(rng, *shape, scale=3.0), f32(rng, *shape)
        x.reshape(-1)[::7] = 0.0  # the kink of relu and friends: gradient conventions at 0
        check_backends(fwd, (x,), backend, **kw)
        saved = fwd(x, backend="numpy", **kw) if from_output else x
        check_backends(bwd, (g, saved), backend, **kw)

    _examples(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax_matches_reference(backend, name):
    fwd, bwd, _ = SOFTMAX[name]

    def body(data):
        shape = _shape(data, backend)
        dim = data.draw(st.integers(-len(shape), len(shape) - 1))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        x, g = f32(rng, *shape, scale=3.0), f32(rng, *shape)
        check_backends(fwd, (x,), backend, dim=dim)
        check_backends(bwd, (g, fwd(x, dim, backend="numpy")), backend, dim=dim)

    _examples(backend, body)


def test_cuda_softmax_rows_longer_than_a_block():
    if "cuda" not in BACKENDS:
        pytest.skip("no cuda backend")
    rng = np.random.default_rng(4)
    x, g = f32(rng, 2, 100, scale=3.0), f32(rng, 2, 100)  # 100 > 32 threads per row
    for fwd, bwd, _ in SOFTMAX.values():
        check_backends(fwd, (x,), "cuda")
        check_backends(bwd, (g, fwd(x, backend="numpy")), "cuda")


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_reference_equals_torch(name):
    torch = torch_or_skip()
    fwd, bwd, kw, from_output, tfn = ELEMENTWISE[name]
    rng = np.random.default_rng(5)
    x, g = rng.standard_normal(60) * 3, rng.standard_normal(60)
    x[:4] = 0.0  # PyTorch's conventions at the kink
    x[4:8] = [-1e4, 1e4, -30.0, 30.0]
    want_y, want_dx = _torch_grads(torch, tfn, x, g)
    y = fwd(x, backend="numpy", **kw)
    dx = bwd(g, y if from_output else x, backend="numpy", **kw)
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax_dim_on_3d_input_equals_torch(backend, name):
    torch = torch_or_skip()
    fwd, bwd, tfn = SOFTMAX[name]
    rng = np.random.default_rng(6)
    x, g = f32(rng, 3, 4, 5, scale=3.0), f32(rng, 3, 4, 5)
    # The axis is moved on the host, the same for every backend: the simulator gets two cases.
    for dim in (0, -1) if backend == "cuda" else (0, 1, 2, -1, -2, -3):
        x64, g64 = x.astype(np.float64), g.astype(np.float64)
        want_y, want_dx = _torch_grads(torch, lambda F, t: tfn(F, t, dim), x64, g64)
        y = host(fwd(x, dim, backend=backend))
        dx = host(bwd(g, y, dim, backend=backend))
        assert y.shape == dx.shape == x.shape and y.flags.c_contiguous and dx.flags.c_contiguous
        np.testing.assert_allclose(y, want_y, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(dx, want_dx, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", STABLE)
def test_huge_inputs_stay_finite_without_warnings(backend, name):
    fwd, bwd = STABLE[name]
    rng = np.random.default_rng(7)
    x, g = f32(rng, 4, 9, scale=1e4), f32(rng, 4, 9)
    x[0, :3] = [1e4, -1e4, 1e4]  # ties at the maximum and both extremes in one row
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        y = host(fwd(x, backend=backend))
        dx = host(bwd(g, y, backend=backend))
        want = fwd(x.astype(np.float64), backend="numpy")
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    np.testing.assert_allclose(y, want, rtol=2e-4, atol=2e-5)
    check_backends(bwd, (g, y), backend)


def test_softmax_reference_equals_torch_on_huge_logits():
    torch = torch_or_skip()
    rng = np.random.default_rng(8)
    x, g = rng.standard_normal((3, 7)) * 1e4, rng.standard_normal((3, 7))
    for fwd, bwd, tfn in SOFTMAX.values():
        want_y, want_dx = _torch_grads(torch, lambda F, t: tfn(F, t, -1), x, g)
        y = fwd(x, backend="numpy")
        np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bwd(g, y, backend="numpy"), want_dx, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_backward_equals_finite_differences(name):
    fwd, bwd, kw, from_output, _ = ELEMENTWISE[name]
    rng = np.random.default_rng(9)
    n = rng.standard_normal((3, 4))
    x = np.sign(n) * (0.2 + np.abs(n))  # away from the kinks at 0
    w = rng.standard_normal((3, 4))  # a fixed linear functional makes the loss scalar
    dx = bwd(w, fwd(x, backend="numpy", **kw) if from_output else x, backend="numpy", **kw)
    want = numeric_grad(lambda v: float((fwd(v, backend="numpy", **kw) * w).sum()), x)
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax_backward_equals_finite_differences(name, dim):
    fwd, bwd, _ = SOFTMAX[name]
    rng = np.random.default_rng(10)
    x, w = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    dx = bwd(w, fwd(x, dim, backend="numpy"), dim, backend="numpy")
    want = numeric_grad(lambda v: float((fwd(v, dim, backend="numpy") * w).sum()), x)
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-8)


def test_cuda_device_arrays_stay_on_device():
    if "cuda" not in BACKENDS:
        pytest.skip("no cuda backend")
    from numba import cuda

    rng = np.random.default_rng(11)
    x = f32(rng, 3, 6)
    d = cuda.to_device(x)
    y = kernels.softmax(d)  # device input picks the cuda backend
    assert not isinstance(y, np.ndarray) and y.shape == x.shape
    np.testing.assert_allclose(y.copy_to_host(), kernels.softmax(x, backend="numpy"), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(
        kernels.gelu(d).copy_to_host(), kernels.gelu(x, backend="numpy"), rtol=2e-4, atol=2e-5
    )
    with pytest.raises(ValueError, match="device arrays"):
        kernels.log_softmax(d, dim=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_calls_raise_clear_errors(backend):
    a = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="x must have dtype"):
        kernels.relu(a.astype(np.int32), backend=backend)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        kernels.sigmoid(a.tolist(), backend=backend)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        kernels.gelu(np.ones((3, 8), np.float32)[:, ::2], backend=backend)
    with pytest.raises(ValueError, match="x is empty"):
        kernels.tanh(np.ones((0, 3), np.float32), backend=backend)
    with pytest.raises(ValueError, match="at least 1 dimensions"):
        kernels.elu(np.ones((), np.float32), backend=backend)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(3, 4\)"):
        kernels.relu_backward(np.ones((4, 3), np.float32), a, backend=backend)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(3, 4\)"):
        kernels.softmax_backward(np.ones(12, np.float32), a, backend=backend)
    with pytest.raises(TypeError, match="grad_output"):
        kernels.sigmoid_backward(a.astype(np.float64), a, backend=backend)
    with pytest.raises(ValueError, match="negative_slope"):
        kernels.leaky_relu(a, float("nan"), backend=backend)
    with pytest.raises(TypeError, match="alpha"):
        kernels.elu_backward(a, a, "1.0", backend=backend)
    with pytest.raises(ValueError, match="approximate"):
        kernels.gelu(a, approximate="erf", backend=backend)
    with pytest.raises(ValueError, match="dim must lie in"):
        kernels.softmax(a, dim=2, backend=backend)
    with pytest.raises(TypeError, match="dim must be an int"):
        kernels.log_softmax_backward(a, a, dim=1.0, backend=backend)
    if backend != "numpy":
        with pytest.raises(TypeError, match="float32"):
            kernels.softmax(a.astype(np.float64), backend=backend)


def test_numpy_keeps_float64():
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    for fwd in (kernels.relu, kernels.elu, kernels.gelu, kernels.sigmoid, kernels.softmax):
        assert fwd(x, backend="numpy").dtype == np.float64
