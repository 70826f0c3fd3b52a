/* Dense products, the C reference. Row-major float32, 64-bit sizes.
 *
 * c (m, n) = op(a) @ op(b), where a is (m, k) or, with trans_a, (k, m); b is (k, n) or, with
 * trans_b, (n, k). The GEMM follows the BLIS design (Goto & van de Geijn, ACM TOMS 34(3), 2008;
 * Van Zee & van de Geijn, ACM TOMS 41(3), 2015), as kernels/numba_cpu/gemm.py does: op(b) is
 * packed KC rows at a time into 16-wide micro-panels and op(a) MC x KC at a time into 6-row
 * micro-panels, both with zero padding, so the packing also takes care of the transposes; a
 * 6x16 block of C is accumulated in twelve 8-float vector registers. OpenMP tasks own equal
 * ranges of 16-column panels of C (or of 6-row blocks when there are fewer panels than
 * threads) and pack their own data, so the parallel region needs no barrier.
 *
 * The default build targets baseline x86-64 (SSE2). The blocked GEMM is written once, inlined
 * into an AVX2+FMA copy and a baseline copy, and gemm picks one at run time with
 * __builtin_cpu_supports, so the module runs on any x86-64 and uses AVX2 where it exists.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "linear.h"

/* ISO C mode forbids fusing a*b+c; the micro-kernel wants FMA where the target has it. */
#pragma GCC optimize("fp-contract=fast")

enum { MR = 6, NR = 16, KC = 320, MC = 240 };

/* Unaligned 8-float vectors (GCC vector extension: element-wise ops, scalar broadcast). */
typedef float v8f __attribute__((vector_size(32), aligned(4)));

#define INLINE static inline __attribute__((always_inline))

INLINE int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

/* dst[q*kc*w + p*w + f] = src[(q*w + f)*s_fast + p*s_slow] for q*w + f < n_fast, else 0. */
INLINE void pack(const float *restrict src, int64_t s_fast, int64_t s_slow, int64_t n_fast,
                 int64_t kc, int64_t w, float *restrict dst) {
    for (int64_t q = 0; q * w < n_fast; q++) {
        float *restrict d = dst + q * kc * w;
        const int64_t width = min64(w, n_fast - q * w);
        const float *restrict s = src + q * w * s_fast;
        if (s_fast == 1 && width == w) {
            for (int64_t p = 0; p < kc; p++) memcpy(d + p * w, s + p * s_slow, (size_t)w * sizeof(float));
            continue;
        }
        for (int64_t f = 0; f < w; f++) {
            if (f < width)
                for (int64_t p = 0; p < kc; p++) d[p * w + f] = s[f * s_fast + p * s_slow];
            else
                for (int64_t p = 0; p < kc; p++) d[p * w + f] = 0.0f;
        }
    }
}

/* c[i*ldc + j] (+)= sum_p ap[p*MR + i] * bp[p*ldb + j] for i < mr, j < nr. */
INLINE void micro_6x16(int64_t kc, const float *restrict ap, const float *restrict bp, int64_t ldb,
                       float *restrict c, int64_t ldc, int64_t mr, int64_t nr, int first) {
    v8f acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (v8f){0};
    for (int64_t p = 0; p < kc; p++) {
        const v8f b0 = *(const v8f *)(bp + p * ldb), b1 = *(const v8f *)(bp + p * ldb + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const float ai = ap[p * MR + i];
            acc[i][0] += ai * b0;
            acc[i][1] += ai * b1;
        }
    }
    if (mr == MR && nr == NR) {
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            v8f *row = (v8f *)(c + i * ldc);
            row[0] = first ? acc[i][0] : row[0] + acc[i][0];
            row[1] = first ? acc[i][1] : row[1] + acc[i][1];
        }
        return;
    }
    float tile[MR][NR];
    memcpy(tile, acc, sizeof tile);
    for (int64_t i = 0; i < mr; i++)
        for (int64_t j = 0; j < nr; j++) c[i * ldc + j] = first ? tile[i][j] : c[i * ldc + j] + tile[i][j];
}

/* One task's block C[i_lo:i_hi, j_lo:j_hi] over all of K. op(a)[i, p] = a[i*asi + p*asp],
 * op(b)[p, j] = b[p*bsp + j*bsj]. A block of few rows reads whole 16-column strips of a
 * row-major b in place (BLIS's "sup" path): packing would cost more than it saves.
 * Returns nonzero when the buffers cannot be allocated. */
