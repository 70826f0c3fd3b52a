"""Checkpoints and exact resume: a run stopped at any step and resumed from its checkpoint ends
bit-identical to one never stopped, on every CPU backend, for the MLP (dropout) and the CNN
(augmentation); a process killed with SIGKILL at 20 random moments, many inside a save, always
leaves a checkpoint that loads; a NaN never overwrites the last good checkpoint."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import kernels
from pynn import optim
from pynn.cli import _augmentation, main
from pynn.datasets import DataLoader, embedded_fashion_mnist_test
from pynn.layers import Dropout, Linear, ReLU
from pynn.losses import CrossEntropyLoss
from pynn.models import MODELS
from pynn.module import Sequential
from pynn.optim import SGD, Adam
from pynn.random import default_generator, get_rng_state, manual_seed, set_rng_state
from pynn.schedulers import CosineAnnealingLR
from pynn.serialization import save_state, stale_temporaries
from pynn.training import EarlyStopping, fit, read_checkpoint
from pynn.transforms import Compose, RandomCrop, RandomHorizontalFlip
from tests.support import FAST_BACKENDS, saved_weights

ROOT = Path(__file__).resolve().parents[1]
WALL_CLOCK = ("seconds", "samples_per_s")


class Interrupted(Exception):
    """Stands for a clean stop (Ctrl-C) between two optimizer steps."""


def stop_after(optimizer, steps: int) -> None:
    """Make ``optimizer`` raise Interrupted instead of taking step ``steps + 1``."""
    step = optimizer.step

    def guarded():
        if optimizer.steps >= steps:
            raise Interrupted
        step()

    optimizer.step = guarded


@pytest.fixture(scope="module")
def data():
    x, y = embedded_fashion_mnist_test()
    return (x[:24], y[:24]), (x[100:116], y[100:116])


class Noise:
    """Input noise drawn from pynn's default generator, which a resume must therefore restore."""

    def __call__(self, x):
        return x + default_generator().standard_normal(x.shape).astype(np.float32) * np.float32(0.01)


def _train(name, data, checkpoint, stop=None, resume=False):
    """The command line's objects on 24 images, 3 steps per epoch, 2 epochs; the CNN augments,
    the MLP adds noise."""
    (train, val), seed = data, 4
    manual_seed(seed)
    model = MODELS[name]()
    opt = Adam(model.parameters(), lr=3e-3)
    if stop is not None:
        stop_after(opt, stop)
    stopper = EarlyStopping("val_loss", patience=9)
    history = fit(model, CrossEntropyLoss(), opt, train, val, epochs=2, batch_size=8, seed=seed, progress=False,
                  transform=_augmentation(seed) if name == "cnn" else Noise(), scheduler=CosineAnnealingLR(opt, 2),
                  callbacks=[stopper], checkpoint=checkpoint, checkpoint_every=2, resume=resume)
    return model, opt, history


def _same_run(a, b):
    (model_a, opt_a, hist_a), (model_b, opt_b, hist_b) = a, b
    for (ka, va), (kb, vb) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert ka == kb and va.tobytes() == vb.tobytes(), ka
    assert opt_a._data.tobytes() == opt_b._data.tobytes() and (opt_a.steps, opt_a.lr) == (opt_b.steps, opt_b.lr)
    for k, v in opt_a.state.items():
        assert v.tobytes() == opt_b.state[k].tobytes(), k
    strip = lambda h: [{k: v for k, v in e.items() if k not in WALL_CLOCK} for e in h.epochs]
    assert strip(hist_a) == strip(hist_b) and hist_a.best_epoch == hist_b.best_epoch


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_resume_after_stops_mid_epoch_and_at_epoch_ends_equals_uninterrupted(backend, name, data, tmp_path):
    with kernels.use_backend(backend):
        reference = _train(name, data, tmp_path / "reference.ckpt")
        rng_after = get_rng_state()
        path = tmp_path / "run.ckpt"
        # After step 2 (checkpoint 2, mid-epoch), 3 (the epoch-end checkpoint), 5 (checkpoint 4:
        # step 5 is recomputed), then to the end; each segment with freshly built objects.
        for resume, stop in ((False, 2), (True, 3), (True, 5)):
            with pytest.raises(Interrupted):
                _train(name, data, path, stop=stop, resume=resume)
            assert read_checkpoint(path)["step"] == {2: 2, 3: 3, 5: 4}[stop]
        resumed = _train(name, data, path, resume=True)
        _same_run(resumed, reference)
        assert get_rng_state() == rng_after


