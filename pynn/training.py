"""The training loop: ``fit`` with callbacks, early stopping and checkpoints; ``evaluate``, ``predict``.

One step is classic explicit backpropagation: ``out = model(xb)``, ``loss = loss_fn(out, yb)``,
``optimizer.zero_grad()``, ``model.backward(loss_fn.backward())``, ``optimizer.step()``. The
learning-rate scheduler steps once per epoch, as PyTorch's epoch-based schedulers do.

Checkpoints (Keras's ``BackupAndRestore``, as one file): ``fit(..., checkpoint=path,
checkpoint_every=N)`` writes ``path`` atomically (``pynn.serialization.write_atomic``) after
every N optimizer steps and at the end of every epoch. The file holds everything the rest of the
run depends on: the model's config, parameters, buffers and extra state (Dropout's seed and
call count), the optimizer's state (Adam's moments and step count), the scheduler's, the data
loader's position (epoch and batch), the transform's and ``pynn.random``'s generator states, the
callbacks' ``state_dict()``, the History so far, the running loss sum of the current epoch, and
``checkpoint_info`` (the command line's arguments). ``fit(..., checkpoint=path, resume=True)``
with freshly built objects continues from it and ends bit-identical to a run never interrupted
(wall-clock ``seconds`` and ``samples_per_s`` aside). A checkpoint is only written from finite
values: when a step leaves NaN or Inf in the parameters or optimizer state, or the loss is NaN
or Inf, ``fit`` raises FloatingPointError naming the step, and the file keeps the last good step.

Determinism: a run is a function of its seeds, data and backend; no kernel draws from a clock
or from thread timing (dropout masks hash a seed and the element index). On the numba and c
backends every parallel loop gives each thread whole outputs, each computed in a fixed order:
rows or column panels of a GEMM, each over all of K; output planes, samples or weight-gradient
rows of a convolution; channels of the batch-norm sums; planes of pooling; rows of softmax and
cross-entropy; elements of elementwise ops, dropout and optimizer updates. Losses are reduced
to a scalar by NumPy in float64. So no sum depends on the thread count or on scheduling, and
numba results are bit-identical for any ``NUMBA_NUM_THREADS`` (tests/test_determinism.py). One
exception: the C convolution's GEMM path sums the weight gradient per thread over its static
share of the batch and adds the partial sums in thread order, which is reproducible for a fixed
``OMP_NUM_THREADS`` but differs between thread counts. The numpy backend's products are
OpenBLAS's, likewise reproducible for a fixed ``OPENBLAS_NUM_THREADS`` only.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pynn.datasets import DataLoader
from pynn.random import get_rng_state, set_rng_state
from pynn.serialization import load_state, nonfinite, save_state, stale_temporaries

CHECKPOINT_FORMAT = "pynn.checkpoint"
CHECKPOINT_VERSION = 1
_STATE_KEYS = {"version", "step", "loss_sum", "samples", "seconds", "history", "model", "optimizer", "scheduler",
               "loader", "transform", "random", "callbacks", "info"}


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
    """Hooks called by ``fit``; ``on_epoch_end`` may add entries to ``logs`` and returns True to stop.

    A callback that keeps state across epochs returns it from ``state_dict()`` (JSON values and
    arrays) and restores it in ``load_state_dict``, so that checkpoints resume it; the default
    is stateless.
    """

    def on_train_begin(self, model) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict) -> None:
        if state_dict != {}:
            raise ValueError(f"{type(self).__name__} keeps no state, got {state_dict!r:.200}")

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

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "best_state": self.best_state}

    def load_state_dict(self, state_dict) -> None:
        """Restore ``state_dict()``; ValueError for other keys or values of the wrong type."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"best", "best_epoch", "wait", "best_state"}:
            raise ValueError(f"EarlyStopping state must have keys best, best_epoch, wait, best_state; "
                             f"got {state_dict!r:.200}")
        best, epoch, wait, state = (state_dict[k] for k in ("best", "best_epoch", "wait", "best_state"))
        if not (best is None or isinstance(best, (int, float))) or not (epoch is None or type(epoch) is int) \
                or type(wait) is not int or not (state is None or isinstance(state, dict)):
            raise ValueError(f"EarlyStopping state has values of the wrong type: {state_dict!r:.200}")
        self.best, self.best_epoch, self.wait, self.best_state = best, epoch, wait, state

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


