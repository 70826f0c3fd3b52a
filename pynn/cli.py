"""Command line: ``pynn train``, ``pynn eval MODEL_DIR`` and ``pynn predict MODEL_DIR FILE``.

Training uses full Fashion-MNIST when it is found (``--data-dir``, ``$PYNN_DATA``,
/usr/share/datasets/fashion-mnist) and otherwise the 10,000 images shipped in the package;
every command prints which data it used. All kernels run on the backend named by ``--backend``.
``pynn train --checkpoint-every N`` keeps ``OUT/checkpoint.safetensors`` (with the run's
arguments); ``pynn train --resume OUT`` continues from it with those arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

import kernels
from pynn import optim
from pynn.datasets import FASHION_MNIST_CLASSES, load_default, read_idx
from pynn.losses import CrossEntropyLoss
from pynn.metrics import accuracy, classification_report, confusion_matrix
from pynn.models import MODELS
from pynn.random import manual_seed
from pynn.schedulers import CosineAnnealingLR
from pynn.serialization import load, save, write_atomic
from pynn.training import Callback, fit, predict, read_checkpoint
from pynn.transforms import Compose, RandomCrop, RandomHorizontalFlip

CHECKPOINT = "checkpoint.safetensors"
# The options a training run is a function of, with their defaults: stored in the checkpoint,
# taken from it by --resume, and refused there when given with another value.
TRAIN_DEFAULTS = {
    "model": "mlp", "epochs": 10, "batch_size": 64, "lr": 1e-3, "schedule": "constant", "val_size": 5000,
    "optimizer": "adam", "seed": 0, "augment": False, "limit": None, "backend": "numba", "data_dir": None,
}

OPTIMIZERS = {
    "sgd": optim.SGD,
    "adam": optim.Adam,
    "adamw": optim.AdamW,
    "rmsprop": optim.RMSprop,
    "adagrad": optim.Adagrad,
}
SCHEDULES = ("constant", "cosine")


class _EpochReport(Callback):
    """Adds the test accuracy to each epoch's logs and prints one line per epoch."""

    def __init__(self, x_test, y_test):
        self.x_test, self.y_test = x_test, y_test

    def on_epoch_end(self, epoch, logs, model):
        from tqdm import tqdm  # training only: predict and eval start faster without it

        logs["test_accuracy"] = accuracy(self.y_test, predict(model, self.x_test))
        tqdm.write(
            f"epoch {epoch}: train loss {logs['train_loss']:.4f}, "
            + (f"val accuracy {logs['val_accuracy']:.4f}, " if "val_accuracy" in logs else "")
            + f"test accuracy {logs['test_accuracy']:.4f}, {logs['seconds']:.1f} s, "
            f"{logs['samples_per_s']:,.0f} samples/s"
        )
        return False


