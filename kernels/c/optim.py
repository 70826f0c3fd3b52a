"""cffi wrappers of ``csrc/optim.c``. Inputs are checked float32 C-contiguous 1-D arrays, updated
in place; an absent state (None) goes as NULL."""
from kernels.c import lib, ptr


def sgd_step(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, first, nesterov, maximize):
    lib.pynn_sgd_step(ptr(param), ptr(grad), ptr(momentum_buffer), param.size, lr, momentum, dampening,
                      weight_decay, first, nesterov, maximize)


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step_size,
              bias_correction2_sqrt, maximize, decoupled):
    lib.pynn_adam_step(ptr(param), ptr(grad), ptr(exp_avg), ptr(exp_avg_sq), param.size, lr, beta1, beta2, eps,
                       weight_decay, step_size, bias_correction2_sqrt, maximize, decoupled)


def rmsprop_step(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, weight_decay, momentum,
                 maximize):
    lib.pynn_rmsprop_step(ptr(param), ptr(grad), ptr(square_avg), ptr(momentum_buffer), ptr(grad_avg), param.size,
                          lr, alpha, eps, weight_decay, momentum, maximize)


def adagrad_step(param, grad, state_sum, clr, weight_decay, eps, maximize):
    lib.pynn_adagrad_step(ptr(param), ptr(grad), ptr(state_sum), param.size, clr, weight_decay, eps, maximize)
