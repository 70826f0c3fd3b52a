/* Pooling, the C reference. float32 planes (planes, h, w), row-major, 64-bit sizes.
 *
 * A window (kh, kw) moves by (sh, sw) over the input padded by (ph, pw) on each side; the
 * output is ho = (h + 2 ph - kh) / sh + 1 by wo likewise (no ceil mode, so a window never reaches
 * past the padding and always holds an input cell). Every routine runs one plane per OpenMP
 * iteration: a plane is the unit that backward passes scatter into, so they need no atomics.
 *
 * Max pooling takes a cell when it is larger than the running maximum or NaN (PyTorch's rule:
 * ties keep the first cell in row-major order, the last NaN wins) and records its flat index
 * r * w + c. That test compiles to branches that mispredict on random data, so a plane without
 * NaN (checked first, in one vectorised pass) runs loops that only ask "larger", which compile
 * to blends; 2x2 stride-2 windows get a loop of their own.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "pool.h"

/* Below this many input elements a thread team costs more than the loop. */
static const int64_t PAR_MIN = 32768;

typedef struct {
    int64_t kh, kw, sh, sw, ph, pw, h, w, ho, wo;
} geometry;

static geometry make_geometry(int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                              int64_t ph, int64_t pw) {
    geometry g = {kh, kw, sh, sw, ph, pw, h, w, (h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1};
    return g;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* floor(a / b) for b > 0: C division truncates toward zero. */
static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

static int has_nan(const float *restrict x, int64_t n) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) count += x[i] != x[i];
    return count > 0;
}

/* One plane, an output row at a time: each kernel cell (i, j), in scan order, updates the whole
 * row of running maxima, so the inner loop carries no dependency from one output to the next. */
static void max_plane(const float *restrict x, float *restrict y, int64_t *restrict idx,
                      const geometry *g, int nan_aware) {
    for (int64_t oh = 0; oh < g->ho; oh++) {
        const int64_t top = oh * g->sh - g->ph;
        float *restrict yr = y + oh * g->wo;
        int64_t *restrict ir = idx ? idx + oh * g->wo : NULL;
        for (int64_t ow = 0; ow < g->wo; ow++) {
            yr[ow] = -INFINITY;
            /* PyTorch's start: the window's first cell inside the input */
            if (ir) ir[ow] = max64(top, 0) * g->w + max64(ow * g->sw - g->pw, 0);
        }
        for (int64_t i = max64(0, -top); i < min64(g->kh, g->h - top); i++) {
            for (int64_t j = 0; j < g->kw; j++) {
                /* output columns whose kernel column j lands inside the input */
                const int64_t lo = max64(0, -floor_div(j - g->pw, g->sw));
                const int64_t hi = min64(g->wo, floor_div(g->w - 1 + g->pw - j, g->sw) + 1);
                const int64_t cell = (top + i) * g->w - g->pw + j;
                for (int64_t ow = lo; ow < hi; ow++) {
                    const float v = x[cell + ow * g->sw];
                    const int take = (v > yr[ow]) | (nan_aware & (v != v));
                    yr[ow] = take ? v : yr[ow];
                    if (ir) ir[ow] = take ? cell + ow * g->sw : ir[ow];
                }
            }
        }
    }
}

/* 2x2 stride 2 on a NaN-free plane: the larger of each row's two cells, then of the two rows,
 * keeps the first maximum in scan order; the index is arithmetic on the comparisons. */
static void max_plane_2x2(const float *restrict x, float *restrict y, int64_t *restrict idx,
                          const geometry *g) {
    const int64_t w = g->w;
    for (int64_t oh = 0; oh < g->ho; oh++) {
        const float *restrict r0 = x + 2 * oh * w;
        const float *restrict r1 = r0 + w;
        float *restrict yr = y + oh * g->wo;
        for (int64_t ow = 0; ow < g->wo; ow++) {
            const float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
            const int64_t right = b > a, low_right = d > c;
            const float top = right ? b : a, bottom = low_right ? d : c;
            const int64_t low = bottom > top;
            yr[ow] = low ? bottom : top;
            if (idx) idx[oh * g->wo + ow] = 2 * (oh * w + ow) + right + low * (w + low_right - right);
        }
    }
}

/* idx may be NULL when the indices are not wanted. */
void pynn_max_pool2d(const float *x, float *y, int64_t *idx, int64_t planes, int64_t h, int64_t w,
                     int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    const geometry g = make_geometry(h, w, kh, kw, sh, sw, ph, pw);
    const int fast_2x2 = kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0;
    const int64_t in = h * w, out = g.ho * g.wo;
#pragma omp parallel for schedule(static) if (planes * in > PAR_MIN)
    for (int64_t q = 0; q < planes; q++) {
        const float *xq = x + q * in;
        int64_t *iq = idx ? idx + q * out : NULL;
        const int nan = has_nan(xq, in);
        if (fast_2x2 && !nan)
            max_plane_2x2(xq, y + q * out, iq, &g);
        else if (nan) /* literal flags let gcc specialise each call of max_plane */
            max_plane(xq, y + q * out, iq, &g, 1);
        else
            max_plane(xq, y + q * out, iq, &g, 0);
    }
}

