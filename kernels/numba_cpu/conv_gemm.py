"""Implicit-GEMM convolution for the Numba CPU backend: the three products of im2col + GEMM
(Chellapilla, Puri & Simard 2006) with the unrolled input never built.

Per group, with K = C_in/G kH kW taps and P output positions per sample:

* forward     Y_n (C_out/G, P) = W (C_out/G, K) @ U_n (K, P)
* input grad  dU_n (K, P) = W^T @ dY_n (C_out/G, P), scattered into the padded input grad
* weight grad dW^T (K, C_out/G) = sum_n U_n (K, P) @ dY_n^T (P, C_out/G)

where U_n is the im2col matrix of sample n: row (c, a, b), column p holds the padded input cell
that tap (a, b) of channel c reads for output position p. The products run on the 6x16
micro-kernel of ``kernels.numba_cpu.gemm``; instead of reading U_n from memory, its 16-column
panels (forward), or 6-row slices (weight grad), are packed straight from the padded input
just before use, and dU_n panels are added into the padded input gradient as soon as they are
computed: no (K, N P) matrix exists, which saved 16 MB of writes and reads per call on the CNN's
second layer. Work is split so that no two tasks write the same output: panels of positions
(forward), samples (input grad) or rows of dW^T (weight grad), so the sums never depend on
the number of threads.

Positions use the layout of ``kernels.numba_cpu.conv._layout``: p = i rw + j. At stride 1,
rw = W_p and the cell that tap (a, b) reads for position p is p + a d_h W_p + b d_w, so a panel
of 16 positions reads 16 consecutive cells: two vector loads. The W_p - W_out "junk" positions
per row read cells of the next row; their outputs are dropped, their gradient is zero, and
packed input slices hold zeros there, so they add exact zeros. At stride > 1, rw = W_out and
cells are gathered one by one.

The padded buffers (``pad``) hold each sample's planes followed by ``slack`` zeros, so a
panel may read up to 16 positions past the last row without leaving the sample.
"""
import numpy as np
from numba import njit, prange

from kernels.numba_cpu.gemm import _FAST, KC, MR, NR, _add8, _bcast8, _load8, _micro_6x16, _micro_rows, _pack, _pack_b, _store8


def slack(lay):
    """Zeros after each sample's padded planes: the overrun of a 16-position panel at stride 1."""
    return (lay[1] - 1) * lay[3] + NR


@njit(cache=True, parallel=True)
def pad(x, ph, pw, extra, xp):
    """Fill xp (flat, float32) with x (N, C, H, W) zero-padded: per sample, C planes of
    (H + 2 ph) x (W + 2 pw) cells, then ``extra`` zeros. Returns xp."""
    n_, c_, h, w = x.shape
    hp, wp = h + 2 * ph, w + 2 * pw
    size = hp * wp
    stride = c_ * size + extra
    xf = x.reshape(-1)
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        d, s = xp[n * stride + c * size : n * stride + (c + 1) * size], xf[t * h * w : (t + 1) * h * w]
        for i in range(hp):
            for j in range(wp):
                inside = ph <= i < ph + h and pw <= j < pw + w
                d[i * wp + j] = s[(i - ph) * w + j - pw] if inside else np.float32(0.0)
        if c == c_ - 1:
            xp[(n + 1) * stride - extra : (n + 1) * stride] = 0.0
    return xp


@njit(**_FAST)
def _taps(lay, k):
    """Offsets of the unrolled rows r = (c, a, b) < k in a sample's padded planes (computed once:
    three integer divisions per row cost more than the row's share of a panel's arithmetic)."""
    kh, kw, dh, dw, hp, wp = lay[0], lay[1], lay[2], lay[3], lay[6], lay[7]
    taps = np.empty(k, np.int64)
    for r in range(k):
        taps[r] = r // (kh * kw) * hp * wp + r // kw % kh * dh * wp + r % kw * dw
    return taps


