"""Data: the IDX file reader, Fashion-MNIST and MNIST loaders, and a seeded mini-batch loader.

IDX is the format of LeCun's MNIST files and of Zalando's Fashion-MNIST
(http://yann.lecun.com/exdb/mnist/, "FILE FORMATS"): two zero bytes, a type code, the number of
dimensions, one big-endian uint32 per dimension, then the data in big-endian C order.

The package ships Fashion-MNIST's 10,000-image test split (Zalando Research, MIT licence) in
``pynn/data`` so that training runs with no download; the full set is used when it is found.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

SYSTEM_DIRS = {
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),  # Debian's dataset-fashion-mnist
    "mnist": Path("/usr/share/datasets/mnist"),
}
EMBEDDED_DIR = Path(__file__).parent / "data"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# IDX type codes and their big-endian NumPy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (told apart by the gzip magic bytes ``1f 8b``).

    Returns a C-contiguous array in native byte order with the file's dtype (uint8, int8, int16,
    int32, float32 or float64) and shape.

    Raises ValueError naming the file and the fault: a corrupt or truncated gzip stream, a magic
    number whose first two bytes are not zero, an unknown type code, zero dimensions, a header
    shorter than its dimension list, or a data section shorter or longer than the dimensions say.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated header: {len(raw)} bytes, an IDX magic number needs 4")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: bad magic number 0x{raw[:4].hex()}; an IDX file starts with two zero bytes"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    if ndim == 0:
        raise ValueError(f"{path}: the header declares 0 dimensions; expected at least 1")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise ValueError(
            f"{path}: truncated header: {ndim} dimensions need {start} bytes, the file has {len(raw)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - start
    if got != expected:
        fault = "truncated data" if got < expected else "trailing bytes after the data"
        raise ValueError(
            f"{path}: {fault}: shape {shape} of {dtype.name} needs {expected} bytes, found {got}"
        )
    data = np.frombuffer(raw, dtype, offset=start).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


class Split(tuple):
    """An ``(images, labels)`` pair that also records where it was read from, in ``source``."""

    def __new__(cls, images, labels, source: str):
        self = super().__new__(cls, (images, labels))
        self.source = source
        return self

    @property
    def images(self) -> np.ndarray:
        return self[0]

    @property
    def labels(self) -> np.ndarray:
        return self[1]


def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_pair(images_path: Path, labels_path: Path, source: str) -> Split:
    """Read an image/label IDX pair, check they agree, and scale images to float32 [0, 1]."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{images_path}: expected (N, rows, cols) uint8 images, got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{labels_path}: expected ({images.shape[0]},) uint8 labels, got {labels.dtype} {labels.shape}"
        )
    x = (images.astype(np.float32) / np.float32(255))[:, None, :, :]
    return Split(x, labels.astype(np.int64), source)


def _search_dirs(name: str, directory) -> list[Path]:
    """An explicit directory is the only place searched: asking for one folder and silently
    getting another would hide a mistake. Otherwise ``$PYNN_DATA``, then the system folder."""
    if directory is not None:
        if not Path(directory).is_dir():
            raise NotADirectoryError(f"data directory {directory} does not exist or is not a folder")
        return [Path(directory)]
    env = os.environ.get("PYNN_DATA")
    return ([Path(env)] if env else []) + [SYSTEM_DIRS[name]]


def _load(name: str, directory, split: str) -> Split:
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = _PREFIX[split]
    dirs = _search_dirs(name, directory)
    for d in dirs:
        images = _idx_file(d, f"{prefix}-images-idx3-ubyte")
        labels = _idx_file(d, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            return _read_pair(images, labels, str(d))
    where = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(
        f"{name} {split} files ({prefix}-images-idx3-ubyte[.gz], {prefix}-labels-idx1-ubyte[.gz]) "
        f"not found in: {where}"
    )


def fashion_mnist(directory=None, split: str = "train") -> Split:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): ``(images, labels)`` with ``.source``.

    images: float32 (N, 1, 28, 28) in [0, 1]; labels: int64 (N,), classes in
    ``FASHION_MNIST_CLASSES``. Looks in ``directory`` when given, otherwise in ``$PYNN_DATA``
    and then /usr/share/datasets/fashion-mnist, for ``train-*`` or ``t10k-*`` IDX files
    (``.gz`` or raw).

    Raises ValueError for a bad split name or a malformed file, NotADirectoryError when
    ``directory`` is not a folder, FileNotFoundError naming the folders searched.
    """
    return _load("fashion-mnist", directory, split)


def mnist(directory=None, split: str = "train") -> Split:
    """MNIST (LeCun et al., 1998), as ``fashion_mnist`` but with /usr/share/datasets/mnist."""
    return _load("mnist", directory, split)


def embedded_fashion_mnist_test() -> Split:
    """Fashion-MNIST's 10,000-image test split shipped in the package (``pynn/data``)."""
    return _read_pair(
        EMBEDDED_DIR / "t10k-images-idx3-ubyte.gz",
        EMBEDDED_DIR / "t10k-labels-idx1-ubyte.gz",
        "embedded",
    )


