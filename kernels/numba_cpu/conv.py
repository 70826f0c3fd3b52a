"""Numba CPU 2-D convolution. Shapes as in ``kernels.conv``; float32, C-contiguous inputs.

Two strategies, chosen per call by ``kernels.conv.gemm_pays``:

* the products of im2col + GEMM (Chellapilla et al. 2006) when every group has a real matrix
  product to do, run by ``kernels.numba_cpu.conv_gemm`` without building the unrolled matrix;
* direct loops when the GEMM would be degenerate (few taps or few outputs per group: the
  CNN's one-channel first layer, depthwise convolutions), reading the padded input planes in
  place: the forward pass by output rows at column stride 1 (``_direct_forward_rows``),
  otherwise one output (or input, or weight) plane per parallel iteration.

Both read a zero-padded copy of x (``conv_gemm.pad``), so no loop tests bounds. Output positions are laid out with
a row pitch ``rw``: W_out for a strided convolution, but the padded width W_p for stride 1, where
the input cells that tap (a, b) reads for consecutive positions then lie at a constant distance
from them. Every tap then touches one contiguous run of (H_out - 1) W_p + W_out cells instead of
H_out rows of W_out (14 on the CNN's second layer: far too short to vectorise). The W_p - W_out
extra "junk" positions per row read cells of the next row; they are dropped when results
return to NCHW and hold zeros in the operand of every sum over positions, so they add 0 times
a finite value. Where that value may be inf or NaN (the direct backward with such an x or
weight) the rows are walked one by one instead; ``conv_gemm`` zeroes both sides.

``reassoc`` lets LLVM vectorise the sums and ``contract`` fuse multiply-adds, while inf and NaN
still propagate. Loops index slices that start at the block, not base + offset: Numba's
negative-index handling on a computed index blocks vectorisation (3x slower im2col measured).
"""
import numba
import numpy as np
from numba import njit, prange

from kernels import _memory
from kernels import conv as public
from kernels.conv import Geometry
from kernels.numba_cpu import conv_gemm as gemm
from kernels.numba_cpu.conv_gemm import pad
from kernels.numba_cpu.gemm import MR, NR, PARALLEL_FLOPS, _bcast8, _fma8, _load8, _store8

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


@njit(cache=True, parallel=True)
def _crop(gxp, gx, ph, pw):
    """gx (N, C, H, W) = the interior of gxp, padded as ``pad`` lays it out."""
    n_, c_, h, w = gx.shape
    wp = w + 2 * pw
    size = (h + 2 * ph) * wp
    stride = gxp.size // n_
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        _narrow(gxp[n * stride + c * size + ph * wp + pw :], wp, gx[n, c], np.float32(0.0))


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


@njit(cache=True)
def _row_block(xp, wf, bias, yf, taps, kt, o, blk, yo, plane, wo):
    """One output row of ``blk`` (1 or 4) consecutive channels starting at o: yf[yo + c plane + j]
    for j < W_out. Each 8-position vector sums the kt taps in registers, every input vector
    loaded once for the 4 channels; the last vector overlaps the one before (rewriting equal
    values) when W_out is not a multiple of 8."""
    j = 0
    while j < wo:
        j = min(j, wo - 8)
        a0 = _bcast8(bias, o)
        if blk == 4:
            a1, a2, a3 = _bcast8(bias, o + 1), _bcast8(bias, o + 2), _bcast8(bias, o + 3)
            for k in range(kt):
                v = _load8(xp, taps[k] + j)
                a0 = _fma8(_bcast8(wf, o * kt + k), v, a0)
                a1 = _fma8(_bcast8(wf, (o + 1) * kt + k), v, a1)
                a2 = _fma8(_bcast8(wf, (o + 2) * kt + k), v, a2)
                a3 = _fma8(_bcast8(wf, (o + 3) * kt + k), v, a3)
            _store8(yf, yo + plane + j, a1)
            _store8(yf, yo + 2 * plane + j, a2)
            _store8(yf, yo + 3 * plane + j, a3)
        else:
            for k in range(kt):
                a0 = _fma8(_bcast8(wf, o * kt + k), _load8(xp, taps[k] + j), a0)
        _store8(yf, yo + j, a0)
        j += 8


