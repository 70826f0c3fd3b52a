"""Root pytest configuration: runs Numba's CUDA target on its CPU simulator unless told otherwise.

The variable must be set before numba is first imported. On a machine with a GPU, run the suite
with ``NUMBA_ENABLE_CUDASIM=0`` to test the CUDA kernels on the device.
"""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from hypothesis import settings  # noqa: E402

# JIT compilation makes first calls slow, so examples have no deadline.
settings.register_profile("pynn", deadline=None, max_examples=25, derandomize=True)
settings.register_profile("thorough", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("PYNN_HYPOTHESIS_PROFILE", "pynn"))
