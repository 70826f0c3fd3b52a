"""pynn: neural networks on NumPy arrays, with explicit backprop and every hot loop in ``kernels``.

PyTorch's names and semantics throughout: build a model from ``Sequential`` and layers, compute
a loss, call ``loss.backward()`` and ``model.backward(grad)`` (gradients accumulate into each
``Parameter.grad``), then ``optimizer.step()``. Pick a kernel backend with
``kernels.use_backend(...)`` or ``$PYNN_BACKEND``; float32 throughout.

Submodules: ``module``, ``layers``, ``conv``, ``normalization``, ``residual``, ``models``,
``losses``, ``optim``, ``schedulers``, ``init``, ``regularization``, ``serialization``, ``random``,
``datasets``, ``transforms``, ``metrics``, ``training``, ``cli``.

``import pynn`` loads only the module types (so ``from_config`` and ``load`` can rebuild any
built-in model); every other name in ``__all__``, and every submodule, is imported on first
access (PEP 562), so a process that only loads a model and predicts never imports tqdm or the
training code.
"""
import importlib

from pynn.conv import AdaptiveAvgPool2d, AvgPool2d, Conv2d, MaxPool2d
from pynn.layers import (ELU, GELU, SELU, Activation, Dropout, Flatten, LeakyReLU, Linear, LogSoftmax, ReLU,
                         Sigmoid, Softmax, Tanh)
from pynn.module import Module, Parameter, Sequential, from_config, register, validate_config
from pynn.normalization import BatchNorm1d, BatchNorm2d
from pynn.residual import Residual

# Public name -> the submodule that defines it, imported by ``__getattr__`` on first use.
_LAZY = {
    **dict.fromkeys(["DataLoader", "embedded_fashion_mnist_test", "fashion_mnist", "mnist", "read_idx"], "datasets"),
    **dict.fromkeys(["BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "L1Loss", "Loss", "MSELoss"], "losses"),
    **dict.fromkeys(["accuracy", "classification_report", "confusion_matrix", "precision_recall_f1"], "metrics"),
    **dict.fromkeys(["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "clip_grad_norm_"], "optim"),
    **dict.fromkeys(["default_generator", "manual_seed"], "random"),
    **dict.fromkeys(["l1_penalty", "l2_penalty"], "regularization"),
    **dict.fromkeys(["CosineAnnealingLR", "CosineAnnealingWarmRestarts", "LinearWarmup", "LRScheduler", "StepLR"],
                    "schedulers"),
    **dict.fromkeys(["load", "save"], "serialization"),
    **dict.fromkeys(["EarlyStopping", "History", "evaluate", "fit", "predict", "read_checkpoint"], "training"),
}
_SUBMODULES = frozenset([
    "module", "layers", "conv", "normalization", "residual", "models", "losses", "optim", "schedulers", "init",
    "regularization", "serialization", "random", "datasets", "transforms", "metrics", "training", "cli",
])

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


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"pynn.{_LAZY[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"pynn.{name}")
    else:
        raise AttributeError(f"module 'pynn' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
