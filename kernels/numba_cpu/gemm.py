"""Single-precision GEMM for the Numba CPU backend, kept as the numbered steps that made it fast.

Every version computes ``c (M, N) = op(a) @ op(b)`` for float32 C-contiguous ``a`` and ``b``,
where ``op`` transposes when ``trans_a``/``trans_b`` is set (``a`` is (M, K) or (K, M), ``b`` is
(K, N) or (N, K)), and returns a new C-contiguous (M, N) float32 array. ``gemm`` (the last
version) is what ``kernels.numba_cpu.linear`` calls.

The steps follow Goto & van de Geijn, "Anatomy of high-performance matrix multiplication"
(ACM TOMS 34(3), 2008) and Van Zee & van de Geijn, "BLIS" (ACM TOMS 41(3), 2015): make the inner
loop contiguous, hold an MR x NR block of C in registers, pack panels of A and B so the
micro-kernel streams from L1/L2, then split the C blocks over threads.

Inside the kernels the operands are flat views addressed by element strides, so one loop nest
serves the four transpose cases: ``X[i, p] = x[i*xsi + p*xsp]`` (op(a)),
``Y[p, j] = y[p*ysp + j*ysj]`` (op(b)).

Figures in the docstrings: GFLOP/s with 2 threads / 1 thread at n=1024 and on the MLP forward
shape (64x784)@(784x256)^T, medians of ``benchmarks/test_gemm.py`` runs on the development
machine (2-core AMD EPYC that LLVM reports as znver3: AVX2 + FMA, no AVX-512), where NumPy's
OpenBLAS made 152 / 90 and 123 / 70 in the same runs. Those runs set OMP_WAIT_POLICY=PASSIVE,
which costs every parallel region a thread wake-up (about 14 us here); the machine is shared,
so figures are good to 10-20%.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from kernels import _memory

_FAST = dict(cache=True, fastmath=True, error_model="numpy", boundscheck=False)
# An unsigned index skips Numba's negative-index wraparound, whose per-element select would
# keep LLVM from vectorising the loads and stores of the micro-kernels.
_u = np.uint64


@njit(cache=True)
def _dims(a, b, trans_a, trans_b):
    """(m, n, k) and the element strides (xsi, xsp) of op(a) and (ysp, ysj) of op(b)."""
    m, k = (a.shape[1], a.shape[0]) if trans_a else (a.shape[0], a.shape[1])
    n = b.shape[0] if trans_b else b.shape[1]
    xsi, xsp = (1, m) if trans_a else (k, 1)
    ysp, ysj = (1, k) if trans_b else (n, 1)
    return m, n, k, xsi, xsp, ysp, ysj


# --- v1, v2: loop order -------------------------------------------------------------------------

@njit(**_FAST)
def gemm_v1_naive(a, b, trans_a, trans_b):
    """Step 1: the textbook triple loop, one dot product over ``p`` per element of C.

    The inner loop walks a column of op(b), N floats apart: a cache miss per multiply-add once
    op(b) leaves L1, and nothing LLVM can vectorise. Serial: 1 GFLOP/s (n=256; n=1024 would
    take seconds), 2 on the MLP forward shape.
    """
    m, n, k, xsi, xsp, ysp, ysj = _dims(a, b, trans_a, trans_b)
    x, y = a.reshape(-1), b.reshape(-1)
    c = np.empty((m, n), np.float32)
    for i in range(m):
        for j in range(n):
            acc = np.float32(0.0)
            for p in range(k):
                acc += x[i * xsi + p * xsp] * y[p * ysp + j * ysj]
            c[i, j] = acc
    return c


@njit(parallel=True, **_FAST)
def gemm_v2_loop_order(a, b, trans_a, trans_b):
    """Step 2: i-p-j order, so the inner loop streams a row of op(b) into a row of C.

    LLVM vectorises the contiguous inner loop (a transposed ``b`` is first copied row-major);
    rows of C go to threads with ``prange``. Every multiply-add still loads and stores C, so it
    is bound by L1 bandwidth; this is the ``prange`` matmul the library first shipped.
    41 / 25 GFLOP/s at n=1024, 38 / 20 on the MLP forward shape.
    """
    m, n, k, xsi, xsp, _, _ = _dims(a, b, trans_a, trans_b)
    if trans_b:
        b = np.ascontiguousarray(b.T)
    x = a.reshape(-1)
    c = np.empty((m, n), np.float32)
    for i in prange(m):
        ci = c[i]
        ci[:] = 0.0
        for p in range(k):
            aip = x[i * xsi + p * xsp]
            bp = b[p]
            for j in range(n):
                ci[j] += aip * bp[j]
    return c


# --- v3, v4: register blocking and packing with plain Numba -------------------------------------

@intrinsic
def _stack_floats(typingctx, count):
    """A pointer to ``count`` float32 on the caller's stack; ``count`` must be a constant.

    A local array that LLVM can keep in registers: ``np.empty`` would go to the heap, where its
    loads and stores could alias the operands and stay in memory.
    """
    if not isinstance(count, types.IntegerLiteral):
        return None
    size = count.literal_value

    def codegen(context, builder, sig, args):
        return cgutils.alloca_once(builder, context.get_value_type(types.float32), size=size)

    return types.CPointer(types.float32)(count), codegen


MR5, NR16 = 5, 16


@njit(inline="always", **_FAST)
def _micro_5x16(kc, x, xo, xsi, xsp, mr, y, yo, ysp, c, co, ldc, nr, first):
    """c[co + i*ldc + j] (+)= sum_p X[i, p] Y[p, j] for i < mr, j < nr: a 5x16 block of C,
    stored when ``first``, else added.

    X[i, p] = x[xo + i*xsi + p*xsp]; Y[p, j] = y[yo + p*ysp + j] for 16 contiguous j. Rows past
    ``mr`` re-read the last row, so the loop never leaves the operands. Five 16-float
    accumulators fill 10 of the 16 AVX2 registers; with 6 rows LLVM hoists all six broadcasts
    first and spills.
    """
    acc0, acc1, acc2 = _stack_floats(NR16), _stack_floats(NR16), _stack_floats(NR16)
    acc3, acc4 = _stack_floats(NR16), _stack_floats(NR16)
    for j in range(NR16):
        acc0[j] = acc1[j] = acc2[j] = acc3[j] = acc4[j] = 0.0
    o1 = xo + min(1, mr - 1) * xsi
    o2 = xo + min(2, mr - 1) * xsi
    o3 = xo + min(3, mr - 1) * xsi
    o4 = xo + min(4, mr - 1) * xsi
    for p in range(kc):
        a0 = x[_u(xo + p * xsp)]
        a1 = x[_u(o1 + p * xsp)]
        a2 = x[_u(o2 + p * xsp)]
        a3 = x[_u(o3 + p * xsp)]
        a4 = x[_u(o4 + p * xsp)]
        for j in range(NR16):
            bj = y[_u(yo + p * ysp + j)]
            acc0[j] += a0 * bj
            acc1[j] += a1 * bj
            acc2[j] += a2 * bj
            acc3[j] += a3 * bj
            acc4[j] += a4 * bj
    for j in range(nr):
        if not first:
            acc0[j] += c[co + j]
            if mr > 1:
                acc1[j] += c[co + ldc + j]
            if mr > 2:
                acc2[j] += c[co + 2 * ldc + j]
            if mr > 3:
                acc3[j] += c[co + 3 * ldc + j]
            if mr > 4:
                acc4[j] += c[co + 4 * ldc + j]
        c[co + j] = acc0[j]
        if mr > 1:
            c[co + ldc + j] = acc1[j]
        if mr > 2:
            c[co + 2 * ldc + j] = acc2[j]
        if mr > 3:
            c[co + 3 * ldc + j] = acc3[j]
        if mr > 4:
            c[co + 4 * ldc + j] = acc4[j]


@njit(parallel=True, **_FAST)
def gemm_v3_register_blocked(a, b, trans_a, trans_b):
    """Step 3: a 5x16 block of C accumulated in registers over the whole of ``k``.

    Each multiply-add now costs a broadcast of op(a) shared by 16 lanes and a load of op(b)
    shared by 5 rows; C is written once. No packing: a transposed ``b`` is first copied
    row-major, and the 16-float strips of op(b) are ``n`` floats apart, so for large ``n`` they
    conflict in L1 and come from L2 or memory. 55 / 37 GFLOP/s at n=1024, 47 / 45 on the MLP
    forward shape.
    """
    m, n, k, xsi, xsp, ysp, ysj = _dims(a, b, trans_a, trans_b)
    if trans_b:
        b = np.ascontiguousarray(b.T)
        ysp = n
    x, y = a.reshape(-1), b.reshape(-1)
    c = np.empty((m, n), np.float32)
    cf = c.reshape(-1)
    tail = np.zeros((k, NR16), np.float32)  # the last, partial strip of op(b), zero padded
    n16 = n - n % NR16
    tail[:, : n - n16] = b[:, n16:]
    tf = tail.reshape(-1)
    for ib in prange((m + MR5 - 1) // MR5):
        i0 = ib * MR5
        for j0 in range(0, n, NR16):
            nr = min(NR16, n - j0)
            if nr == NR16:
                yy, yo, ys = y, j0, ysp
            else:
                yy, yo, ys = tf, 0, NR16
            _micro_5x16(k, x, i0 * xsi, xsi, xsp, min(MR5, m - i0), yy, yo, ys, cf, i0 * n + j0, n, nr, True)
    return c


@njit(**_FAST)
def _pack(src, so, s_fast, s_slow, n_fast, kc, width, dst):
    """Pack panels ``width`` wide: dst[q*kc*width + p*width + f] = src[so + (q*width + f)*s_fast
    + p*s_slow] for q*width + f < n_fast, zero beyond. Micro-panels of op(a) (fast index i)
    and of op(b) (fast index j) alike; the strides carry the transposes."""
    for q in range((n_fast + width - 1) // width):
        base = q * kc * width
        for f in range(width):
            if q * width + f < n_fast:
                s = so + (q * width + f) * s_fast
                for p in range(kc):
                    dst[base + p * width + f] = src[s + p * s_slow]
            else:
                for p in range(kc):
                    dst[base + p * width + f] = 0.0


KC4, MC4 = 256, 120


def gemm_v4_packed(a, b, trans_a, trans_b):
    """Step 4: the BLIS loop nest with packed operands (Goto & van de Geijn 2008, Fig. 8).

    For each KC-deep slice: op(b) is packed into 16-wide micro-panels (KC x 16 floats, 16 KB,
    held in L1 while the 5-row micro-panels of op(a), packed MC rows at a time into L2, stream
    past it). Packing makes every micro-kernel load contiguous and handles the transposes.
    Threads take equal ranges of 16-column panels (``prange`` over tasks), each packing its own
    data. 84 / 59 GFLOP/s at n=1024; 43 / 45 on the MLP forward shape, where the scalar packing
    of both operands and the per-call accumulator traffic of plain Numba weigh most.
    """
    return _gemm_v4(a, b, trans_a, trans_b, numba.get_num_threads())


@njit(parallel=True, **_FAST)
def _gemm_v4(a, b, trans_a, trans_b, tasks):
    m, n, k, xsi, xsp, ysp, ysj = _dims(a, b, trans_a, trans_b)
    x, y = a.reshape(-1), b.reshape(-1)
    c = np.empty((m, n), np.float32)
    cf = c.reshape(-1)
    nq = (n + NR16 - 1) // NR16
    kcmax = min(k, KC4)
    for t in prange(tasks):
        q_lo, q_hi = nq * t // tasks, nq * (t + 1) // tasks
        j_lo, j_hi = q_lo * NR16, min(n, q_hi * NR16)
        bp = np.empty((q_hi - q_lo) * NR16 * kcmax, np.float32)
        ap = np.empty((MC4 + MR5) * kcmax, np.float32)
        for p0 in range(0, k, kcmax):
            kc = min(kcmax, k - p0)
            _pack(y, p0 * ysp + j_lo * ysj, ysj, ysp, j_hi - j_lo, kc, NR16, bp)
            for i_lo in range(0, m, MC4):
                mc = min(MC4, m - i_lo)
                _pack(x, i_lo * xsi + p0 * xsp, xsi, xsp, mc, kc, MR5, ap)
                for q in range(q_hi - q_lo):
                    j0 = j_lo + q * NR16
                    for i0 in range(0, mc, MR5):
                        co = (i_lo + i0) * n + j0
                        _micro_5x16(kc, ap, i0 * kc, 1, MR5, min(MR5, mc - i0), bp, q * kc * NR16, NR16,
                                    cf, co, n, min(NR16, n - j0), p0 == 0)
    return c


# --- v5: explicit 8-lane vectors ----------------------------------------------------------------
# Plain Numba leaves the 5x16 accumulators in stack memory between calls (zeroed, reloaded and
# stored around every micro-kernel), which costs a quarter of the time when K is 64, and cannot
# hold a 6x16 block without spilling. A vector type whose values are LLVM <8 x float> SSA values
# fixes both: 12 accumulators + 2 rows of op(b) + 1 broadcast fill the 16 AVX2 registers.

class _F32x8(types.Type):
    def __init__(self):
        super().__init__(name="f32x8")


f32x8 = _F32x8()
_V8 = ir.VectorType(ir.FloatType(), 8)
_I32 = ir.IntType(32)


@register_model(_F32x8)
class _F32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V8)


def _addr(context, builder, ty, value, index):
    """Pointer to element ``index`` of an array or raw pointer (no wraparound, no bounds check)."""
    base = value if isinstance(ty, types.CPointer) else context.make_array(ty)(context, builder, value).data
    return builder.gep(base, [index])


def _vaddr(context, builder, ty, value, index):
    return builder.bitcast(_addr(context, builder, ty, value, index), _V8.as_pointer())


def _shuffle(builder, u, v, lanes):
    return builder.shuffle_vector(u, v, ir.Constant(ir.VectorType(_I32, 8), lanes))


@intrinsic
def _load8(typingctx, arr, i):
    """The 8 floats arr[i:i+8]."""
    def codegen(context, builder, sig, args):
        return builder.load(_vaddr(context, builder, sig.args[0], *args), align=4)
    return f32x8(arr, i), codegen


@intrinsic
def _store8(typingctx, arr, i, v):
    """arr[i:i+8] = v."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], _vaddr(context, builder, sig.args[0], args[0], args[1]), align=4)
    return types.void(arr, i, v), codegen


