"""Backend choice and the registry that maps (op, backend) to a function.

Every backend is a package with one module per op family, each exporting one function per op
under the op's own name: ``kernels.reference.activation.relu``, ``kernels.numba_cpu.activation.relu``,
``kernels.numba_cuda.activation.relu`` and ``kernels.c.activation.relu`` share one signature.
Modules are imported on first use, so a user of the C backend never pays Numba's import and JIT
start-up, and a model that only uses dense layers never imports the convolution kernels.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import os

import numpy as np

BACKENDS = ("numpy", "numba", "c", "cuda")
_MODULES = {
    "numpy": "kernels.reference",
    "numba": "kernels.numba_cpu",
    "c": "kernels.c",
    "cuda": "kernels.numba_cuda",
}
_loaded: dict[str, object] = {}
_table: dict[tuple[str, str], object] = {}
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("pynn_backend", default=None)


def _module(backend: str):
    mod = _loaded.get(backend)
    if mod is None:
        try:
            mod = importlib.import_module(_MODULES[backend])
        except ImportError as exc:
            raise RuntimeError(f"backend {backend!r} is not usable here: {exc}") from exc
        _loaded[backend] = mod
    return mod


def is_usable(backend: str) -> bool:
    """Whether ``backend`` (a name from ``BACKENDS``) runs here; imports that backend only."""
    try:
        mod = _module(backend)
    except RuntimeError:
        return False
    return getattr(mod, "AVAILABLE", True)


def backends() -> list[str]:
    """Return the names of the backends usable on this machine, in ``BACKENDS`` order.

    ``numpy`` is always there; ``numba`` needs the numba package; ``c`` needs the compiled cffi
    extension ``kernels._ckernels`` (built by ``pip install .``); ``cuda`` needs numba-cuda and a
    GPU, or the simulator (``NUMBA_ENABLE_CUDASIM=1``). Importing a backend to test it costs its
    import time once.
    """
    return [b for b in BACKENDS if is_usable(b)]


def _check_name(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def default_backend() -> str:
    """Return the backend used when a call names none and passes no device array.

    In order: the innermost ``use_backend`` block, then ``$PYNN_BACKEND``, then the first of
    numba, c, numpy that is installed (checked without importing numba).
    """
    chosen = _current.get()
    if chosen is not None:
        return chosen
    env = os.environ.get("PYNN_BACKEND")
    if env:
        return _check_name(env)
    return _installed_default()


@functools.cache
def _installed_default() -> str:
    # Cached: a module search costs about 80 us, and every kernel call outside a
    # ``use_backend`` block asks.
    if importlib.util.find_spec("numba") is not None:
        return "numba"
    if importlib.util.find_spec("kernels._ckernels") is not None:
        return "c"
    return "numpy"


@contextlib.contextmanager
def use_backend(backend: str):
    """Context manager: calls inside the block that name no backend use ``backend``.

    Raises ValueError for an unknown name and RuntimeError when the backend is not usable here.
    """
    _check_name(backend)
    _module(backend)
    token = _current.set(backend)
    try:
        yield backend
    finally:
        _current.reset(token)


def is_device_array(x) -> bool:
    """True for a CUDA device array: Numba's (real or simulated) or anything with
    ``__cuda_array_interface__`` (CuPy, PyTorch)."""
    if isinstance(x, np.ndarray):
        return False
    return hasattr(x, "__cuda_array_interface__") or hasattr(x, "copy_to_host")


def resolve(backend: str | None, *arrays) -> str:
    """Name the backend for one call: the explicit one, else cuda for device arrays, else the default."""
    if backend is not None:
        return _check_name(backend)
    for a in arrays:  # every kernel call passes here: a loop, not a generator, and ndarrays first
        if type(a) is not np.ndarray and is_device_array(a):
            return "cuda"
    return default_backend()


def implementation(family: str, op: str, backend: str):
    """Return the function implementing ``op`` of ``family`` on ``backend`` (a resolved name)."""
    fn = _table.get((op, backend))
    if fn is None:
        if not is_usable(backend):
            raise RuntimeError(f"backend {backend!r} is not usable here; usable: {', '.join(backends())}")
        mod = importlib.import_module(f"{_MODULES[backend]}.{family}")
        fn = getattr(mod, op, None)
        if fn is None:
            raise NotImplementedError(f"op {op!r} has no {backend} implementation")
        _table[(op, backend)] = fn
    return fn
