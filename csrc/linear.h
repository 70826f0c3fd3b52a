void pynn_matmul(const float *a, const float *b, float *c, int64_t m, int64_t n, int64_t k,
                 int trans_a, int trans_b);
void pynn_linear(const float *x, const float *w, const float *bias, float *y, int64_t rows,
                 int64_t in_f, int64_t out_f);
void pynn_sum_rows(const float *g, float *out, int64_t rows, int64_t cols);
