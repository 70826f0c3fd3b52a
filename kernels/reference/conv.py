"""NumPy reference (the specification) of 2-D convolution. Shapes and formulas as in ``kernels.conv``.

The im2col matrix (Chellapilla et al. 2006) appears here as a strided view of the padded input,
``windows[n, c, i, j, a, b] = x_pad[n, c, i s_h + a d_h, j s_w + b d_w]``; the forward pass and the
weight gradient contract it with the weight and with grad_output, group by group, and the input
gradient scatters grad_output times the weight back through the same windows (col2im).
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _windows(x, kh, kw, sh, sw, ph, pw, dh, dw):
    """(N, C, H, W) -> read-only view (N, C, H_out, W_out, kH, kW) of the zero-padded input."""
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    return sliding_window_view(xp, span, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]


def _group_slices(groups, c_in, c_out):
    """(input channels, output channels) of each group."""
    ci, co = c_in // groups, c_out // groups
    return [(slice(g * ci, (g + 1) * ci), slice(g * co, (g + 1) * co)) for g in range(groups)]


def conv2d(x, weight, bias, sh, sw, ph, pw, dh, dw, groups):
    """x (N, C_in, H, W), weight (C_out, C_in/G, kH, kW), bias (C_out,) or None -> (N, C_out, H_out, W_out)."""
    c_out, _, kh, kw = weight.shape
    cols = _windows(x, kh, kw, sh, sw, ph, pw, dh, dw)
    n, _, ho, wo = cols.shape[:4]
    y = np.empty((n, c_out, ho, wo), x.dtype)
    for cin, cout in _group_slices(groups, x.shape[1], c_out):
        y[:, cout] = np.einsum("nchwab,ocab->nohw", cols[:, cin], weight[cout], optimize=True)
    if bias is not None:
        y += bias[:, None, None]
    return y


def conv2d_backward(g, x, weight, sh, sw, ph, pw, dh, dw, groups, bias, input_grad):
    """g (N, C_out, H_out, W_out) -> (grad_x like x or None, grad_weight like weight, grad_bias (C_out,) or None)."""
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ho, wo = g.shape[2:]
    cols = _windows(x, kh, kw, sh, sw, ph, pw, dh, dw)
    grad_w = np.empty_like(weight)
    grad_cols = np.empty((n, c_in, ho, wo, kh, kw), x.dtype)
    for cin, cout in _group_slices(groups, c_in, c_out):
        grad_w[cout] = np.einsum("nohw,nchwab->ocab", g[:, cout], cols[:, cin], optimize=True)
        if input_grad:
            grad_cols[:, cin] = np.einsum("nohw,ocab->nchwab", g[:, cout], weight[cout], optimize=True)
    grad_b = g.sum(axis=(0, 2, 3)) if bias else None
    if not input_grad:
        return None, grad_w, grad_b
    # col2im: each window position adds its gradient back to the padded input cell it read.
    grad_xp = np.zeros((n, c_in, h + 2 * ph, w + 2 * pw), x.dtype)
    for a in range(kh):
        for b in range(kw):
            rows = slice(a * dh, a * dh + sh * (ho - 1) + 1, sh)
            columns = slice(b * dw, b * dw + sw * (wo - 1) + 1, sw)
            grad_xp[:, :, rows, columns] += grad_cols[..., a, b]
    grad_x = np.ascontiguousarray(grad_xp[:, :, ph : ph + h, pw : pw + w])
    return grad_x, grad_w, grad_b