def _holdout(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of range(n) into (rest, held out), each in ascending order."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[size:]), np.sort(perm[:size])


def load_default(directory=None, *, val_size: int = 5000, seed: int = 0) -> dict:
    """The data set for training and evaluation: full Fashion-MNIST if found, else the embedded split.

    Returns a dict with ``x_train, y_train, x_val, y_val, x_test, y_test`` (arrays as
    ``fashion_mnist`` returns) and ``source``, a sentence saying what was used. With the full
    set, ``val_size`` training images chosen with ``seed`` are held out for validation and the
    test split is t10k. Without it, the embedded 10,000 test images are divided with ``seed``
    into 7,000 train, 1,000 validation and 2,000 test images, and ``source`` says so. The
    division depends on ``seed`` only, not on the training seed, so that ``pynn eval`` sees the
    same test images the training run did.

    ``val_size`` 0 trains on all of the full training split and leaves the validation arrays
    empty. Raises ValueError for a malformed file or a ``val_size`` outside [0, 59,999], and
    NotADirectoryError when ``directory`` is not a folder.
    """
    try:
        train = fashion_mnist(directory, "train")
        test = fashion_mnist(directory, "test")
    except FileNotFoundError as exc:
        x, y = embedded_fashion_mnist_test()
        rest, test_idx = _holdout(len(y), 2000, seed)
        train_idx, val_idx = rest[1000:], rest[:1000]
        return {
            "x_train": x[train_idx], "y_train": y[train_idx],
            "x_val": x[val_idx], "y_val": y[val_idx],
            "x_test": x[test_idx], "y_test": y[test_idx],
            "source": (
                "embedded Fashion-MNIST test split (10,000 images) divided into 7,000 train / "
                f"1,000 validation / 2,000 test images (seed {seed}); full data not found ({exc})"
            ),
        }
    (x, y), n = train, len(train[1])
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must lie in [0, {n - 1}], got {val_size}")
    train_idx, val_idx = _holdout(n, val_size, seed)
    return {
        "x_train": x[train_idx], "y_train": y[train_idx],
        "x_val": x[val_idx], "y_val": y[val_idx],
        "x_test": test[0], "y_test": test[1],
        "source": (
            f"Fashion-MNIST from {train.source}: {n - val_size:,} train / {val_size:,} validation "
            f"(held out of train, seed {seed}) / {len(test[1]):,} test images"
        ),
    }


class DataLoader:
    """Mini-batches ``(xb, yb)`` over the first axis of ``x`` and ``y``.

    With ``shuffle`` each pass draws a fresh permutation from ``(seed, epoch)``, where ``epoch``
    counts the passes started so far: the same seed gives the same batches epoch by epoch, and
    every sample appears once per epoch (the last batch is smaller unless ``drop_last``).
    Batches are C-contiguous, as the kernels require. ``transform``, a callable such as a
    ``pynn.transforms.Compose``, is applied to each batch of inputs (augmentation; labels are
    left alone).

    ``state_dict()`` records the position: passes started and batches yielded in the latest.
    After ``load_state_dict`` of a state taken mid-pass, the next pass resumes that pass at its
    next batch (skipped batches are not transformed: restore the transform's own state with it).

    Raises ValueError when x and y differ in length, are empty, or ``batch_size`` < 1, and
    TypeError when ``transform`` is not callable.
    """

    def __init__(self, x, y, batch_size: int = 64, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 transform=None):
        x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        if len(x) == 0:
            raise ValueError("x and y are empty")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.x, self.y, self.transform = x, y, transform
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0
        self.batch = 0  # batches yielded in the latest pass
        self._resume_at = 0

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        batches = self._batches()
        return batches if self.transform is None else ((self.transform(xb), yb) for xb, yb in batches)

    def _batches(self):
        n, b = len(self.x), self.batch_size
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else None
        start, self._resume_at = self._resume_at, 0
        self.epoch += 1
        self.batch = start
        for i in range(start, len(self)):
            self.batch = i + 1
            if order is None:
                yield self.x[i * b:(i + 1) * b], self.y[i * b:(i + 1) * b]
            else:
                idx = order[i * b:(i + 1) * b]
                yield self.x[idx], self.y[idx]

    def _config(self) -> dict:
        return {"samples": len(self.x), "batch_size": self.batch_size, "shuffle": self.shuffle, "seed": int(self.seed),
                "drop_last": self.drop_last}

    def state_dict(self) -> dict:
        """The position (``epoch``: passes started, ``batch``: batches yielded in the latest) and
        the settings that fix the batches (samples, batch size, shuffle, seed, drop_last)."""
        pending = self._resume_at > 0  # loaded mid-pass, not iterated since
        return {"epoch": self.epoch + pending, "batch": self.batch, **self._config()}

    def load_state_dict(self, state_dict) -> None:
        """Continue from ``state_dict()``: the next pass is the interrupted one, from its next
        batch, or a new one when the latest pass had finished.

        Raises ValueError when the settings differ from this loader's (other batches would follow)
        or the position is impossible; the loader is unchanged then.
        """
        config = self._config()
        if not isinstance(state_dict, dict) or set(state_dict) != {"epoch", "batch", *config}:
            raise ValueError(f"DataLoader state must have the keys epoch, batch, {', '.join(config)}; "
                             f"got {state_dict!r:.200}")
        theirs = {k: state_dict[k] for k in config}
        if theirs != config:
            raise ValueError(f"DataLoader state was saved for {theirs}; this loader has {config}")
        epoch, batch = state_dict["epoch"], state_dict["batch"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, batch)) \
                or epoch < 0 or not 0 <= batch <= len(self) or (epoch == 0 and batch > 0):
            raise ValueError(f"DataLoader state has an impossible position: epoch {epoch!r}, batch {batch!r} "
                             f"of {len(self)}")
        mid_pass = 0 < batch < len(self)
        self.epoch, self.batch = epoch - mid_pass, batch
        self._resume_at = batch if mid_pass else 0
