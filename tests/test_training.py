"""The training loop: it learns a small synthetic problem, records its history, steps the
scheduler per epoch, stops early with the best weights restored, and fails loudly on NaN."""
import numpy as np
import pytest

import kernels
from pynn.datasets import DataLoader
from pynn.layers import Dropout, Linear, ReLU
from pynn.losses import CrossEntropyLoss
from pynn.module import Sequential
from pynn.optim import SGD, Adam
from pynn.random import manual_seed
from pynn.schedulers import StepLR
from pynn.training import Callback, EarlyStopping, evaluate, fit, predict


@pytest.fixture(autouse=True)
def numpy_backend():
    # The NumPy reference needs no JIT, which keeps these loops fast; other backends are
    # covered by the kernel tests and by tests/test_cli.py.
    with kernels.use_backend("numpy"):
        yield


def blobs(n=300, seed=0):
    """Three Gaussian blobs in 2-D: float32 points, int64 labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    x = (centres[y] + rng.standard_normal((n, 2))).astype(np.float32)
    return x, y.astype(np.int64)


def net(seed=0, p=0.0):
    manual_seed(seed)
    return Sequential(Linear(2, 16), ReLU(), Dropout(p), Linear(16, 3))


class Snapshots(Callback):
    """Keeps a state_dict copy after every epoch."""

    def __init__(self):
        self.states = []

    def on_epoch_end(self, epoch, logs, model):
        self.states.append(model.state_dict())
        return False


def assert_same_state(a, b):
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_fit_learns_and_records_history():
    train, val = blobs(300, 0), blobs(100, 1)
    model = net(p=0.1)
    history = fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=1e-2), train, val,
                  epochs=8, batch_size=32, progress=False)
    assert [e["epoch"] for e in history.epochs] == list(range(1, 9))
    assert set(history.epochs[0]) >= {"train_loss", "val_loss", "val_accuracy", "lr", "seconds", "samples_per_s"}
    losses = history["train_loss"]
    assert losses[-1] < 0.3 * losses[0], losses
    assert history["val_accuracy"][-1] > 0.9
    assert history.best_epoch == int(np.argmin(history["val_loss"])) + 1
    assert model.training and not history.stopped_early
    assert all(e["samples_per_s"] == pytest.approx(300 / e["seconds"]) for e in history.epochs)


def test_fit_is_reproducible_for_a_seed():
    def run(seed):
        model = net(p=0.2)
        h = fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), blobs(), epochs=2,
                batch_size=16, seed=seed, progress=False)
        return h["train_loss"]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_scheduler_steps_once_per_epoch():
    model = net()
    opt = SGD(model.parameters(), lr=0.1)
    history = fit(model, CrossEntropyLoss(), opt, blobs(64), epochs=3, scheduler=StepLR(opt, 1, gamma=0.5),
                  progress=False)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])
    assert opt.lr == pytest.approx(0.0125)


def test_early_stopping_restores_best_weights():
    x, y = blobs(200, 0)
    val = (x, (y + 1) % 3)  # the model learns the train labels, so validation loss only grows
    model, snaps = net(), Snapshots()
    stopper = EarlyStopping("val_loss", patience=2)
    history = fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=1e-2), (x, y), val,
                  epochs=20, callbacks=[snaps, stopper], progress=False)
    val_loss = history["val_loss"]
    assert np.argmin(val_loss) == 0 and len(val_loss) == 3, val_loss
    assert history.stopped_early and history.best_epoch == 1 == stopper.best_epoch
    assert_same_state(model.state_dict(), snaps.states[0])
    with pytest.raises(AssertionError):
        assert_same_state(model.state_dict(), snaps.states[-1])


def test_early_stopping_on_accuracy_and_without_restoring():
    x, y = blobs(200, 0)
    model, snaps = net(), Snapshots()
    stopper = EarlyStopping("val_accuracy", patience=1, min_delta=1.0, restore_best_weights=False)
    assert stopper.mode == "max"
    history = fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), (x, y), (x, y),
                  epochs=5, callbacks=[snaps, stopper], progress=False)
    # No accuracy gain exceeds 1.0, so training stops after the second epoch, keeping its weights.
    assert len(history.epochs) == 2 and history.best_epoch == 1
    assert_same_state(model.state_dict(), snaps.states[-1])


def test_early_stopping_errors():
    model = net()
    with pytest.raises(KeyError, match="'val_loss', which is not logged"):
        fit(model, CrossEntropyLoss(), SGD(model.parameters()), blobs(32), epochs=1,
            callbacks=[EarlyStopping()], progress=False)
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)


def test_nan_loss_names_epoch_and_step():
    x, y = blobs(100)
    x[70, 0] = np.nan  # in the third batch of 32 when not shuffled
    model = net()
    loader = DataLoader(x, y, 32, shuffle=False)
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1, step 3 of 4"):
        fit(model, CrossEntropyLoss(), SGD(model.parameters()), loader, epochs=2, progress=False)


def test_evaluate_and_predict_use_eval_mode_and_restore_it():
    x, y = blobs(50)
    model = net(p=0.5)
    loss = CrossEntropyLoss()
    model.eval()
    full = model(x)
    want = loss(full, y)
    model.train()
    out = predict(model, x, batch_size=7)
    np.testing.assert_allclose(out, full, rtol=1e-6)  # Dropout is off: same as one eval pass
    result = evaluate(model, x, y, batch_size=7, loss=loss)
    assert result["loss"] == pytest.approx(want, rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(full.argmax(1) == y))
    assert model.training
    model.eval()
    evaluate(model, x, y)
    assert not model.training


def test_progress_bar_shows_loss_and_rate(capsys):
    model = net()
    fit(model, CrossEntropyLoss(), SGD(model.parameters()), blobs(64), epochs=1, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "samples_s=" in err
