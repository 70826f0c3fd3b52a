"""Start-up: a fresh process that imports pynn, loads a saved MLP and predicts one image.

Timed per backend, side by side: through the library (``import pynn; pynn.load; pynn.predict``)
and through the command line (``python -m pynn predict``). Numba runs twice: with a warm cache
(``NUMBA_CACHE_DIR`` filled by the warm-up round) and cold (an empty cache directory every
round, so its kernels compile). Each round is one whole process, interpreter start included;
the goals are 1.0 s for numba warm and 0.3 s for c. Python's own bytecode caches follow the
environment (``PYTHONDONTWRITEBYTECODE`` makes every round compile pynn's sources).
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import kernels
import pynn
from pynn.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 5
LIBRARY = ("import sys, numpy as np, pynn\n"
           "pynn.predict(pynn.load(sys.argv[1]), np.load(sys.argv[2]).reshape(-1, 1, 28, 28))")
# (backend, numba cache, how); a cold cache is timed once, through the library: compiling dwarfs
# whatever the command line adds.
CASES = [(backend, cache, how) for backend, cache in [("numba", "warm"), ("c", None), ("numpy", None)]
         for how in ("library", "cli")] + [("numba", "cold", "library")]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained-shape MLP (784-256-128-10) saved to a folder, and one test image as .npy."""
    folder = tmp_path_factory.mktemp("startup")
    pynn.manual_seed(0)
    pynn.save(MODELS["mlp"](), folder / "model")
    image = pynn.embedded_fashion_mnist_test()[0][:1]
    np.save(folder / "one.npy", image)
    return folder


@pytest.mark.parametrize("backend, cache, how", CASES, ids=lambda v: v or "")
def test_startup(benchmark, saved, tmp_path, backend, cache, how):
    if not kernels.is_usable(backend):
        pytest.skip(f"backend {backend} is not usable here")
    args = [str(saved / "model"), str(saved / "one.npy")]
    command = [sys.executable, "-c", LIBRARY, *args] if how == "library" else [sys.executable, "-m", "pynn",
                                                                               "predict", *args]
    env = {**os.environ, "PYNN_BACKEND": backend, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("NUMBA_ENABLE_CUDASIM", None)  # the root conftest's setting for the test suite, not a user's

    def fresh_cache():
        if cache == "cold":
            env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(dir=tmp_path)
        return (), {}

    def run():
        subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, timeout=300)

    benchmark.group = "startup: fresh process, load an MLP, predict one image"
    benchmark.extra_info.update(backend=backend, numba_cache=cache, how=how)
    benchmark.pedantic(run, setup=fresh_cache, rounds=ROUNDS, warmup_rounds=0 if cache == "cold" else 1)