class _Run:
    """One ``fit`` call's moving parts and position: what a checkpoint saves and restores."""

    def __init__(self, model, loss, optimizer, loader, scheduler, callbacks, history, path, every, info):
        self.model, self.loss, self.optimizer, self.loader = model, loss, optimizer, loader
        self.scheduler, self.callbacks, self.history = scheduler, list(callbacks), history
        self.path, self.every, self.info = path, every, info
        self.step = 0  # optimizer steps taken
        self.batch, self.loss_sum, self.samples, self.seconds = 0, 0.0, 0, 0.0  # of the current epoch
        self.started = None  # the current epoch's start, while one runs
        self.saved_step = None

    def train_epoch(self, epoch: int, epochs: int, progress: bool) -> tuple[float, int, float]:
        """The rest of one pass over the loader: returns (mean loss, samples, seconds)."""
        from tqdm import tqdm  # here, not at the top: prediction never pays its import

        n = len(self.loader)
        self.started = time.perf_counter()
        bar = tqdm(self.loader, total=n, initial=self.batch, desc=f"epoch {epoch}/{epochs}", unit="batch",
                   disable=not progress)
        for xb, yb in bar:
            self.batch += 1
            value = self.loss(self.model(xb), yb)
            if not math.isfinite(value):
                bar.close()
                raise FloatingPointError(
                    f"loss is {value} at epoch {epoch}, step {self.batch} of {n} (optimizer step {self.step + 1}); "
                    f"{self._kept()}try a lower learning rate or check the inputs for NaN/Inf")
            self.optimizer.zero_grad()
            self.model.backward(self.loss.backward(), input_grad=False)  # the input is data
            self.optimizer.step()
            self.step += 1
            self.loss_sum += value * len(yb)
            self.samples += len(yb)
            if self.every and self.step % self.every == 0 and self.batch < n:
                self.save()
            if progress:
                rate = self.samples / max(self._elapsed(), 1e-9)
                bar.set_postfix(loss=f"{self.loss_sum / self.samples:.4f}", samples_s=f"{rate:,.0f}", refresh=False)
        bar.close()
        result = self.loss_sum / self.samples, self.samples, self._elapsed()
        self.batch, self.loss_sum, self.samples, self.seconds, self.started = 0, 0.0, 0, 0.0, None
        return result

    def _elapsed(self) -> float:
        """Seconds of the current epoch's training pass so far, over resumes."""
        return self.seconds + (0.0 if self.started is None else time.perf_counter() - self.started)

    def _kept(self) -> str:
        return f"{self.path} keeps step {self.saved_step}; " if self.saved_step is not None else ""

    def state(self) -> dict:
        transform = self.loader.transform
        extra = {name: m.get_extra_state() for name, m in self.model.named_modules() if m.get_extra_state()}
        return {
            "version": CHECKPOINT_VERSION, "step": self.step, "loss_sum": self.loss_sum, "samples": self.samples,
            "seconds": self._elapsed(),
            "history": {"epochs": self.history.epochs, "stopped_early": self.history.stopped_early},
            "model": {"config": self.model.config(), "state": self.model.state_dict(), "extra": extra},
            "optimizer": {"type": type(self.optimizer).__name__, **self.optimizer.state_dict()},
            "scheduler": None if self.scheduler is None else
            {"type": type(self.scheduler).__name__, **self.scheduler.state_dict()},
            "loader": self.loader.state_dict(),
            "transform": transform.state_dict() if hasattr(transform, "state_dict") else None,
            "random": get_rng_state(),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "info": self.info,
        }

    def save(self) -> None:
        """Write the checkpoint, unless the model or optimizer state holds NaN or Inf."""
        state = self.state()
        bad = [f"model {k}" for k in nonfinite(state["model"]["state"])]
        bad += [f"optimizer {k}" for k in nonfinite(state["optimizer"]["state"])]
        if bad:
            raise FloatingPointError(
                f"NaN or Inf in {', '.join(bad)} after optimizer step {self.step}; not overwriting the checkpoint: "
                f"{self._kept() or 'no checkpoint written yet; '}try a lower learning rate")
        save_state(self.path, state, CHECKPOINT_FORMAT)
        self.saved_step = self.step

    def restore(self, state: dict) -> None:
        """Load ``state()`` output into the objects; ValueError naming what does not match."""
        try:
            self._restore(state)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.path}: cannot resume: {exc}") from exc
        self.saved_step = self.step

    def _restore(self, state: dict) -> None:
        if set(state) != _STATE_KEYS or state["version"] != CHECKPOINT_VERSION:
            raise ValueError(f"not a version {CHECKPOINT_VERSION} checkpoint (keys {sorted(state)})")
        kinds = {"history": dict, "model": dict, "optimizer": dict, "loader": dict, "random": dict, "callbacks": list}
        wrong = [k for k, kind in kinds.items() if not isinstance(state[k], kind)]
        if wrong or not isinstance(state["scheduler"], (dict, type(None))):
            raise ValueError(f"its entries {wrong or ['scheduler']} have the wrong type")
        model, opt, sched = state["model"], dict(state["optimizer"]), state["scheduler"]
        if model["config"] != json.loads(json.dumps(self.model.config())):
            raise ValueError("it was written for another model architecture")
        if opt.pop("type") != type(self.optimizer).__name__:
            raise ValueError(f"it holds a {state['optimizer']['type']} optimizer, not {type(self.optimizer).__name__}")
        if (sched and sched.get("type")) != (self.scheduler and type(self.scheduler).__name__):
            raise ValueError(f"its scheduler {sched and sched.get('type')} differs from "
                             f"{self.scheduler and type(self.scheduler).__name__}")
        if len(state["callbacks"]) != len(self.callbacks):
            raise ValueError(f"it holds {len(state['callbacks'])} callback states for {len(self.callbacks)} callbacks")
        epochs = state["history"]["epochs"]
        if not isinstance(epochs, list) or any(not isinstance(e, dict) or e.get("epoch") != i + 1
                                               or not isinstance(e.get("train_loss"), float)
                                               for i, e in enumerate(epochs)):
            raise ValueError("its history is malformed")
        counters = (state["step"], state["samples"])
        if any(type(v) is not int or v < 0 for v in counters) or \
                any(not isinstance(state[k], float) or not math.isfinite(state[k]) for k in ("loss_sum", "seconds")):
            raise ValueError(f"its counters are malformed: step {state['step']!r:.50}, samples "
                             f"{state['samples']!r:.50}, loss_sum {state['loss_sum']!r:.50}")
        self.loader.load_state_dict(state["loader"])
        self.model.load_state_dict(model["state"])
        own = {name: m for name, m in self.model.named_modules() if m.get_extra_state()}
        if not isinstance(model["extra"], dict) or set(model["extra"]) != set(own):
            raise ValueError(f"its module extra states {sorted(model['extra'])} do not match {sorted(own)}")
        for name, m in own.items():
            m.set_extra_state(model["extra"][name])
        self.optimizer.load_state_dict(opt)
        if sched:
            self.scheduler.load_state_dict({k: v for k, v in sched.items() if k != "type"})
        transform = self.loader.transform
        if hasattr(transform, "load_state_dict"):
            transform.load_state_dict(state["transform"])
        elif state["transform"] is not None:
            raise ValueError("it holds a transform state but this data loader's transform keeps none")
        set_rng_state(state["random"])
        for cb, cb_state in zip(self.callbacks, state["callbacks"]):
            cb.load_state_dict(cb_state)
        self.history.epochs = epochs
        self.history.stopped_early = state["history"]["stopped_early"] is True
        self.step, self.samples, self.loss_sum, self.seconds = *counters, state["loss_sum"], state["seconds"]
        position = self.loader.state_dict()["batch"]
        self.batch = position if position < len(self.loader) else 0


