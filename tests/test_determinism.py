"""Determinism: the same seed trains to bit-identical weights in two fresh processes, on every
CPU backend, for the MLP (dropout) and the ResNet (batch norm); on numba also with one thread
against the default count, since no parallel split there makes a sum depend on the thread count
(pynn/training.py's docstring says how; the C convolution's weight gradient is the exception)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kernels
import pynn
from pynn.models import MODELS
from tests.support import saved_weights

ROOT = Path(__file__).resolve().parents[1]

# Trains each named model for 24 steps of 4 embedded images (Adam, dropout and batch norm in
# training mode) on the backend given, and saves it under the output folder.
TRAIN = """
import sys
import kernels, pynn
from pynn.datasets import embedded_fashion_mnist_test
from pynn.models import MODELS
backend, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
x, y = embedded_fashion_mnist_test()
with kernels.use_backend(backend):
    for name in names:
        pynn.manual_seed(0)
        model = MODELS[name]()
        pynn.fit(model, pynn.CrossEntropyLoss(), pynn.Adam(model.parameters()), (x[:96], y[:96]), epochs=1,
                 batch_size=4, seed=1, progress=False)
        pynn.save(model, f"{out}/{name}")
"""


def _train(backend, out: Path, names, **env):
    done = subprocess.run([sys.executable, "-c", TRAIN, backend, str(out), *names], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: saved_weights(out / name / "model.safetensors") for name in names}


@pytest.fixture(scope="module")
def first_runs(tmp_path_factory):
    """Both models trained once per backend with the default thread count."""
    runs = {}

    def get(backend):
        if backend not in runs:
            runs[backend] = _train(backend, tmp_path_factory.mktemp(backend), ["mlp", "resnet"])
        return runs[backend]

    return get


# (backend, environment of the second run, the models it trains and compares)
RUNS = [
    ("numpy", {}, ["mlp", "resnet"]),
    ("numba", {"NUMBA_NUM_THREADS": "1"}, ["mlp", "resnet"]),
    ("c", {}, ["mlp", "resnet"]),
    ("c", {"OMP_NUM_THREADS": "1"}, ["mlp"]),
]


@pytest.mark.parametrize("backend, env, names", RUNS, ids=["numpy", "numba-one-thread", "c", "c-one-thread-mlp"])
def test_same_seed_same_weights_in_fresh_processes(backend, env, names, first_runs, tmp_path):
    if backend not in kernels.backends():
        pytest.skip(f"backend {backend} is not usable here")
    first = first_runs(backend)
    second = _train(backend, tmp_path, names, **env)
    for name in names:
        assert first[name] == second[name], f"{backend} {name}: the weights differ between the runs ({env})"


def test_the_runs_train(first_runs, tmp_path):
    """Guards the comparison above: training moves the weights away from their initial values."""
    pynn.manual_seed(0)
    pynn.save(MODELS["mlp"](), tmp_path)
    assert first_runs("numpy")["mlp"][0] != saved_weights(tmp_path / "model.safetensors")[0]