@njit(cache=True, parallel=True)
def _direct_forward_rows(xp, weight, bias, y, lay, tasks):
    """y (N, C_out, H_out, W_out) from padded x at column stride 1 and W_out >= 8, by output rows:
    task t takes rows t/tasks of all samples, every channel of each. 4 channels share each
    input load, so the loop is bound by multiply-adds rather than by the accumulator's loads
    and stores as in ``_direct_forward`` (CNN's first layer: 0.6 against 1.4 ms)."""
    kh, kw, dh, dw, ph, pw, hp, wp, ho, wo, rw, rows, run, s_row, s_col = lay
    n_, c_out = y.shape[:2]
    cpg = weight.shape[1]
    c_in = xp.size // (n_ * hp * wp)
    opg = c_out // (c_in // cpg)
    kt = cpg * kh * kw
    yf, wf = y.reshape(-1), weight.reshape(-1)
    for t in prange(tasks):
        taps = np.empty(kt, np.int64)
        for q in range(n_ * ho * t // tasks, n_ * ho * (t + 1) // tasks):
            n, i = q // ho, q % ho
            o = 0
            while o < c_out:
                g0 = o // opg * opg
                if o == g0:  # a new group reads other input planes
                    base = (n * c_in + o // opg * cpg) * hp * wp + i * s_row
                    for c in range(cpg):
                        for a in range(kh):
                            for b in range(kw):
                                taps[(c * kh + a) * kw + b] = base + c * hp * wp + a * dh * wp + b * dw
                blk = 4 if g0 + opg - o >= 4 else 1
                _row_block(xp, wf, bias, yf, taps, kt, o, blk, (n * c_out + o) * ho * wo + i * wo, ho * wo, wo)
                o += blk


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


def _tasks(work, flops):
    """Tasks for a parallel region: one per thread, at most ``work`` units, 1 below 2 MFLOP."""
    return max(1, min(work, numba.get_num_threads())) if flops >= PARALLEL_FLOPS else 1


def _padded(x, ph, pw, extra):
    n, c, h, w = x.shape
    return pad(x, ph, pw, extra, _memory.empty((n * (c * (h + 2 * ph) * (w + 2 * pw) + extra),)))


def conv2d(x, weight, bias, sh, sw, ph, pw, dh, dw, groups):
    n, c_in, h, w = x.shape
    c_out, cpg, kh, kw = weight.shape
    lay = _layout(h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    ho, wo, rw = lay[8:11]
    y = _memory.empty((n, c_out, ho, wo))
    if not public.gemm_pays(cpg, kh, kw, c_out // groups):
        xp = _padded(x, ph, pw, 0)
        if sw == 1 and wo >= 8:
            bias = np.zeros(c_out, np.float32) if bias is None else bias
            _direct_forward_rows(xp, weight, bias, y, lay, _tasks(n * ho, 2.0 * y.size * weight[0].size))
        else:
            _direct_forward(xp, weight, bias, y, lay)
        return y
    xp = _padded(x, ph, pw, gemm.slack(lay))
    panels = n * -(-ho * rw // NR)
    bias = np.zeros(c_out, np.float32) if bias is None else bias
    gemm.forward(xp, weight.reshape(c_out, -1), bias, y, lay, groups, _tasks(panels, 2.0 * y.size * weight[0].size))
    return y


def conv2d_backward(g, x, weight, sh, sw, ph, pw, dh, dw, groups, bias, input_grad):
    n, c_in, h, w = x.shape
    c_out, cpg, kh, kw = weight.shape
    lay = _layout(h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    opg = c_out // groups
    grad_b = _channel_sums(g.reshape(n, c_out, -1)) if bias else None
    gx = _memory.empty(x.shape) if input_grad else None
    x_finite, w_finite = gemm.all_finite(x), gemm.all_finite(weight)
    if not public.gemm_pays(cpg, kh, kw, opg):
        # Junk positions of the direct kernels multiply zero by the weight or the input cell
        # they wrap onto, exact unless that is inf or NaN; then every row is walked separately.
        if not (x_finite and w_finite):
            lay = _layout(h, w, kh, kw, sh, sw, ph, pw, dh, dw, wide=False)
        gw = np.empty_like(weight)
        if input_grad:
            _direct_grad_x(g, weight, gx, lay)
        _direct_grad_weight(g, _padded(x, ph, pw, 0), gw, lay)
        return gx, gw, grad_b
    ho, wo, rw = lay[8:11]
    extra = gemm.slack(lay)
    gpos = g if rw == wo else gemm.positions(g, rw, _memory.empty((n * c_out * ho * rw,)))
    w2 = weight.reshape(c_out, -1)
    flops = 2.0 * g.size * weight[0].size
    if input_grad:
        gxp = _memory.empty((n * (c_in * lay[6] * lay[7] + extra),))
        gxp[:] = 0.0
        gemm.grad_x(gpos, w2, gxp, lay, groups, w_finite, _tasks(n, flops))
        _crop(gxp, gx, ph, pw)
    k = cpg * kh * kw
    gwt = np.empty((groups, k, opg), np.float32)
    gemm.grad_w(gpos, _padded(x, ph, pw, extra), gwt, lay, groups, x_finite, _tasks(groups * -(-k // MR), flops))
    return gx, np.ascontiguousarray(gwt.transpose(0, 2, 1)).reshape(weight.shape), grad_b
