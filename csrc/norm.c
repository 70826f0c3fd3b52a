/* Batch normalisation, the C reference (Ioffe & Szegedy, ICML 2015; the formulas are in
 * kernels/norm.py). x and g are float32 (n, c, s) row-major, s the product of the spatial sizes;
 * per-channel arrays are (c,); 64-bit sizes.
 *
 * Both directions are two passes through two shared loops, as in the Numba kernels:
 * channel_sums reduces per channel sum(p - pc) and sum((p - pc) * (q - qc)) in double, and
 * combine writes a * p + b * (q - qc) + k with per-channel coefficients. The forward shifts x by
 * the channel's first value, which gives mean and variance in one pass without the cancellation
 * of E[x^2] - E[x]^2 (Chan, Golub & LeVeque, 1983); the backward takes p = g and q - qc = x - mean.
 * Each channel is reduced by one thread in a fixed order, so results do not depend on the thread
 * count. Both functions return 0, or -1 when the per-channel workspace cannot be allocated.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "norm.h"

/* A block of channels covers about COLS contiguous floats of each sample: one channel of an
 * image, or a run of columns of an (n, c) input, so every thread reads whole cache lines. */
enum { COLS = 64 };
/* Below this many elements OpenMP's fork-join costs more than the pass itself. */
#define PARALLEL_MIN 32768

static void channel_sums(const float *restrict p, const float *restrict pc, const float *restrict q,
                         const float *restrict qc, int64_t n, int64_t c, int64_t s, double *restrict s1,
                         double *restrict s2) {
    const int64_t block = s >= COLS ? 1 : COLS / s;
    const int64_t nblocks = (c + block - 1) / block;
#pragma omp parallel for schedule(static) if (n * c * s > PARALLEL_MIN)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t c0 = blk * block, c1 = c0 + block < c ? c0 + block : c;
        for (int64_t ch = c0; ch < c1; ch++) s1[ch] = s2[ch] = 0.0;
        if (s == 1) {
            /* (n, c): the block's channels are contiguous in each row; vectorise across them */
            for (int64_t i = 0; i < n; i++) {
                const float *restrict pr = p + i * c, *restrict qr = q + i * c;
#pragma omp simd
                for (int64_t ch = c0; ch < c1; ch++) {
                    const float d = pr[ch] - (pc ? pc[ch] : 0.0f);
                    s1[ch] += d;
                    s2[ch] += d * (qr[ch] - qc[ch]);
                }
            }
            continue;
        }
        for (int64_t i = 0; i < n; i++) {
            for (int64_t ch = c0; ch < c1; ch++) {
                const float *restrict pr = p + (i * c + ch) * s;
                const float *restrict qr = q + (i * c + ch) * s;
                const float pk = pc ? pc[ch] : 0.0f, qk = qc[ch];
                double a1 = 0.0, a2 = 0.0;
                /* simd reduction lets gcc split the sums into vector lanes without -ffast-math */
#pragma omp simd reduction(+ : a1, a2)
                for (int64_t j = 0; j < s; j++) {
                    const float d = pr[j] - pk;
                    a1 += d;
                    a2 += d * (qr[j] - qk);
                }
                s1[ch] += a1;
                s2[ch] += a2;
            }
        }
    }
}

static void combine(const float *restrict p, const float *restrict q, const float *restrict qc,
                    const float *restrict a, const float *restrict b, const float *restrict k,
                    float *restrict out, int64_t n, int64_t c, int64_t s) {
    /* parallel over samples: over (sample, channel) pairs an (n, c) input would pay a division
     * per element */
#pragma omp parallel for schedule(static) if (n * c * s > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        if (s == 1) {
            const float *restrict pr = p + i * c, *restrict qr = q + i * c;
            float *restrict o = out + i * c;
#pragma omp simd
            for (int64_t ch = 0; ch < c; ch++) o[ch] = a[ch] * pr[ch] + b[ch] * (qr[ch] - qc[ch]) + k[ch];
            continue;
        }
        for (int64_t ch = 0; ch < c; ch++) {
            const float ac = a[ch], bc = b[ch], kc = k[ch], qk = qc[ch];
            const int64_t row = (i * c + ch) * s;
            const float *restrict pr = p + row;
            const float *restrict qr = q + row;
            float *restrict o = out + row;
            for (int64_t j = 0; j < s; j++) o[j] = ac * pr[j] + bc * (qr[j] - qk) + kc;
        }
    }
}

