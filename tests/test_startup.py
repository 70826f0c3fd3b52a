"""Start-up: ``import pynn`` and ``import kernels`` stay light, and the lazy names still resolve.

Each check runs a fresh interpreter, since this test process has long since imported everything.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernels
import pynn
from pynn.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
# Modules a process that only loads a model and predicts must never import: the JIT, the progress
# bar, plotting, PyTorch, and any kernel backend (they load when a kernel first runs on them).
HEAVY = ["numba", "llvmlite", "tqdm", "matplotlib", "torch", "scipy", "cffi", "kernels._ckernels"]
BACKEND_PACKAGES = ["kernels.reference", "kernels.numba_cpu", "kernels.c", "kernels.numba_cuda"]


def _loaded_after(code: str, watch: list[str], **env) -> list[str]:
    """Run ``code`` in a fresh interpreter and return the names in ``watch`` then in sys.modules."""
    script = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {watch!r} if m in sys.modules]))"
    run_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env}
    done = subprocess.run([sys.executable, "-c", script], check=False, cwd=ROOT, env=run_env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("backend", ["", "numba", "c"])
def test_import_pynn_loads_no_backend_and_nothing_heavy(backend):
    # $PYNN_BACKEND only names the backend; importing pynn must not act on it.
    assert _loaded_after("import pynn", HEAVY + BACKEND_PACKAGES + ["pynn.training"], PYNN_BACKEND=backend) == []


def test_kernels_imports_a_backend_only_when_a_kernel_runs():
    watch = HEAVY + BACKEND_PACKAGES
    assert _loaded_after("import kernels", watch) == []
    run = "import numpy as np, kernels\nkernels.relu(np.ones(4, np.float32), backend='numpy')"
    assert _loaded_after(run, watch) == ["kernels.reference"]


def test_load_and_predict_on_numpy_imports_no_other_backend(tmp_path):
    pynn.manual_seed(0)
    pynn.save(MODELS["mlp"](), tmp_path)
    code = (f"import numpy as np, pynn\nm = pynn.load({str(tmp_path)!r})\n"
            "pynn.predict(m, np.zeros((1, 1, 28, 28), np.float32))")
    assert _loaded_after(code, HEAVY + BACKEND_PACKAGES + ["numpy.ma"], PYNN_BACKEND="numpy") == ["kernels.reference"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bare_import_can_load_every_builtin_model(tmp_path, name):
    # from_config finds module types by the name they registered under when their module was
    # imported: ``import pynn`` alone must register all of them.
    pynn.manual_seed(0)
    model = MODELS[name]()
    pynn.save(model, tmp_path)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    code = (f"import numpy as np, pynn\nm = pynn.load({str(tmp_path)!r})\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, pynn.predict(m, np.load({str(tmp_path / 'x.npy')!r})))")
    _loaded_after(code, [], PYNN_BACKEND="numpy")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), pynn.predict(model, x, batch_size=2), rtol=1e-5, atol=1e-6)


def test_every_public_name_resolves_in_a_fresh_process():
    code = (
        "import pynn, importlib\n"
        "missing = [n for n in pynn.__all__ if not hasattr(pynn, n)]\n"
        "assert not missing, missing\n"
        "assert set(pynn.__all__) <= set(dir(pynn)), set(pynn.__all__) - set(dir(pynn))\n"
        "ns = {}\nexec('from pynn import *', ns)\n"
        "assert set(pynn.__all__) <= set(ns), set(pynn.__all__) - set(ns)\n"
        "assert pynn.fit is importlib.import_module('pynn.training').fit\n"
        "assert pynn.random is importlib.import_module('pynn.random')"
    )
    _loaded_after(code, [])


def test_public_names_are_the_submodules_objects():
    for name in pynn.__all__:
        value = getattr(pynn, name)
        home = getattr(value, "__module__", None) or value.__name__
        assert home.startswith("pynn."), (name, home)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        pynn.no_such_name  # noqa: B018


def test_numba_backend_leaves_openmp_nesting_off():
    # Numba's OpenMP layer switches nesting on when it starts its threads; any other OpenMP
    # library in the process (PyTorch, MKL) would then run nested teams on too few cores.
    if not kernels.is_usable("numba"):
        pytest.skip("numba is not installed")
    code = ("import ctypes, numpy as np, kernels\n"
            "a = np.ones((256, 256), np.float32)\n"
            "kernels.matmul(a, a, backend='numba')\n"
            "import numba\nfrom numba.np.ufunc import omppool\n"
            "print(numba.threading_layer(), ctypes.CDLL(omppool.__file__).omp_get_max_active_levels())")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    layer, levels = done.stdout.split()[-2:]
    if layer != "omp":
        pytest.skip(f"numba runs the {layer} threading layer, not OpenMP")
    assert levels == "1"
