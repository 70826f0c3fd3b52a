"""pynn's kernels: every hot loop in four implementations behind one signature.

Backends: ``numpy`` (the reference and specification), ``numba`` (CPU JIT), ``c`` (C through
cffi) and ``cuda`` (Numba CUDA). Each public function takes ``backend=None``; the default comes
from ``use_backend`` blocks, then ``$PYNN_BACKEND``, then numba, c, numpy in that order, and
device arrays go to ``cuda``.
"""
from kernels._dispatch import BACKENDS, backends, default_backend, is_usable, use_backend
from kernels.linear import linear, linear_backward, matmul, mlp, mlp_backward
from kernels.dropout import dropout, dropout_backward
from kernels.activation import (
    elu, elu_backward, gelu, gelu_backward, leaky_relu, leaky_relu_backward, log_softmax,
    log_softmax_backward, relu, relu_backward, selu, selu_backward, sigmoid, sigmoid_backward,
    softmax, softmax_backward, tanh, tanh_backward,
)
from kernels.loss import (
    binary_cross_entropy, binary_cross_entropy_backward, binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_backward, cross_entropy, cross_entropy_backward, l1_loss,
    l1_loss_backward, mse_loss, mse_loss_backward,
)
from kernels.optim import adagrad_step, adam_step, adamw_step, rmsprop_step, sgd_step
from kernels.norm import batch_norm, batch_norm_backward
from kernels.conv import conv2d, conv2d_backward
from kernels.pool import (
    adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d, avg_pool2d_backward, max_pool2d,
    max_pool2d_backward,
)
