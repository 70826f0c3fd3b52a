int pynn_batch_norm(const float *x, const float *weight, const float *bias, float *running_mean,
                    float *running_var, float *y, float *save_mean, float *save_invstd, int64_t n,
                    int64_t c, int64_t s, int training, double momentum, double eps);
int pynn_batch_norm_backward(const float *g, const float *x, const float *weight, const float *save_mean,
                             const float *save_invstd, float *grad_x, float *grad_weight, float *grad_bias,
                             int64_t n, int64_t c, int64_t s, int training);
