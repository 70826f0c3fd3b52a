"""NumPy reference (the specification) of batch normalisation. Shapes as in ``kernels.norm``:
x and grad_output arrive as (N, C, S) views, S being the product of the spatial sizes; every
per-channel array is (C,). Arithmetic runs in x's dtype (float32 or float64)."""
import numpy as np

_AXES = (0, 2)  # every axis but the channel's


def _per_channel(v):
    """(C,) -> (1, C, 1), broadcasting against (N, C, S)."""
    return v[None, :, None]


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    """Returns (y, save_mean, save_invstd); updates running_mean/var in place when training."""
    if training:
        mean = x.mean(axis=_AXES)
        # Two passes: the mean first, then the mean square deviation from it, which does not
        # cancel catastrophically as E[x^2] - E[x]^2 does when |mean| >> std.
        var = np.square(x - _per_channel(mean)).mean(axis=_AXES)
        if running_mean is not None:
            m = x.size // x.shape[1]
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * var * (m / (m - 1))
    else:
        mean, var = running_mean.copy(), running_var
    invstd = 1 / np.sqrt(var + eps)
    y = (x - _per_channel(mean)) * _per_channel(invstd)
    if weight is not None:
        y *= _per_channel(weight)
    if bias is not None:
        y += _per_channel(bias)
    return y, mean, invstd


def batch_norm_backward(g, x, weight, save_mean, save_invstd, training):
    """Returns (grad_x, grad_weight, grad_bias); the last two are None when weight is None."""
    x_hat = (x - _per_channel(save_mean)) * _per_channel(save_invstd)
    grad_bias = g.sum(axis=_AXES)
    grad_weight = (g * x_hat).sum(axis=_AXES)
    scale = save_invstd if weight is None else weight * save_invstd
    if training:
        m = x.size // x.shape[1]
        grad_x = _per_channel(scale) * (g - _per_channel(grad_bias / m) - x_hat * _per_channel(grad_weight / m))
    else:
        grad_x = g * _per_channel(scale)
    if weight is None:
        return grad_x, None, None
    return grad_x, grad_weight, grad_bias
