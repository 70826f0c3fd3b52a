"""2-D convolution over NCHW tensors and its backward pass, with ``torch.nn.functional.conv2d``
semantics (cross-correlation: the kernel is not flipped).

With input x (N, C_in, H, W), weight (C_out, C_in / G, kH, kW) and G groups, output channel o
of group g = o // (C_out / G) sees only input channels g * C_in / G ... (g + 1) * C_in / G - 1:

    y[n, o, i, j] = b[o] + sum_{c, a, b'} w[o, c, a, b'] x_pad[n, g C_in/G + c, i s_h + a d_h, j s_w + b' d_w]

where x_pad is x with ``padding`` zeros on each side. The output size is
``H_out = (H + 2 p_h - d_h (kH - 1) - 1) // s_h + 1`` (Dumoulin & Visin, "A guide to
convolution arithmetic for deep learning", 2016, relationship 15, and likewise for W). The
gradients are grad_x = the transposed convolution of grad_output (col2im of W^T dY), grad_w =
dY (im2col of x)^T and grad_b = sum of dY over N, H_out, W_out (Chellapilla, Puri & Simard,
"High performance convolutional neural networks for document processing", 2006).

Backends receive checked arrays and the hyper-parameters as the plain ints of ``Geometry``.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple


from kernels import _checks as ck
from kernels._dispatch import implementation, resolve

_impl = partial(implementation, "conv")


class Geometry(NamedTuple):
    """Checked hyper-parameters of one convolution: stride, padding, dilation along H and W, groups."""

    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    groups: int

    def output_size(self, h: int, w: int, kh: int, kw: int) -> tuple[int, int]:
        """(H_out, W_out) for an H x W plane and a kH x kW kernel; below 1 when the kernel does not fit."""
        return (
            (h + 2 * self.ph - self.dh * (kh - 1) - 1) // self.sh + 1,
            (w + 2 * self.pw - self.dw * (kw - 1) - 1) // self.sw + 1,
        )


def gemm_pays(c_per_group: int, kh: int, kw: int, out_per_group: int) -> bool:
    """Whether the CPU backends should run the convolution as matrix products, or loop directly.

    The product of a group is (C_out/G, C_in/G kH kW) @ (C_in/G kH kW, N H_out W_out) (im2col;
    the numba backend packs its panels straight from the input, the C backend unrolls it).
    When either side is small, the products' packing and memory traffic cost more than the
    arithmetic they feed. Measured at batch 64 on one core, direct loops won for the CNN's
    first layer (C_in kH kW = 9: 2.8 vs 3.1 ms forward, 4.0 vs 6.0 ms backward), for 8 outputs
    per group (5 vs 8 ms, 12 vs 15 ms) and depthwise, and lost for 32 -> 32 channels 3x3 (36 vs
    47 ms backward) and 1x1 convolutions of 32 channels.
    """
    return c_per_group * kh * kw >= 32 and out_per_group >= 8



def _check(x, weight, stride, padding, dilation, groups, be):
    """Check x, weight and the hyper-parameters together; return them with (H_out, W_out)."""
    weight = ck.float_array(weight, "weight", be, ndim=4)
    x = ck.float_array(x, "x", be, ndim=4, dtype=weight.dtype, like="weight")
    sh, sw = ck.int_pair(stride, "stride", 1)
    ph, pw = ck.int_pair(padding, "padding", 0)
    dh, dw = ck.int_pair(dilation, "dilation", 1)
    if not ck.is_int(groups):
        raise TypeError(f"groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    geom = Geometry(sh, sw, ph, pw, dh, dw, int(groups))
    n, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c_in % groups or c_out % groups:
        raise ValueError(
            f"in and out channels must be divisible by groups={groups}, got C_in={c_in} (x {tuple(x.shape)}) "
            f"and C_out={c_out} (weight {tuple(weight.shape)})"
        )
    if c_per_group != c_in // groups:
        raise ValueError(
            f"weight must have shape (C_out, C_in / groups, kH, kW) = ({c_out}, {c_in // groups}, {kh}, {kw}) "
            f"for x {tuple(x.shape)} and groups={groups}, got {tuple(weight.shape)}"
        )
    ho, wo = geom.output_size(h, w, kh, kw)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"x of shape {tuple(x.shape)} is too small: padded by {(ph, pw)} it is {h + 2 * ph}x{w + 2 * pw}, "
            f"but the {kh}x{kw} kernel with dilation {(dh, dw)} spans {dh * (kh - 1) + 1}x{dw * (kw - 1) + 1}"
        )
    return x, weight, geom, (ho, wo)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend: str | None = None):
    """2-D convolution (cross-correlation) of NCHW ``x`` with ``weight`` (``torch.nn.functional.conv2d``).

    x: (N, C_in, H, W); weight: (C_out, C_in // groups, kH, kW); bias: (C_out,) or None. float32
    (float64 also on ``numpy``), C-contiguous, all of one dtype. stride >= 1, padding >= 0 and
    dilation >= 1 are ints or (h, w) pairs of ints; groups >= 1 divides C_in and C_out
    (groups == C_in == C_out is a depthwise convolution). Returns y (N, C_out, H_out, W_out) with
    H_out = (H + 2 padding - dilation (kH - 1) - 1) // stride + 1 (Dumoulin & Visin 2016), and
    W_out likewise; a device array for device input.

    Raises TypeError for a non-array, a wrong dtype or a hyper-parameter that is not an int or a
    pair of ints, and ValueError for a wrong rank, channels that disagree with weight or groups,
    a hyper-parameter out of range, an output smaller than 1x1, an empty or non-contiguous array.
    """
    be = resolve(backend, x, weight, bias)
    x, weight, geom, _ = _check(x, weight, stride, padding, dilation, groups, be)
    if bias is not None:
        bias = ck.float_array(bias, "bias", be, shape=(weight.shape[0],), dtype=weight.dtype, like="weight")
    return _impl("conv2d", be)(x, weight, bias, *geom)


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    bias: bool = True, input_grad: bool = True, backend: str | None = None):
    """Gradients of ``conv2d``: returns ``(grad_x, grad_weight, grad_bias)``.

    grad_output: (N, C_out, H_out, W_out), the gradient of the loss with respect to y; x, weight
    and the hyper-parameters as passed to ``conv2d``. grad_x has x's shape, grad_weight weight's,
    and grad_bias is (C_out,), or None when ``bias`` is False; grad_x is None when ``input_grad``
    is False (the input is data, as for a network's first layer: the numba and numpy backends
    then skip its computation, as PyTorch does for an input that does not require grad). grad_x is the transposed
    convolution of grad_output, grad_weight the correlation of x with grad_output, grad_bias the
    sum of grad_output over N, H_out and W_out (Chellapilla et al. 2006).

    Raises TypeError and ValueError as ``conv2d`` does, and ValueError when grad_output's shape
    is not the output shape of the convolution.
    """
    be = resolve(backend, grad_output, x, weight)
    x, weight, geom, (ho, wo) = _check(x, weight, stride, padding, dilation, groups, be)
    g = ck.float_array(grad_output, "grad_output", be, ndim=4, dtype=weight.dtype, like="weight")
    want = (x.shape[0], weight.shape[0], ho, wo)
    if tuple(g.shape) != want:
        raise ValueError(
            f"grad_output must have shape {want}, the output of the convolution of x {tuple(x.shape)} with weight "
            f"{tuple(weight.shape)}, got {tuple(g.shape)}"
        )
    return _impl("conv2d_backward", be)(g, x, weight, *geom, bool(bias), bool(input_grad))
