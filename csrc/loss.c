/* Losses, the C reference (semantics of torch.nn.functional; see kernels/loss.py).
 *
 * Forward functions write one loss per row (cross-entropy, x is (n, c)) or per element; the
 * caller reduces. Backward functions write the input gradient, the upstream gradient of term i
 * being grad[i] * scale, or scale alone when grad is NULL (the "mean" and "sum" reductions).
 * No fast-math: log(0) must be -inf before binary cross-entropy clamps it to -100.
 */
#include <math.h>
#include <stdint.h>

#include "loss.h"

#define PARALLEL_MIN 65536 /* elements below which threads cost more than they save */

static inline float upstream(const float *grad, float scale, int64_t i) {
    return grad ? grad[i] * scale : scale;
}

/* Cross-entropy. shift() gives the row max m and log(sum_j exp(row[j] - m)), so that
 * log_softmax(row)[j] = row[j] - m - log_s with every exp argument <= 0. */
static void shift(const float *restrict row, int64_t c, float *m, float *log_s) {
    float mx = row[0];
    for (int64_t j = 1; j < c; j++) mx = fmaxf(mx, row[j]);
    float s = 0.0f;
    for (int64_t j = 0; j < c; j++) s += expf(row[j] - mx);
    *m = mx;
    *log_s = logf(s);
}

/* out[j] = coef * softmax(row)[j] */
static void scaled_softmax(const float *restrict row, int64_t c, float coef, float *restrict out) {
    float m, log_s;
    shift(row, c, &m, &log_s);
    for (int64_t j = 0; j < c; j++) out[j] = coef * expf(row[j] - m - log_s);
}

void pynn_cross_entropy_index(const float *x, const int64_t *target, float *out, int64_t n,
                              int64_t c) {
#pragma omp parallel for schedule(static) if (n * c > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *restrict row = x + i * c;
        float m, log_s;
        shift(row, c, &m, &log_s);
        out[i] = log_s - (row[target[i]] - m);
    }
}

void pynn_cross_entropy_prob(const float *x, const float *target, float *out, int64_t n,
                             int64_t c) {
#pragma omp parallel for schedule(static) if (n * c > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *restrict row = x + i * c;
        const float *restrict ti = target + i * c;
        float m, log_s, acc = 0.0f;
        shift(row, c, &m, &log_s);
        for (int64_t j = 0; j < c; j++) acc += ti[j] * (log_s - (row[j] - m));
        out[i] = acc;
    }
}

void pynn_cross_entropy_index_backward(const float *grad, const float *x, const int64_t *target,
                                       float scale, float *out, int64_t n, int64_t c) {
#pragma omp parallel for schedule(static) if (n * c > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float g = upstream(grad, scale, i);
        scaled_softmax(x + i * c, c, g, out + i * c);
        out[i * c + target[i]] -= g;
    }
}

/* d/dx_j of sum_k t_k (log_s - x_k + m) is softmax_j * sum_k t_k - t_j. */
void pynn_cross_entropy_prob_backward(const float *grad, const float *x, const float *target,
                                      float scale, float *out, int64_t n, int64_t c) {
#pragma omp parallel for schedule(static) if (n * c > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *restrict ti = target + i * c;
        float *restrict oi = out + i * c;
        const float g = upstream(grad, scale, i);
        float tsum = 0.0f;
        for (int64_t j = 0; j < c; j++) tsum += ti[j];
        scaled_softmax(x + i * c, c, g * tsum, oi);
        for (int64_t j = 0; j < c; j++) oi[j] -= g * ti[j];
    }
}

/* Elementwise losses: the loss of one element and its derivative in x. */
static inline float mse_value(float x, float t) { return (x - t) * (x - t); }
static inline float mse_derivative(float x, float t) { return 2.0f * (x - t); }

static inline float l1_value(float x, float t) { return fabsf(x - t); }
static inline float l1_derivative(float x, float t) { return (float)((x > t) - (x < t)); }

static inline float bce_value(float x, float t) {
    return -(t * fmaxf(logf(x), -100.0f) + (1.0f - t) * fmaxf(log1pf(-x), -100.0f));
}
static inline float bce_derivative(float x, float t) {
    return (x - t) / fmaxf((1.0f - x) * x, 1e-12f);
}

static inline float bce_logits_value(float x, float t) {
    return fmaxf(x, 0.0f) - x * t + log1pf(expf(-fabsf(x)));
}
static inline float bce_logits_derivative(float x, float t) {
    const float e = expf(-fabsf(x)); /* sigmoid without overflow for either sign */
    return (x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e)) - t;
}

#define POINTWISE_LOSS(name, value, derivative)                                                \
    void pynn_##name(const float *x, const float *t, float *out, int64_t n) {                 \
        _Pragma("omp parallel for schedule(static) if (n > PARALLEL_MIN)")                    \
        for (int64_t i = 0; i < n; i++) out[i] = value(x[i], t[i]);                           \
    }                                                                                          \
    void pynn_##name##_backward(const float *grad, const float *x, const float *t, float scale, \
                                float *out, int64_t n) {                                       \
        _Pragma("omp parallel for schedule(static) if (n > PARALLEL_MIN)")                    \
        for (int64_t i = 0; i < n; i++) out[i] = upstream(grad, scale, i) * derivative(x[i], t[i]); \
    }

POINTWISE_LOSS(mse_loss, mse_value, mse_derivative)
POINTWISE_LOSS(l1_loss, l1_value, l1_derivative)
POINTWISE_LOSS(binary_cross_entropy, bce_value, bce_derivative)
POINTWISE_LOSS(binary_cross_entropy_with_logits, bce_logits_value, bce_logits_derivative)
