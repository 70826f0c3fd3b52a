"""NumPy reference (the specification) of the activations. Shapes as in ``kernels.activation``:
elementwise ops take 1-D arrays, softmax ops (rows, cols) arrays reduced along axis 1.

Every branch is written so that the branch not taken cannot overflow (``np.where`` evaluates
both): exponentials only ever see non-positive arguments. Their underflow to 0 for very negative
arguments is the correctly rounded result, so ``quiet_exp`` keeps NumPy from reporting it (a
caller's ``np.errstate(all="raise")`` would make it an error).
"""
import math

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)  # NumPy has no erf: math.erf per element, in double
# GELU's constants (Hendrycks & Gimpel 2016); the compiled backends take float32 copies.
SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
TANH_K = math.sqrt(2.0 / math.pi)
TANH_C = 0.044715


def quiet_exp(x):
    """``np.exp``, its underflow to 0 not reported."""
    with np.errstate(under="ignore"):
        return np.exp(x)


def leaky_relu(x, negative_slope):
    return np.where(x > 0, x, x * negative_slope)


def leaky_relu_backward(g, x, negative_slope):
    return np.where(x > 0, g, g * negative_slope)


def elu(x, alpha, scale):
    """scale * (x if x > 0 else alpha * expm1(x)); scale != 1 gives SELU."""
    return scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def elu_backward(g, x, alpha, scale):
    return g * (scale * np.where(x > 0, 1, alpha * quiet_exp(np.minimum(x, 0))))


def _normal_cdf(x):
    return (0.5 * (1.0 + _erf(x * SQRT_HALF))).astype(x.dtype)


def _tanh_inner(x):
    return np.tanh(TANH_K * (x + TANH_C * x * x * x))


def gelu(x, tanh_approx):
    if tanh_approx:
        return 0.5 * x * (1 + _tanh_inner(x))
    return x * _normal_cdf(x)


def gelu_backward(g, x, tanh_approx):
    if tanh_approx:
        t = _tanh_inner(x)
        dinner = TANH_K * (1 + 3 * TANH_C * x * x)
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner)
    pdf = INV_SQRT_2PI * quiet_exp(-0.5 * x * x)
    return g * (_normal_cdf(x) + x * pdf)


def sigmoid(x):
    e = quiet_exp(-np.abs(x))  # in [0, 1]: never overflows
    return np.where(x >= 0, 1, e) / (1 + e)


def sigmoid_backward(g, y):
    return g * y * (1 - y)


def tanh(x):
    return np.tanh(x)


def tanh_backward(g, y):
    return g * (1 - y * y)


def softmax(x, log):
    """Row-wise softmax (or log-softmax when ``log``) of x (rows, cols)."""
    z = x - x.max(axis=1, keepdims=True)
    e = quiet_exp(z)
    s = e.sum(axis=1, keepdims=True)
    return z - np.log(s) if log else e / s


def softmax_backward(g, y, log):
    """Row-wise input gradient from the output y (rows, cols) of softmax (or log-softmax)."""
    if log:
        return g - quiet_exp(y) * g.sum(axis=1, keepdims=True)
    return y * (g - (g * y).sum(axis=1, keepdims=True))