def _cli(tmp_path, *extra, limit=48, epochs=2):
    """``pynn train`` on the embedded data (an empty --data-dir), augmented, 16 images a batch."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    return ["train", "--backend", "c" if "c" in kernels.backends() else "numpy", "--limit", str(limit),
            "--batch-size", "16", "--epochs", str(epochs), "--data-dir", str(empty), "--seed", "7", "--augment",
            "--no-progress", *extra]


def _same_outputs(a: Path, b: Path):
    """The same weights bit for bit and metadata (the bytes may differ: the metadata's order
    varies), the same model.json byte for byte, the same metrics but for the wall clock."""
    assert saved_weights(a / "model.safetensors") == saved_weights(b / "model.safetensors")
    assert (a / "model.json").read_bytes() == (b / "model.json").read_bytes()
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for e in ma["epochs"] + mb["epochs"]:
        for k in WALL_CLOCK:
            e.pop(k)
    assert ma == mb


def test_cli_resume_ends_with_the_same_files(tmp_path, monkeypatch, capsys):
    assert main(_cli(tmp_path, "--out", str(tmp_path / "reference"))) == 0
    out = tmp_path / "run"
    original = optim.Adam.step
    # 3 steps per epoch, a checkpoint every 2 steps and at epoch ends. The processes take 2 steps
    # (checkpoint 2), 2 more (checkpoints 3 at the epoch end and 4), 1 more (step 5 is lost),
    # then the rest from checkpoint 4.
    for allowed, args in ((2, _cli(tmp_path, "--out", str(out), "--checkpoint-every", "2")),
                          (2, ["train", "--resume", str(out)]), (1, ["train", "--resume", str(out)])):
        taken = []

        def step(self, allowed=allowed, taken=taken):
            if len(taken) == allowed:
                raise Interrupted
            taken.append(original(self))

        monkeypatch.setattr(optim.Adam, "step", step)
        with pytest.raises(Interrupted):
            main(args)
    assert read_checkpoint(out / "checkpoint.safetensors")["step"] == 4
    monkeypatch.setattr(optim.Adam, "step", original)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert "resuming from" in capsys.readouterr().out
    _same_outputs(out, tmp_path / "reference")


def test_cli_refuses_arguments_that_contradict_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_cli(tmp_path, "--out", str(out), "--checkpoint-every", "3", "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--lr", "0.5"]) == 1
    assert "--lr 0.5 conflicts with --lr 0.001 of the run in" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--lr", "0.001", "--seed", "7", "--no-progress"]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["train", "--resume", str(out), "--out", str(out)])
    assert exc.value.code == 2 and "leave out --out" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 1
    assert "checkpoint.safetensors" in capsys.readouterr().err
    forged = read_checkpoint(out / "checkpoint.safetensors")
    forged["info"]["args"]["model"] = "os.system"
    save_state(out / "checkpoint.safetensors", forged, "pynn.checkpoint")
    assert main(["train", "--resume", str(out)]) == 1
    assert "holds no valid pynn train arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_cli(tmp_path, "--checkpoint-every", "0"))


# --- SIGKILL ----------------------------------------------------------------------------------
KILLS = 20


def _spawn(args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pynn", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_at_a_random_moment(proc, rng, checkpoint: Path) -> str:
    """SIGKILL ``proc`` inside a save (when its 1st to 3rd temporary file appears), a few ms after
    its 1st or 2nd completed save, or at a random time from its start (before its 3rd save, so
    that 20 kills fit in one run). Returns the mode, or "finished"."""
    mode = rng.choice(["save", "save", "after save", "any time"])
    deadline = time.monotonic() + 60
    temporaries, saves, target = set(), 0, rng.randint(1, 3)
    mtime = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
    wake = time.monotonic() + rng.uniform(0.05, 1.5)  # start-up takes about a second
    while proc.poll() is None and time.monotonic() < deadline:
        if checkpoint.exists() and checkpoint.stat().st_mtime_ns != mtime:
            saves, mtime = saves + 1, checkpoint.stat().st_mtime_ns
        temporaries.update(p.name for p in stale_temporaries(checkpoint))
        if mode == "save" and len(temporaries) >= target:
            break
        if mode == "after save" and saves >= min(target, 2):
            time.sleep(rng.uniform(0, 0.02))
            break
        if mode == "any time" and (time.monotonic() >= wake or saves >= 2):
            break
        time.sleep(0.0002)
    if proc.poll() is not None:
        return "finished"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return mode


def test_sigkill_at_20_random_moments_never_breaks_the_checkpoint(tmp_path):
    out, reference = tmp_path / "run", tmp_path / "reference"
    base = _cli(tmp_path, limit=320, epochs=3)
    checkpoint = out / "checkpoint.safetensors"
    rng = random.Random(20240607)
    kills, steps, left_mid_save = 0, [], set()
    while kills < KILLS:
        resume = checkpoint.exists()
        proc = _spawn(["train", "--resume", str(out)] if resume else
                      [*base, "--out", str(out), "--checkpoint-every", "1"])
        mode = _kill_at_a_random_moment(proc, rng, checkpoint)
        assert mode != "finished", f"the run ended before kill {kills + 1}: {proc.stderr.read().decode()[-2000:]}"
        kills += 1
        left_mid_save.update(p.name for p in stale_temporaries(checkpoint))
        if checkpoint.exists():
            state = read_checkpoint(checkpoint)  # the latest checkpoint always loads
            steps.append(state["step"])
            assert all(np.isfinite(v).all() for v in state["model"]["state"].values())
    assert steps == sorted(steps) and steps[-1] > 0, steps
    assert len(left_mid_save) >= 3, f"only {len(left_mid_save)} of {KILLS} kills landed inside a save"
    done = _spawn(["train", "--resume", str(out)])
    assert done.wait() == 0, done.stderr.read().decode()[-2000:]
    assert not stale_temporaries(checkpoint)
    plain = _spawn([*base, "--out", str(reference)])
    assert plain.wait() == 0, plain.stderr.read().decode()[-2000:]
    _same_outputs(out, reference)


# --- NaN ------------------------------------------------------------------------------------------
def _net(seed=0):
    manual_seed(seed)
    return Sequential(Linear(4, 16), ReLU(), Dropout(0.1), Linear(16, 3))


def _blobs(n=64):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


@pytest.fixture
def numpy_backend():
    with kernels.use_backend("numpy"):
        yield


def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, numpy_backend):
    x, y = _blobs()
    bad = x.copy()
    bad[4 * 8 + 3, 1] = np.nan  # in the fifth batch of 8 (not shuffled)
    model, path = _net(), tmp_path / "ckpt"
    with pytest.raises(FloatingPointError, match=re.escape(f"loss is nan at epoch 1, step 5 of 8 (optimizer step 5); "
                                                           f"{path} keeps step 4")):
        fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), DataLoader(bad, y, 8, shuffle=False),
            epochs=1, checkpoint=path, checkpoint_every=2, progress=False)
    good = _net()
    opt = SGD(good.parameters(), lr=0.1)
    stop_after(opt, 4)
    with pytest.raises(Interrupted):
        fit(good, CrossEntropyLoss(), opt, DataLoader(x, y, 8, shuffle=False), epochs=1, progress=False)
    state = read_checkpoint(path)
    assert state["step"] == 4
    for k, v in good.state_dict().items():
        assert state["model"]["state"][k].tobytes() == v.tobytes()


def test_nan_weights_are_never_checkpointed(tmp_path, numpy_backend):
    model, path = _net(), tmp_path / "ckpt"
    opt = Adam(model.parameters())
    step = opt.step

    def diverging():
        step()
        if opt.steps == 3:
            model[0].weight.data[0, 0] = np.inf

    opt.step = diverging
    with pytest.raises(FloatingPointError, match=re.escape(f"NaN or Inf in model 0.weight after optimizer step 3; "
                                                           f"not overwriting the checkpoint: {path} keeps step 2")):
        fit(model, CrossEntropyLoss(), opt, _blobs(), epochs=2, batch_size=8, checkpoint=path, checkpoint_every=1,
            progress=False)
    state = read_checkpoint(path)
    assert state["step"] == 2 and all(np.isfinite(v).all() for v in state["model"]["state"].values())
    assert all(np.isfinite(v).all() for v in state["optimizer"]["state"].values())


def test_cli_reports_a_diverging_run(tmp_path, capsys):
    assert main(_cli(tmp_path, "--out", str(tmp_path / "run"), "--lr", "1e39", "--checkpoint-every", "1")) == 1
    err = capsys.readouterr().err
    assert "after optimizer step 1; not overwriting the checkpoint: no checkpoint written yet" in err


# --- refusals ---------------------------------------------------------------------------------------
def test_resume_refuses_checkpoints_of_other_runs(tmp_path, numpy_backend):
    x, y = _blobs()
    path = tmp_path / "ckpt"
    model = _net()
    fit(model, CrossEntropyLoss(), SGD(model.parameters()), (x, y), epochs=1, batch_size=8, checkpoint=path,
        progress=False)

    def resume(model, make_optimizer=SGD, batch_size=8, **kw):
        fit(model, CrossEntropyLoss(), make_optimizer(model.parameters()), (x, y), epochs=2, batch_size=batch_size,
            checkpoint=path, resume=True, progress=False, **kw)

    with pytest.raises(ValueError, match="cannot resume: it was written for another model architecture"):
        resume(Sequential(Linear(4, 3)))
    with pytest.raises(ValueError, match="holds a SGD optimizer, not Adam"):
        resume(_net(), Adam)
    with pytest.raises(ValueError, match="DataLoader state was saved for .*'batch_size': 8"):
        resume(_net(), batch_size=16)
    with pytest.raises(ValueError, match="holds 0 callback states for 1 callbacks"):
        resume(_net(), callbacks=[EarlyStopping("train_loss")])
    with pytest.raises(ValueError, match="need a checkpoint path"):
        fit(model, CrossEntropyLoss(), SGD(model.parameters()), (x, y), resume=True)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        fit(model, CrossEntropyLoss(), SGD(model.parameters()), (x, y), checkpoint=path, checkpoint_every=0)
    with pytest.raises(FileNotFoundError):
        fit(model, CrossEntropyLoss(), SGD(model.parameters()), (x, y), checkpoint=tmp_path / "no", resume=True)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=re.escape(f"{path}: contents do not match their SHA-256 digest")):
        resume(_net())


def test_a_fresh_run_removes_temporaries_left_by_a_killed_save(tmp_path, numpy_backend):
    path = tmp_path / "ckpt"
    (tmp_path / ".ckpt.0123456789ab.tmp").write_bytes(b"half a checkpoint")
    model = _net()
    fit(model, CrossEntropyLoss(), SGD(model.parameters()), _blobs(16), epochs=1, checkpoint=path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# --- the pieces of the state ----------------------------------------------------------------------------
def test_data_loader_resumes_mid_pass_and_refuses_other_settings():
    x, y = np.arange(10.0)[:, None], np.arange(10)
    whole = DataLoader(x, y, 3, seed=1)
    want = [[yb.tolist() for _, yb in whole] for _ in range(3)]
    first = DataLoader(x, y, 3, seed=1)
    batches = iter(first)
    got = [[next(batches)[1].tolist(), next(batches)[1].tolist()]]
    state = first.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 2)
    second = DataLoader(x, y, 3, seed=1)
    second.load_state_dict(state)
    assert second.state_dict() == state
    got[0] += [yb.tolist() for _, yb in second]
    got += [[yb.tolist() for _, yb in second] for _ in range(2)]
    assert got == want
    with pytest.raises(ValueError, match="saved for .*'seed': 1"):
        DataLoader(x, y, 3, seed=2).load_state_dict(state)
    for bad in ({**state, "batch": 5}, {**state, "epoch": -1}, {**state, "batch": "1"}, {"epoch": 0}):
        with pytest.raises(ValueError):
            DataLoader(x, y, 3, seed=1).load_state_dict(bad)


def test_generator_states_round_trip_and_are_checked():
    flip = Compose([RandomHorizontalFlip(rng=3), RandomCrop(4, padding=1, rng=4)])
    images = np.random.default_rng(0).standard_normal((5, 1, 4, 4)).astype(np.float32)
    flip(images)
    state = json.loads(json.dumps(flip.state_dict()))
    want = flip(images)
    again = Compose([RandomHorizontalFlip(rng=0), RandomCrop(4, padding=1, rng=0)])
    again.load_state_dict(state)
    np.testing.assert_array_equal(again(images), want)
    manual_seed(5)
    saved = get_rng_state()
    want = default_generator().random(3)
    set_rng_state(json.loads(json.dumps(saved)))
    np.testing.assert_array_equal(default_generator().random(3), want)
    for bad in ({}, {**saved, "bit_generator": "MT19937"}, {**saved, "state": {"state": -1, "inc": 1}},
                {**saved, "has_uint32": 2}):
        with pytest.raises(ValueError):
            set_rng_state(bad)
    with pytest.raises(ValueError, match="Compose state must be"):
        again.load_state_dict({"transforms": [None]})


def test_dropout_counters_are_extra_state():
    model = _net()
    drop = model[2]
    assert model[0].get_extra_state() == {} and set(drop.get_extra_state()) == {"seed", "calls"}
    model(np.ones((2, 4), np.float32))
    state = drop.get_extra_state()
    assert state["calls"] == 1
    other = _net(seed=9)[2]
    other.set_extra_state(state)
    assert other.get_extra_state() == state
    for bad in ({"seed": 1}, {"seed": 1, "calls": 1.5}, {"seed": 2**64, "calls": 0}):
        with pytest.raises(ValueError, match="Dropout extra state"):
            other.set_extra_state(bad)