def _augmentation(seed: int) -> Compose:
    """``--augment``: a random horizontal flip, then a random 28x28 crop of the image padded
    with 2 zeros on each side, both drawn from one generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return Compose([RandomHorizontalFlip(rng=rng), RandomCrop(28, padding=2, rng=rng)])


def _valid_stored(key: str, value) -> bool:
    """Whether a training option read from a checkpoint is one the parser could have produced."""
    choices = {"model": MODELS, "schedule": SCHEDULES, "optimizer": OPTIMIZERS, "backend": kernels.BACKENDS}
    if key in choices:
        return isinstance(value, str) and value in choices[key]
    if key in ("lr", "augment", "data_dir"):
        return isinstance(value, {"lr": float, "augment": bool, "data_dir": (str, type(None))}[key])
    return (value is None and key == "limit") or (type(value) is int and value >= 0)


def _resolve_train_args(args) -> None:
    """Fill the training options from the checkpoint (``--resume``) or the defaults; ValueError
    for an option that contradicts the checkpoint, which would break the resumed run."""
    if args.resume is None:
        given = {k: getattr(args, k) for k in TRAIN_DEFAULTS}
        stored = TRAIN_DEFAULTS
        args.out = args.out or "runs/latest"
    else:
        args.out = args.resume
        path = Path(args.resume) / CHECKPOINT
        args.resumed = read_checkpoint(path)
        info = args.resumed["info"]
        stored = info.get("args") if isinstance(info, dict) else None
        if not isinstance(stored, dict) or set(stored) != set(TRAIN_DEFAULTS) \
                or not all(_valid_stored(k, v) for k, v in stored.items()):
            raise ValueError(f"{path}: holds no valid pynn train arguments")
        given = {k: getattr(args, k) for k in TRAIN_DEFAULTS}
        for k, v in given.items():
            if v is not None and v != stored[k]:
                flag = "--" + k.replace("_", "-")
                raise ValueError(f"{flag} {v} conflicts with {flag} {stored[k]} of the run in {path}; leave it out "
                                 "to resume that run")
        args.checkpoint_every = args.checkpoint_every or info.get("checkpoint_every")
    for k, v in given.items():
        setattr(args, k, stored[k] if v is None else v)


def _train(args) -> int:
    data = load_default(args.data_dir, val_size=args.val_size)
    x_train, y_train = data["x_train"], data["y_train"]
    val = (data["x_val"], data["y_val"]) if len(data["y_val"]) else None
    if args.limit is not None:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    print(f"data: {data['source']}")
    if args.limit is not None:
        print(f"training on the first {len(y_train):,} training images (--limit)")
    print(f"backend: {args.backend}")
    if args.augment:
        print("augmentation: random horizontal flip, random 28x28 crop with padding 2")
    out = Path(args.out)
    checkpoint = out / CHECKPOINT
    info = {"args": {k: getattr(args, k) for k in TRAIN_DEFAULTS}, "dataset": data["source"],
            "checkpoint_every": args.checkpoint_every}
    if args.resume is not None:
        stored = args.resumed
        if stored["info"].get("dataset") != data["source"]:
            raise ValueError(f"{checkpoint}: the run trained on \"{stored['info'].get('dataset')}\", but the data "
                             f"found now is \"{data['source']}\"")
        print(f"resuming from {checkpoint} after optimizer step {stored['step']}")
    manual_seed(args.seed)
    model = MODELS[args.model]()
    optimizer = OPTIMIZERS[args.optimizer](model.parameters(), lr=args.lr)
    scheduler = CosineAnnealingLR(optimizer, T_max=args.epochs) if args.schedule == "cosine" else None
    if args.checkpoint_every is not None:
        out.mkdir(parents=True, exist_ok=True)
    history = fit(
        model, CrossEntropyLoss(), optimizer, (x_train, y_train), val,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, progress=args.progress,
        callbacks=[_EpochReport(data["x_test"], data["y_test"])],
        transform=_augmentation(args.seed) if args.augment else None, scheduler=scheduler,
        checkpoint=checkpoint if args.checkpoint_every is not None or args.resume is not None else None,
        checkpoint_every=args.checkpoint_every, resume=args.resume is not None, checkpoint_info=info,
    )
    save(model, out)
    final = history.epochs[-1]["test_accuracy"]
    metrics = {
        "dataset": data["source"],
        "backend": args.backend,
        "seed": args.seed,
        "model": args.model,
        "augment": args.augment,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "schedule": args.schedule,
        "batch_size": args.batch_size,
        "val_size": len(data["y_val"]),
        "train_samples": len(y_train),
        "epochs": history.epochs,
        "test_accuracy": final,
    }
    write_atomic(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    written = ", ".join(str(out / name) for name in ("model.safetensors", "model.json", "metrics.json"))
    print(f"test accuracy {final:.4f}; wrote {written}")
    return 0


def _eval(args) -> int:
    model = load(args.model_dir)
    data = load_default(args.data_dir)
    x, y = data["x_test"], data["y_test"]
    pred = predict(model, x).argmax(axis=1)
    print(f"data: {data['source']}")
    print(f"backend: {args.backend}")
    print(f"test accuracy: {accuracy(y, pred):.4f} ({len(y):,} images)\n")
    print(classification_report(y, pred, FASHION_MNIST_CLASSES))
    print("\nconfusion matrix (rows: true class, columns: predicted class)")
    cm = confusion_matrix(y, pred, len(FASHION_MNIST_CLASSES))
    print("\n".join(" ".join(f"{v:5d}" for v in row) + f"  {i} {name}"
                    for i, (row, name) in enumerate(zip(cm, FASHION_MNIST_CLASSES))))
    return 0


def read_images(path) -> np.ndarray:
    """Images for ``predict`` from an IDX or ``.npy`` file (told apart by their magic bytes).

    Accepts (N, 28, 28), (N, 784) or (N, 1, 28, 28); uint8 is scaled by 1/255, floats are taken
    as they are. Returns float32 (N, 1, 28, 28). Raises ValueError for another shape or dtype.
    """
    with open(path, "rb") as f:
        is_npy = f.read(6) == b"\x93NUMPY"
    images = np.load(path, allow_pickle=False) if is_npy else read_idx(path)
    shape_ok = (
        images.ndim == 2 and images.shape[1:] == (784,)
        or images.ndim == 3 and images.shape[1:] == (28, 28)
        or images.ndim == 4 and images.shape[1:] == (1, 28, 28)
    ) and images.shape[0] > 0
    if shape_ok and images.dtype == np.uint8:
        return (images.astype(np.float32) / np.float32(255)).reshape(-1, 1, 28, 28)
    if shape_ok and images.dtype.kind == "f":
        return images.astype(np.float32).reshape(-1, 1, 28, 28)
    raise ValueError(
        f"{path}: expected uint8 or float images of shape (N, 28, 28), (N, 784) or (N, 1, 28, 28) "
        f"with N >= 1, got {images.dtype} {images.shape}"
    )


def _predict(args) -> int:
    model = load(args.model_dir)
    for k in predict(model, read_images(args.file)).argmax(axis=1):
        print(f"{k}\t{FASHION_MNIST_CLASSES[k]}")
    return 0


def _parser() -> argparse.ArgumentParser:
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument("--backend", choices=kernels.BACKENDS,
                         help="kernel implementation to run on (default: $PYNN_BACKEND, else numba)")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files; only this folder is "
                      "searched, and the embedded 10,000 images are used when it lacks them")
    parser = argparse.ArgumentParser(prog="pynn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    # Training options default to None so that --resume can tell given options from defaults
    # (TRAIN_DEFAULTS fills them in).
    train = sub.add_parser("train", parents=[data], help="train a classifier on Fashion-MNIST")
    train.add_argument("--backend", choices=kernels.BACKENDS,
                       help="kernel implementation to run on (default: $PYNN_BACKEND, else numba)")
    train.add_argument("--model", choices=list(MODELS),
                       help="mlp: 784-256-128-10; cnn: two conv+pool layers, 128-10; "
                       "resnet: a small ResNet with batch norm (default: mlp)")
    train.add_argument("--epochs", type=int, help=f"(default: {TRAIN_DEFAULTS['epochs']})")
    train.add_argument("--batch-size", type=int, help=f"(default: {TRAIN_DEFAULTS['batch_size']})")
    train.add_argument("--lr", type=float, help=f"(default: {TRAIN_DEFAULTS['lr']})")
    train.add_argument("--schedule", choices=SCHEDULES,
                       help="learning rate per epoch: constant, or cosine annealing from --lr to 0 "
                       "over --epochs (Loshchilov & Hutter 2017) (default: constant)")
    train.add_argument("--val-size", type=int, metavar="N",
                       help="full-data training images held out for validation (default 5000; 0 "
                       "trains on all 60,000 without validation)")
    train.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help=f"(default: {TRAIN_DEFAULTS['optimizer']})")
    train.add_argument("--seed", type=int, help=f"(default: {TRAIN_DEFAULTS['seed']})")
    train.add_argument("--augment", action="store_true", default=None,
                       help="random horizontal flips and random crops with padding 2, seeded by --seed")
    train.add_argument("--out", help="output folder (default: runs/latest)")
    train.add_argument("--limit", type=int, metavar="N",
                       help="train on the first N training images only (quick smoke runs)")
    train.add_argument("--checkpoint-every", type=int, metavar="N",
                       help="write OUT/checkpoint.safetensors (atomically) every N optimizer steps and at "
                       "each epoch end, for --resume")
    train.add_argument("--resume", metavar="OUT",
                       help="continue the run whose checkpoint is in OUT, with its arguments; it ends "
                       "as the uninterrupted run would")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    train.set_defaults(run=_train)

    ev = sub.add_parser("eval", parents=[backend, data],
                        help="accuracy, per-class scores and confusion matrix on the test split")
    ev.add_argument("model_dir")
    ev.set_defaults(run=_eval)

    pr = sub.add_parser("predict", parents=[backend], help="classify the images of an IDX or .npy file")
    pr.add_argument("model_dir")
    pr.add_argument("file")
    pr.set_defaults(run=_predict)

    from pynn import bench  # light to import: Numba and PyTorch load only when a benchmark runs

    bn = sub.add_parser("bench", help="time every kernel and backend against NumPy, PyTorch and the roofline",
                        description="Measure this machine's FMA peak and STREAM bandwidth, then time every "
                        "kernel on every backend beside plain NumPy and PyTorch: prints a table, writes the report "
                        "as JSON and a roofline chart as PNG.", epilog=bench.SHAPE_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    bn.add_argument("--backend", dest="backends", action="append", choices=kernels.BACKENDS,
                    help="a backend to time, repeatable (default: every usable backend but cuda)")
    bn.add_argument("--op", dest="ops", action="append", choices=list(bench.OPS), metavar="NAME",
                    help=f"only this op, repeatable: {', '.join(bench.OPS)} (default: all)")
    bn.add_argument("--shape", dest="shapes", action="append", default=[], metavar="OP:DIMS",
                    help="time OP at DIMS instead of the default shapes, repeatable; e.g. matmul:512x512x512 "
                    "(grammar below)")
    bn.add_argument("--json", default="bench.json", metavar="PATH", help="the report (default: bench.json)")
    bn.add_argument("--png", default="roofline.png", metavar="PATH", help="the roofline chart (default: roofline.png)")
    bn.add_argument("--quick", action="store_true", help="a few ms per contender: a smoke run, not a measurement")
    # main() runs every command inside one default backend; bench names the backend of each call.
    bn.set_defaults(run=bench.command, backend=None)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status (errors in the inputs give 1, bad usage 2)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        for flag, value in (("--limit", args.limit), ("--checkpoint-every", args.checkpoint_every)):
            if value is not None and value < 1:
                parser.error(f"{flag} must be a positive integer, got {value}")
        if args.resume is not None and args.out is not None:
            parser.error("--resume OUT writes to OUT; leave out --out")
    if args.command != "train" or args.resume is None:
        args.backend = args.backend or kernels.default_backend()
    try:
        if args.command == "train":
            _resolve_train_args(args)
        # Only the chosen backend is imported: start-up never pays for the others.
        if not kernels.is_usable(args.backend):
            usable = ", ".join(kernels.backends())
            parser.error(f"backend {args.backend!r} is not usable here; usable backends: {usable}")
        with kernels.use_backend(args.backend):
            return args.run(args)
    except BrokenPipeError:
        # The reader went away (``pynn predict ... | head``): silence the final flush as
        # https://docs.python.org/3/library/signal.html#note-on-sigpipe advises.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, ValueError, FloatingPointError) as exc:
        print(f"pynn: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
