"""cffi wrappers of ``csrc/linear.c``. Inputs are checked float32 C-contiguous arrays."""
import sys
from functools import partial

import numpy as np

from kernels import _mlp
from kernels.c import activation, dropout, lib, ptr


def matmul(a, b, trans_a, trans_b):
    m = a.shape[1] if trans_a else a.shape[0]
    k = a.shape[0] if trans_a else a.shape[1]
    n = b.shape[0] if trans_b else b.shape[1]
    c = np.empty((m, n), np.float32)
    lib.pynn_matmul(ptr(a), ptr(b), ptr(c), m, n, k, int(trans_a), int(trans_b))
    return c


def linear(x, weight, bias):
    rows, in_f = x.shape
    out_f = weight.shape[0]
    y = np.empty((rows, out_f), np.float32)
    lib.pynn_linear(ptr(x), ptr(weight), ptr(bias), ptr(y), rows, in_f, out_f)
    return y


def sum_rows(g):
    out = np.empty(g.shape[1], np.float32)
    lib.pynn_sum_rows(ptr(g), ptr(out), g.shape[0], g.shape[1])
    return out


# The dense stack: the C ops composed layer by layer (kernels._mlp); numba fuses it.
_OPS = _mlp.op_table(sys.modules[__name__], activation, dropout)
mlp = partial(_mlp.forward, _OPS)
mlp_backward = partial(_mlp.backward, _OPS)
