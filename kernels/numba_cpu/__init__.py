"""Numba CPU kernels (``@njit(cache=True)``, parallel where it pays). float32 only."""
import numba  # noqa: F401  (ImportError marks the backend unusable)
