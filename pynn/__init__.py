"""pynn: neural networks on NumPy arrays, with explicit backprop and every hot loop in ``kernels``.

PyTorch's names and semantics throughout: build a model from ``Sequential`` and layers, compute
a loss, call ``loss.backward()`` and ``model.backward(grad)`` (gradients accumulate into each
``Parameter.grad``), then ``optimizer.step()``. Pick a kernel backend with
``kernels.use_backend(...)`` or ``$PYNN_BACKEND``; float32 throughout.

Submodules: ``module``, ``layers``, ``conv``, ``normalization``, ``residual``, ``models``,
``losses``, ``optim``, ``schedulers``, ``init``, ``regularization``, ``serialization``, ``random``,
``datasets``, ``transforms``, ``metrics``, ``training``, ``cli``.
"""
from pynn import init, models, optim, schedulers, transforms
from pynn.conv import AdaptiveAvgPool2d, AvgPool2d, Conv2d, MaxPool2d
from pynn.datasets import DataLoader, embedded_fashion_mnist_test, fashion_mnist, mnist, read_idx
from pynn.layers import (ELU, GELU, SELU, Activation, Dropout, Flatten, LeakyReLU, Linear, LogSoftmax, ReLU,
                         Sigmoid, Softmax, Tanh)
from pynn.losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, Loss, MSELoss
from pynn.metrics import accuracy, classification_report, confusion_matrix, precision_recall_f1
from pynn.module import Module, Parameter, Sequential, from_config, register, validate_config
from pynn.normalization import BatchNorm1d, BatchNorm2d
from pynn.optim import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, clip_grad_norm_
from pynn.random import default_generator, manual_seed
from pynn.regularization import l1_penalty, l2_penalty
from pynn.residual import Residual
from pynn.schedulers import CosineAnnealingLR, CosineAnnealingWarmRestarts, LinearWarmup, LRScheduler, StepLR
from pynn.serialization import load, save
from pynn.training import EarlyStopping, History, evaluate, fit, predict, read_checkpoint

__all__ = [
    "init", "optim", "schedulers", "models", "transforms",
    "Module", "Parameter", "Sequential", "register", "from_config", "validate_config",
    "Linear", "Activation", "ReLU", "LeakyReLU", "ELU", "SELU", "GELU", "Sigmoid", "Tanh", "Softmax",
    "LogSoftmax", "Dropout", "Flatten", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "BatchNorm1d", "BatchNorm2d", "Residual",
    "Loss", "CrossEntropyLoss", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss",
    "Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "clip_grad_norm_",
    "LRScheduler", "StepLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "LinearWarmup",
    "l1_penalty", "l2_penalty", "save", "load", "manual_seed", "default_generator",
    "read_idx", "fashion_mnist", "mnist", "embedded_fashion_mnist_test", "DataLoader",
    "accuracy", "confusion_matrix", "precision_recall_f1", "classification_report", "read_checkpoint",
    "fit", "evaluate", "predict", "History", "EarlyStopping",
]
