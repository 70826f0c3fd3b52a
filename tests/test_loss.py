"""Losses: every backend against the NumPy reference, the reference against PyTorch, the backward
against finite differences, large-magnitude stability, and bad calls against clear errors.

Tolerances: float32 backends against the float64 reference use support's RTOL/ATOL; the float64
reference against PyTorch in float64 agrees to 1e-10 (both compute the same formulas).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from tests.support import BACKENDS, FAST_BACKENDS, check_backends, host, numeric_grad, sizes, torch_or_skip

REDUCTIONS = ("mean", "sum", "none")
POINTWISE = ("mse_loss", "l1_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits")
TARGET_KINDS = ("index", "prob")


def pointwise_inputs(name, rng, shape, dtype=np.float32):
    """input and target suited to the loss, with its edge cases: ties for l1, 0 and 1 for bce."""
    x = rng.standard_normal(shape) * 2
    t = rng.standard_normal(shape)
    if name.startswith("binary_cross_entropy"):
        t = rng.random(shape)
    if name == "binary_cross_entropy":
        x = rng.random(shape)
        x.flat[: min(2, x.size)] = (0.0, 1.0)[: min(2, x.size)]  # clamped logs, clamped denominator
    if name == "l1_loss":
        t.flat[::3] = x.flat[::3]  # sign(0) = 0
    return x.astype(dtype), t.astype(dtype)


def ce_inputs(kind, rng, n, c, dtype=np.float32, scale=3.0):
    """(N, C) logits and a class-index or a probability target."""
    x = (rng.standard_normal((n, c)) * scale).astype(dtype)
    if kind == "index":
        return x, rng.integers(0, c, n)
    p = rng.random((n, c))
    return x, (p / p.sum(axis=1, keepdims=True)).astype(dtype)


def grad_output(rng, reduction, shape, dtype=np.float32):
    """A python float for mean, a 0-d array for sum, per-term gradients for none."""
    if reduction == "mean":
        return 1.7
    if reduction == "sum":
        return np.asarray(-0.6, dtype)
    return rng.standard_normal(shape).astype(dtype)


def fns(name):
    return getattr(kernels, name), getattr(kernels, name + "_backward")


def several_blocks(backend, monkeypatch):
    if backend == "cuda":
        from kernels.numba_cuda import _launch

        monkeypatch.setattr(_launch, "THREADS", 8)  # several blocks even at simulator sizes


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", TARGET_KINDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_reference(backend, kind, reduction, monkeypatch):
    several_blocks(backend, monkeypatch)

    @settings(max_examples=3 if backend == "cuda" else 10)
    @given(n=sizes(backend), c=sizes(backend))
    def run(n, c):
        rng = np.random.default_rng(n * 101 + c)
        x, t = ce_inputs(kind, rng, n, c)
        check_backends(kernels.cross_entropy, (x, t), backend, reduction=reduction)
        g = grad_output(rng, reduction, (n,))
        check_backends(kernels.cross_entropy_backward, (g, x, t), backend, reduction=reduction)

    run()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", POINTWISE)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pointwise_losses_match_reference(backend, name, reduction, monkeypatch):
    several_blocks(backend, monkeypatch)
    forward, backward = fns(name)

    @settings(max_examples=3 if backend == "cuda" else 10)
    @given(shape=st.lists(sizes(backend), min_size=1, max_size=2).map(tuple))
    def run(shape):
        rng = np.random.default_rng(sum(shape) * 31 + len(shape))
        x, t = pointwise_inputs(name, rng, shape)
        check_backends(forward, (x, t), backend, reduction=reduction)
        check_backends(backward, (grad_output(rng, reduction, shape), x, t), backend, reduction=reduction)

    run()


@pytest.mark.parametrize("backend", [b for b in FAST_BACKENDS if b != "numpy"])
def test_large_inputs_match_reference(backend):
    # past the C threshold of 65536 elements, so the OpenMP loops run threaded
    rng = np.random.default_rng(7)
    for name in POINTWISE:
        forward, backward = fns(name)
        x, t = pointwise_inputs(name, rng, (100_003,))
        check_backends(forward, (x, t), backend, reduction="none")
        check_backends(backward, (1.0, x, t), backend, reduction="sum")
    for kind in TARGET_KINDS:
        x, t = ce_inputs(kind, rng, 700, 101)
        check_backends(kernels.cross_entropy, (x, t), backend, reduction="none")
        check_backends(kernels.cross_entropy_backward, (1.0, x, t), backend, reduction="sum")


def torch_value_and_grad(torch, torch_fn, x, t, reduction, g):
    tx = torch.tensor(x, requires_grad=True)
    loss = torch_fn(tx, torch.tensor(t), reduction=reduction)
    loss.backward(torch.tensor(g, dtype=loss.dtype))
    return loss.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reference_equals_torch(reduction):
    torch = torch_or_skip()
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    cases = [(name, getattr(F, name), *pointwise_inputs(name, rng, (4, 6), np.float64)) for name in POINTWISE]
    cases += [("cross_entropy", F.cross_entropy, *ce_inputs(kind, rng, 9, 5, np.float64)) for kind in TARGET_KINDS]
    for name, torch_fn, x, t in cases:
        forward, backward = fns(name)
        label = f"{name} with {t.dtype} target"
        g = grad_output(rng, reduction, x.shape[:1] if name == "cross_entropy" else x.shape, np.float64)
        want, want_grad = torch_value_and_grad(torch, torch_fn, x, t, reduction, g)
        got = forward(x, t, reduction, backend="numpy")
        assert got.dtype == np.float64 and got.shape == want.shape, label
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=label)
        got_grad = backward(g, x, t, reduction, backend="numpy")
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-10, atol=1e-12, err_msg=label)


def test_backward_equals_finite_differences():
    rng = np.random.default_rng(3)
    cases = []
    for name in POINTWISE:
        x, t = pointwise_inputs(name, rng, (3, 4), np.float64)
        if name == "binary_cross_entropy":
            x = rng.uniform(0.05, 0.95, x.shape)  # away from the clamps
        if name == "l1_loss":
            t = x + rng.choice([-0.5, 0.5], x.shape)  # away from the kink
        cases.append((name, x, t, rng.standard_normal(x.shape)))
    x = rng.standard_normal((4, 5))
    cases.append(("cross_entropy", x, rng.integers(0, 5, 4), rng.standard_normal(4)))
    cases.append(("cross_entropy", x, rng.random((4, 5)), rng.standard_normal(4)))  # rows not summing to 1
    for name, x, t, weights in cases:
        forward, backward = fns(name)

        def loss(v):
            return float((forward(v, t, "none", backend="numpy") * weights).sum())

        got = backward(weights, x, t, "none", backend="numpy")
        np.testing.assert_allclose(got, numeric_grad(loss, x), rtol=1e-6, atol=1e-8, err_msg=name)
        for reduction, count in (("sum", 1), ("mean", weights.size)):
            want = backward(np.full_like(weights, 2.5 / count), x, t, "none", backend="numpy")
            np.testing.assert_allclose(backward(2.5, x, t, reduction, backend="numpy"), want, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_logits_give_finite_exact_results(backend):
    x = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]], np.float32)
    idx = np.array([2, 0])
    probs = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], np.float32)
    for target in (idx, probs):
        loss = host(kernels.cross_entropy(x, target, "none", backend=backend))
        # the second row: -log_softmax = 2e4 + log(2)
        np.testing.assert_allclose(loss, [2e4, 2e4 + np.log(2)], rtol=1e-6)
        grad = host(kernels.cross_entropy_backward(1.0, x, target, "sum", backend=backend))
        np.testing.assert_allclose(grad, [[1, 0, -1], [-1, 0.5, 0.5]], atol=1e-6)
    z = np.array([1e4, -1e4, 1e4, -1e4], np.float32)
    t = np.array([0.0, 0.0, 1.0, 1.0], np.float32)
    loss = host(kernels.binary_cross_entropy_with_logits(z, t, "none", backend=backend))
    np.testing.assert_allclose(loss, [1e4, 0, 0, 1e4], rtol=1e-6, atol=1e-6)
    grad = host(kernels.binary_cross_entropy_with_logits_backward(1.0, z, t, "sum", backend=backend))
    np.testing.assert_allclose(grad, [1, 0, 0, -1], atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_calls_raise_clear_errors(backend):
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 4\)"):
        kernels.cross_entropy(x, np.array([0, 4, 1]), backend=backend)
    with pytest.raises(ValueError, match="target values"):
        kernels.cross_entropy_backward(1.0, x, np.array([0, -1, 1], np.int32), backend=backend)
    with pytest.raises(TypeError, match="target must have dtype int64"):
        kernels.cross_entropy(x, np.array([0, 1, 1], np.uint8), backend=backend)
    with pytest.raises(ValueError, match=r"target must have shape \(3, 4\)"):
        kernels.cross_entropy(x, np.zeros((3, 5), np.float32), backend=backend)
    with pytest.raises(ValueError, match=r"target must have shape \(3,\)"):
        kernels.cross_entropy(x, np.zeros(2, np.int64), backend=backend)
    with pytest.raises(ValueError, match="input must be 2-D"):
        kernels.cross_entropy(np.zeros(4, np.float32), np.zeros(4, np.int64), backend=backend)
    with pytest.raises(ValueError, match="reduction must be one of"):
        kernels.cross_entropy(x, np.zeros(3, np.int64), "avg", backend=backend)
    with pytest.raises(ValueError, match="reduction"):
        kernels.mse_loss(x, x, reduction="batchmean", backend=backend)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(3,\)"):
        kernels.cross_entropy_backward(np.ones(4, np.float32), x, np.zeros(3, np.int64), "none", backend=backend)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(\)"):
        kernels.mse_loss_backward(np.ones(2, np.float32), x, x, backend=backend)
    with pytest.raises(ValueError, match="grad_output must lie"):
        kernels.l1_loss_backward(float("nan"), x, x, backend=backend)
    with pytest.raises(ValueError, match=r"input of binary_cross_entropy .*\[0, 1\]"):
        kernels.binary_cross_entropy(x + 1.5, x, backend=backend)
    with pytest.raises(ValueError, match="input of binary_cross_entropy"):
        kernels.binary_cross_entropy_backward(1.0, x - 0.5, x, backend=backend)
    with pytest.raises(ValueError, match=r"target must have shape \(3, 4\)"):
        kernels.l1_loss(x, np.zeros((4, 3), np.float32), backend=backend)
    with pytest.raises(ValueError, match="input must be C-contiguous"):
        kernels.binary_cross_entropy_with_logits(np.zeros((4, 6), np.float32)[:, ::2], x, backend=backend)
    with pytest.raises(ValueError, match="input is empty"):
        kernels.mse_loss(np.zeros(0, np.float32), np.zeros(0, np.float32), backend=backend)
    with pytest.raises(TypeError, match="target has dtype float32, but"):
        kernels.mse_loss(x.astype(np.float64), x, backend="numpy")
    with pytest.raises(TypeError, match="target must be a numpy.ndarray"):
        kernels.l1_loss(x, x.tolist(), backend=backend)
    if backend != "numpy":
        with pytest.raises(TypeError, match="input must have dtype float32"):
            kernels.cross_entropy(x.astype(np.float64), np.zeros(3, np.int64), backend=backend)


@pytest.mark.skipif("cuda" not in BACKENDS, reason="no CUDA backend")
def test_device_inputs_give_device_results():
    from numba import cuda

    rng = np.random.default_rng(5)
    x, t = ce_inputs("index", rng, 5, 3)
    dx, dt = cuda.to_device(x), cuda.to_device(t)
    loss = kernels.cross_entropy(dx, dt)
    assert not isinstance(loss, np.ndarray) and loss.shape == ()
    np.testing.assert_allclose(loss.copy_to_host(), kernels.cross_entropy(x, t, backend="numpy"), rtol=1e-6)
    grad = kernels.cross_entropy_backward(loss, dx, dt, "sum")
    want = kernels.cross_entropy_backward(float(loss.copy_to_host()), x, t, "sum", backend="numpy")
    np.testing.assert_allclose(grad.copy_to_host(), want, rtol=1e-5, atol=1e-7)
    per_element = kernels.mse_loss(dx, cuda.to_device(x), "none")
    assert per_element.shape == (5, 3) and not isinstance(per_element, np.ndarray)
