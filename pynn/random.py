"""The random stream behind pynn's initialisers and Dropout seeds, and generator states.

One module-level ``numpy.random.Generator`` (PCG64) feeds every draw pynn makes, so
``manual_seed(s)`` before building a model makes its initial weights and its dropout masks
reproducible, as ``torch.manual_seed`` does. Data shuffling takes its own explicit seed.

``get_rng_state``/``set_rng_state`` save and restore that generator (``torch.get_rng_state``'s
names); ``generator_state``/``set_generator_state`` do the same for any PCG64 generator, such as
a transform's. A state is numpy's ``bit_generator.state`` dict, plain JSON-able ints, checked
field by field before it is applied.
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


def generator_state(rng: np.random.Generator) -> dict:
    """The state of a PCG64 ``rng`` as a JSON-able dict (numpy's ``bit_generator.state``)."""
    return rng.bit_generator.state


def _uint(value, bits: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise ValueError(f"{name} must be an int in [0, 2**{bits}), got {value!r}")


def set_generator_state(rng: np.random.Generator, state, name: str = "generator state") -> None:
    """Restore ``generator_state`` output into the PCG64 ``rng``, in place.

    Raises ValueError naming ``name`` and the field when ``state`` is not a PCG64 state dict of
    exactly numpy's fields with ints in range; ``rng`` is unchanged then.
    """
    fields = {"bit_generator", "state", "has_uint32", "uinteger"}
    if not isinstance(state, dict) or set(state) != fields:
        raise ValueError(f"{name} must be a dict with keys {sorted(fields)}, got {state!r:.200}")
    if state["bit_generator"] != "PCG64" or type(rng.bit_generator).__name__ != "PCG64":
        raise ValueError(f"{name} is for {state['bit_generator']!r}; expected a PCG64 generator")
    inner = state["state"]
    if not isinstance(inner, dict) or set(inner) != {"state", "inc"}:
        raise ValueError(f"{name}: 'state' must be a dict with keys 'inc' and 'state', got {inner!r:.200}")
    _uint(inner["state"], 128, f"{name}: state.state")
    _uint(inner["inc"], 128, f"{name}: state.inc")
    _uint(state["has_uint32"], 1, f"{name}: has_uint32")
    _uint(state["uinteger"], 32, f"{name}: uinteger")
    rng.bit_generator.state = state


def get_rng_state() -> dict:
    """The default generator's state (``generator_state(default_generator())``)."""
    return generator_state(_generator)


def set_rng_state(state) -> None:
    """Restore the default generator from ``get_rng_state`` output; ValueError when malformed."""
    set_generator_state(_generator, state, "default generator state")
