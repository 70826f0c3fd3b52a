"""NumPy reference (the specification) of the dense products. Shapes as in ``kernels.linear``."""
import sys
from functools import partial

import numpy as np

from kernels import _mlp
from kernels.reference import activation, dropout



def matmul(a, b, trans_a, trans_b):
    """(M, K) @ (K, N) -> (M, N), with a and b given transposed when the flags say so."""
    return np.ascontiguousarray((a.T if trans_a else a) @ (b.T if trans_b else b))


def linear(x, weight, bias):
    """x (N, in) @ weight (out, in).T + bias (out,) -> (N, out)."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def sum_rows(g):
    """(N, F) -> (F,): the bias gradient, summed in the input dtype."""
    return g.sum(axis=0)


# The dense stack is the layer-by-layer composition of the ops above (kernels._mlp).
_OPS = _mlp.op_table(sys.modules[__name__], activation, dropout)
mlp = partial(_mlp.forward, _OPS)
mlp_backward = partial(_mlp.backward, _OPS)
