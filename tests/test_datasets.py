"""IDX reading (every malformation rejected), the Fashion-MNIST loaders and their search order,
the default data set, and the DataLoader's seeded, complete batching."""
import gzip
import re
import struct

import numpy as np
import pytest

from pynn import datasets
from pynn.datasets import DataLoader, fashion_mnist, load_default, read_idx

FULL = datasets.SYSTEM_DIRS["fashion-mnist"]


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """A well-formed IDX encoding of ``array`` with the given type code."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(tmp_path, name, data: bytes, gz=False):
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype,code", [
    (np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E),
])
def test_read_idx_round_trips_every_type(tmp_path, gz, dtype, code):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    got = read_idx(write(tmp_path, "a.idx", idx_bytes(a, code), gz))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, a)


GOOD = idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3), 0x08)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("data,message", [
    (b"\x00\x00", "truncated header"),
    (b"\x01\x02" + GOOD[2:], "bad magic number 0x0102"),
    (GOOD[:2] + b"\x0a" + GOOD[3:], "unknown IDX type code 0x0A"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03" + struct.pack(">2I", 2, 3), "truncated header: 3 dimensions need 16 bytes"),
    (GOOD[:-1], "truncated data"),
    (GOOD + b"\x00", "trailing bytes"),
])
def test_read_idx_rejects_malformed_files(tmp_path, gz, data, message):
    with pytest.raises(ValueError, match=message):
        read_idx(write(tmp_path, "bad.idx", data, gz))


def test_read_idx_rejects_corrupt_gzip(tmp_path):
    path = write(tmp_path, "bad.gz", gzip.compress(GOOD)[:-6])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        read_idx(path)


def fake_fashion(directory, split="train", n=5, gz=True, labels_n=None):
    """Write a tiny Fashion-MNIST-style image/label pair; returns (uint8 images, labels)."""
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, labels_n or n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    ext = ".gz" if gz else ""
    write(directory, f"{prefix}-images-idx3-ubyte{ext}", idx_bytes(images, 0x08), gz)
    write(directory, f"{prefix}-labels-idx1-ubyte{ext}", idx_bytes(labels, 0x08), gz)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_scales_and_records_source(tmp_path, gz):
    images, labels = fake_fashion(tmp_path, "test", gz=gz)
    split = fashion_mnist(tmp_path, "test")
    x, y = split
    assert x.dtype == np.float32 and x.shape == (5, 1, 28, 28)
    assert y.dtype == np.int64 and split.source == str(tmp_path)
    np.testing.assert_allclose(x[:, 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)


def test_fashion_mnist_rejects_mismatched_pair(tmp_path):
    fake_fashion(tmp_path, labels_n=4)
    with pytest.raises(ValueError, match=r"expected \(5,\) uint8 labels"):
        fashion_mnist(tmp_path)


def test_fashion_mnist_search_order_and_errors(tmp_path, monkeypatch):
    env_dir, empty = tmp_path / "env", tmp_path / "empty"
    env_dir.mkdir()
    empty.mkdir()
    fake_fashion(env_dir)
    monkeypatch.setenv("PYNN_DATA", str(env_dir))
    assert fashion_mnist().source == str(env_dir)
    # An explicit folder is the only one searched, even when $PYNN_DATA has the files.
    with pytest.raises(FileNotFoundError, match=f"not found in: {re.escape(str(empty))}$"):
        fashion_mnist(empty)
    with pytest.raises(NotADirectoryError, match="does not exist"):
        fashion_mnist(tmp_path / "missing")
    with pytest.raises(ValueError, match="split must be"):
        fashion_mnist(env_dir, "val")


def test_embedded_split_is_the_balanced_test_set():
    x, y = datasets.embedded_fashion_mnist_test()
    assert x.shape == (10000, 1, 28, 28) and x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 1000))


def test_load_default_divides_embedded_split_when_data_is_absent(tmp_path):
    data = load_default(tmp_path)
    sizes = [len(data[k]) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")]
    assert sizes == [7000, 7000, 1000, 1000, 2000, 2000]
    assert data["source"].startswith("embedded Fashion-MNIST") and str(tmp_path) in data["source"]
    # The three parts are a partition of the 10,000 images: label counts add up, images are distinct rows.
    all_labels = np.concatenate([data["y_train"], data["y_val"], data["y_test"]])
    np.testing.assert_array_equal(np.bincount(all_labels), np.full(10, 1000))
    x, _ = datasets.embedded_fashion_mnist_test()
    keys = {r.tobytes() for r in x.reshape(len(x), -1)}
    parts = [{r.tobytes() for r in data[k].reshape(len(data[k]), -1)} for k in ("x_train", "x_val", "x_test")]
    assert sum(map(len, parts)) == len(keys) and set.union(*parts) == keys
    again = load_default(tmp_path)
    np.testing.assert_array_equal(again["y_test"], data["y_test"])


@pytest.mark.skipif(not FULL.is_dir(), reason="full Fashion-MNIST not installed")
def test_load_default_uses_full_data_with_seeded_validation():
    data = load_default(val_size=5000)
    assert [len(data[k]) for k in ("y_train", "y_val", "y_test")] == [55000, 5000, 10000]
    assert data["source"].startswith(f"Fashion-MNIST from {FULL}")
    with pytest.raises(ValueError, match="val_size"):
        load_default(val_size=60000)
    with pytest.raises(ValueError, match="val_size"):
        load_default(val_size=-1)
    everything = load_default(val_size=0)
    assert [len(everything[k]) for k in ("y_train", "y_val")] == [60000, 0]


def batches(loader):
    return [(xb.copy(), yb.copy()) for xb, yb in loader]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n,batch_size", [(1, 4), (10, 3), (12, 4), (7, 7)])
def test_dataloader_covers_every_sample_once(n, batch_size, shuffle):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    loader = DataLoader(x, np.arange(n), batch_size, shuffle=shuffle, seed=3)
    assert len(loader) == -(-n // batch_size)
    for _ in range(2):
        got = batches(loader)
        assert len(got) == len(loader) and all(len(yb) <= batch_size for _, yb in got)
        ys = np.concatenate([yb for _, yb in got])
        np.testing.assert_array_equal(np.sort(ys), np.arange(n))
        for xb, yb in got:
            assert xb.flags.c_contiguous
            np.testing.assert_array_equal(xb, x[yb])
        if not shuffle:
            np.testing.assert_array_equal(ys, np.arange(n))


def test_dataloader_is_reproducible_per_seed_and_epoch():
    x, y = np.zeros((50, 1), np.float32), np.arange(50)
    order = lambda loader: [np.concatenate([yb for _, yb in loader]) for _ in range(3)]  # noqa: E731
    a, b = order(DataLoader(x, y, 8, seed=1)), order(DataLoader(x, y, 8, seed=1))
    c = order(DataLoader(x, y, 8, seed=2))
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea, eb)
    assert not np.array_equal(a[0], a[1]), "each epoch draws a new order"
    assert not np.array_equal(a[0], c[0]), "another seed gives another order"


def test_dataloader_drop_last_and_bad_arguments():
    x, y = np.zeros((10, 1), np.float32), np.arange(10)
    loader = DataLoader(x, y, 4, drop_last=True)
    assert len(loader) == 2 and all(len(yb) == 4 for _, yb in loader)
    with pytest.raises(ValueError, match="same length"):
        DataLoader(x, y[:9], 4)
    with pytest.raises(ValueError, match="empty"):
        DataLoader(x[:0], y[:0], 4)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="batch_size"):
            DataLoader(x, y, bad)
