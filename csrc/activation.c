/* Activations and their backward passes, the C reference. float32, 64-bit sizes.
 *
 * Elementwise ops read x (n,) and write y (n,); backward ops read the upstream gradient g and
 * the saved tensor (the input x, or the output y for sigmoid, tanh and softmax). Softmax works
 * on (rows, cols) row-major arrays along each row. Exponentials only ever see non-positive
 * arguments (the row maximum is subtracted; sigmoid uses exp(-|x|)), so nothing overflows.
 */
#include <stdint.h>
#include <math.h>

#include "activation.h"

/* Below this many elements a thread team costs more than the loop. */
static const int64_t PAR_MIN = 32768;

static const float SQRT_HALF = 0.70710678118654752f;
static const float INV_SQRT_2PI = 0.39894228040143268f;
static const float TANH_K = 0.79788456080286536f; /* sqrt(2 / pi) */
static const float TANH_C = 0.044715f;

void pynn_leaky_relu(const float *x, float *y, int64_t n, float negative_slope) {
    const float *restrict xp = x;
    float *restrict yp = y;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) yp[i] = xp[i] > 0.0f ? xp[i] : xp[i] * negative_slope;
}

void pynn_leaky_relu_backward(const float *g, const float *x, float *dx, int64_t n,
                              float negative_slope) {
    const float *restrict gp = g, *restrict xp = x;
    float *restrict dp = dx;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) dp[i] = xp[i] > 0.0f ? gp[i] : gp[i] * negative_slope;
}

/* scale * (x > 0 ? x : alpha * (exp(x) - 1)); scale != 1 gives SELU. */
void pynn_elu(const float *x, float *y, int64_t n, float alpha, float scale) {
    const float *restrict xp = x;
    float *restrict yp = y;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        yp[i] = xp[i] > 0.0f ? scale * xp[i] : scale * alpha * expm1f(xp[i]);
}

void pynn_elu_backward(const float *g, const float *x, float *dx, int64_t n, float alpha,
                       float scale) {
    const float *restrict gp = g, *restrict xp = x;
    float *restrict dp = dx;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        dp[i] = xp[i] > 0.0f ? gp[i] * scale : gp[i] * scale * alpha * expf(xp[i]);
}

static float tanh_inner(float v) { return tanhf(TANH_K * (v + TANH_C * v * v * v)); }

void pynn_gelu(const float *x, float *y, int64_t n, int tanh_approx) {
    const float *restrict xp = x;
    float *restrict yp = y;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float v = xp[i];
        const float t = tanh_approx ? tanh_inner(v) : erff(v * SQRT_HALF);
        yp[i] = 0.5f * v * (1.0f + t);
    }
}

void pynn_gelu_backward(const float *g, const float *x, float *dx, int64_t n, int tanh_approx) {
    const float *restrict gp = g, *restrict xp = x;
    float *restrict dp = dx;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float v = xp[i];
        float d;
        if (tanh_approx) {
            const float t = tanh_inner(v);
            d = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * TANH_K * (1.0f + 3.0f * TANH_C * v * v);
        } else {
            d = 0.5f * (1.0f + erff(v * SQRT_HALF)) + v * INV_SQRT_2PI * expf(-0.5f * v * v);
        }
        dp[i] = gp[i] * d;
    }
}

void pynn_sigmoid(const float *x, float *y, int64_t n) {
    const float *restrict xp = x;
    float *restrict yp = y;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float e = expf(-fabsf(xp[i]));
        yp[i] = (xp[i] >= 0.0f ? 1.0f : e) / (1.0f + e);
    }
}

void pynn_sigmoid_backward(const float *g, const float *y, float *dx, int64_t n) {
    const float *restrict gp = g, *restrict yp = y;
    float *restrict dp = dx;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) dp[i] = gp[i] * yp[i] * (1.0f - yp[i]);
}

void pynn_tanh(const float *x, float *y, int64_t n) {
    const float *restrict xp = x;
    float *restrict yp = y;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) yp[i] = tanhf(xp[i]);
}

void pynn_tanh_backward(const float *g, const float *y, float *dx, int64_t n) {
    const float *restrict gp = g, *restrict yp = y;
    float *restrict dp = dx;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) dp[i] = gp[i] * (1.0f - yp[i] * yp[i]);
}

/* y = softmax(x) row by row, or log_softmax when log_softmax is set. */
void pynn_softmax(const float *x, float *y, int64_t rows, int64_t cols, int log_softmax) {
#pragma omp parallel for schedule(static) if (rows * cols > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *restrict xr = x + r * cols;
        float *restrict yr = y + r * cols;
        float m = xr[0];
        for (int64_t j = 1; j < cols; j++) m = xr[j] > m ? xr[j] : m;
        float s = 0.0f;
        for (int64_t j = 0; j < cols; j++) s += expf(xr[j] - m);
        if (log_softmax) {
            const float ls = logf(s);
            for (int64_t j = 0; j < cols; j++) yr[j] = (xr[j] - m) - ls;
        } else {
            const float inv = 1.0f / s;
            for (int64_t j = 0; j < cols; j++) yr[j] = expf(xr[j] - m) * inv;
        }
    }
}

/* dx from the output y: y * (g - sum(g * y)) for softmax, g - exp(y) * sum(g) for log_softmax. */
void pynn_softmax_backward(const float *g, const float *y, float *dx, int64_t rows, int64_t cols,
                           int log_softmax) {
#pragma omp parallel for schedule(static) if (rows * cols > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *restrict gr = g + r * cols, *restrict yr = y + r * cols;
        float *restrict dr = dx + r * cols;
        float s = 0.0f;
        if (log_softmax) {
            for (int64_t j = 0; j < cols; j++) s += gr[j];
            for (int64_t j = 0; j < cols; j++) dr[j] = gr[j] - expf(yr[j]) * s;
        } else {
            for (int64_t j = 0; j < cols; j++) s += gr[j] * yr[j];
            for (int64_t j = 0; j < cols; j++) dr[j] = yr[j] * (gr[j] - s);
        }
    }
}