@intrinsic
def _bcast8(typingctx, arr, i):
    """arr[i] in all 8 lanes."""
    def codegen(context, builder, sig, args):
        value = builder.load(_addr(context, builder, sig.args[0], *args))
        one = builder.insert_element(ir.Constant(_V8, ir.Undefined), value, ir.Constant(_I32, 0))
        return _shuffle(builder, one, ir.Constant(_V8, ir.Undefined), [0] * 8)
    return f32x8(arr, i), codegen


@intrinsic
def _fma8(typingctx, a, b, c):
    """a * b + c, fused where the CPU has FMA (llvm.fmuladd)."""
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_V8, [_V8] * 3)
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.fmuladd.v8f32"), args)
    return f32x8(f32x8, f32x8, f32x8), codegen


@intrinsic
def _add8(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fadd(*args)
    return f32x8(f32x8, f32x8), codegen


@intrinsic
def _hsum8(typingctx, v):
    """The sum of the 8 lanes (pairwise: lanes 4 apart, then 2, then 1)."""
    def codegen(context, builder, sig, args):
        u = args[0]
        for lanes in ([4, 5, 6, 7, 0, 1, 2, 3], [2, 3, 0, 1, 6, 7, 4, 5], [1, 0, 3, 2, 5, 4, 7, 6]):
            u = builder.fadd(u, _shuffle(builder, u, u, lanes))
        return builder.extract_element(u, ir.Constant(_I32, 0))
    return types.float32(f32x8), codegen


@intrinsic
def _zero8(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_V8, [0.0] * 8)
    return f32x8(), codegen


@intrinsic
def _transpose8(typingctx, src, so, ss, dst, do, ds):
    """dst[do + r*ds + c] = src[so + c*ss + r] for r, c < 8: an 8x8 block transposed in registers
    (unpack pairs of rows, then pairs of pairs, then swap 128-bit halves: 24 shuffles)."""
    def codegen(context, builder, sig, args):
        def at(k, arg, stride, r):  # address of row r of operand k (offset args[arg], stride args[stride])
            offset = builder.add(args[arg], builder.mul(args[stride], ir.Constant(args[stride].type, r)))
            return _vaddr(context, builder, sig.args[k], args[k], offset)
        rows = [builder.load(at(0, 1, 2, r), align=4) for r in range(8)]
        pairs = []
        for r in range(0, 8, 2):
            pairs += [_shuffle(builder, rows[r], rows[r + 1], [0, 8, 1, 9, 4, 12, 5, 13]),
                      _shuffle(builder, rows[r], rows[r + 1], [2, 10, 3, 11, 6, 14, 7, 15])]
        quads = []
        for r in range(0, 8, 4):
            for h in range(2):
                quads += [_shuffle(builder, pairs[r + h], pairs[r + 2 + h], [0, 1, 8, 9, 4, 5, 12, 13]),
                          _shuffle(builder, pairs[r + h], pairs[r + 2 + h], [2, 3, 10, 11, 6, 7, 14, 15])]
        for col in range(4):
            builder.store(_shuffle(builder, quads[col], quads[4 + col], [0, 1, 2, 3, 8, 9, 10, 11]),
                          at(3, 4, 5, col), align=4)
            builder.store(_shuffle(builder, quads[col], quads[4 + col], [4, 5, 6, 7, 12, 13, 14, 15]),
                          at(3, 4, 5, col + 4), align=4)
        return context.get_dummy_value()
    return types.void(src, so, ss, dst, do, ds), codegen


MR, NR = 6, 16
TILE = MR * NR
KC = 320  # K slice: a 16-wide panel of op(b) (20 KB) and a 6-row panel of op(a) (7.5 KB) in L1
MC = 240  # rows of op(a) per packed block: 300 KB, in L2
PACK_B_ROWS = 128  # from this many rows of C per task, packing op(b) pays for itself
PACK_A_COLS, PACK_A_ROWS = 256, 96  # packing op(a) pays from this many columns and rows
PARALLEL_FLOPS = 2e6  # below this a parallel region costs more than it saves


@njit(inline="always", **_FAST)
def _store_row(c, o, v0, v1, first):
    if first:
        _store8(c, o, v0)
        _store8(c, o + 8, v1)
    else:
        _store8(c, o, _add8(_load8(c, o), v0))
        _store8(c, o + 8, _add8(_load8(c, o + 8), v1))


@njit(inline="always", **_FAST)
def _store_block(c, co, ldc, first, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51):
    _store_row(c, co, c00, c01, first)
    _store_row(c, co + ldc, c10, c11, first)
    _store_row(c, co + 2 * ldc, c20, c21, first)
    _store_row(c, co + 3 * ldc, c30, c31, first)
    _store_row(c, co + 4 * ldc, c40, c41, first)
    _store_row(c, co + 5 * ldc, c50, c51, first)


@njit(inline="always", **_FAST)
def _micro_rows(kc, x, o0, o1, o2, o3, o4, o5, xsp, mr, y, yo, ysp, c, co, ldc, nr, first):
    """c[co + i*ldc + j] (+)= sum_p X[i, p] Y[p, j] for i < mr, j < nr, as ``_micro_5x16``,
    with 6 rows held in twelve 8-lane registers. Row i of X starts at x[o_i] (rows past ``mr``
    repeat the last), X[i, p] = x[o_i + p*xsp]. A partial block goes through a stack tile."""
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _zero8()
    for p in range(kc):
        b0 = _load8(y, yo + p * ysp)
        b1 = _load8(y, yo + p * ysp + 8)
        a = _bcast8(x, o0 + p * xsp)
        c00, c01 = _fma8(a, b0, c00), _fma8(a, b1, c01)
        a = _bcast8(x, o1 + p * xsp)
        c10, c11 = _fma8(a, b0, c10), _fma8(a, b1, c11)
        a = _bcast8(x, o2 + p * xsp)
        c20, c21 = _fma8(a, b0, c20), _fma8(a, b1, c21)
        a = _bcast8(x, o3 + p * xsp)
        c30, c31 = _fma8(a, b0, c30), _fma8(a, b1, c31)
        a = _bcast8(x, o4 + p * xsp)
        c40, c41 = _fma8(a, b0, c40), _fma8(a, b1, c41)
        a = _bcast8(x, o5 + p * xsp)
        c50, c51 = _fma8(a, b0, c50), _fma8(a, b1, c51)
    if mr == MR and nr == NR:
        _store_block(c, co, ldc, first, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51)
    else:
        t = _stack_floats(TILE)
        _store_block(t, 0, NR, True, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51)
        for i in range(mr):
            for j in range(nr):
                if first:
                    c[co + i * ldc + j] = t[i * NR + j]
                else:
                    c[co + i * ldc + j] += t[i * NR + j]


@njit(inline="always", **_FAST)
def _micro_6x16(kc, x, xo, xsi, xsp, mr, y, yo, ysp, c, co, ldc, nr, first):
    """``_micro_rows`` with rows ``xsi`` apart: X[i, p] = x[xo + i*xsi + p*xsp]."""
    _micro_rows(kc, x, xo, xo + min(1, mr - 1) * xsi, xo + min(2, mr - 1) * xsi, xo + min(3, mr - 1) * xsi,
                xo + min(4, mr - 1) * xsi, xo + min(5, mr - 1) * xsi, xsp, mr, y, yo, ysp, c, co, ldc, nr, first)


@njit(**_FAST)
def _pack_b(y, yo, ysp, ysj, kc, nj, dst):
    """Pack op(b)[0:kc, 0:nj] (from y[yo]) into 16-wide micro-panels, as ``_pack`` does, with
    vector copies when rows are contiguous and 8x8 register transposes when columns are."""
    for q in range((nj + NR - 1) // NR):
        base, src = q * kc * NR, yo + q * NR * ysj
        if nj - q * NR >= NR and ysj == 1:
            for p in range(kc):
                _store8(dst, base + p * NR, _load8(y, src + p * ysp))
                _store8(dst, base + p * NR + 8, _load8(y, src + p * ysp + 8))
        elif nj - q * NR >= NR and ysp == 1:
            k8 = kc - kc % 8
            for p in range(0, k8, 8):
                _transpose8(y, src + p, ysj, dst, base + p * NR, NR)
                _transpose8(y, src + 8 * ysj + p, ysj, dst, base + p * NR + 8, NR)
            for j in range(NR):
                for p in range(k8, kc):
                    dst[base + p * NR + j] = y[src + p + j * ysj]
        else:
            _pack(y, src, ysj, ysp, nj - q * NR, kc, NR, dst[base:])


@njit(**_FAST)
def _gemm_task(a, b, trans_a, trans_b, c, accumulate, t, tasks):
    """Task ``t`` of ``tasks``: C[i_lo:i_hi, j_lo:j_hi] (+)= op(a)[i_lo:i_hi] @ op(b)[:, j_lo:j_hi]
    over all of K, through the BLIS loops; tasks own equal ranges of 16-column panels, or of
    6-row blocks when there are fewer panels than tasks.

    op(b) is packed when the block has enough rows to repay it, or must be (transposed b,
    partial last panel); otherwise the micro-kernel reads 16-float strips of b in place, as
    BLIS's "sup" path does for skinny products. op(a) is packed when the block is wide enough.
    """
    m, n, k, xsi, xsp, ysp, ysj = _dims(a, b, trans_a, trans_b)
    x, y, cf = a.reshape(-1), b.reshape(-1), c.reshape(-1)
    nq, nb = (n + NR - 1) // NR, (m + MR - 1) // MR
    i_lo, i_hi, j_lo, j_hi = 0, m, 0, n
    if nq >= tasks:
        j_lo, j_hi = nq * t // tasks * NR, min(n, nq * (t + 1) // tasks * NR)
    else:
        i_lo, i_hi = nb * t // tasks * MR, min(m, nb * (t + 1) // tasks * MR)
    nj, mi = j_hi - j_lo, i_hi - i_lo
    nq = (nj + NR - 1) // NR
    pack_b = ysj != 1 or mi >= PACK_B_ROWS
    pack_a = nj >= PACK_A_COLS and mi >= PACK_A_ROWS
    nkc = (k + KC - 1) // KC
    kcmax = (k + nkc - 1) // nkc
    bbuf = np.empty(nq * NR * kcmax, np.float32)
    abuf = np.empty((MC + MR) * kcmax if pack_a else 0, np.float32)
    for p0 in range(0, k, kcmax):
        kc = min(kcmax, k - p0)
        first = p0 == 0 and not accumulate
        if pack_b:
            _pack_b(y, p0 * ysp + j_lo * ysj, ysp, ysj, kc, nj, bbuf)
        elif nj % NR:
            _pack_b(y, p0 * ysp + (j_hi - nj % NR) * ysj, ysp, ysj, kc, nj % NR, bbuf)
        for ib in range(i_lo, i_hi, MC):
            mc = min(MC, i_hi - ib)
            if pack_a:
                _pack(x, ib * xsi + p0 * xsp, xsi, xsp, mc, kc, MR, abuf)
            for q in range(nq):
                j0 = j_lo + q * NR
                nr = min(NR, j_hi - j0)
                if pack_b:
                    yy, yo, ys = bbuf, q * kc * NR, NR
                elif nr < NR:
                    yy, yo, ys = bbuf, 0, NR
                else:
                    yy, yo, ys = y, p0 * ysp + j0, ysp
                if pack_a:
                    xx, xo, si, sp = abuf, 0, 1, MR
                else:
                    xx, xo, si, sp = x, ib * xsi + p0 * xsp, xsi, xsp
                for i0 in range(0, mc, MR):
                    xi = xo + i0 * (kc if pack_a else xsi)
                    co = (ib + i0) * n + j0
                    _micro_6x16(kc, xx, xi, si, sp, min(MR, mc - i0), yy, yo, ys, cf, co, n, nr, first)


SMALL_M = 4  # up to this many rows of C, x @ w^T runs as dot products (inference, batch 1)


@njit(**_FAST)
def _dots_task(x, w, c, accumulate, t, tasks):
    """Columns t/tasks of C (+)= x @ w^T for x (M, K) with few rows and w (N, K): every entry is
    the dot product of two contiguous rows, four rows of w at a time sharing each load of x.
    Packing w, as the blocked path does, would copy all of it to use each element M times."""
    m, k = x.shape
    n = w.shape[0]
    xf, wf, cf = x.reshape(-1), w.reshape(-1), c.reshape(-1)
    k8 = k - k % 8
    j_lo, j_hi = n * t // tasks, n * (t + 1) // tasks
    for i in range(m):
        xo = i * k
        for j in range(j_lo, j_hi, 4):
            r0, r1, r2, r3 = j * k, min(j + 1, j_hi - 1) * k, min(j + 2, j_hi - 1) * k, min(j + 3, j_hi - 1) * k
            a0 = a1 = a2 = a3 = _zero8()
            for p in range(0, k8, 8):
                v = _load8(xf, xo + p)
                a0, a1 = _fma8(v, _load8(wf, r0 + p), a0), _fma8(v, _load8(wf, r1 + p), a1)
                a2, a3 = _fma8(v, _load8(wf, r2 + p), a2), _fma8(v, _load8(wf, r3 + p), a3)
            s0, s1, s2, s3 = _hsum8(a0), _hsum8(a1), _hsum8(a2), _hsum8(a3)
            for p in range(k8, k):
                s0 += xf[xo + p] * wf[r0 + p]
                s1 += xf[xo + p] * wf[r1 + p]
                s2 += xf[xo + p] * wf[r2 + p]
                s3 += xf[xo + p] * wf[r3 + p]
            for r, v in enumerate((s0, s1, s2, s3)):
                if j + r < j_hi:
                    cf[i * n + j + r] = v + cf[i * n + j + r] if accumulate else v


@njit(**_FAST)
def _dots_serial(x, w, c, accumulate, tasks):
    for t in range(tasks):
        _dots_task(x, w, c, accumulate, t, tasks)


@njit(parallel=True, **_FAST)
def _dots_parallel(x, w, c, accumulate, tasks):
    for t in prange(tasks):
        _dots_task(x, w, c, accumulate, np.int64(t), tasks)


@njit(**_FAST)
def _gemm_serial(a, b, trans_a, trans_b, c, accumulate, tasks):
    for t in range(tasks):
        _gemm_task(a, b, trans_a, trans_b, c, accumulate, t, tasks)


@njit(parallel=True, **_FAST)
def _gemm_parallel(a, b, trans_a, trans_b, c, accumulate, tasks):
    """One parallel region per product: each task packs its own data, so no barriers."""
    for t in prange(tasks):
        _gemm_task(a, b, trans_a, trans_b, c, accumulate, np.int64(t), tasks)  # prange's index is unsigned


def gemm_into(a, b, trans_a, trans_b, c, accumulate=False):
    """c (M, N) = op(a) @ op(b), or ``+=`` with ``accumulate``; ``c`` float32 C-contiguous."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    tasks = numba.get_num_threads() if 2.0 * m * n * k >= PARALLEL_FLOPS else 1  # the query costs 1 us
    if trans_b and not trans_a and m <= SMALL_M:
        (_dots_parallel if tasks > 1 else _dots_serial)(a, b, c, accumulate, tasks)
    elif tasks > 1:
        _gemm_parallel(a, b, trans_a, trans_b, c, accumulate, tasks)
    else:
        _gemm_serial(a, b, trans_a, trans_b, c, accumulate, tasks)


def gemm_v5_simd(a, b, trans_a, trans_b):
    """Step 5 (final): a 6x16 micro-kernel on explicit 8-lane vectors, vector packing with 8x8
    register transposes, packing only where it pays, and one parallel region per call.

    Skinny products (the MLP's batch of 64 rows) read op(b) in place; up to 4 rows times a
    transposed b (inference on one image) run as dot products (``_dots_task``: 18 us against
    NumPy's 20 for (1x784)@(784x256), where packing took 83); below 2 MFLOP it runs serially. 108 / 82 GFLOP/s at n=1024, 71 / 68 on the MLP forward shape (with libgomp's
    default wait policy instead of PASSIVE, 2 threads reach 120-150 on both, on par with NumPy).
    """
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    c = _memory.empty((m, n))
    gemm_into(a, b, trans_a, trans_b, c)
    return c


gemm = gemm_v5_simd
VERSIONS = {
    "v1_naive": gemm_v1_naive,
    "v2_loop_order": gemm_v2_loop_order,
    "v3_register_blocked": gemm_v3_register_blocked,
    "v4_packed": gemm_v4_packed,
    "v5_simd": gemm_v5_simd,
}
