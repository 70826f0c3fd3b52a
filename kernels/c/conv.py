"""cffi wrappers of ``csrc/conv.c``. Inputs are checked float32 C-contiguous NCHW arrays."""
import numpy as np

from kernels import conv as public
from kernels.c import lib, ptr
from kernels.conv import Geometry


def _sizes(x, weight, geom):
    """The size, hyper-parameter and strategy arguments every C entry point takes, in order."""
    n, c_in, h, w = x.shape
    c_out, cpg, kh, kw = weight.shape
    gemm = public.gemm_pays(cpg, kh, kw, c_out // geom.groups)
    return (n, c_in, h, w, c_out, kh, kw) + tuple(geom) + (int(gemm),)


def _ok(status):
    if status != 0:
        raise MemoryError("the C convolution could not allocate its work buffers")


def conv2d(x, weight, bias, sh, sw, ph, pw, dh, dw, groups):
    geom = Geometry(sh, sw, ph, pw, dh, dw, groups)
    ho, wo = geom.output_size(*x.shape[2:], *weight.shape[2:])
    y = np.empty((x.shape[0], weight.shape[0], ho, wo), np.float32)
    _ok(lib.pynn_conv2d(ptr(x), ptr(weight), ptr(bias), ptr(y), *_sizes(x, weight, geom)))
    return y


def conv2d_backward(g, x, weight, sh, sw, ph, pw, dh, dw, groups, bias, input_grad):
    # The C kernel computes grad_x in the same passes as grad_w; without input_grad it is dropped.
    gx = np.empty_like(x)
    gw = np.empty_like(weight)
    gb = np.empty(weight.shape[0], np.float32) if bias else None
    sizes = _sizes(x, weight, Geometry(sh, sw, ph, pw, dh, dw, groups))
    _ok(lib.pynn_conv2d_backward(ptr(g), ptr(x), ptr(weight), ptr(gx), ptr(gw), ptr(gb), *sizes))
    return gx if input_grad else None, gw, gb
