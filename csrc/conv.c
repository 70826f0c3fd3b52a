/* 2-D convolution of NCHW float32 tensors and its gradients, the C reference (semantics and
 * formulas in kernels/conv.py). Row-major, 64-bit sizes.
 *
 * Every kernel reads zero-padded copies of the input planes, so no loop tests bounds: tap
 * (a, b) of output position (i, j) reads padded cell (i sh + a dh, j sw + b dw).
 *
 * The caller picks the strategy (kernels.conv.gemm_pays says why). im2col + GEMM (Chellapilla
 * et al. 2006): samples are shared out among the threads; each unrolls its sample into a
 * private (C_in kH kW, H_out W_out) matrix that stays in cache and multiplies it with
 * pynn_matmul, which runs serially inside the team (OpenMP does not nest by default) and
 * writes y[n] in place. With a single sample the team is not formed and pynn_matmul gets the
 * threads. Direct loops, for degenerate products (a one-channel input, depthwise): one output,
 * input or weight plane per iteration, reading the padded planes in place.
 *
 * Allocation failures return -1 (nothing else can fail); the caller raises MemoryError.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "conv.h"
#include "linear.h"

typedef struct {
    int64_t n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw, dh, dw, groups;
    int64_t ho, wo, hp, wp, cpg, opg, k, out_plane, pad_plane;
} geom;

static geom make_geom(int64_t n, int64_t c_in, int64_t h, int64_t w, int64_t c_out, int64_t kh,
                      int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                      int64_t dw, int64_t groups) {
    const int64_t ho = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
    const int64_t wo = (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
    const int64_t hp = h + 2 * ph, wp = w + 2 * pw, cpg = c_in / groups;
    const geom g = {n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw, dh, dw, groups,
                    ho, wo, hp, wp, cpg, c_out / groups, cpg * kh * kw, ho * wo, hp * wp};
    return g;
}

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int64_t tap(const geom *g, int64_t a, int64_t b) { return a * g->dh * g->wp + b * g->dw; }

/* The four walks over the output positions of one tap; src or dst points into a padded plane
 * at the tap's offset, the other side is a (H_out, W_out) plane. Stride 1 gets its own loop
 * so that gcc vectorises it. */
static void tap_read(const float *restrict src, float *restrict dst, const geom *g) {
    for (int64_t i = 0; i < g->ho; i++) {
        const float *restrict s = src + i * g->sh * g->wp;
        float *restrict d = dst + i * g->wo;
        if (g->sw == 1)
            for (int64_t j = 0; j < g->wo; j++) d[j] = s[j];
        else
            for (int64_t j = 0; j < g->wo; j++) d[j] = s[j * g->sw];
    }
}

static void tap_axpy_in(float alpha, const float *restrict src, float *restrict dst, const geom *g) {
    for (int64_t i = 0; i < g->ho; i++) {
        const float *restrict s = src + i * g->sh * g->wp;
        float *restrict d = dst + i * g->wo;
        if (g->sw == 1)
            for (int64_t j = 0; j < g->wo; j++) d[j] += alpha * s[j];
        else
            for (int64_t j = 0; j < g->wo; j++) d[j] += alpha * s[j * g->sw];
    }
}

static void tap_axpy_out(float alpha, const float *restrict src, float *restrict dst, const geom *g) {
    for (int64_t i = 0; i < g->ho; i++) {
        const float *restrict s = src + i * g->wo;
        float *restrict d = dst + i * g->sh * g->wp;
        if (g->sw == 1)
            for (int64_t j = 0; j < g->wo; j++) d[j] += alpha * s[j];
        else
            for (int64_t j = 0; j < g->wo; j++) d[j * g->sw] += alpha * s[j];
    }
}

static float tap_dot(const float *restrict gy, const float *restrict src, const geom *g) {
    float acc = 0.0f;
    for (int64_t i = 0; i < g->ho; i++) {
        const float *restrict s = src + i * g->sh * g->wp;
        const float *restrict d = gy + i * g->wo;
        /* simd reduction lets gcc reorder the sum into vector lanes without -ffast-math */
        if (g->sw == 1) {
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < g->wo; j++) acc += d[j] * s[j];
        } else {
            for (int64_t j = 0; j < g->wo; j++) acc += d[j] * s[j * g->sw];
        }
    }
    return acc;
}

/* xp (planes, H_p, W_p) = x (planes, H, W) surrounded by zeros. */
static void pad_planes(const float *restrict x, float *restrict xp, int64_t planes, const geom *g) {
    for (int64_t p = 0; p < planes; p++) {
        float *plane = xp + p * g->pad_plane;
        memset(plane, 0, sizeof(float) * (size_t)g->pad_plane);
        for (int64_t i = 0; i < g->h; i++)
            memcpy(plane + (i + g->ph) * g->wp + g->pw, x + (p * g->h + i) * g->w, sizeof(float) * (size_t)g->w);
    }
}