@njit(**_FAST)
def _gather(src, so, lay, pos0, count, dst, do):
    """dst[do + u] = the cell read for position pos0 + u (reading from src[so]), 0 for junk."""
    wo, rw, s_row, s_col = lay[9], lay[10], lay[13], lay[14]
    s, d = src[so:], dst[do:]
    if s_col == 1 and rw == s_row:  # stride 1: consecutive cells; copy, then zero the junk
        for u in range(0, count - 7, 8):
            _store8(dst, do + u, _load8(src, so + pos0 + u))
        for u in range(count - count % 8, count):
            d[u] = s[pos0 + u]
        for start in range(wo - pos0 % rw, count, rw):
            for u in range(max(start, 0), min(start + rw - wo, count)):
                d[u] = 0.0
        return
    i, j = pos0 // rw, pos0 % rw  # no junk at stride > 1 (rw = W_out)
    for u in range(count):
        d[u] = s[i * s_row + j * s_col]
        j += 1
        if j == rw:
            i, j = i + 1, 0


@njit(**_FAST)
def _emit(tile, rows, bias, b0, y, yo, plane, lay, pos0, nr):
    """y[yo + o plane + output position] = tile[o, j] + bias[b0 + o] for the valid positions
    pos0 + j, j < nr, of a panel, rows o < ``rows``. A panel spans at most a few output rows:
    the runs are worked out once, then copied row by row, a run of 8 to 16 as two overlapping
    8-float vectors (a scalar loop here cost a quarter of the layer's time)."""
    wo, rw = lay[9], lay[10]
    for i in range(pos0 // rw, (pos0 + nr - 1) // rw + 1):
        lo, hi = max(pos0, i * rw), min(pos0 + nr, i * rw + wo)
        run, d0, t0 = hi - lo, yo + i * wo + lo - i * rw, lo - pos0
        for o in range(rows):
            if run >= 8:
                add = _bcast8(bias, b0 + o)
                _store8(y, o * plane + d0, _add8(_load8(tile, o * NR + t0), add))
                _store8(y, o * plane + d0 + run - 8, _add8(_load8(tile, o * NR + t0 + run - 8), add))
            else:
                for u in range(run):
                    y[o * plane + d0 + u] = tile[o * NR + t0 + u] + bias[b0 + o]


@njit(**_FAST)
def _forward_task(xp, w, bias, y, lay, groups, t, tasks):
    """Panels t/tasks of all samples' positions: y[n, :, positions] for each group."""
    n_, c_out, ho, wo = y.shape
    kt = w.size // c_out
    hp, wp, rw, s_row, s_col = lay[6], lay[7], lay[10], lay[13], lay[14]
    plane, seg = hp * wp, ho * rw
    cpg, opg = kt // (lay[0] * lay[1]), c_out // groups
    stride = xp.size // n_
    per = (seg + NR - 1) // NR
    nkc = (kt + KC - 1) // KC
    kcmax = (kt + nkc - 1) // nkc
    wide = s_col == 1 and rw == s_row
    taps = _taps(lay, kt)
    bbuf = np.empty(kcmax * NR, np.float32)
    tile = np.empty(opg * NR, np.float32)
    wf, yf = w.reshape(-1), y.reshape(-1)
    for q in range(n_ * per * t // tasks, n_ * per * (t + 1) // tasks):
        n, pos0 = q // per, q % per * NR
        nr = min(NR, seg - pos0)
        for g in range(groups):
            base = n * stride + g * cpg * plane
            for p0 in range(0, kt, kcmax):
                kc = min(kcmax, kt - p0)
                for p in range(kc):
                    so = base + taps[p0 + p]
                    if wide:  # junk and overrun columns are computed, then dropped
                        _store8(bbuf, p * NR, _load8(xp, so + pos0))
                        _store8(bbuf, p * NR + 8, _load8(xp, so + pos0 + 8))
                    else:
                        _gather(xp, so, lay, pos0, nr, bbuf, p * NR)
                        bbuf[p * NR + nr : (p + 1) * NR] = 0.0
                for i0 in range(0, opg, MR):
                    _micro_6x16(kc, wf, (g * opg + i0) * kt + p0, kt, 1, min(MR, opg - i0),
                                bbuf, 0, NR, tile, i0 * NR, NR, NR, p0 == 0)
            _emit(tile, opg, bias, g * opg, yf, (n * c_out + g * opg) * ho * wo, ho * wo, lay, pos0, nr)


@njit(**_FAST)
def _grad_x_task(gw, w, gxp, lay, groups, finite, t, tasks):
    """Samples t/tasks: gxp (padded, as ``pad``) += the adjoint of the unrolling of W^T dY.
    ``gw`` is dY in the position layout, (N, C_out, H_out rw), zero at junk positions, so junk
    columns of W^T dY are zero unless W holds inf or NaN (``finite`` False): then they are
    zeroed before the columns are added in."""
    kt = w.size // w.shape[0]
    c_out = w.shape[0]
    hp, wp, ho, wo, rw, s_row, s_col = lay[6], lay[7], lay[8], lay[9], lay[10], lay[13], lay[14]
    plane, seg = hp * wp, ho * rw
    cpg, opg = kt // (lay[0] * lay[1]), c_out // groups
    n_ = gw.size // (c_out * seg)
    stride = gxp.size // n_
    nkc = (opg + KC - 1) // KC
    kcmax = (opg + nkc - 1) // nkc
    wide = s_col == 1 and rw == s_row
    taps = _taps(lay, kt)
    kk = lay[0] * lay[1]
    # W^T packed once into 6-row micro-panels, so the micro-kernel's broadcasts are contiguous.
    ktp = (kt + MR - 1) // MR * MR
    wt = np.empty(groups * opg * ktp, np.float32)
    for g in range(groups):
        for o0 in range(0, opg, kcmax):
            _pack(w.reshape(-1), (g * opg + o0) * kt, 1, kt, kt, min(kcmax, opg - o0), MR, wt[(g * opg + o0) * ktp :])
    bbuf = np.empty(kcmax * NR, np.float32)
    tile = np.empty(kt * NR, np.float32)
    cells = np.empty(NR, np.int64)
    gf = gw.reshape(-1)
    for n in range(n_ * t // tasks, n_ * (t + 1) // tasks):
        for pos0 in range(0, seg, NR):
            nr = min(NR, seg - pos0)
            i, j = pos0 // rw, pos0 % rw
            for u in range(nr):
                cells[u] = -1 if j >= wo else i * s_row + j * s_col
                j += 1
                if j == rw:
                    i, j = i + 1, 0
            for g in range(groups):
                for o0 in range(0, opg, kcmax):
                    kc = min(kcmax, opg - o0)
                    src = (n * c_out + g * opg + o0) * seg + pos0
                    if nr == NR:
                        yy, yo, ys = gf, src, seg
                    else:
                        _pack_b(gf, src, seg, 1, kc, nr, bbuf)
                        yy, yo, ys = bbuf, 0, NR
                    for i0 in range(0, kt, MR):
                        _micro_6x16(kc, wt, (g * opg + o0) * ktp + i0 * kc, 1, MR, min(MR, kt - i0),
                                    yy, yo, ys, tile, i0 * NR, NR, NR, o0 == 0)
                base = n * stride + g * cpg * plane
                if wide and nr == NR:
                    if not finite:
                        for u in range(NR):
                            if cells[u] < 0:
                                for r in range(kt):
                                    tile[r * NR + u] = 0.0
                    # Channel-minor order: rows of one channel overlap one cell apart, and a load
                    # of a just-stored, overlapping vector stalls store forwarding (2 ms of 8).
                    for ab in range(kk):
                        for r in range(ab, kt, kk):
                            d = base + taps[r] + pos0
                            _store8(gxp, d, _add8(_load8(gxp, d), _load8(tile, r * NR)))
                            _store8(gxp, d + 8, _add8(_load8(gxp, d + 8), _load8(tile, r * NR + 8)))
                else:
                    for r in range(kt):
                        d = gxp[base + taps[r] :]
                        for u in range(nr):
                            if cells[u] >= 0:
                                d[cells[u]] += tile[r * NR + u]


@njit(**_FAST)
def _grad_w_task(gw, xp, gwt, lay, groups, finite, t, tasks):
    """Row blocks t/tasks of dW^T, stored as gwt (G, K, C_out/G), summed over all samples.

    At stride 1 the rows of U_n are runs of xp that the micro-kernel reads in place when xp is
    finite: junk positions then add 0 * finite = 0. Otherwise (stride > 1, or inf or NaN in x)
    rows are gathered with zeros at the junk positions first."""
    groups_, kt, opg = gwt.shape
    c_out = groups * opg
    hp, wp, ho, rw = lay[6], lay[7], lay[8], lay[10]
    plane, seg = hp * wp, ho * rw
    cpg = kt // (lay[0] * lay[1])
    n_ = gw.size // (c_out * seg)
    stride = xp.size // n_
    nb = (kt + MR - 1) // MR
    b_lo, b_hi = groups * nb * t // tasks, groups * nb * (t + 1) // tasks
    nkc = (seg + KC - 1) // KC
    kcmax = (seg + nkc - 1) // nkc
    bbuf = np.empty(((opg + NR - 1) // NR) * NR * kcmax, np.float32)
    taps = _taps(lay, kt)
    abuf = np.empty(MR * kcmax, np.float32)
    gf, cf = gw.reshape(-1), gwt.reshape(-1)
    in_place = finite and lay[14] == 1 and lay[10] == lay[13]
    for n in range(n_):
        for k0 in range(0, seg, kcmax):
            kc = min(kcmax, seg - k0)
            first = n == 0 and k0 == 0
            for g in range(b_lo // nb, (b_hi - 1) // nb + 1):
                _pack_b(gf, (n * c_out + g * opg) * seg + k0, 1, seg, kc, opg, bbuf)
                base = n * stride + g * cpg * plane
                for b in range(max(b_lo, g * nb), min(b_hi, (g + 1) * nb)):
                    r0 = (b - g * nb) * MR
                    mr = min(MR, kt - r0)
                    if in_place:  # rows of U_n are runs of xp
                        o = base + k0
                        for q in range(0, opg, NR):
                            _micro_rows(kc, xp, o + taps[r0], o + taps[r0 + min(1, mr - 1)], o + taps[r0 + min(2, mr - 1)],
                                        o + taps[r0 + min(3, mr - 1)], o + taps[r0 + min(4, mr - 1)],
                                        o + taps[r0 + min(5, mr - 1)], 1, mr, bbuf, q * kc, NR,
                                        cf, (g * kt + r0) * opg + q, opg, min(NR, opg - q), first)
                        continue
                    for i in range(mr):
                        _gather(xp, base + taps[r0 + i], lay, k0, kc, abuf, i * kc)
                    for q in range(0, opg, NR):
                        _micro_6x16(kc, abuf, 0, kc, 1, mr, bbuf, q * kc, NR,
                                    cf, (g * kt + r0) * opg + q, opg, min(NR, opg - q), first)


@njit(cache=True, parallel=True)
def forward(xp, w, bias, y, lay, groups, tasks):
    """y (N, C_out, H_out, W_out) from the padded input xp and w (C_out, K), plus bias (C_out,)."""
    for t in prange(tasks):
        _forward_task(xp, w, bias, y, lay, groups, np.int64(t), tasks)  # prange's index is unsigned


@njit(cache=True, parallel=True)
def grad_x(gw, w, gxp, lay, groups, finite, tasks):
    """gxp (zeroed, padded as ``pad``) += the input gradient, from dY in the position layout;
    ``finite``: whether w holds no inf or NaN."""
    for t in prange(tasks):
        _grad_x_task(gw, w, gxp, lay, groups, finite, np.int64(t), tasks)


@njit(cache=True, parallel=True)
def grad_w(gw, xp, gwt, lay, groups, finite, tasks):
    """gwt (G, K, C_out/G) = dW^T from dY in the position layout and the padded input;
    ``finite``: whether x holds no inf or NaN."""
    for t in prange(tasks):
        _grad_w_task(gw, xp, gwt, lay, groups, finite, np.int64(t), tasks)


@njit(cache=True, parallel=True)
def positions(g, rw, out):
    """Fill out (flat) with g (N, C, H_out, W_out) in the position layout, (N, C, H_out rw) with
    zeros at junk positions. Returns out."""
    n_, c_, ho, wo = g.shape
    seg = ho * rw
    gf = g.reshape(-1)
    for t in prange(n_ * c_):
        d, s = out[t * seg : (t + 1) * seg], gf[t * ho * wo : (t + 1) * ho * wo]
        for i in range(ho):
            for j in range(wo):
                d[i * rw + j] = s[i * wo + j]
            for j in range(wo, rw):
                d[i * rw + j] = 0.0
    return out


@njit(cache=True, parallel=True)
def all_finite(a):
    """Whether a (float32, any shape) holds no inf or NaN: none has an all-ones exponent. An
    integer count over the bits vectorises, where a float test per element does not."""
    u = a.reshape(-1).view(np.uint32)
    bad = 0
    for i in prange(u.size):
        bad += (u[i] & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
    return bad == 0
