"""``kernels.mlp`` and ``mlp_backward`` composed from one backend's own ops, layer by layer.

This composition is the specification of the dense stack: the reference, C and CUDA backends
run it with their ops (``ops`` is the backend's op table); the numba backend fuses it and must
agree bit for bit. Internal arguments as the public ops pass them: x (rows, in_0), weights and
biases tuples (a bias may be None), ``relu`` a bool, ``dropout`` per hidden layer None or the
dropout kernel's ``(state, threshold, scale)``.

Backpropagating through dropout is applying the same mask to the gradient, which is applying
the same dropout (same seed, so the same mask) to it: ``grad * mask * scale`` is the forward
formula. ReLU's gradient passes where the hidden output is positive: for a kept element
exactly where the ReLU's input was; a dropped one has no gradient either way.
"""
from types import SimpleNamespace

import numpy as np


def _flat(fn, a, *args):
    """Run a backend's elementwise op (1-D arrays) on a 2-D array."""
    return fn(a.reshape(a.size), *args).reshape(a.shape)


def forward(ops, x, weights, biases, relu, dropout):
    """Returns ``(y, hidden)``: the output and the L - 1 hidden outputs."""
    h, hidden = x, []
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = ops.linear(h, w, b)
        if i < len(weights) - 1:
            if relu:
                h = _flat(ops.leaky_relu, h, 0.0)
            if dropout[i] is not None:
                h = ops.dropout(h.reshape(h.size), *dropout[i])[0].reshape(h.shape)
            hidden.append(h)
    return h, tuple(hidden)


def backward(ops, g, x, weights, hidden, relu, dropout, input_grad, accumulate=None):
    """Returns ``(grad_x or None, grad_weights, grad_biases)``; with ``accumulate`` (host arrays)
    the weight gradients are added into those and they are returned."""
    inputs = (x,) + tuple(hidden)
    grad_w, grad_b, grad_x = [None] * len(weights), [None] * len(weights), None
    for i in range(len(weights) - 1, -1, -1):
        grad_w[i] = ops.matmul(g, inputs[i], True, False)
        if accumulate is not None:
            target = accumulate[i]
            target += grad_w[i] if isinstance(grad_w[i], np.ndarray) else grad_w[i].copy_to_host()
            grad_w[i] = target
        grad_b[i] = ops.sum_rows(g)
        if i == 0:
            grad_x = ops.matmul(g, weights[0], False, False) if input_grad else None
            break
        g = ops.matmul(g, weights[i], False, False)
        if dropout[i - 1] is not None:
            g = ops.dropout(g.reshape(g.size), *dropout[i - 1])[0].reshape(g.shape)
        if relu:
            g = _flat(ops.leaky_relu_backward, g, hidden[i - 1].reshape(hidden[i - 1].size), 0.0)
    return grad_x, tuple(grad_w), tuple(grad_b)


def op_table(linear, activation, dropout):
    """The ops the composition calls, from a backend's linear, activation and dropout modules."""
    return SimpleNamespace(linear=linear.linear, matmul=linear.matmul, sum_rows=linear.sum_rows,
                           leaky_relu=activation.leaky_relu, leaky_relu_backward=activation.leaky_relu_backward,
                           dropout=dropout.dropout)