INLINE int gemm_block(const float *restrict a, int64_t asi, int64_t asp, const float *restrict b,
                      int64_t bsp, int64_t bsj, float *restrict c, int64_t n, int64_t k,
                      int64_t i_lo, int64_t i_hi, int64_t j_lo, int64_t j_hi, int accumulate) {
    const int64_t nkc = (k + KC - 1) / KC, kcmax = (k + nkc - 1) / nkc;
    const int64_t nj = j_hi - j_lo, nq = (nj + NR - 1) / NR;
    const int in_place = bsj == 1 && i_hi - i_lo < 128;
    float *bp = malloc((size_t)(nq * NR * kcmax) * sizeof(float));
    float *ap = malloc((size_t)((MC + MR) * kcmax) * sizeof(float));
    if (!bp || !ap) {
        free(bp);
        free(ap);
        return 1;
    }
    for (int64_t p0 = 0; p0 < k; p0 += kcmax) {
        const int64_t kc = min64(kcmax, k - p0);
        const int first = p0 == 0 && !accumulate;
        if (in_place)
            pack(b + p0 * bsp + (j_lo + nj / NR * NR) * bsj, bsj, bsp, nj % NR, kc, NR, bp);
        else
            pack(b + p0 * bsp + j_lo * bsj, bsj, bsp, nj, kc, NR, bp);
        for (int64_t ib = i_lo; ib < i_hi; ib += MC) {
            const int64_t mc = min64(MC, i_hi - ib);
            pack(a + ib * asi + p0 * asp, asi, asp, mc, kc, MR, ap);
            for (int64_t q = 0; q < nq; q++) {
                const int64_t j0 = j_lo + q * NR, nr = min64(NR, j_hi - j0);
                const float *bq = !in_place ? bp + q * kc * NR : nr < NR ? bp : b + p0 * bsp + j0;
                const int64_t ldb = in_place && nr == NR ? bsp : NR;
                for (int64_t i0 = 0; i0 < mc; i0 += MR)
                    micro_6x16(kc, ap + i0 * kc, bq, ldb, c + (ib + i0) * n + j0, n, min64(MR, mc - i0), nr,
                               first);
            }
        }
    }
    free(bp);
    free(ap);
    return 0;
}

typedef int (*block_fn)(const float *, int64_t, int64_t, const float *, int64_t, int64_t, float *,
                        int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int);

__attribute__((target("avx2,fma"))) static int gemm_block_avx2(
    const float *a, int64_t asi, int64_t asp, const float *b, int64_t bsp, int64_t bsj, float *c, int64_t n,
    int64_t k, int64_t i_lo, int64_t i_hi, int64_t j_lo, int64_t j_hi, int accumulate) {
    return gemm_block(a, asi, asp, b, bsp, bsj, c, n, k, i_lo, i_hi, j_lo, j_hi, accumulate);
}

static int gemm_block_baseline(const float *a, int64_t asi, int64_t asp, const float *b, int64_t bsp,
                               int64_t bsj, float *c, int64_t n, int64_t k, int64_t i_lo, int64_t i_hi,
                               int64_t j_lo, int64_t j_hi, int accumulate) {
    return gemm_block(a, asi, asp, b, bsp, bsj, c, n, k, i_lo, i_hi, j_lo, j_hi, accumulate);
}

static void gemm(const float *a, const float *b, float *c, int64_t m, int64_t n, int64_t k, int trans_a,
                 int trans_b, int accumulate) {
    const int64_t asi = trans_a ? 1 : k, asp = trans_a ? m : 1;
    const int64_t bsp = trans_b ? 1 : n, bsj = trans_b ? k : 1;
    const int64_t nq = (n + NR - 1) / NR, nb = (m + MR - 1) / MR;
    __builtin_cpu_init();
    const block_fn block = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                               ? gemm_block_avx2 : gemm_block_baseline;
#pragma omp parallel if (2.0 * m * n * k >= 2e6)
    {
#ifdef _OPENMP
        const int64_t t = omp_get_thread_num(), tasks = omp_get_num_threads();
#else
        const int64_t t = 0, tasks = 1;
#endif
        int64_t i_lo = 0, i_hi = m, j_lo = 0, j_hi = n;
        if (nq >= tasks) {
            j_lo = nq * t / tasks * NR;
            j_hi = min64(n, nq * (t + 1) / tasks * NR);
        } else {
            i_lo = nb * t / tasks * MR;
            i_hi = min64(m, nb * (t + 1) / tasks * MR);
        }
        if (i_lo < i_hi && j_lo < j_hi && block(a, asi, asp, b, bsp, bsj, c, n, k, i_lo, i_hi, j_lo, j_hi, accumulate))
            abort(); /* out of memory for a few hundred KB of packing buffers */
    }
}

void pynn_matmul(const float *a, const float *b, float *c, int64_t m, int64_t n, int64_t k,
                 int trans_a, int trans_b) {
    gemm(a, b, c, m, n, k, trans_a, trans_b, 0);
}

/* y (rows, out_f) = x (rows, in_f) @ w (out_f, in_f)^T + bias (out_f,); bias may be NULL.
 * With a bias, y starts as bias in every row and the GEMM accumulates onto it. */
void pynn_linear(const float *x, const float *w, const float *bias, float *y, int64_t rows,
                 int64_t in_f, int64_t out_f) {
    if (bias)
        for (int64_t i = 0; i < rows; i++) memcpy(y + i * out_f, bias, (size_t)out_f * sizeof(float));
    gemm(x, w, y, rows, out_f, in_f, 0, 1, bias != NULL);
}

/* out (cols,) = sum over rows of g (rows, cols): the bias gradient. */
void pynn_sum_rows(const float *g, float *out, int64_t rows, int64_t cols) {
    memset(out, 0, (size_t)cols * sizeof(float));
    for (int64_t i = 0; i < rows; i++) {
        const float *restrict gi = g + i * cols;
        for (int64_t j = 0; j < cols; j++) out[j] += gi[j];
    }
}
