void pynn_leaky_relu(const float *x, float *y, int64_t n, float negative_slope);
void pynn_leaky_relu_backward(const float *g, const float *x, float *dx, int64_t n, float negative_slope);
void pynn_elu(const float *x, float *y, int64_t n, float alpha, float scale);
void pynn_elu_backward(const float *g, const float *x, float *dx, int64_t n, float alpha, float scale);
void pynn_gelu(const float *x, float *y, int64_t n, int tanh_approx);
void pynn_gelu_backward(const float *g, const float *x, float *dx, int64_t n, int tanh_approx);
void pynn_sigmoid(const float *x, float *y, int64_t n);
void pynn_sigmoid_backward(const float *g, const float *y, float *dx, int64_t n);
void pynn_tanh(const float *x, float *y, int64_t n);
void pynn_tanh_backward(const float *g, const float *y, float *dx, int64_t n);
void pynn_softmax(const float *x, float *y, int64_t rows, int64_t cols, int log_softmax);
void pynn_softmax_backward(const float *g, const float *y, float *dx, int64_t rows, int64_t cols,
                           int log_softmax);
