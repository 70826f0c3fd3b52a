"""Shared launch helpers for the CUDA wrappers: host/device traffic and grid sizes."""
import numpy as np
from numba import cuda

# Threads per block for 1-D launches. Tests lower it (monkeypatching this module) to force
# several blocks on the simulator's small sizes.
THREADS = 128


def to_device(*arrays):
    """Return ``(device arrays, on_host)``: inputs moved to the GPU where they were host arrays.

    ``on_host`` is True when any input came from the host; wrappers then return host results.
    None passes through unchanged.
    """
    on_host = any(isinstance(a, np.ndarray) for a in arrays)
    out = tuple(cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in arrays)
    return out, on_host


def result(d, on_host):
    """Copy a device result back to the host when the call came with host arrays."""
    return d.copy_to_host() if on_host else d


def blocks(n, threads=None):
    """Number of blocks covering ``n`` items with ``threads`` per block."""
    t = threads or THREADS
    return (n + t - 1) // t
