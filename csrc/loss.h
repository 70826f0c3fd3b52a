void pynn_cross_entropy_index(const float *x, const int64_t *target, float *out, int64_t n,
                              int64_t c);
void pynn_cross_entropy_prob(const float *x, const float *target, float *out, int64_t n,
                             int64_t c);
void pynn_cross_entropy_index_backward(const float *grad, const float *x, const int64_t *target,
                                       float scale, float *out, int64_t n, int64_t c);
void pynn_cross_entropy_prob_backward(const float *grad, const float *x, const float *target,
                                      float scale, float *out, int64_t n, int64_t c);
void pynn_mse_loss(const float *x, const float *t, float *out, int64_t n);
void pynn_mse_loss_backward(const float *grad, const float *x, const float *t, float scale,
                            float *out, int64_t n);
void pynn_l1_loss(const float *x, const float *t, float *out, int64_t n);
void pynn_l1_loss_backward(const float *grad, const float *x, const float *t, float scale,
                           float *out, int64_t n);
void pynn_binary_cross_entropy(const float *x, const float *t, float *out, int64_t n);
void pynn_binary_cross_entropy_backward(const float *grad, const float *x, const float *t,
                                        float scale, float *out, int64_t n);
void pynn_binary_cross_entropy_with_logits(const float *x, const float *t, float *out, int64_t n);
void pynn_binary_cross_entropy_with_logits_backward(const float *grad, const float *x,
                                                    const float *t, float scale, float *out,
                                                    int64_t n);
