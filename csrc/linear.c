/* Dense products, the C reference. Row-major float32, 64-bit sizes.
 *
 * c (m, n) = op(a) @ op(b), where a is (m, k) or, with trans_a, (k, m); b is (k, n) or, with
 * trans_b, (n, k). The loop order keeps the innermost loop on contiguous memory so that gcc
 * vectorises it: i-p-j (a row of c += a[i,p] * a row of b) when b is not transposed, and a dot
 * product over p when it is.
 */
#include <stdint.h>
#include <string.h>

#include "linear.h"

static void gemm_rows(const float *restrict a, const float *restrict b, float *restrict c,
                      int64_t m, int64_t n, int64_t k, int trans_a, int trans_b, int64_t i) {
    float *restrict ci = c + i * n;
    if (trans_b) {
        for (int64_t j = 0; j < n; j++) {
            const float *restrict bj = b + j * k;
            float acc = 0.0f;
            /* simd reduction lets gcc reorder the sum into vector lanes without -ffast-math */
            if (trans_a) {
#pragma omp simd reduction(+ : acc)
                for (int64_t p = 0; p < k; p++) acc += a[p * m + i] * bj[p];
            } else {
                const float *restrict ai = a + i * k;
#pragma omp simd reduction(+ : acc)
                for (int64_t p = 0; p < k; p++) acc += ai[p] * bj[p];
            }
            ci[j] = acc;
        }
        return;
    }
    memset(ci, 0, (size_t)n * sizeof(float));
    for (int64_t p = 0; p < k; p++) {
        const float aip = trans_a ? a[p * m + i] : a[i * k + p];
        const float *restrict bp = b + p * n;
        for (int64_t j = 0; j < n; j++) ci[j] += aip * bp[j];
    }
}

void pynn_matmul(const float *a, const float *b, float *c, int64_t m, int64_t n, int64_t k,
                 int trans_a, int trans_b) {
#pragma omp parallel for schedule(static) if (m * n * k > 32768)
    for (int64_t i = 0; i < m; i++) gemm_rows(a, b, c, m, n, k, trans_a, trans_b, i);
}

/* y (rows, out_f) = x (rows, in_f) @ w (out_f, in_f)^T + bias (out_f,); bias may be NULL. */
void pynn_linear(const float *x, const float *w, const float *bias, float *y, int64_t rows,
                 int64_t in_f, int64_t out_f) {
#pragma omp parallel for schedule(static) if (rows * in_f * out_f > 32768)
    for (int64_t i = 0; i < rows; i++) {
        gemm_rows(x, w, y, rows, out_f, in_f, 0, 1, i);
        if (bias)
            for (int64_t j = 0; j < out_f; j++) y[i * out_f + j] += bias[j];
    }
}

/* out (cols,) = sum over rows of g (rows, cols): the bias gradient. */
void pynn_sum_rows(const float *g, float *out, int64_t rows, int64_t cols) {
    memset(out, 0, (size_t)cols * sizeof(float));
    for (int64_t i = 0; i < rows; i++) {
        const float *restrict gi = g + i * cols;
        for (int64_t j = 0; j < cols; j++) out[j] += gi[j];
    }
}
