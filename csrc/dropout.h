void pynn_dropout(const float *x, float *y, uint8_t *mask, int64_t n, uint64_t state,
                  uint32_t threshold, float scale);
void pynn_dropout_backward(const float *grad, const uint8_t *mask, float *out, int64_t n,
                           float scale);
