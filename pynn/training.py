"""The training loop: ``fit`` with callbacks and early stopping, ``evaluate`` and ``predict``.

One step is classic explicit backpropagation: ``out = model(xb)``, ``loss = loss_fn(out, yb)``,
``optimizer.zero_grad()``, ``model.backward(loss_fn.backward())``, ``optimizer.step()``. The
learning-rate scheduler steps once per epoch, as PyTorch's epoch-based schedulers do.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from pynn.datasets import DataLoader


@dataclass
class History:
    """What ``fit`` recorded: one dict per epoch, and the epoch judged best.

    Each dict holds ``epoch`` (from 1), ``train_loss`` (mean over the epoch's samples), ``lr``
    (the learning rate used), ``seconds`` and ``samples_per_s`` (of the training pass), plus
    ``val_loss`` and ``val_accuracy`` with validation data, and whatever callbacks add.
    ``best_epoch`` is the epoch an ``EarlyStopping`` callback kept, else the one with the lowest
    validation loss, else the one with the lowest training loss. ``history["train_loss"]`` lists
    one key over all epochs.
    """

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def __getitem__(self, key: str) -> list:
        return [e.get(key) for e in self.epochs]


class Callback:
    """Hooks called by ``fit``; ``on_epoch_end`` may add entries to ``logs`` and returns True to stop."""

    def on_train_begin(self, model) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict, model) -> bool:
        return False

    def on_train_end(self, model, history: History) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``mode`` "min" or "max" says which way is better; "auto" takes "max" for names containing
    "accuracy" and "min" otherwise. With ``restore_best_weights`` a copy of the model's
    ``state_dict`` is kept at each improvement and loaded back when training ends, so the model
    ends with the best epoch's weights (Keras's callback of the same name).

    Raises ValueError for a negative ``patience`` or ``min_delta`` or an unknown ``mode``, and
    KeyError during ``fit`` when the monitored value is not logged (e.g. "val_loss" without
    validation data).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True):
        if patience < 0 or min_delta < 0:
            raise ValueError(f"patience and min_delta must be >= 0, got {patience} and {min_delta}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if mode == "auto":
            mode = "max" if "accuracy" in monitor else "min"
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode, self.restore_best_weights = mode, restore_best_weights
        self.on_train_begin(None)

    def on_train_begin(self, model) -> None:
        self.best, self.best_epoch, self.best_state, self.wait = None, None, None, 0

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict, model) -> bool:
        if logs.get(self.monitor) is None:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, which is not logged; logged: {', '.join(logs)}"
            )
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_state = model.state_dict()
            return False
        self.wait += 1
        return self.wait >= self.patience

    def on_train_end(self, model, history: History) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        history.best_epoch = self.best_epoch


def _outputs(model, x, batch_size: int):
    """Yield ``(start, output)`` per batch with the model in eval mode, restoring its mode after."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            yield start, model(np.ascontiguousarray(x[start:start + batch_size]))
    finally:
        model.train(was_training)


def predict(model, x, batch_size: int = 256) -> np.ndarray:
    """The model's outputs for all of ``x`` (in eval mode), computed ``batch_size`` rows at a time."""
    return np.concatenate([out for _, out in _outputs(model, x, batch_size)])


def evaluate(model, x, y, batch_size: int = 256, *, loss=None) -> dict:
    """Evaluate in eval mode: ``{"accuracy": ...}`` and, given a ``loss``, ``"loss"`` too.

    ``loss`` is a loss module with ``reduction="mean"``; the result is its mean over all
    samples. Accuracy is reported when the outputs are (N, C) scores and ``y`` integer labels,
    and is None otherwise.
    """
    total, correct, n = 0.0, 0, len(x)
    classify = np.asarray(y).dtype.kind in "iu"
    for start, out in _outputs(model, x, batch_size):
        yb = np.ascontiguousarray(y[start:start + batch_size])
        if loss is not None:
            total += loss(out, yb) * len(yb)
        classify = classify and out.ndim == 2
        if classify:
            correct += int(np.sum(out.argmax(axis=1) == yb))
    result = {"accuracy": correct / n if classify else None}
    if loss is not None:
        result["loss"] = total / n
    return result


def _train_epoch(model, loss_fn, optimizer, loader, epoch: int, epochs: int,
                 progress: bool) -> tuple[float, int, float]:
    """One pass over ``loader``: returns (mean loss, samples, seconds)."""
    total, seen = 0.0, 0
    start = time.perf_counter()
    bar = tqdm(loader, total=len(loader), desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not progress)
    for step, (xb, yb) in enumerate(bar, 1):
        value = loss_fn(model(xb), yb)
        if not math.isfinite(value):
            bar.close()
            raise FloatingPointError(
                f"loss is {value} at epoch {epoch}, step {step} of {len(loader)}; "
                "try a lower learning rate or check the inputs for NaN/Inf"
            )
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
        total += value * len(yb)
        seen += len(yb)
        if progress:
            rate = seen / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{total / seen:.4f}", samples_s=f"{rate:,.0f}", refresh=False)
    bar.close()
    return total / seen, seen, time.perf_counter() - start


def fit(model, loss, optimizer, train_data, val_data=None, epochs: int = 10, batch_size: int = 64,
        callbacks=(), scheduler=None, seed: int = 0, progress: bool = True, transform=None) -> History:
    """Train ``model`` for up to ``epochs`` epochs and return the ``History``.

    train_data: a ``DataLoader``, or an ``(x, y)`` pair batched with ``batch_size`` and shuffled
    with ``seed`` (the same seed gives the same batches), each input batch passed through
    ``transform`` when given (augmentation, e.g. a ``pynn.transforms.Compose``). val_data: an
    optional ``(x, y)`` pair evaluated after every epoch in eval mode (``val_loss``,
    ``val_accuracy``). ``scheduler`` steps after every epoch; ``callbacks`` are ``Callback``
    objects, and training stops early when one returns True. ``progress`` shows a tqdm bar per
    epoch with the running loss and samples per second.

    Raises FloatingPointError naming the epoch and step when the loss becomes NaN or infinite,
    and ValueError for ``epochs`` < 1 or for a ``transform`` given with a DataLoader (give it
    to the DataLoader instead).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if isinstance(train_data, DataLoader) and transform is not None:
        raise ValueError("fit got a DataLoader and a transform; pass the transform to the DataLoader")
    loader = train_data if isinstance(train_data, DataLoader) else DataLoader(
        *train_data, batch_size, shuffle=True, seed=seed, transform=transform)
    history = History()
    for cb in callbacks:
        cb.on_train_begin(model)
    model.train()
    for epoch in range(1, epochs + 1):
        lr = optimizer.lr
        train_loss, seen, seconds = _train_epoch(model, loss, optimizer, loader, epoch, epochs, progress)
        logs = {"epoch": epoch, "train_loss": train_loss, "lr": lr, "seconds": seconds,
                "samples_per_s": seen / seconds}
        if val_data is not None:
            result = evaluate(model, *val_data, loss=loss)
            logs["val_loss"], logs["val_accuracy"] = result["loss"], result["accuracy"]
        if scheduler is not None:
            scheduler.step()
        stop = [cb.on_epoch_end(epoch, logs, model) for cb in callbacks]  # every callback sees every epoch
        history.epochs.append(logs)
        if any(stop):
            history.stopped_early = True
            break
    key = "val_loss" if val_data is not None else "train_loss"
    history.best_epoch = min(history.epochs, key=lambda e: e[key])["epoch"]
    for cb in callbacks:
        cb.on_train_end(model, history)
    return history
