"""Dense products: every backend against the NumPy reference, the reference against PyTorch,
the backward against finite differences, and bad calls against clear errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernels
from tests.support import BACKENDS, check_backends, f32, host, numeric_grad, sizes, torch_or_skip


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data(), trans_a=st.booleans(), trans_b=st.booleans())
def test_matmul_matches_reference(backend, data, trans_a, trans_b):
    m, n, k = (data.draw(sizes(backend)) for _ in range(3))
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    a = f32(rng, *((k, m) if trans_a else (m, k)))
    b = f32(rng, *((n, k) if trans_b else (k, n)))
    check_backends(kernels.matmul, (a, b), backend, trans_a=trans_a, trans_b=trans_b)


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data(), with_bias=st.booleans())
def test_linear_forward_and_backward_match_reference(backend, data, with_bias):
    n, i, o = (data.draw(sizes(backend)) for _ in range(3))
    rng = np.random.default_rng(n * 10007 + i * 101 + o)
    x, w, g = f32(rng, n, i), f32(rng, o, i), f32(rng, n, o)
    b = f32(rng, o) if with_bias else None
    check_backends(kernels.linear, (x, w, b), backend)
    check_backends(kernels.linear_backward, (g, x, w), backend, bias=with_bias)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_accepts_leading_dimensions(backend):
    rng = np.random.default_rng(1)
    x, w, b = f32(rng, 2, 3, 5), f32(rng, 4, 5), f32(rng, 4)
    check_backends(kernels.linear, (x, w, b), backend)
    check_backends(kernels.linear_backward, (f32(rng, 2, 3, 4), x, w), backend)


def test_reference_equals_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(2)
    x, w, b, g = f32(rng, 7, 13), f32(rng, 5, 13), f32(rng, 5), f32(rng, 7, 5)
    tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.tensor(g))
    y = kernels.linear(x, w, b, backend="numpy")
    gx, gw, gb = kernels.linear_backward(g, x, w, backend="numpy")
    for ours, theirs in ((y, ty), (gx, tx.grad), (gw, tw.grad), (gb, tb.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        kernels.matmul(x, w, trans_b=True, backend="numpy"), (tx @ tw.T).detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_backward_equals_finite_differences():
    rng = np.random.default_rng(3)
    x, w, b = (rng.standard_normal(s) for s in ((3, 4), (2, 4), (2,)))
    weights = rng.standard_normal((3, 2))  # a fixed linear functional of y makes the loss scalar

    def loss(x_, w_, b_):
        return float((kernels.linear(x_, w_, b_, backend="numpy") * weights).sum())

    gx, gw, gb = kernels.linear_backward(weights, x, w, backend="numpy")
    np.testing.assert_allclose(gx, numeric_grad(lambda v: loss(v, w, b), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, numeric_grad(lambda v: loss(x, v, b), w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, numeric_grad(lambda v: loss(x, w, v), b), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_calls_raise_clear_errors(backend):
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="inner sizes"):
        kernels.matmul(a, a, backend=backend)
    with pytest.raises(TypeError, match="dtype"):
        kernels.matmul(a, np.ones((4, 2), np.int32), backend=backend)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.matmul(np.ones((4, 6), np.float32)[:, ::2], a, backend=backend)
    with pytest.raises(ValueError, match="2-D"):
        kernels.matmul(np.ones(3, np.float32), a, backend=backend)
    with pytest.raises(ValueError, match="empty"):
        kernels.matmul(np.ones((0, 3), np.float32), a, backend=backend)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        kernels.linear(a, np.ones((4, 4), np.float32), np.ones(3, np.float32), backend=backend)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        kernels.linear(a.tolist(), np.ones((4, 4), np.float32), backend=backend)
    if backend != "numpy":
        with pytest.raises(TypeError, match="float32"):
            kernels.matmul(a.astype(np.float64), a.T.astype(np.float64), backend=backend)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend"):
        kernels.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), backend="fortran")


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_backward_without_input_grad(backend):
    rng = np.random.default_rng(7)
    x, w, g = f32(rng, 5, 7), f32(rng, 3, 7), f32(rng, 5, 3)
    full = kernels.linear_backward(g, x, w, backend=backend)
    gx, gw, gb = kernels.linear_backward(g, x, w, input_grad=False, backend=backend)
    assert gx is None
    np.testing.assert_array_equal(host(gw), host(full[1]))
    np.testing.assert_array_equal(host(gb), host(full[2]))
