"""NumPy reference (the specification) of the optimizer steps; formulas as in ``kernels.optim``.

Every array is 1-D, of one length and dtype; ``param`` and the states are updated in place.
An absent state (None) means its option is off: no momentum, or not centered. Scalars are
Python floats; ``step_size``, ``bias_correction2_sqrt`` and ``clr`` come computed in float64.
Where PyTorch uses ``lerp_`` (Adam's ``exp_avg``, RMSprop's ``grad_avg``) the update is written
in its form, ``m += (1 - beta) * (g - m)``.
"""
import numpy as np


def _direction(param, grad, weight_decay, maximize):
    """The gradient to descend: negated for maximisation, plus the L2 penalty's gradient."""
    g = -grad if maximize else grad
    return g + weight_decay * param if weight_decay != 0 else g


def sgd_step(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, first, nesterov, maximize):
    g = _direction(param, grad, weight_decay, maximize)
    if momentum_buffer is not None:
        if first:
            momentum_buffer[...] = g
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * g
        g = g + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= lr * g


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step_size,
              bias_correction2_sqrt, maximize, decoupled):
    """Adam, or AdamW when ``decoupled`` (weight decay applied to param, not to the gradient)."""
    if decoupled:
        param *= 1 - lr * weight_decay
        g = _direction(param, grad, 0.0, maximize)
    else:
        g = _direction(param, grad, weight_decay, maximize)
    exp_avg += (1 - beta1) * (g - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g
    param -= step_size * exp_avg / (np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps)


def rmsprop_step(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, weight_decay, momentum,
                 maximize):
    """RMSprop; centered when ``grad_avg`` is given, with momentum when ``momentum_buffer`` is."""
    g = _direction(param, grad, weight_decay, maximize)
    square_avg *= alpha
    square_avg += (1 - alpha) * g * g
    if grad_avg is not None:
        grad_avg += (1 - alpha) * (g - grad_avg)
        denom = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        denom = np.sqrt(square_avg) + eps
    if momentum_buffer is not None:
        momentum_buffer *= momentum
        momentum_buffer += g / denom
        param -= lr * momentum_buffer
    else:
        param -= lr * g / denom


def adagrad_step(param, grad, state_sum, clr, weight_decay, eps, maximize):
    """Adagrad with the decayed learning rate ``clr`` of this step."""
    g = _direction(param, grad, weight_decay, maximize)
    state_sum += g * g
    param -= clr * g / (np.sqrt(state_sum) + eps)
