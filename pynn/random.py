"""The random stream behind pynn's initialisers and Dropout seeds.

One module-level ``numpy.random.Generator`` (PCG64) feeds every draw pynn makes, so
``manual_seed(s)`` before building a model makes its initial weights and its dropout masks
reproducible, as ``torch.manual_seed`` does. Data shuffling takes its own explicit seed.
"""
from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the default generator with ``seed`` (a non-negative int) and return it.

    Raises TypeError for a non-integer seed and ValueError for a negative one.
    """
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def default_generator() -> np.random.Generator:
    """The generator that initialisers and Dropout draw from (replaced by ``manual_seed``)."""
    return _generator


def draw_seed() -> int:
    """A fresh kernel seed, uniform in [0, 2**64), from the default generator."""
    return int(_generator.integers(0, 2**64, dtype=np.uint64))
