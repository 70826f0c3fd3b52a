void pynn_max_pool2d(const float *x, float *y, int64_t *idx, int64_t planes, int64_t h, int64_t w,
                     int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw);
void pynn_max_pool2d_backward(const float *g, const int64_t *idx, float *gx, int64_t planes,
                              int64_t ho, int64_t wo, int64_t h, int64_t w);
void pynn_avg_pool2d(const float *x, float *y, int64_t planes, int64_t h, int64_t w, int64_t kh,
                     int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                     int count_include_pad);
void pynn_avg_pool2d_backward(const float *g, float *gx, int64_t planes, int64_t h, int64_t w,
                              int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                              int64_t pw, int count_include_pad);
