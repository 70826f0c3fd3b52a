"""Numba CPU 2-D convolution. Shapes as in ``kernels.conv``; float32, C-contiguous inputs.

Two strategies, chosen per call by ``kernels.conv.gemm_pays``:

* im2col + GEMM (Chellapilla et al. 2006) when every group has a real matrix product to do:
  the whole batch is unrolled into one (C_in kH kW, N positions) matrix, so each group costs
  one call of the GEMM in ``kernels.numba_cpu.linear`` (forward W cols, weight gradient
  dY cols^T, input gradient W^T dY followed by col2im) instead of N small ones. The GEMM's
  (C_out, N positions) result is batch-minor, so one parallel pass moves it to NCHW.
* direct loops when the GEMM would be degenerate (few taps or few outputs per group: the
  CNN's one-channel first layer, depthwise convolutions), reading the padded input planes in
  place, one output (or input, or weight) plane per parallel iteration.

Both read a zero-padded copy of x, so no loop tests bounds. Output positions are laid out with
a row pitch ``rw``: W_out for a strided convolution, but the padded width W_p for stride 1, where
the input cells that tap (a, b) reads for consecutive positions then lie at a constant distance
from them. Every tap then touches one contiguous run of (H_out - 1) W_p + W_out cells instead of
H_out rows of W_out (14 on the CNN's second layer: far too short to vectorise). The W_p - W_out
extra "junk" positions per row read cells of the next row; they are dropped when results
return to NCHW and hold zeros in the operand of every sum over positions, so they add 0 times
a finite value. Where that value may be inf or NaN (the direct backward with such an x or
weight) the rows are walked one by one instead.

``reassoc`` lets LLVM vectorise the sums and ``contract`` fuse multiply-adds, while inf and NaN
still propagate. Loops index slices that start at the block, not base + offset: Numba's
negative-index handling on a computed index blocks vectorisation (3x slower im2col measured).
"""
import numpy as np
from numba import njit, prange

from kernels import conv as public
from kernels.conv import Geometry
from kernels.numba_cpu.linear import matmul

_FAST = {"reassoc", "contract"}


def _layout(h, w, kh, kw, sh, sw, ph, pw, dh, dw, wide=True):
    """The ints every kernel shares: (kH, kW, d_h, d_w, p_h, p_w, H_p, W_p, H_out, W_out, rw,
    rows, run, row step, column step). Tap (a, b) reads the padded input plane from offset
    a d_h W_p + b d_w on: ``rows`` runs of ``run`` output positions, consecutive runs ``rw``
    positions apart in the output layout and ``row step`` cells apart in the input, consecutive
    positions of a run ``column step`` cells apart. ``wide`` asks for rows of pitch W_p at stride 1."""
    ho, wo = Geometry(sh, sw, ph, pw, dh, dw, 1).output_size(h, w, kh, kw)
    hp, wp = h + 2 * ph, w + 2 * pw
    if wide and sh == 1 and sw == 1:
        rw, rows, run = wp, 1, (ho - 1) * wp + wo
    else:
        rw, rows, run = wo, ho, wo
    return (kh, kw, dh, dw, ph, pw, hp, wp, ho, wo, rw, rows, run, sh * wp, sw)


@njit(cache=True, fastmath=_FAST)
def _axpy(alpha, src, s_row, s_col, dst, d_row, d_col, rows, run):
    """dst[i d_row + j d_col] += alpha src[i s_row + j s_col] for i < rows, j < run."""
    for i in range(rows):
        s = src[i * s_row :]
        d = dst[i * d_row :]
        if s_col == 1 and d_col == 1:
            for j in range(run):
                d[j] += alpha * s[j]
        else:
            for j in range(run):
                d[j * d_col] += alpha * s[j * s_col]


@njit(cache=True, fastmath=_FAST)
def _dot(a, a_row, b, b_row, b_col, rows, run):
    """sum of a[i a_row + j] b[i b_row + j b_col] for i < rows, j < run."""
    acc = np.float32(0.0)
    for i in range(rows):
        u = a[i * a_row :]
        v = b[i * b_row :]
        if b_col == 1:
            for j in range(run):
                acc += u[j] * v[j]
        else:
            for j in range(run):
                acc += u[j] * v[j * b_col]
    return acc


@njit(cache=True)
def _widen(plane, dst, rw):
    """A (H_out, W_out) plane into the layout of row pitch rw; junk positions are not written."""
    ho, wo = plane.shape
    for i in range(ho):
        d = dst[i * rw :]
        for j in range(wo):
            d[j] = plane[i, j]


@njit(cache=True)
def _narrow(src, rw, plane, add):
    """plane[i, j] = src[i rw + j] + add: the inverse of ``_widen`` (also crops padding)."""
    ho, wo = plane.shape
    for i in range(ho):
        s = src[i * rw :]
        for j in range(wo):
            plane[i, j] = s[j] + add


@njit(cache=True)
def _zero_junk(seg, ho, wo, rw):
    """Zero the junk positions (columns W_out to rw - 1 of every row) of one sample's segment."""
    for i in range(ho):
        seg[i * rw + wo : (i + 1) * rw] = 0.0


