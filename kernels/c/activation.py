"""cffi wrappers of ``csrc/activation.c``. Inputs are checked float32 C-contiguous arrays: 1-D
for the elementwise ops, (rows, cols) for softmax."""
import numpy as np

from kernels.c import lib, ptr


def _map(fn, arrays, *params):
    """Call an elementwise C kernel ``fn(*arrays, out, n, *params)`` on 1-D arrays."""
    out = np.empty(arrays[0].size, np.float32)
    fn(*map(ptr, arrays), ptr(out), out.size, *params)
    return out


def leaky_relu(x, negative_slope):
    return _map(lib.pynn_leaky_relu, (x,), negative_slope)


def leaky_relu_backward(g, x, negative_slope):
    return _map(lib.pynn_leaky_relu_backward, (g, x), negative_slope)


def elu(x, alpha, scale):
    return _map(lib.pynn_elu, (x,), alpha, scale)


def elu_backward(g, x, alpha, scale):
    return _map(lib.pynn_elu_backward, (g, x), alpha, scale)


def gelu(x, tanh_approx):
    return _map(lib.pynn_gelu, (x,), int(tanh_approx))


def gelu_backward(g, x, tanh_approx):
    return _map(lib.pynn_gelu_backward, (g, x), int(tanh_approx))


def sigmoid(x):
    return _map(lib.pynn_sigmoid, (x,))


def sigmoid_backward(g, y):
    return _map(lib.pynn_sigmoid_backward, (g, y))


def tanh(x):
    return _map(lib.pynn_tanh, (x,))


def tanh_backward(g, y):
    return _map(lib.pynn_tanh_backward, (g, y))


def softmax(x, log):
    y = np.empty((x.shape[0], x.shape[1]), np.float32)
    lib.pynn_softmax(ptr(x), ptr(y), x.shape[0], x.shape[1], int(log))
    return y


def softmax_backward(g, y, log):
    dx = np.empty((y.shape[0], y.shape[1]), np.float32)
    lib.pynn_softmax_backward(ptr(g), ptr(y), ptr(dx), y.shape[0], y.shape[1], int(log))
    return dx
