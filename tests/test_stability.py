"""Numerical stability on every backend: logits of magnitude 1e4, of mixed signs and near the
float32 maximum give finite softmax, log_softmax, cross_entropy and
binary_cross_entropy_with_logits values (and gradients) equal to float64 references computed
stably; sigmoid and tanh of huge inputs equal theirs. Everything runs under
``np.errstate(all="raise")`` with warnings as errors, so no overflow, invalid operation or
warning may occur anywhere on the way (underflow to 0 is the correctly rounded result: the
kernels may tell NumPy so).

The float64 references are written here, independently of ``kernels.reference``: log-sum-exp
with the row maximum subtracted first (Goodfellow, Bengio & Courville, *Deep Learning*, 2016,
4.1), the logistic function with exp of a non-positive argument only. Tolerances: float32
results against float64 values, relative 1e-5; absolute 1e-6 for probabilities and below the
smallest normal float32 (about 1.2e-38) for the logistic function's tails.
"""
import math
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

import kernels
from tests.support import BACKENDS, host

F32_MAX = float(np.finfo(np.float32).max)
TINY = float(np.finfo(np.float32).tiny)


def _logit_sets():
    """Named (rows, cols) float32 logits; every difference within a row fits in float32."""
    rng = np.random.default_rng(0)
    mixed = rng.uniform(-1e4, 1e4, (5, 7))
    mixed[0, :3] = [1e4, -1e4, 1e4]  # ties at the maximum and both extremes in one row
    mixed[1] = -1e4  # a row of equal values: the uniform distribution
    return {
        "plus_1e4": 1e4 + rng.standard_normal((4, 6)),
        "minus_1e4": -1e4 + rng.standard_normal((4, 6)),
        "mixed_1e4": mixed,
        "float32_max": np.array([[F32_MAX, 0.99 * F32_MAX, 1e38, 0.0],
                                 [-1.5e38, 1.5e38, 0.0, 1.0],
                                 [-F32_MAX, -0.5 * F32_MAX, -1e38, -3e38]]),
    }


LOGITS = {k: v.astype(np.float32) for k, v in _logit_sets().items()}


@contextmanager
def _strict():
    """No floating-point overflow, invalid operation or division by zero, no warning of any kind."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            yield


def _log_softmax64(x):
    x = x.astype(np.float64)
    z = x - x.max(axis=1, keepdims=True)
    with np.errstate(under="ignore"):
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _logistic64(x):
    """sigmoid in float64 for each element, with exp of a non-positive argument only."""
    def one(v):
        e = math.exp(-abs(v))
        return 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)

    return np.vectorize(one, otypes=[np.float64])(x.astype(np.float64))


def _check(got, want, *, rtol=1e-5, atol=0.0):
    got = host(got)
    assert got.dtype == np.float32
    assert np.isfinite(got).all(), f"non-finite values: {got}"
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", LOGITS)
def test_softmax_and_log_softmax_of_huge_logits(backend, name):
    x = LOGITS[name]
    want = _log_softmax64(x)
    with _strict():
        log_p = kernels.log_softmax(x, dim=1, backend=backend)
        p = kernels.softmax(x, dim=1, backend=backend)
    _check(log_p, want, atol=1e-6)
    _check(p, np.exp(want), atol=1e-6)


def _classes(x):
    """Every class once as a target, the row maximum included."""
    return (np.arange(x.shape[0]) * 3 % x.shape[1]).astype(np.int64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", LOGITS)
def test_cross_entropy_of_huge_logits(backend, name):
    x = LOGITS[name]
    t = _classes(x)
    log_p = _log_softmax64(x)
    rows = np.arange(x.shape[0])
    onehot = np.eye(x.shape[1])[t]
    probs = np.full(x.shape, 1.0 / x.shape[1], np.float32)  # a probability target too
    with _strict():
        losses = kernels.cross_entropy(x, t, "none", backend=backend)
        mean = kernels.cross_entropy(x, t, backend=backend)
        grad = kernels.cross_entropy_backward(1.0, x, t, "sum", backend=backend)
        soft = kernels.cross_entropy(x, probs, "none", backend=backend)
        soft_grad = kernels.cross_entropy_backward(1.0, x, probs, "sum", backend=backend)
    _check(losses, -log_p[rows, t])
    _check(mean, np.mean(-log_p[rows, t]))
    _check(grad, np.exp(log_p) - onehot, atol=1e-6)
    _check(soft, -(probs * log_p).sum(axis=1))
    _check(soft_grad, np.exp(log_p) - probs, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", LOGITS)
def test_binary_cross_entropy_with_huge_logits(backend, name):
    x = LOGITS[name]
    # targets that are exact binary fractions, so that x * t is exact in float32 too
    t = np.resize(np.array([0.0, 0.25, 0.5, 1.0], np.float32), x.shape)
    x64, t64 = x.astype(np.float64), t.astype(np.float64)
    with np.errstate(under="ignore"):
        want = np.maximum(x64, 0) - x64 * t64 + np.log1p(np.exp(-np.abs(x64)))
    with _strict():
        losses = kernels.binary_cross_entropy_with_logits(x, t, "none", backend=backend)
        grad = kernels.binary_cross_entropy_with_logits_backward(1.0, x, t, "sum", backend=backend)
    _check(losses, want, atol=1e-6)
    _check(grad, _logistic64(x) - t64, atol=1e-6)


HUGE = np.array([0.0, 1.0, -1.0, 20.0, -20.0, 88.0, -88.0, 89.0, -89.0, 104.0, -104.0, 1e4, -1e4, 1e30, -1e30,
                 F32_MAX, -F32_MAX], np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_and_tanh_of_huge_inputs(backend):
    g = np.linspace(-2.0, 2.0, HUGE.size).astype(np.float32)
    with _strict():
        s = host(kernels.sigmoid(HUGE, backend=backend))
        t = host(kernels.tanh(HUGE, backend=backend))
        ds = kernels.sigmoid_backward(g, s, backend=backend)
        dt = kernels.tanh_backward(g, t, backend=backend)
    _check(s, _logistic64(HUGE), rtol=1e-6, atol=TINY)
    _check(t, np.tanh(HUGE.astype(np.float64)), rtol=1e-6, atol=TINY)
    s64, t64, g64 = s.astype(np.float64), t.astype(np.float64), g.astype(np.float64)
    _check(ds, g64 * s64 * (1 - s64), rtol=1e-6, atol=TINY)
    _check(dt, g64 * (1 - t64 * t64), rtol=1e-6, atol=TINY)