/* gx (H, W) = the interior of a padded plane. */
static void crop_plane(const float *restrict gxp, float *restrict gx, const geom *g) {
    for (int64_t i = 0; i < g->h; i++)
        memcpy(gx + i * g->w, gxp + (i + g->ph) * g->wp + g->pw, sizeof(float) * (size_t)g->w);
}

/* cols (C_in kH kW, H_out W_out), row (c, a, b): the cells tap (a, b) of channel c reads. */
static void im2col(const float *xp, float *cols, const geom *g) {
    for (int64_t c = 0; c < g->c_in; c++)
        for (int64_t a = 0; a < g->kh; a++)
            for (int64_t b = 0; b < g->kw; b++)
                tap_read(xp + c * g->pad_plane + tap(g, a, b), cols + ((c * g->kh + a) * g->kw + b) * g->out_plane, g);
}

/* The adjoint of im2col: gxp (C_in, H_p, W_p) = the sum of the entries that read each cell. */
static void col2im(const float *dcols, float *gxp, const geom *g) {
    memset(gxp, 0, sizeof(float) * (size_t)(g->c_in * g->pad_plane));
    for (int64_t c = 0; c < g->c_in; c++)
        for (int64_t a = 0; a < g->kh; a++)
            for (int64_t b = 0; b < g->kw; b++)
                tap_axpy_out(1.0f, dcols + ((c * g->kh + a) * g->kw + b) * g->out_plane,
                             gxp + c * g->pad_plane + tap(g, a, b), g);
}

static float weight_at(const float *w, const geom *g, int64_t o, int64_t c, int64_t a, int64_t b) {
    return w[((o * g->cpg + c) * g->kh + a) * g->kw + b];
}

static int forward_gemm(const float *x, const float *w, const float *bias, float *y, const geom *g) {
    int failed = 0;
#pragma omp parallel if (g->n > 1)
    {
        float *xp = malloc(sizeof(float) * (size_t)(g->c_in * g->pad_plane));
        float *cols = malloc(sizeof(float) * (size_t)(g->c_in * g->kh * g->kw * g->out_plane));
        if (!xp || !cols) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t n = 0; n < g->n; n++) {
            if (!xp || !cols) continue;
            pad_planes(x + n * g->c_in * g->h * g->w, xp, g->c_in, g);
            im2col(xp, cols, g);
            float *yn = y + n * g->c_out * g->out_plane;
            for (int64_t grp = 0; grp < g->groups; grp++)
                pynn_matmul(w + grp * g->opg * g->k, cols + grp * g->k * g->out_plane,
                            yn + grp * g->opg * g->out_plane, g->opg, g->out_plane, g->k, 0, 0);
            if (bias)
                for (int64_t o = 0; o < g->c_out; o++)
                    for (int64_t p = 0; p < g->out_plane; p++) yn[o * g->out_plane + p] += bias[o];
        }
        free(xp);
        free(cols);
    }
    return failed ? -1 : 0;
}

/* gw = the sum over samples of dY[n] cols[n]^T; every thread sums its samples into a private
 * slice of parts, and the slices are added in thread order so the result is reproducible. */
static int backward_gemm(const float *gy, const float *x, const float *w, float *gx, float *gw, const geom *g) {
    const int nthreads = g->n > 1 ? max_threads() : 1;
    const int64_t wsize = g->c_out * g->k;
    float *parts = calloc((size_t)nthreads * (size_t)wsize, sizeof(float));
    if (!parts) return -1;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        float *part = parts + thread_id() * wsize;
        float *xp = malloc(sizeof(float) * (size_t)(g->c_in * g->pad_plane));
        float *cols = malloc(sizeof(float) * (size_t)(g->c_in * g->kh * g->kw * g->out_plane));
        float *dcols = malloc(sizeof(float) * (size_t)(g->c_in * g->kh * g->kw * g->out_plane));
        float *prod = malloc(sizeof(float) * (size_t)(g->opg * g->k));
        const int ok = xp && cols && dcols && prod;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t n = 0; n < g->n; n++) {
            if (!ok) continue;
            pad_planes(x + n * g->c_in * g->h * g->w, xp, g->c_in, g);
            im2col(xp, cols, g);
            const float *gyn = gy + n * g->c_out * g->out_plane;
            for (int64_t grp = 0; grp < g->groups; grp++) {
                const float *gyg = gyn + grp * g->opg * g->out_plane;
                pynn_matmul(gyg, cols + grp * g->k * g->out_plane, prod, g->opg, g->k, g->out_plane, 0, 1);
                float *pg = part + grp * g->opg * g->k;
                for (int64_t e = 0; e < g->opg * g->k; e++) pg[e] += prod[e];
                pynn_matmul(w + grp * g->opg * g->k, gyg, dcols + grp * g->k * g->out_plane, g->k,
                            g->out_plane, g->opg, 1, 0);
            }
            col2im(dcols, xp, g);
            for (int64_t c = 0; c < g->c_in; c++)
                crop_plane(xp + c * g->pad_plane, gx + (n * g->c_in + c) * g->h * g->w, g);
        }
        free(xp);
        free(cols);
        free(dcols);
        free(prod);
    }
    memset(gw, 0, sizeof(float) * (size_t)wsize);
    for (int t = 0; t < nthreads; t++)
        for (int64_t e = 0; e < wsize; e++) gw[e] += parts[t * wsize + e];
    free(parts);
    return failed ? -1 : 0;
}

