/* Optimizer steps, the C reference: one in-place pass over flat float32 buffers of n elements.
 *
 * Formulas as PyTorch 2.13's single-tensor optimizers (see kernels/optim.py). Hyper-parameters
 * arrive as double, derived ones are formed in double once, and the loop runs in float. An
 * absent state buffer (NULL) means its option is off: no momentum, or RMSprop not centered.
 * The flag tests inside the loops are loop-invariant, so gcc -O3 unswitches them. The loops
 * are memory-bound: threads only pay off past a few tens of thousands of elements.
 */
#include <math.h>
#include <stdint.h>

#include "optim.h"

/* The gradient to descend: negated for maximisation, plus the L2 penalty's gradient. */
static inline float direction(float g, float p, float weight_decay, int maximize) {
    if (maximize) g = -g;
    return weight_decay != 0.0f ? g + weight_decay * p : g;
}

void pynn_sgd_step(float *param, const float *grad, float *momentum_buffer, int64_t n, double lr,
                   double momentum, double dampening, double weight_decay, int first, int nesterov,
                   int maximize) {
    float *restrict p = param;
    const float *restrict gr = grad;
    float *restrict buf = momentum_buffer;
    const float lr_f = (float)lr, mu = (float)momentum, keep = (float)(1.0 - dampening);
    const float wd = (float)weight_decay;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++) {
        float g = direction(gr[i], p[i], wd, maximize);
        if (buf) {
            const float b = first ? g : mu * buf[i] + keep * g;
            buf[i] = b;
            g = nesterov ? g + mu * b : b;
        }
        p[i] -= lr_f * g;
    }
}

/* Adam, or AdamW when decoupled: then param shrinks by (1 - lr * weight_decay) instead of the
 * penalty entering the gradient. */
void pynn_adam_step(float *param, const float *grad, float *exp_avg, float *exp_avg_sq, int64_t n,
                    double lr, double beta1, double beta2, double eps, double weight_decay,
                    double step_size, double bias_correction2_sqrt, int maximize, int decoupled) {
    float *restrict p = param;
    const float *restrict gr = grad;
    float *restrict m = exp_avg;
    float *restrict v = exp_avg_sq;
    const float decay = (float)(1.0 - lr * weight_decay), wd = decoupled ? 0.0f : (float)weight_decay;
    const float w1 = (float)(1.0 - beta1), b2 = (float)beta2, w2 = (float)(1.0 - beta2);
    const float eps_f = (float)eps, ss = (float)step_size, bc2 = (float)bias_correction2_sqrt;
    const int shrink = decoupled && weight_decay != 0.0;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++) {
        const float pi = shrink ? p[i] * decay : p[i];
        const float g = direction(gr[i], pi, wd, maximize);
        const float mi = m[i] + w1 * (g - m[i]);
        const float vi = b2 * v[i] + w2 * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - ss * mi / (sqrtf(vi) / bc2 + eps_f);
    }
}

void pynn_rmsprop_step(float *param, const float *grad, float *square_avg, float *momentum_buffer,
                       float *grad_avg, int64_t n, double lr, double alpha, double eps,
                       double weight_decay, double momentum, int maximize) {
    float *restrict p = param;
    const float *restrict gr = grad;
    float *restrict sq = square_avg;
    float *restrict buf = momentum_buffer;
    float *restrict ga = grad_avg;
    const float lr_f = (float)lr, a = (float)alpha, w = (float)(1.0 - alpha), eps_f = (float)eps;
    const float wd = (float)weight_decay, mu = (float)momentum;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++) {
        const float g = direction(gr[i], p[i], wd, maximize);
        float s = a * sq[i] + w * g * g;
        sq[i] = s;
        if (ga) {
            const float gai = ga[i] + w * (g - ga[i]);
            ga[i] = gai;
            s -= gai * gai;
        }
        const float d = sqrtf(s) + eps_f;
        if (buf) {
            const float b = mu * buf[i] + g / d;
            buf[i] = b;
            p[i] -= lr_f * b;
        } else {
            p[i] -= lr_f * g / d;
        }
    }
}

/* clr: this step's decayed learning rate, lr / (1 + (step - 1) * lr_decay). */
void pynn_adagrad_step(float *param, const float *grad, float *state_sum, int64_t n, double clr,
                       double weight_decay, double eps, int maximize) {
    float *restrict p = param;
    const float *restrict gr = grad;
    float *restrict s = state_sum;
    const float lr_f = (float)clr, wd = (float)weight_decay, eps_f = (float)eps;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++) {
        const float g = direction(gr[i], p[i], wd, maximize);
        const float si = s[i] + g * g;
        s[i] = si;
        p[i] -= lr_f * g / (sqrtf(si) + eps_f);
    }
}
