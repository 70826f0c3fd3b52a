void pynn_sgd_step(float *param, const float *grad, float *momentum_buffer, int64_t n, double lr,
                   double momentum, double dampening, double weight_decay, int first, int nesterov,
                   int maximize);
void pynn_adam_step(float *param, const float *grad, float *exp_avg, float *exp_avg_sq, int64_t n,
                    double lr, double beta1, double beta2, double eps, double weight_decay,
                    double step_size, double bias_correction2_sqrt, int maximize, int decoupled);
void pynn_rmsprop_step(float *param, const float *grad, float *square_avg, float *momentum_buffer,
                       float *grad_avg, int64_t n, double lr, double alpha, double eps,
                       double weight_decay, double momentum, int maximize);
void pynn_adagrad_step(float *param, const float *grad, float *state_sum, int64_t n, double clr,
                       double weight_decay, double eps, int maximize);