static float *pad_all(const float *x, const geom *g) {
    float *xp = malloc(sizeof(float) * (size_t)(g->n * g->c_in * g->pad_plane));
    if (!xp) return NULL;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < g->n * g->c_in; p++)
        pad_planes(x + p * g->h * g->w, xp + p * g->pad_plane, 1, g);
    return xp;
}

/* One output plane per iteration: y[n, o] = bias[o] + the taps of its group's input planes. */
static int forward_direct(const float *x, const float *w, const float *bias, float *y, const geom *g) {
    float *xp = pad_all(x, g);
    if (!xp) return -1;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < g->n * g->c_out; t++) {
        const int64_t n = t / g->c_out, o = t % g->c_out;
        float *out = y + t * g->out_plane;
        const float b0 = bias ? bias[o] : 0.0f;
        for (int64_t p = 0; p < g->out_plane; p++) out[p] = b0;
        for (int64_t c = 0; c < g->cpg; c++) {
            const float *src = xp + (n * g->c_in + o / g->opg * g->cpg + c) * g->pad_plane;
            for (int64_t a = 0; a < g->kh; a++)
                for (int64_t b = 0; b < g->kw; b++)
                    tap_axpy_in(weight_at(w, g, o, c, a, b), src + tap(g, a, b), out, g);
        }
    }
    free(xp);
    return 0;
}

/* grad_x: one input plane per iteration, gathering the gradient planes of its group's outputs;
 * grad_w: one output channel per iteration, correlating its gradient planes with x. */
static int backward_direct(const float *gy, const float *x, const float *w, float *gx, float *gw, const geom *g) {
    float *xp = pad_all(x, g);
    if (!xp) return -1;
    int failed = 0;
#pragma omp parallel
    {
        float *gxp = malloc(sizeof(float) * (size_t)g->pad_plane);
        if (!gxp) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < g->n * g->c_in; t++) {
            if (!gxp) continue;
            const int64_t n = t / g->c_in, c = t % g->cpg, grp = t % g->c_in / g->cpg;
            memset(gxp, 0, sizeof(float) * (size_t)g->pad_plane);
            for (int64_t o = grp * g->opg; o < (grp + 1) * g->opg; o++)
                for (int64_t a = 0; a < g->kh; a++)
                    for (int64_t b = 0; b < g->kw; b++)
                        tap_axpy_out(weight_at(w, g, o, c, a, b), gy + (n * g->c_out + o) * g->out_plane,
                                     gxp + tap(g, a, b), g);
            crop_plane(gxp, gx + t * g->h * g->w, g);
        }
        free(gxp);
    }
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < g->c_out; o++)
        for (int64_t c = 0; c < g->cpg; c++)
            for (int64_t a = 0; a < g->kh; a++)
                for (int64_t b = 0; b < g->kw; b++) {
                    float acc = 0.0f;
                    for (int64_t n = 0; n < g->n; n++)
                        acc += tap_dot(gy + (n * g->c_out + o) * g->out_plane,
                                       xp + (n * g->c_in + o / g->opg * g->cpg + c) * g->pad_plane + tap(g, a, b), g);
                    gw[((o * g->cpg + c) * g->kh + a) * g->kw + b] = acc;
                }
    free(xp);
    return failed ? -1 : 0;
}

int pynn_conv2d(const float *x, const float *w, const float *bias, float *y, int64_t n,
                int64_t c_in, int64_t h, int64_t wd, int64_t c_out, int64_t kh, int64_t kw,
                int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                int64_t groups, int use_gemm) {
    const geom g = make_geom(n, c_in, h, wd, c_out, kh, kw, sh, sw, ph, pw, dh, dw, groups);
    return use_gemm ? forward_gemm(x, w, bias, y, &g) : forward_direct(x, w, bias, y, &g);
}

int pynn_conv2d_backward(const float *gy, const float *x, const float *w, float *gx, float *gw,
                         float *gb, int64_t n, int64_t c_in, int64_t h, int64_t wd,
                         int64_t c_out, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                         int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups,
                         int use_gemm) {
    const geom g = make_geom(n, c_in, h, wd, c_out, kh, kw, sh, sw, ph, pw, dh, dw, groups);
    if (gb) {
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < c_out; o++) {
            float acc = 0.0f;
            for (int64_t s = 0; s < n; s++) {
                const float *p = gy + (s * c_out + o) * g.out_plane;
#pragma omp simd reduction(+ : acc)
                for (int64_t e = 0; e < g.out_plane; e++) acc += p[e];
            }
            gb[o] = acc;
        }
    }
    return use_gemm ? backward_gemm(gy, x, w, gx, gw, &g) : backward_direct(gy, x, w, gx, gw, &g);
}