@njit(cache=True, parallel=True)
def _pad(x, ph, pw):
    """x (N, C, H, W) -> flat zero-padded copy, planes of (H + 2 ph) x (W + 2 pw)."""
    n_, c_, h, w = x.shape
    wp = w + 2 * pw
    size = (h + 2 * ph) * wp
    xp = np.empty(n_ * c_ * size, np.float32)
    for t in prange(n_ * c_):
        plane = xp[t * size : (t + 1) * size]
        plane[: ph * wp + pw] = 0.0
        for i in range(h):
            row = plane[(ph + i) * wp + pw :]
            row[:w] = x[t // c_, t % c_, i]
            row[w : w + 2 * pw] = 0.0
        plane[(ph + h) * wp + pw :] = 0.0
    return xp


@njit(cache=True, parallel=True)
def _im2col(xp, c_in, lay):
    """Padded x -> cols (C kH kW, N positions): row (c, a, b), column (n, position) holds the
    input cell that tap (a, b) of channel c reads for that output position."""
    kh, kw, dh, dw, ph, pw, hp, wp, ho, wo, rw, rows, run, s_row, s_col = lay
    seg = ho * rw
    n_ = xp.size // (c_in * hp * wp)
    cols = np.empty((c_in * kh * kw, n_ * seg), np.float32)
    for r in prange(c_in * kh * kw):
        c, a, b = r // (kh * kw), r // kw % kh, r % kw
        for n in range(n_):
            dst = cols[r, n * seg : (n + 1) * seg]
            src = xp[(n * c_in + c) * hp * wp + a * dh * wp + b * dw :]
            for i in range(rows):
                s = src[i * s_row :]
                d = dst[i * rw :]
                if s_col == 1:
                    d[:run] = s[:run]
                else:
                    for j in range(run):
                        d[j] = s[j * s_col]
            _zero_junk(dst, ho, wo, rw)
    return cols


@njit(cache=True, parallel=True, fastmath=_FAST)
def _col2im(dcols, gx, c0, lay):
    """gx[:, c0 : c0 + C_group] from dcols (C_group kH kW, N positions): each input cell sums
    the entries that read it (the adjoint of ``_im2col``)."""
    kh, kw, dh, dw, ph, pw, hp, wp, ho, wo, rw, rows, run, s_row, s_col = lay
    seg = ho * rw
    n_ = gx.shape[0]
    cpg = dcols.shape[0] // (kh * kw)
    for t in prange(n_ * cpg):
        n, c = t // cpg, t % cpg
        acc = np.zeros(hp * wp, np.float32)
        for a in range(kh):
            for b in range(kw):
                src = dcols[(c * kh + a) * kw + b, n * seg : (n + 1) * seg]
                _zero_junk(src, ho, wo, rw)  # W^T dY is zero there unless W holds inf or NaN
                _axpy(np.float32(1.0), src, rw, 1, acc[a * dh * wp + b * dw :], s_row, s_col, rows, run)
        _narrow(acc[ph * wp + pw :], wp, gx[n, c0 + c], np.float32(0.0))


@njit(cache=True, parallel=True)
def _to_nchw(prod, y, bias, o0, rw):
    """prod (C_group, N positions) -> y[:, o0 : o0 + C_group], adding bias when given."""
    n_, _, ho, _ = y.shape
    cg = prod.shape[0]
    seg = ho * rw
    for t in prange(n_ * cg):
        n, o = t // cg, t % cg
        add = np.float32(0.0)
        if bias is not None:
            add = bias[o0 + o]
        _narrow(prod[o, n * seg :], rw, y[n, o0 + o], add)


@njit(cache=True, parallel=True)
def _from_nchw(g, rw):
    """g (N, C, H_out, W_out) -> (C, N positions), the layout the GEMMs take; junk is zero."""
    n_, c_, ho, _ = g.shape
    seg = ho * rw
    out = np.zeros((c_, n_ * seg), np.float32)
    for t in prange(c_ * n_):
        o, n = t // n_, t % n_
        _widen(g[n, o], out[o, n * seg :], rw)
    return out


@njit(cache=True, parallel=True, fastmath=_FAST)
def _channel_sums(g):
    """g (N, C, P) -> (C,): the bias gradient."""
    n_, c_, plane = g.shape
    out = np.empty(c_, np.float32)
    for o in prange(c_):
        acc = np.float32(0.0)
        for n in range(n_):
            src = g[n, o]
            for p in range(plane):
                acc += src[p]
        out[o] = acc
    return out


@njit(cache=True, parallel=True, fastmath=_FAST)
def _direct_forward(xp, weight, bias, y, lay):
    """y (N, C_out, H_out, W_out) from padded x, one output plane per parallel iteration."""
    kh, kw, dh, dw, ph, pw, hp, wp, ho, wo, rw, rows, run, s_row, s_col = lay
    n_, c_out = y.shape[:2]
    cpg = weight.shape[1]
    c_in = xp.size // (n_ * hp * wp)
    opg = c_out // (c_in // cpg)
    for t in prange(n_ * c_out):
        n, o = t // c_out, t % c_out
        acc = np.zeros(ho * rw, np.float32)
        for c in range(cpg):
            src = xp[(n * c_in + o // opg * cpg + c) * hp * wp :]
            for a in range(kh):
                for b in range(kw):
                    _axpy(weight[o, c, a, b], src[a * dh * wp + b * dw :], s_row, s_col, acc, rw, 1, rows, run)
        add = np.float32(0.0)
        if bias is not None:
            add = bias[o]
        _narrow(acc, rw, y[n, o], add)


@njit(cache=True, parallel=True, fastmath=_FAST)
def _direct_grad_x(g, weight, gx, lay):
    """gx (N, C_in, H, W): each input plane gathers the gradient planes of its group's outputs."""
    kh, kw, dh, dw, ph, pw, hp, wp, ho, wo, rw, rows, run, s_row, s_col = lay
    n_, c_in = gx.shape[:2]
    c_out, cpg = weight.shape[:2]
    opg = c_out // (c_in // cpg)
    for t in prange(n_ * c_in):
        n, ci = t // c_in, t % c_in
        acc = np.zeros(hp * wp, np.float32)
        gwide = np.zeros(ho * rw, np.float32)
        for o in range(ci // cpg * opg, (ci // cpg + 1) * opg):
            _widen(g[n, o], gwide, rw)
            for a in range(kh):
                for b in range(kw):
                    _axpy(weight[o, ci % cpg, a, b], gwide, rw, 1, acc[a * dh * wp + b * dw :], s_row, s_col, rows, run)
        _narrow(acc[ph * wp + pw :], wp, gx[n, ci], np.float32(0.0))


@njit(cache=True, parallel=True, fastmath=_FAST)
def _direct_grad_weight(g, xp, gw, lay):
    """gw (C_out, C_in / G, kH, kW): each output channel correlates its gradient planes with x."""
    kh, kw, dh, dw, ph, pw, hp, wp, ho, wo, rw, rows, run, s_row, s_col = lay
    n_, c_out = g.shape[:2]
    cpg = gw.shape[1]
    c_in = xp.size // (n_ * hp * wp)
    opg = c_out // (c_in // cpg)
    for o in prange(c_out):
        gwide = np.zeros(ho * rw, np.float32)
        gw[o] = 0.0
        for n in range(n_):
            _widen(g[n, o], gwide, rw)
            for c in range(cpg):
                src = xp[(n * c_in + o // opg * cpg + c) * hp * wp :]
                for a in range(kh):
                    for b in range(kw):
                        gw[o, c, a, b] += _dot(gwide, rw, src[a * dh * wp + b * dw :], s_row, s_col, rows, run)


def conv2d(x, weight, bias, sh, sw, ph, pw, dh, dw, groups):
    n, c_in, h, w = x.shape
    c_out, cpg, kh, kw = weight.shape
    lay = _layout(h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    ho, wo, rw = lay[8:11]
    opg = c_out // groups
    xp = _pad(x, ph, pw)
    y = np.empty((n, c_out, ho, wo), np.float32)
    if not public.gemm_pays(cpg, kh, kw, opg):
        _direct_forward(xp, weight, bias, y, lay)
        return y
    cols = _im2col(xp, c_in, lay)
    k = cpg * kh * kw
    w2 = weight.reshape(c_out, k)
    for grp in range(groups):
        prod = matmul(w2[grp * opg : (grp + 1) * opg], cols[grp * k : (grp + 1) * k], False, False)
        _to_nchw(prod, y, bias, grp * opg, rw)
    return y


def conv2d_backward(g, x, weight, sh, sw, ph, pw, dh, dw, groups, bias):
    n, c_in, h, w = x.shape
    c_out, cpg, kh, kw = weight.shape
    lay = _layout(h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    rw = lay[10]
    opg = c_out // groups
    grad_b = _channel_sums(g.reshape(n, c_out, -1)) if bias else None
    xp = _pad(x, ph, pw)
    gx = np.empty_like(x)
    gw = np.empty_like(weight)
    if not public.gemm_pays(cpg, kh, kw, opg):
        # Junk positions of the direct kernels multiply zero by the weight or the input cell
        # they wrap onto, exact unless that is inf or NaN; then every row is walked separately.
        if not (np.isfinite(x).all() and np.isfinite(weight).all()):
            lay = _layout(h, w, kh, kw, sh, sw, ph, pw, dh, dw, wide=False)
        _direct_grad_x(g, weight, gx, lay)
        _direct_grad_weight(g, xp, gw, lay)
        return gx, gw, grad_b
    cols = _im2col(xp, c_in, lay)
    gt = _from_nchw(g, rw)
    k = cpg * kh * kw
    w2, gw2 = weight.reshape(c_out, k), gw.reshape(c_out, k)
    for grp in range(groups):
        outs, ins = slice(grp * opg, (grp + 1) * opg), slice(grp * k, (grp + 1) * k)
        gw2[outs] = matmul(gt[outs], cols[ins], False, True)
        _col2im(matmul(w2[outs], gt[outs], True, False), gx, grp * cpg, lay)
    return gx, gw, grad_b
