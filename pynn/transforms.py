"""Seeded data augmentation on whole NCHW float batches, as torchvision's transforms of the
same names do to single images: each image of a batch draws its own flip or crop offsets.

Every transform owns a ``numpy.random.Generator`` (pass one, or a seed; None draws a fresh
seed from ``pynn.random``), so a seeded run repeats its augmentations exactly. A transform
maps a (N, C, H, W) array to a new C-contiguous array of the same dtype and never writes into
its input. ``state_dict()``/``load_state_dict()`` save and restore the generators (a
``Compose`` those of its transforms), so a resumed training run draws what an uninterrupted one
would. Augmenting with flips and padded crops is the CIFAR-10 recipe of He et al., "Deep
Residual Learning for Image Recognition", CVPR 2016, section 4.2.
"""
from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from kernels import _checks as ck
from pynn.random import draw_seed, generator_state, set_generator_state


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng(draw_seed())
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral) or rng < 0:
        raise TypeError(f"rng must be a numpy.random.Generator, a non-negative int seed or None, got {rng!r}")
    return np.random.default_rng(int(rng))


class _RandomTransform:
    """A transform drawing from its own generator ``rng``, whose state is its ``state_dict``."""

    rng: np.random.Generator

    def state_dict(self) -> dict:
        return {"rng": generator_state(self.rng)}

    def load_state_dict(self, state_dict) -> None:
        """Restore ``state_dict()``; ValueError when it is not a state of this transform."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"rng"}:
            raise ValueError(f"{type(self).__name__} state must be {{'rng': ...}}, got {state_dict!r:.200}")
        set_generator_state(self.rng, state_dict["rng"], f"{type(self).__name__} generator state")


def _images(x) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray of shape (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {x.shape}")
    return x


class RandomHorizontalFlip(_RandomTransform):
    """Mirror each image left-right (along W) with probability ``p``.

    Raises ValueError for p outside [0, 1]; when called, TypeError for anything but an ndarray
    and ValueError for an array that is not 4-D.
    """

    def __init__(self, p: float = 0.5, rng=None):
        self.p = ck.real(p, "p", low=0.0, high=1.0)
        self.rng = _generator(rng)

    def __call__(self, x):
        x = _images(x)
        flip = self.rng.random(len(x)) < self.p
        return np.ascontiguousarray(np.where(flip[:, None, None, None], x[..., ::-1], x))

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCrop(_RandomTransform):
    """Pad every side with ``padding`` zeros, then cut a ``size`` window at a uniformly random
    offset per image (torchvision's ``RandomCrop(size, padding)`` with ``fill=0``).

    size: int or (h, w); padding: int or (pad_h, pad_w), >= 0. Raises TypeError/ValueError for
    other sizes or paddings; when called, ValueError when the window exceeds the padded image,
    and as ``RandomHorizontalFlip`` for an input that is not (N, C, H, W).
    """

    def __init__(self, size, padding=0, rng=None):
        self.size = ck.int_pair(size, "size", 1)
        self.padding = ck.int_pair(padding, "padding", 0)
        self.rng = _generator(rng)

    def __call__(self, x):
        x = _images(x)
        (h, w), (ph, pw) = self.size, self.padding
        height, width = x.shape[2] + 2 * ph, x.shape[3] + 2 * pw
        if h > height or w > width:
            raise ValueError(f"RandomCrop: crop size {(h, w)} is larger than the padded image {(height, width)}")
        padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        top = self.rng.integers(0, height - h + 1, len(x))
        left = self.rng.integers(0, width - w + 1, len(x))
        # windows[n, c, i, j] is the (h, w) crop at offset (i, j): one gather picks every
        # image's own offset, with no Python loop over the batch.
        windows = sliding_window_view(padded, (h, w), axis=(2, 3))
        return np.ascontiguousarray(windows[np.arange(len(x)), :, top, left])

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class Compose:
    """Apply ``transforms`` in order (torchvision's ``Compose``)."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose takes callables, got {type(t).__name__}")

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def state_dict(self) -> dict:
        """``{"transforms": [...]}``: each transform's ``state_dict()``, None for stateless ones."""
        return {"transforms": [t.state_dict() if hasattr(t, "state_dict") else None for t in self.transforms]}

    def load_state_dict(self, state_dict) -> None:
        """Restore ``state_dict()``; ValueError when it does not match these transforms."""
        states = state_dict.get("transforms") if isinstance(state_dict, dict) and len(state_dict) == 1 else None
        if not isinstance(states, list) or len(states) != len(self.transforms):
            raise ValueError(f"Compose state must be {{'transforms': [{len(self.transforms)} states]}}, "
                             f"got {state_dict!r:.200}")
        for t, state in zip(self.transforms, states):
            if hasattr(t, "load_state_dict"):
                t.load_state_dict(state)
            elif state is not None:
                raise ValueError(f"Compose state holds a state for the stateless {t!r}")
