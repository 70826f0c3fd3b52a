"""Numba CUDA kernels (``@cuda.jit``) and their launch wrappers. float32 only.

Wrappers accept device arrays (Numba's, or anything with ``__cuda_array_interface__``) and host
arrays; host inputs are copied to the device and the result copied back.
"""
from numba import cuda

AVAILABLE = cuda.is_available()
