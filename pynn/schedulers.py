"""Learning-rate schedules that set ``optimizer.lr``, with ``torch.optim.lr_scheduler``'s values.

Call ``scheduler.step()`` once per epoch (or per batch, as the schedule is meant), after
``optimizer.step()``. Construction sets the epoch-0 rate, as PyTorch does. Each schedule is a
closed form of the epoch count ``last_epoch`` and the optimizer's rate at construction
``base_lr``, so ``state_dict()`` is just those numbers and resuming is exact.
"""
from __future__ import annotations

import math
import numbers

from kernels import _checks as ck


def _count(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


class LRScheduler:
    """Base class: subclasses define ``lr_at(epoch)``."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0
        self._apply()

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def _apply(self) -> None:
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def step(self) -> None:
        """Advance one epoch and set the optimizer's learning rate."""
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The rate set by the last ``step`` (a one-element list, as PyTorch's one param group)."""
        return [self.lr_at(self.last_epoch)]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "base_lr": self.base_lr}

    def load_state_dict(self, state_dict) -> None:
        """Restore ``state_dict()`` and set the optimizer's rate; ValueError for other keys."""
        if set(state_dict) != {"last_epoch", "base_lr"}:
            raise ValueError(f"scheduler state_dict needs keys last_epoch and base_lr, got {sorted(state_dict)}")
        self.last_epoch = _count(state_dict["last_epoch"], "last_epoch", 0)
        self.base_lr = float(state_dict["base_lr"])
        self._apply()


class StepLR(LRScheduler):
    """``base_lr * gamma ** (epoch // step_size)``."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        self.step_size = _count(step_size, "step_size")
        self.gamma = ck.real(gamma, "gamma", low=0.0, low_open=True)
        super().__init__(optimizer)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


def _cosine(base_lr, eta_min, t, period):
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / period)) / 2


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (Loshchilov &
    Hutter, SGDR, ICLR 2017; without restarts, periodic past T_max as PyTorch's closed form)."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        self.T_max = _count(T_max, "T_max")
        self.eta_min = ck.real(eta_min, "eta_min", low=0.0)
        super().__init__(optimizer)

    def lr_at(self, epoch):
        return _cosine(self.base_lr, self.eta_min, epoch, self.T_max)


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing restarted every period (SGDR, Loshchilov & Hutter 2017): periods of
    ``T_0``, ``T_0 * T_mult``, ``T_0 * T_mult**2``, ... epochs."""

    def __init__(self, optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0):
        self.T_0 = _count(T_0, "T_0")
        self.T_mult = _count(T_mult, "T_mult")
        self.eta_min = ck.real(eta_min, "eta_min", low=0.0)
        super().__init__(optimizer)

    def lr_at(self, epoch):
        t, period = epoch, self.T_0
        if self.T_mult == 1:
            t %= period
        while t >= period:
            t -= period
            period *= self.T_mult
        return _cosine(self.base_lr, self.eta_min, t, period)


class LinearWarmup(LRScheduler):
    """Rate factor rising linearly from ``start_factor`` to 1 over ``warmup_steps`` steps, then 1
    (``torch.optim.lr_scheduler.LinearLR`` with ``end_factor=1``, ``total_iters=warmup_steps``)."""

    def __init__(self, optimizer, warmup_steps: int, start_factor: float = 1.0 / 3.0):
        self.warmup_steps = _count(warmup_steps, "warmup_steps")
        self.start_factor = ck.real(start_factor, "start_factor", low=0.0, high=1.0, low_open=True)
        super().__init__(optimizer)

    def lr_at(self, epoch):
        done = min(epoch, self.warmup_steps) / self.warmup_steps
        return self.base_lr * (self.start_factor + (1.0 - self.start_factor) * done)
