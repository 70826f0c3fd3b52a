int pynn_conv2d(const float *x, const float *w, const float *bias, float *y, int64_t n,
                int64_t c_in, int64_t h, int64_t wd, int64_t c_out, int64_t kh, int64_t kw,
                int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                int64_t groups, int use_gemm);
int pynn_conv2d_backward(const float *gy, const float *x, const float *w, float *gx, float *gw,
                         float *gb, int64_t n, int64_t c_in, int64_t h, int64_t wd,
                         int64_t c_out, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                         int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups,
                         int use_gemm);
