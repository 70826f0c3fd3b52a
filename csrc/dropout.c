/* Inverted dropout with a counter-based mask: element i is kept when the top 24 bits of
 * splitmix64(state + (i + 1) * golden) are at least `threshold` (see kernels/dropout.py).
 * Dropped elements are multiplied by 0, not overwritten, so NaN and inf give NaN there, as in
 * the reference and PyTorch. */
#include <stdint.h>

#include "dropout.h"

static inline int kept(uint64_t state, int64_t i, uint32_t threshold) {
    uint64_t z = state + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    return (z >> 40) >= threshold;
}

void pynn_dropout(const float *x, float *y, uint8_t *mask, int64_t n, uint64_t state,
                  uint32_t threshold, float scale) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        const int keep = kept(state, i, threshold);
        mask[i] = (uint8_t)keep;
        y[i] = x[i] * (keep ? scale : 0.0f);
    }
}

void pynn_dropout_backward(const float *grad, const uint8_t *mask, float *out, int64_t n,
                           float scale) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) out[i] = grad[i] * (mask[i] ? scale : 0.0f);
}
