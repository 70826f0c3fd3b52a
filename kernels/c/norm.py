"""cffi wrappers of ``csrc/norm.c``. Inputs are checked float32 C-contiguous arrays: x and
grad_output (N, C, S), per-channel arrays (C,) or None (passed as NULL)."""
import numpy as np

from kernels.c import lib, ptr


def _ok(status):
    if status != 0:
        raise MemoryError("batch norm: cannot allocate the per-channel workspace")


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    n, c, s = x.shape
    y = np.empty_like(x)
    mean, invstd = np.empty(c, np.float32), np.empty(c, np.float32)
    _ok(lib.pynn_batch_norm(ptr(x), ptr(weight), ptr(bias), ptr(running_mean), ptr(running_var), ptr(y), ptr(mean),
                            ptr(invstd), n, c, s, int(training), momentum, eps))
    return y, mean, invstd


def batch_norm_backward(g, x, weight, save_mean, save_invstd, training):
    n, c, s = x.shape
    grad_x = np.empty_like(x)
    grad_weight = grad_bias = None
    if weight is not None:
        grad_weight, grad_bias = np.empty(c, np.float32), np.empty(c, np.float32)
    _ok(lib.pynn_batch_norm_backward(ptr(g), ptr(x), ptr(weight), ptr(save_mean), ptr(save_invstd), ptr(grad_x),
                                     ptr(grad_weight), ptr(grad_bias), n, c, s, int(training)))
    return grad_x, grad_weight, grad_bias
