"""Augmentation: seeded transforms repeat exactly, flips mirror and undo themselves, crops keep
the shape and cut windows of the zero-padded image, and the DataLoader and fit apply them."""
import numpy as np
import pytest

from pynn.datasets import DataLoader
from pynn.layers import Flatten, Linear
from pynn.losses import CrossEntropyLoss
from pynn.module import Sequential
from pynn.optim import SGD
from pynn.training import fit
from pynn.transforms import Compose, RandomCrop, RandomHorizontalFlip


def _images(n=16, c=2, h=6, w=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


def test_same_seed_same_augmentation_and_input_untouched():
    x = _images()
    before = x.copy()
    make = lambda seed: Compose([RandomHorizontalFlip(rng=seed), RandomCrop((4, 3), padding=1, rng=seed + 1)])
    a, b, c = make(0), make(0), make(1)
    first = [a(x) for _ in range(3)]
    assert all(np.array_equal(f, b(x)) for f in first)
    assert not np.array_equal(first[0], first[1])  # a generator moves on between batches
    assert not np.array_equal(first[0], c(x))
    np.testing.assert_array_equal(x, before)
    shared = np.random.default_rng(5)
    assert np.array_equal(RandomHorizontalFlip(rng=shared)(x), RandomHorizontalFlip(rng=np.random.default_rng(5))(x))


def test_flip_mirrors_each_image_or_leaves_it():
    x = _images(64)
    y = RandomHorizontalFlip(rng=3)(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.flags.c_contiguous
    flipped = np.array([np.array_equal(yi, xi[..., ::-1]) for xi, yi in zip(x, y)])
    kept = np.array([np.array_equal(yi, xi) for xi, yi in zip(x, y)])
    assert np.all(flipped ^ kept)
    assert 16 < flipped.sum() < 48  # p = 0.5 of 64 images: both outcomes happen


def test_flip_is_an_involution_and_p_bounds():
    x = _images()
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0, rng=0)(RandomHorizontalFlip(1.0, rng=0)(x)), x)
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0, rng=0)(x), x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(0.0, rng=0)(x), x)
    with pytest.raises(ValueError, match="p must lie in"):
        RandomHorizontalFlip(1.5)


def test_crop_keeps_shape_and_cuts_windows_of_the_padded_image():
    x = _images(32)
    y = RandomCrop(x.shape[2:], padding=2, rng=0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.flags.c_contiguous
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    offsets = set()
    for n in range(len(x)):
        hits = [(i, j) for i in range(5) for j in range(5) if np.array_equal(padded[n, :, i:i + 6, j:j + 5], y[n])]
        assert hits, n
        offsets.add(hits[0])
    assert len(offsets) > 5  # offsets are drawn per image
    np.testing.assert_array_equal(RandomCrop((6, 5), rng=0)(x), x)  # no padding, full size: identity
    small = RandomCrop(3, rng=1)(x)
    assert small.shape == (32, 2, 3, 3)


def test_transform_errors():
    with pytest.raises(ValueError, match="larger than the padded image"):
        RandomCrop(9, padding=1)(_images())
    with pytest.raises(ValueError, match="size must be >= 1"):
        RandomCrop(0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        RandomCrop(3, padding=-1)
    with pytest.raises(TypeError, match="size must be an int or a pair"):
        RandomCrop("3")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        RandomHorizontalFlip()(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="rng must be"):
        RandomHorizontalFlip(rng=1.5)
    with pytest.raises(TypeError, match="callables"):
        Compose([1])


def test_data_loader_and_fit_apply_the_transform():
    x = _images(10, 1, 4, 4)
    y = np.arange(10) % 3
    seen = []

    def record(xb):
        seen.append(xb.copy())
        return -xb

    loader = DataLoader(x, y, 4, shuffle=False, transform=record)
    batches = list(loader)
    np.testing.assert_array_equal(np.concatenate([b for b, _ in batches]), -x)
    np.testing.assert_array_equal(np.concatenate(seen), x)
    np.testing.assert_array_equal(np.concatenate([t for _, t in batches]), y)
    with pytest.raises(TypeError, match="transform must be callable"):
        DataLoader(x, y, transform=3)

    model = Sequential(Flatten(), Linear(16, 3))
    seen.clear()
    fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), (x, y), epochs=2, batch_size=4,
        progress=False, transform=record)
    assert len(seen) == 6 and sum(len(s) for s in seen) == 20
    with pytest.raises(ValueError, match="pass the transform to the DataLoader"):
        fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), loader, transform=record)