void pynn_max_pool2d_backward(const float *g, const int64_t *idx, float *gx, int64_t planes,
                              int64_t ho, int64_t wo, int64_t h, int64_t w) {
    const int64_t in = h * w, out = ho * wo;
#pragma omp parallel for schedule(static) if (planes * in > PAR_MIN)
    for (int64_t q = 0; q < planes; q++) {
        float *restrict dq = gx + q * in;
        const float *restrict gq = g + q * out;
        const int64_t *restrict iq = idx + q * out;
        memset(dq, 0, (size_t)in * sizeof(float));
        for (int64_t o = 0; o < out; o++) dq[iq[o]] += gq[o];
    }
}

/* The rows [*lo, *hi) of window o on an axis of n cells (kernel k, stride s, padding p). */
static void span(int64_t o, int64_t s, int64_t p, int64_t k, int64_t n, int64_t *lo, int64_t *hi) {
    *lo = max64(o * s - p, 0);
    *hi = min64(o * s - p + k, n);
}

/* Counting the padding gives the kernel area: windows never reach past the padding. */
static float divisor(const geometry *g, int64_t h0, int64_t h1, int64_t w0, int64_t w1,
                     int count_include_pad) {
    return (float)(count_include_pad ? g->kh * g->kw : (h1 - h0) * (w1 - w0));
}

/* A window, rows [*h0, *h1) x columns [*w0, *w1) of a plane of width w, as runs of contiguous
 * cells: a window of whole rows (global pooling) becomes one long run, one loop instead of a
 * short one per row. The sums stay in order (no simd reduction): vector set-up on the two or
 * three cells of a small window's row made average pooling 1.6x slower. */
static void runs(int64_t w, int64_t *h0, int64_t *h1, int64_t *w0, int64_t *w1) {
    if (*w0 == 0 && *w1 == w) {
        *w0 = *h0 * w;
        *w1 = *h1 * w;
        *h0 = 0;
        *h1 = 1;
    }
}

static float window_sum(const float *restrict x, int64_t w, int64_t h0, int64_t h1, int64_t w0,
                        int64_t w1) {
    runs(w, &h0, &h1, &w0, &w1);
    float acc = 0.0f;
    for (int64_t i = h0; i < h1; i++) {
        const float *restrict row = x + i * w;
        for (int64_t j = w0; j < w1; j++) acc += row[j];
    }
    return acc;
}

static void window_add(float *restrict x, int64_t w, int64_t h0, int64_t h1, int64_t w0, int64_t w1,
                       float value) {
    runs(w, &h0, &h1, &w0, &w1);
    for (int64_t i = h0; i < h1; i++)
        for (int64_t j = w0; j < w1; j++) x[i * w + j] += value;
}

void pynn_avg_pool2d(const float *x, float *y, int64_t planes, int64_t h, int64_t w, int64_t kh,
                     int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                     int count_include_pad) {
    const geometry g = make_geometry(h, w, kh, kw, sh, sw, ph, pw);
    const int64_t in = h * w, out = g.ho * g.wo;
#pragma omp parallel for schedule(static) if (planes * in > PAR_MIN)
    for (int64_t q = 0; q < planes; q++) {
        const float *restrict xq = x + q * in;
        for (int64_t oh = 0; oh < g.ho; oh++) {
            int64_t h0, h1;
            span(oh, sh, ph, kh, h, &h0, &h1);
            for (int64_t ow = 0; ow < g.wo; ow++) {
                int64_t w0, w1;
                span(ow, sw, pw, kw, w, &w0, &w1);
                y[q * out + oh * g.wo + ow] = window_sum(xq, w, h0, h1, w0, w1) /
                                              divisor(&g, h0, h1, w0, w1, count_include_pad);
            }
        }
    }
}

void pynn_avg_pool2d_backward(const float *g, float *gx, int64_t planes, int64_t h, int64_t w,
                              int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                              int64_t pw, int count_include_pad) {
    const geometry geo = make_geometry(h, w, kh, kw, sh, sw, ph, pw);
    const int64_t in = h * w, out = geo.ho * geo.wo;
#pragma omp parallel for schedule(static) if (planes * in > PAR_MIN)
    for (int64_t q = 0; q < planes; q++) {
        float *restrict dq = gx + q * in;
        memset(dq, 0, (size_t)in * sizeof(float));
        for (int64_t oh = 0; oh < geo.ho; oh++) {
            int64_t h0, h1;
            span(oh, sh, ph, kh, h, &h0, &h1);
            for (int64_t ow = 0; ow < geo.wo; ow++) {
                int64_t w0, w1;
                span(ow, sw, pw, kw, w, &w0, &w1);
                window_add(dq, w, h0, h1, w0, w1,
                           g[q * out + oh * geo.wo + ow] / divisor(&geo, h0, h1, w0, w1, count_include_pad));
            }
        }
    }
}