int pynn_batch_norm(const float *x, const float *weight, const float *bias, float *running_mean,
                    float *running_var, float *y, float *save_mean, float *save_invstd, int64_t n,
                    int64_t c, int64_t s, int training, double momentum, double eps) {
    float *coef = malloc((size_t)(3 * c) * sizeof(float));
    double *sums = malloc((size_t)(2 * c) * sizeof(double));
    if (!coef || !sums) {
        free(coef);
        free(sums);
        return -1;
    }
    float *a = coef, *b = coef + c, *k = coef + 2 * c;
    const double m = (double)n * (double)s;
    if (training) {
        for (int64_t ch = 0; ch < c; ch++) save_mean[ch] = x[ch * s]; /* the shift */
        channel_sums(x, save_mean, x, save_mean, n, c, s, sums, sums + c);
    }
    for (int64_t ch = 0; ch < c; ch++) {
        double mean, var;
        if (training) {
            const double d = sums[ch] / m, v = sums[c + ch] / m - d * d;
            mean = save_mean[ch] + d;
            var = v < 0.0 ? 0.0 : v; /* rounding can dip below 0; NaN must stay NaN */
            if (running_mean) {
                running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean);
                running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * var * (m / (m - 1.0)));
            }
        } else {
            mean = running_mean[ch];
            var = running_var[ch];
        }
        save_mean[ch] = (float)mean;
        save_invstd[ch] = (float)(1.0 / sqrt(var + eps));
        a[ch] = 0.0f;
        b[ch] = weight ? save_invstd[ch] * weight[ch] : save_invstd[ch];
        k[ch] = bias ? bias[ch] : 0.0f;
    }
    combine(x, x, save_mean, a, b, k, y, n, c, s);
    free(coef);
    free(sums);
    return 0;
}

/* grad_weight and grad_bias are written only when weight is not NULL. */
int pynn_batch_norm_backward(const float *g, const float *x, const float *weight, const float *save_mean,
                             const float *save_invstd, float *grad_x, float *grad_weight, float *grad_bias,
                             int64_t n, int64_t c, int64_t s, int training) {
    float *coef = malloc((size_t)(3 * c) * sizeof(float));
    double *sums = calloc((size_t)(2 * c), sizeof(double));
    if (!coef || !sums) {
        free(coef);
        free(sums);
        return -1;
    }
    float *a = coef, *b = coef + c, *k = coef + 2 * c;
    const double m = (double)n * (double)s;
    if (training || weight) channel_sums(g, NULL, x, save_mean, n, c, s, sums, sums + c);
    for (int64_t ch = 0; ch < c; ch++) {
        /* dx = a g + b (x - mean) + k: the closed form of kernels/norm.py regrouped per channel */
        const double invstd = save_invstd[ch], ac = weight ? invstd * weight[ch] : invstd;
        const double sum_g = sums[ch], sum_gd = sums[c + ch];
        a[ch] = (float)ac;
        b[ch] = training ? (float)(-ac * invstd * invstd * sum_gd / m) : 0.0f;
        k[ch] = training ? (float)(-ac * sum_g / m) : 0.0f;
        if (weight) {
            grad_weight[ch] = (float)(sum_gd * invstd);
            grad_bias[ch] = (float)sum_g;
        }
    }
    combine(g, x, save_mean, a, b, k, grad_x, n, c, s);
    free(coef);
    free(sums);
    return 0;
}
