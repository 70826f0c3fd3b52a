"""Numba CUDA optimizer steps: one thread per element of the flat buffers, in place.

Signatures and formulas as in ``kernels.reference.optim``. Hyper-parameters arrive as float64
and each thread rounds them to float32, so the arithmetic runs in float32 as on the other
backends. Host arrays are copied to the device and the updated ones copied back into the
caller's arrays; device arrays are updated where they are.
"""
import math

import numpy as np
from numba import cuda, float32

from kernels.numba_cuda import _launch
from kernels.numba_cuda._launch import to_device


def _run(kernel, param, grad, states, *scalars):
    """Launch ``kernel(param, grad, *states, *scalars)`` and write param and states back.

    An absent state (None) becomes a one-element placeholder that the kernel never touches.
    """
    (d_param, d_grad, *d_states), _ = to_device(param, grad, *states)
    d_states = [cuda.device_array(1, np.float32) if d is None else d for d in d_states]
    kernel[_launch.blocks(param.size), _launch.THREADS](d_param, d_grad, *d_states, *scalars)
    for h, d in zip((param, *states), (d_param, *d_states)):
        if isinstance(h, np.ndarray):
            d.copy_to_host(h)


@cuda.jit
def _sgd(param, grad, buf, lr, momentum, dampening, weight_decay, has_momentum, first, nesterov, maximize):
    i = cuda.grid(1)
    if i < param.size:
        g = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            g += float32(weight_decay) * param[i]
        if has_momentum:
            mu = float32(momentum)
            b = g if first else mu * buf[i] + float32(1 - dampening) * g
            buf[i] = b
            g = g + mu * b if nesterov else b
        param[i] -= float32(lr) * g


def sgd_step(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, first, nesterov, maximize):
    _run(_sgd, param, grad, (momentum_buffer,), lr, momentum, dampening, weight_decay,
         momentum_buffer is not None, first, nesterov, maximize)


@cuda.jit
def _adam(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt,
          maximize, decoupled):
    i = cuda.grid(1)
    if i < param.size:
        g = -grad[i] if maximize else grad[i]
        p = param[i]
        if weight_decay != 0:
            if decoupled:
                p *= float32(1 - lr * weight_decay)
            else:
                g += float32(weight_decay) * p
        m = exp_avg[i] + float32(1 - beta1) * (g - exp_avg[i])
        v = float32(beta2) * exp_avg_sq[i] + float32(1 - beta2) * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] = p - float32(step_size) * m / (math.sqrt(v) / float32(bc2_sqrt) + float32(eps))


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step_size,
              bias_correction2_sqrt, maximize, decoupled):
    _run(_adam, param, grad, (exp_avg, exp_avg_sq), lr, beta1, beta2, eps, weight_decay, step_size,
         bias_correction2_sqrt, maximize, decoupled)


@cuda.jit
def _rmsprop(param, grad, square_avg, buf, grad_avg, lr, alpha, eps, weight_decay, momentum, has_momentum,
             centered, maximize):
    i = cuda.grid(1)
    if i < param.size:
        g = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            g += float32(weight_decay) * param[i]
        w = float32(1 - alpha)
        s = float32(alpha) * square_avg[i] + w * g * g
        square_avg[i] = s
        if centered:
            a = grad_avg[i] + w * (g - grad_avg[i])
            grad_avg[i] = a
            s -= a * a
        d = math.sqrt(s) + float32(eps)
        if has_momentum:
            b = float32(momentum) * buf[i] + g / d
            buf[i] = b
            param[i] -= float32(lr) * b
        else:
            param[i] -= float32(lr) * g / d


def rmsprop_step(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, weight_decay, momentum,
                 maximize):
    _run(_rmsprop, param, grad, (square_avg, momentum_buffer, grad_avg), lr, alpha, eps, weight_decay, momentum,
         momentum_buffer is not None, grad_avg is not None, maximize)


@cuda.jit
def _adagrad(param, grad, state_sum, clr, weight_decay, eps, maximize):
    i = cuda.grid(1)
    if i < param.size:
        g = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            g += float32(weight_decay) * param[i]
        s = state_sum[i] + g * g
        state_sum[i] = s
        param[i] -= float32(clr) * g / (math.sqrt(s) + float32(eps))


def adagrad_step(param, grad, state_sum, clr, weight_decay, eps, maximize):
    _run(_adagrad, param, grad, (state_sum,), clr, weight_decay, eps, maximize)


_F = "float32[::1]"
# Argument types of every kernel in this module, compiled for sm_90 by tests/test_cuda_ptx.py.
SIGNATURES = {
    "_sgd": f"({_F}, {_F}, {_F}, float64, float64, float64, float64, boolean, boolean, boolean, boolean)",
    "_adam": f"({_F}, {_F}, {_F}, {_F}, float64, float64, float64, float64, float64, float64, float64, boolean, "
             "boolean)",
    "_rmsprop": f"({_F}, {_F}, {_F}, {_F}, {_F}, float64, float64, float64, float64, float64, boolean, boolean, "
                "boolean)",
    "_adagrad": f"({_F}, {_F}, {_F}, float64, float64, float64, boolean)",
}
