"""The command line end to end: a tiny training run on the embedded data, then eval and predict
on the model it wrote, plus the errors a user can provoke."""
import gzip
import io
import json
import subprocess
import sys

import numpy as np
import pytest

import kernels
from pynn import datasets
from pynn.cli import main
from pynn.serialization import load
from pynn.training import predict
from tests.test_datasets import idx_bytes

FULL = datasets.SYSTEM_DIRS["fashion-mnist"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Train for one epoch on 512 embedded images (the data folder given is empty)."""
    root = tmp_path_factory.mktemp("cli")
    empty, out = root / "empty", root / "run"
    empty.mkdir()
    args = ["train", "--epochs", "1", "--limit", "512", "--data-dir", str(empty), "--out", str(out),
            "--backend", "numpy", "--no-progress", "--seed", "3"]
    return empty, out, args


@pytest.fixture(scope="module")
def trained(run):
    empty, out, args = run
    with pytest.MonkeyPatch.context() as mp:
        stdout = _capture(mp, args)
    return empty, out, stdout


def _capture(mp, args):
    """Run main in-process and return its stdout, asserting success."""
    buf = io.StringIO()
    mp.setattr(sys, "stdout", buf)
    assert main(args) == 0
    return buf.getvalue()


def test_train_writes_model_and_metrics(trained):
    empty, out, stdout = trained
    assert "data: embedded Fashion-MNIST test split" in stdout
    assert "backend: numpy" in stdout and "first 512 training images" in stdout
    assert (out / "model.safetensors").is_file() and (out / "model.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "numpy" and metrics["seed"] == 3 and metrics["train_samples"] == 512
    assert metrics["dataset"].startswith("embedded")
    (epoch,) = metrics["epochs"]
    assert set(epoch) >= {"train_loss", "val_accuracy", "test_accuracy", "seconds", "samples_per_s"}
    assert metrics["test_accuracy"] == epoch["test_accuracy"]
    # 512 images and one epoch already beat chance (10%) by far.
    assert 0.4 < metrics["test_accuracy"] <= 1.0


def test_train_is_reproducible(trained, run, tmp_path, monkeypatch):
    _, out, args = run
    again = tmp_path / "again"
    _capture(monkeypatch, [a if a != str(out) else str(again) for a in args])
    first = json.loads((out / "metrics.json").read_text())["epochs"][0]
    second = json.loads((again / "metrics.json").read_text())["epochs"][0]
    assert first["train_loss"] == second["train_loss"] and first["test_accuracy"] == second["test_accuracy"]


def test_eval_reports_the_same_accuracy(trained, monkeypatch):
    empty, out, _ = trained
    stdout = _capture(monkeypatch, ["eval", str(out), "--data-dir", str(empty), "--backend", "numpy"])
    acc = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    assert f"test accuracy: {acc:.4f} (2,000 images)" in stdout
    assert "macro avg" in stdout and "Ankle boot" in stdout
    rows = stdout.split("confusion matrix")[1].strip().splitlines()[1:]
    counts = np.array([[int(v) for v in row.split()[:10]] for row in rows])
    assert counts.shape == (10, 10) and counts.sum() == 2000
    assert np.trace(counts) / 2000 == pytest.approx(acc)


@pytest.mark.parametrize("form", ["idx", "idx.gz", "npy_uint8", "npy_flat_float", "npy_nchw_float"])
def test_predict_reads_idx_and_npy(trained, tmp_path, monkeypatch, form):
    _, out, _ = trained
    x, _ = datasets.embedded_fashion_mnist_test()
    images = np.rint(x[:6, 0] * 255).astype(np.uint8)
    path = tmp_path / "images"
    if form.startswith("idx"):
        raw = idx_bytes(images, 0x08)
        path.write_bytes(gzip.compress(raw) if form.endswith("gz") else raw)
    else:
        data = {"npy_uint8": images, "npy_flat_float": x[:6].reshape(6, 784),
                "npy_nchw_float": x[:6].astype(np.float64)}[form]
        np.save(path, data)
        path = path.with_suffix(".npy")
    stdout = _capture(monkeypatch, ["predict", str(out), str(path), "--backend", "numpy"])
    with kernels.use_backend("numpy"):
        want = predict(load(out), x[:6]).argmax(axis=1)
    lines = stdout.splitlines()
    assert lines == [f"{k}\t{datasets.FASHION_MNIST_CLASSES[k]}" for k in want]


def test_user_errors_are_reported(trained, tmp_path, monkeypatch, capsys):
    _, out, _ = trained
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 27, 28), np.uint8))
    assert main(["predict", str(out), str(bad), "--backend", "numpy"]) == 1
    assert "expected uint8 or float images of shape" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nowhere"), "--backend", "numpy"]) == 1
    assert "pynn: error:" in capsys.readouterr().err
    monkeypatch.setattr(kernels, "backends", lambda: ["numpy"])
    monkeypatch.setattr(kernels, "is_usable", lambda name: name == "numpy")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--backend", "c"])
    assert exc.value.code == 2
    assert "backend 'c' is not usable here; usable backends: numpy" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["cnn", "resnet"])
def test_conv_models_train_eval_and_predict(model, tmp_path, monkeypatch):
    empty, out = tmp_path / "empty", tmp_path / model
    empty.mkdir()
    stdout = _capture(monkeypatch, ["train", "--model", model, "--augment", "--epochs", "1", "--limit", "256",
                                    "--data-dir", str(empty), "--out", str(out), "--backend", "numpy",
                                    "--no-progress"])
    assert "augmentation: random horizontal flip, random 28x28 crop with padding 2" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == model and metrics["augment"] is True and metrics["train_samples"] == 256
    layers = json.loads((out / "model.json").read_text())["model"]["children"]
    assert layers[0]["type"] == "Conv2d"
    # The saved model (batch-norm statistics included) scores exactly what the run reported.
    stdout = _capture(monkeypatch, ["eval", str(out), "--data-dir", str(empty), "--backend", "numpy"])
    assert f"test accuracy: {metrics['test_accuracy']:.4f} (2,000 images)" in stdout
    x, _ = datasets.embedded_fashion_mnist_test()
    np.save(tmp_path / "images.npy", x[:3])
    stdout = _capture(monkeypatch, ["predict", str(out), str(tmp_path / "images.npy"), "--backend", "numpy"])
    with kernels.use_backend("numpy"):
        want = predict(load(out), x[:3]).argmax(axis=1)
    assert stdout.splitlines() == [f"{k}\t{datasets.FASHION_MNIST_CLASSES[k]}" for k in want]


def test_python_dash_m_runs():
    done = subprocess.run([sys.executable, "-m", "pynn", "train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--limit N" in done.stdout and "--backend" in done.stdout
    assert "{mlp,cnn,resnet}" in done.stdout and "--augment" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(not FULL.is_dir(), reason="full Fashion-MNIST not installed")
def test_one_epoch_on_full_data(tmp_path, monkeypatch):
    out = tmp_path / "full"
    stdout = _capture(monkeypatch, ["train", "--epochs", "1", "--out", str(out), "--no-progress"])
    assert f"data: Fashion-MNIST from {FULL}" in stdout and "backend: numba" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_samples"] == 55000 and metrics["test_accuracy"] > 0.8


def test_cosine_schedule_anneals_the_learning_rate(run, tmp_path, monkeypatch):
    empty, _, args = run
    out = tmp_path / "cosine"
    args = list(args)
    args[args.index("--epochs") + 1] = "3"
    args[args.index("--out") + 1] = str(out)
    stdout = _capture(monkeypatch, args + ["--schedule", "cosine", "--limit", "128"])
    assert "val accuracy" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    lrs = [e["lr"] for e in metrics["epochs"]]
    assert metrics["schedule"] == "cosine"
    np.testing.assert_allclose(lrs, [1e-3, 1e-3 * 0.75, 1e-3 * 0.25], rtol=1e-12)


@pytest.mark.skipif(not FULL.is_dir(), reason="full Fashion-MNIST not installed")
def test_val_size_zero_trains_without_validation(tmp_path, monkeypatch):
    out = tmp_path / "noval"
    stdout = _capture(monkeypatch, ["train", "--epochs", "1", "--limit", "256", "--val-size", "0",
                                    "--backend", "numpy", "--out", str(out), "--no-progress"])
    assert "val accuracy" not in stdout and "test accuracy" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_size"] == 0 and "val_accuracy" not in metrics["epochs"][0]
