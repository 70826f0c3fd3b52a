"""Numba CPU kernels (``@njit(cache=True)``, parallel where it pays). float32 only."""
import ctypes

import numba  # noqa: F401  (ImportError marks the backend unusable)
from numba.np.ufunc import parallel


def _switch_off_openmp_nesting():
    """Numba's OpenMP threading layer calls ``omp_set_nested(1)`` when it starts its threads,
    which lets every later OpenMP region in the process open nested teams. Other OpenMP users
    (PyTorch, MKL) then run more threads than cores: one PyTorch MLP epoch took 7.7 s after a
    numba epoch in the same process against 2.4 s before it. No kernel here nests parallel
    regions, so the threads are started now and nesting is switched back off."""
    parallel._launch_threads()
    if numba.threading_layer() == "omp":
        from numba.np.ufunc import omppool

        ctypes.CDLL(omppool.__file__).omp_set_max_active_levels(1)


_switch_off_openmp_nesting()
