"""pynn's kernels: every hot loop in four implementations behind one signature.

Backends: ``numpy`` (the reference and specification), ``numba`` (CPU JIT), ``c`` (C through
cffi) and ``cuda`` (Numba CUDA). Each public function takes ``backend=None``; the default comes
from ``use_backend`` blocks, then ``$PYNN_BACKEND``, then numba, c, numpy in that order, and
device arrays go to ``cuda``.
"""
from kernels._dispatch import BACKENDS, backends, default_backend, use_backend
from kernels.linear import linear, linear_backward, matmul
