"""Dense products: every backend against the NumPy reference, the reference against PyTorch,
the backward against finite differences, and bad calls against clear errors."""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernels
from tests.support import BACKENDS, check_backends, f32, host, numeric_grad, sizes, to64, torch_or_skip


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_keeps_leading_dimensions_and_nan(backend):
    rng = np.random.default_rng(4)
    x, w0, w1 = f32(rng, 2, 3, 5), f32(rng, 4, 5), f32(rng, 6, 4)
    x[0, 1, 2] = np.nan
    got = host(kernels.mlp(x, [w0, w1], backend=backend))
    assert got.shape == (2, 3, 6)
    assert np.isnan(got[0, 1]).all() and not np.isnan(np.delete(got.reshape(6, 6), 1, axis=0)).any()


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data(), activation=st.sampled_from(["relu", "none"]), input_grad=st.booleans())
def test_mlp_forward_and_backward_match_reference(backend, data, activation, input_grad):
    """Up to 3 layers of odd widths, some without bias; dropout per hidden layer none, p 0, 0.3
    or 1; batches on both sides of the dot-product path (4 rows) and, off the simulator, past
    the thresholds of the threaded path."""
    cuda = backend == "cuda"
    layers = data.draw(st.integers(1, 2 if cuda else 3))
    widths = [data.draw(st.sampled_from([1, 3, 8]) if cuda else sizes(backend)) for _ in range(layers + 1)]
    n = data.draw(st.sampled_from([1, 5] if cuda else [1, 3, 5, 17, 70, 300]))
    rng = np.random.default_rng(n * 1009 + sum(widths))
    x = f32(rng, n, widths[0])
    weights = [f32(rng, o, i, scale=0.5) for i, o in zip(widths, widths[1:])]
    dropout = [data.draw(st.sampled_from([None, (0.0, 1), (0.3, 5), (1.0, 2)])) for _ in range(layers - 1)]
    biases = [f32(rng, w.shape[0]) if data.draw(st.booleans()) else None for w in weights]
    y, hidden = kernels.mlp(x, weights, biases, activation=activation, dropout=dropout, return_hidden=True,
                            backend=backend)
    g = f32(rng, *y.shape)
    y64 = kernels.mlp(to64(x), [to64(w) for w in weights], [to64(b) for b in biases], activation=activation,
                      dropout=dropout, backend="numpy")
    np.testing.assert_allclose(host(y), y64, rtol=2e-4, atol=1e-3)
    got = kernels.mlp_backward(g, x, weights, [host(h) for h in hidden], activation=activation, dropout=dropout,
                               input_grad=input_grad, backend=backend)
    want = kernels.mlp_backward(to64(g), to64(x), [to64(w) for w in weights], [to64(host(h)) for h in hidden],
                                activation=activation, dropout=dropout, input_grad=input_grad, backend="numpy")
    assert (got[0] is None) == (not input_grad)
    for a, b in zip([got[0], *got[1], *got[2]], [want[0], *want[1], *want[2]]):
        if b is not None:
            np.testing.assert_allclose(host(a), b, rtol=2e-4, atol=1e-3)


def test_mlp_backward_equals_finite_differences():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 5))
    weights = [rng.standard_normal((6, 5)), rng.standard_normal((3, 6))]
    biases = [rng.standard_normal(6), rng.standard_normal(3)]
    probe = rng.standard_normal((4, 3))  # a fixed linear functional of y makes the loss scalar

    def loss(x_, w0, b0, w1, b1):
        return float((kernels.mlp(x_, [w0, w1], [b0, b1], backend="numpy") * probe).sum())

    _, hidden = kernels.mlp(x, weights, biases, return_hidden=True, backend="numpy")
    gx, gws, gbs = kernels.mlp_backward(probe, x, weights, hidden, backend="numpy")
    args = [x, weights[0], biases[0], weights[1], biases[1]]
    for k, got in enumerate([gx, gws[0], gbs[0], gws[1], gbs[1]]):
        want = numeric_grad(lambda a: loss(*args[:k], a, *args[k + 1:]), args[k])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_backward_adds_weight_gradients_into_given_arrays(backend):
    rng = np.random.default_rng(9)
    x, weights = f32(rng, 5, 4), [f32(rng, 3, 4), f32(rng, 2, 3)]
    y, hidden = kernels.mlp(x, weights, dropout=[(0.3, 4)], return_hidden=True, backend=backend)
    g = f32(rng, 5, 2)
    args = (g, x, weights, [host(h) for h in hidden])
    _, fresh, _ = kernels.mlp_backward(*args, dropout=[(0.3, 4)], backend=backend)
    start = [f32(rng, *w.shape) for w in weights]
    into = [a.copy() for a in start]
    _, got, _ = kernels.mlp_backward(*args, dropout=[(0.3, 4)], grad_weights=into, backend=backend)
    for a, b, s, f in zip(got, into, start, fresh):
        assert a is b
        np.testing.assert_allclose(b, s + host(f), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad, exc, name", [
    ([np.zeros((3, 4), np.float32)], ValueError, "grad_weights"),
    ([np.zeros((3, 4), np.float32), np.zeros((3, 2), np.float32)], ValueError, "grad_weights[1]"),
    ([np.zeros((3, 4), np.float32), np.zeros((2, 3), np.float64)], TypeError, "grad_weights[1]"),
    ([np.zeros((3, 4), np.float32), [[0.0] * 3] * 2], TypeError, "grad_weights[1]"),
    ("ab", TypeError, "grad_weights"),
    ("read-only", ValueError, "grad_weights[0]"),
])
def test_mlp_backward_refuses_bad_gradient_targets(bad, exc, name):
    rng = np.random.default_rng(10)
    x, weights = f32(rng, 5, 4), [f32(rng, 3, 4), f32(rng, 2, 3)]
    _, hidden = kernels.mlp(x, weights, return_hidden=True, backend="numpy")
    if bad == "read-only":
        bad = [np.zeros((3, 4), np.float32), np.zeros((2, 3), np.float32)]
        bad[0].flags.writeable = False
    with pytest.raises(exc, match=re.escape(name)):
        kernels.mlp_backward(f32(rng, 5, 2), x, weights, hidden, grad_weights=bad, backend="numpy")
