"""Convolution and pooling layers on NCHW batches: Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d.

PyTorch's names, defaults, attribute values and ``state_dict`` keys (``torch.nn.Conv2d`` etc.);
the arithmetic is done by ``kernels.conv2d``, ``kernels.max_pool2d``, ``kernels.avg_pool2d`` and
``kernels.adaptive_avg_pool2d`` and their backward ops, on the ambient backend. Inputs are
float32 (float64 on the numpy backend), C-contiguous, shape (N, C, H, W); with kernel size k,
stride s, padding p and dilation d, each spatial size becomes
``floor((size + 2p - d(k - 1) - 1) / s) + 1`` (Dumoulin & Visin, "A guide to convolution
arithmetic for deep learning", 2016, relationship 15). Sizes, strides, paddings and dilations
are an int or an (h, w) pair and are stored as pairs. A bad hyper-parameter raises TypeError or
ValueError at construction; a bad input raises in the kernels, naming the argument.
"""
from __future__ import annotations

import math

import numpy as np

import kernels
from kernels._checks import int_pair
from pynn import init
from pynn.layers import ReLU, _size
from pynn.module import Module, Parameter, register


@register
class Conv2d(Module):
    """2-D cross-correlation, ``torch.nn.Conv2d`` (LeCun et al., "Gradient-based learning applied
    to document recognition", Proc. IEEE 1998, for convolutional layers).

    x: (N, in_channels, H, W) -> y: (N, out_channels, Ho, Wo). ``weight``: (out_channels,
    in_channels // groups, kh, kw) from ``kaiming_uniform_(a=sqrt(5))``, i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with ``fan_in = in_channels // groups * kh * kw``;
    ``bias``: (out_channels,) from the same uniform, PyTorch's defaults, drawn from
    ``pynn.random``. With ``groups`` g, input and output channels are split into g groups and
    group i of the output sees group i of the input only.

    Raises TypeError/ValueError for sizes that are not positive ints (or pairs), a negative
    padding, or channel counts that ``groups`` does not divide.
    """

    _hyper = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True):
        super().__init__()
        self.in_channels = _size(in_channels, "in_channels")
        self.out_channels = _size(out_channels, "out_channels")
        self.kernel_size = int_pair(kernel_size, "kernel_size", 1)
        self.stride = int_pair(stride, "stride", 1)
        self.padding = int_pair(padding, "padding", 0)
        self.dilation = int_pair(dilation, "dilation", 1)
        self.groups = _size(groups, "groups")
        for name in ("in_channels", "out_channels"):
            if getattr(self, name) % self.groups:
                raise ValueError(f"{name} ({getattr(self, name)}) must be divisible by groups ({self.groups})")
        self.weight = Parameter(np.zeros((self.out_channels, self.in_channels // self.groups, *self.kernel_size)))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bias = None
        if bias:
            fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
            bound = 1.0 / math.sqrt(fan_in)
            self.bias = Parameter(np.zeros(self.out_channels))
            init.uniform_(self.bias, -bound, bound)

    def _kwargs(self) -> dict:
        return {**super()._kwargs(), "bias": self.bias is not None}

    def _geometry(self) -> tuple:
        return self.stride, self.padding, self.dilation, self.groups

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        y = kernels.conv2d(x, self.weight.data, bias, *self._geometry())
        self._x = x
        return y

    def backward(self, grad_output, input_grad: bool = True):
        gx, gw, gb = kernels.conv2d_backward(grad_output, self._saved("_x"), self.weight.data, *self._geometry(),
                                             bias=self.bias is not None, input_grad=input_grad)
        self.weight.grad += gw
        if self.bias is not None:
            self.bias.grad += gb
        return gx


class _Pool2d(Module):
    """Window size, stride (the window size when None) and zero padding of a pooling layer.

    As PyTorch requires, the padding may be at most half the window, so that every window
    overlaps the image.
    """

    _hyper = ("kernel_size", "stride", "padding")

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = int_pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else int_pair(stride, "stride", 1)
        self.padding = int_pair(padding, "padding", 0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"padding {self.padding} must be at most half of kernel_size {self.kernel_size}")


@register
class MaxPool2d(_Pool2d):
    """The maximum of each window, ``torch.nn.MaxPool2d`` (padding counts as -inf).

    x: (N, C, H, W) -> (N, C, Ho, Wo). The gradient flows to the first maximum of each
    window (Ranzato et al., "Unsupervised learning of invariant feature hierarchies with
    applications to object recognition", CVPR 2007, for max pooling in convolutional nets).
    """

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0):
        super().__init__(kernel_size, stride, padding)

    def forward(self, x):
        y, self._indices = kernels.max_pool2d(x, self.kernel_size, self.stride, self.padding, return_indices=True)
        self._shape = x.shape
        return y

    def backward(self, grad_output):
        return kernels.max_pool2d_backward(grad_output, self._saved("_indices"), self._shape)


def pool_before_relu(modules: list) -> list:
    """The order ``Sequential`` runs ``modules`` in: each ReLU directly followed by a MaxPool2d
    is moved after it. Max is monotone, so relu(max(w)) = max(relu(w)) for every window, and
    the gradient reaches the same cell: the window's first maximum when it is positive, no
    cell otherwise. ReLU then reads and writes a quarter of the cells (2x2 pooling), forward
    and backward. Only zeros may differ, in sign.
    """
    order = list(modules)
    for i in range(len(order) - 1):
        if type(order[i]) is ReLU and type(order[i + 1]) is MaxPool2d:
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


@register
class AvgPool2d(_Pool2d):
    """The mean of each window, ``torch.nn.AvgPool2d``: x (N, C, H, W) -> (N, C, Ho, Wo).

    With ``count_include_pad`` the divisor is the full window, padding included; otherwise
    only the window's cells inside the image are counted.
    """

    _hyper = _Pool2d._hyper + ("count_include_pad",)

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, count_include_pad: bool = True):
        super().__init__(kernel_size, stride, padding)
        if not isinstance(count_include_pad, bool):
            raise TypeError(f"count_include_pad must be a bool, got {count_include_pad!r}")
        self.count_include_pad = count_include_pad

    def _window(self) -> tuple:
        return self.kernel_size, self.stride, self.padding

    def forward(self, x):
        y = kernels.avg_pool2d(x, *self._window(), count_include_pad=self.count_include_pad)
        self._shape = x.shape
        return y

    def backward(self, grad_output):
        return kernels.avg_pool2d_backward(grad_output, self._saved("_shape"), *self._window(),
                                           count_include_pad=self.count_include_pad)


@register
class AdaptiveAvgPool2d(Module):
    """The mean over each whole plane, ``torch.nn.AdaptiveAvgPool2d(1)``: (N, C, H, W) -> (N, C, 1, 1).

    The global average pooling of Lin, Chen & Yan, "Network In Network", ICLR 2014, used before
    the classifier of ResNets. Only ``output_size`` 1 (or (1, 1)) is supported; others raise
    ValueError.
    """

    _hyper = ("output_size",)

    def __init__(self, output_size: int | tuple[int, int]):
        super().__init__()
        self.output_size = int_pair(output_size, "output_size", 1)
        if self.output_size != (1, 1):
            raise ValueError(f"AdaptiveAvgPool2d supports output_size 1 or (1, 1) only, got {output_size!r}")

    def forward(self, x):
        y = kernels.adaptive_avg_pool2d(x, self.output_size)
        self._shape = x.shape
        return y

    def backward(self, grad_output):
        return kernels.adaptive_avg_pool2d_backward(grad_output, self._saved("_shape"))
