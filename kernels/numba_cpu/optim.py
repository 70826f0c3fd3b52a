"""Numba CPU optimizer steps: one parallel pass over the flat float32 buffers, in place.

Signatures and formulas as in ``kernels.reference.optim``. The wrappers turn the float64
hyper-parameters into float32 once, derived ones (``1 - beta``) included, so that the loops
run in float32 (Numba would promote to float64 otherwise). No fastmath: a NaN or inf from a
diverging run must reach the parameters as it does in PyTorch. An absent state is replaced by
an empty array and a flag, which keeps one compiled signature per kernel.
"""
import math

import numpy as np
from numba import njit, prange

_ABSENT = np.empty(0, np.float32)
_f = np.float32


def _state(x):
    return _ABSENT if x is None else x


@njit(cache=True, parallel=True)
def _sgd(param, grad, buf, lr, momentum, keep, weight_decay, has_momentum, first, nesterov, maximize):
    for i in prange(param.size):
        g = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            g += weight_decay * param[i]
        if has_momentum:
            b = g if first else momentum * buf[i] + keep * g
            buf[i] = b
            g = g + momentum * b if nesterov else b
        param[i] -= lr * g


def sgd_step(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, first, nesterov, maximize):
    _sgd(param, grad, _state(momentum_buffer), _f(lr), _f(momentum), _f(1 - dampening), _f(weight_decay),
         momentum_buffer is not None, first, nesterov, maximize)


@njit(cache=True, parallel=True)
def _adam(param, grad, exp_avg, exp_avg_sq, decay, w1, beta2, w2, eps, weight_decay, step_size, bc2_sqrt,
          maximize, decoupled):
    for i in prange(param.size):
        g = -grad[i] if maximize else grad[i]
        p = param[i]
        if weight_decay != 0:
            if decoupled:
                p *= decay
            else:
                g += weight_decay * p
        m = exp_avg[i] + w1 * (g - exp_avg[i])
        v = beta2 * exp_avg_sq[i] + w2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] = p - step_size * m / (math.sqrt(v) / bc2_sqrt + eps)


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step_size,
              bias_correction2_sqrt, maximize, decoupled):
    _adam(param, grad, exp_avg, exp_avg_sq, _f(1 - lr * weight_decay), _f(1 - beta1), _f(beta2), _f(1 - beta2),
          _f(eps), _f(weight_decay), _f(step_size), _f(bias_correction2_sqrt), maximize, decoupled)


@njit(cache=True, parallel=True)
def _rmsprop(param, grad, square_avg, buf, grad_avg, lr, alpha, w, eps, weight_decay, momentum, has_momentum,
             centered, maximize):
    for i in prange(param.size):
        g = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            g += weight_decay * param[i]
        s = alpha * square_avg[i] + w * g * g
        square_avg[i] = s
        if centered:
            a = grad_avg[i] + w * (g - grad_avg[i])
            grad_avg[i] = a
            s -= a * a
        d = math.sqrt(s) + eps
        if has_momentum:
            b = momentum * buf[i] + g / d
            buf[i] = b
            param[i] -= lr * b
        else:
            param[i] -= lr * g / d


def rmsprop_step(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, weight_decay, momentum,
                 maximize):
    _rmsprop(param, grad, square_avg, _state(momentum_buffer), _state(grad_avg), _f(lr), _f(alpha),
             _f(1 - alpha), _f(eps), _f(weight_decay), _f(momentum), momentum_buffer is not None,
             grad_avg is not None, maximize)


@njit(cache=True, parallel=True)
def _adagrad(param, grad, state_sum, clr, weight_decay, eps, maximize):
    for i in prange(param.size):
        g = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            g += weight_decay * param[i]
        s = state_sum[i] + g * g
        state_sum[i] = s
        param[i] -= clr * g / (math.sqrt(s) + eps)


def adagrad_step(param, grad, state_sum, clr, weight_decay, eps, maximize):
    _adagrad(param, grad, state_sum, _f(clr), _f(weight_decay), _f(eps), maximize)