def read_checkpoint(path) -> dict:
    """The contents of a checkpoint file written by ``fit``: a dict of JSON values and arrays
    (``info``, ``step``, ``history``, ``model``, ``optimizer``, ...). Raises FileNotFoundError
    for a missing file and ValueError naming the file for a malformed or corrupt one."""
    return load_state(path, CHECKPOINT_FORMAT)


def _positive(value, name: str):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def fit(model, loss, optimizer, train_data, val_data=None, epochs: int = 10, batch_size: int = 64,
        callbacks=(), scheduler=None, seed: int = 0, progress: bool = True, transform=None, *,
        checkpoint=None, checkpoint_every: int | None = None, resume: bool = False,
        checkpoint_info=None) -> History:
    """Train ``model`` for up to ``epochs`` epochs and return the ``History``.

    train_data: a ``DataLoader``, or an ``(x, y)`` pair batched with ``batch_size`` and shuffled
    with ``seed`` (the same seed gives the same batches), each input batch passed through
    ``transform`` when given (augmentation, e.g. a ``pynn.transforms.Compose``). val_data: an
    optional ``(x, y)`` pair evaluated after every epoch in eval mode (``val_loss``,
    ``val_accuracy``). ``scheduler`` steps after every epoch; ``callbacks`` are ``Callback``
    objects, and training stops early when one returns True. ``progress`` shows a tqdm bar per
    epoch with the running loss and samples per second.

    checkpoint: a file path; the run's state is written there atomically at the end of every
    epoch and, with ``checkpoint_every`` N, after every N-th optimizer step (see the module
    docstring for what it holds). ``checkpoint_info``: JSON-able data stored with it. With
    ``resume``, the run continues from that file, which must exist, into the objects given
    (built as for the original run: same architecture, optimizer and scheduler types, data and
    loader settings, number of callbacks); ``epochs`` may differ. Temporary files left by a
    process killed while saving are removed first. A transform or callback without
    ``state_dict`` is taken to be stateless.

    Raises FloatingPointError naming the epoch and step when the loss becomes NaN or infinite,
    or when a checkpoint is due and the parameters or optimizer state hold NaN or Inf (the
    file then keeps its last good state); ValueError for ``epochs`` < 1, a ``transform`` given
    with a DataLoader (give it to the DataLoader instead), ``checkpoint_every`` or ``resume``
    without ``checkpoint``, or a checkpoint that does not match the objects; FileNotFoundError
    when resuming from a missing file; TypeError for ``checkpoint_info`` that is not JSON-able.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if isinstance(train_data, DataLoader) and transform is not None:
        raise ValueError("fit got a DataLoader and a transform; pass the transform to the DataLoader")
    _positive(checkpoint_every, "checkpoint_every")
    if checkpoint is None and (checkpoint_every is not None or resume):
        raise ValueError("checkpoint_every and resume need a checkpoint path")
    json.dumps(checkpoint_info, allow_nan=False)  # a TypeError now, not at the first save
    loader = train_data if isinstance(train_data, DataLoader) else DataLoader(
        *train_data, batch_size, shuffle=True, seed=seed, transform=transform)
    history = History()
    for cb in callbacks:
        cb.on_train_begin(model)
    run = _Run(model, loss, optimizer, loader, scheduler, callbacks, history,
               None if checkpoint is None else Path(checkpoint), checkpoint_every, checkpoint_info)
    if checkpoint is not None:
        for tmp in stale_temporaries(checkpoint):
            tmp.unlink(missing_ok=True)
    if resume:
        run.restore(read_checkpoint(checkpoint))
    model.train()
    while len(history.epochs) < epochs and not history.stopped_early:
        epoch = len(history.epochs) + 1
        lr = optimizer.lr
        train_loss, seen, seconds = run.train_epoch(epoch, epochs, progress)
        logs = {"epoch": epoch, "train_loss": train_loss, "lr": lr, "seconds": seconds,
                "samples_per_s": seen / seconds}
        if val_data is not None:
            result = evaluate(model, *val_data, loss=loss)
            logs["val_loss"], logs["val_accuracy"] = result["loss"], result["accuracy"]
        if scheduler is not None:
            scheduler.step()
        stop = [cb.on_epoch_end(epoch, logs, model) for cb in callbacks]  # every callback sees every epoch
        history.epochs.append(logs)
        history.stopped_early = any(stop)
        if checkpoint is not None:
            run.save()
    key = "val_loss" if val_data is not None else "train_loss"
    history.best_epoch = min(history.epochs, key=lambda e: e[key])["epoch"]
    for cb in callbacks:
        cb.on_train_end(model, history)
    return history
