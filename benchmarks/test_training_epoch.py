"""One Fashion-MNIST training epoch side by side in one run, full data when installed, else the
embedded 10,000 images: the MLP 784-256-128-10 (ReLU, dropout 0.2, Adam lr 1e-3, batch 64) in pynn
on each CPU backend, PyTorch CPU and plain NumPy; and the CNN of ``pynn.models.cnn`` in pynn
(numba) and PyTorch."""
import numpy as np
import pytest

import kernels
import pynn
from benchmarks.conftest import CPU_BACKENDS, record, torch

BATCH = 64


@pytest.fixture(scope="module")
def data():
    d = pynn.datasets.load_default()
    return d["x_train"].reshape(len(d["x_train"]), -1), d["y_train"]


def _batches(n, seed):
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + BATCH] for i in range(0, n, BATCH)]


def _pynn_epoch(data, backend):
    x, y = data
    pynn.manual_seed(0)
    model = pynn.Sequential(
        pynn.Linear(784, 256), pynn.ReLU(), pynn.Dropout(0.2),
        pynn.Linear(256, 128), pynn.ReLU(), pynn.Dropout(0.2),
        pynn.Linear(128, 10),
    )
    loss_fn = pynn.CrossEntropyLoss()
    opt = pynn.Adam(model.parameters(), lr=1e-3)

    def epoch():
        with kernels.use_backend(backend):
            for idx in _batches(len(x), 0):
                out = model(x[idx])
                loss_fn(out, y[idx])
                opt.zero_grad()
                model.backward(loss_fn.backward(), input_grad=False)
                opt.step()

    return epoch


def _torch_epoch(data):
    x, y = (torch.from_numpy(a) for a in data)
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch():
        for idx in _batches(len(x), 0):
            idx = torch.from_numpy(idx)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    return epoch


def _numpy_epoch(data):
    """The same recipe in plain NumPy: what a careful user writes without a library."""
    x, y = data
    rng = np.random.default_rng(0)
    sizes = [(784, 256), (256, 128), (128, 10)]
    params = []
    for fan_in, fan_out in sizes:
        bound = 1 / np.sqrt(fan_in)
        params += [rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                   rng.uniform(-bound, bound, fan_out).astype(np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    state = {"t": 0}

    def epoch():
        for idx in _batches(len(x), 0):
            xb, yb = x[idx], y[idx]
            acts, masks = [xb], []
            h = xb
            for layer in range(3):
                h = h @ params[2 * layer] + params[2 * layer + 1]
                if layer < 2:
                    keep = (rng.random(h.shape) >= 0.2) / np.float32(0.8)
                    h = np.maximum(h, 0) * keep
                    masks.append(keep)
                    acts.append(h)
            h = h - h.max(axis=1, keepdims=True)
            p = np.exp(h)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1
            g = p / len(yb)
            grads = [None] * 6
            for layer in (2, 1, 0):
                grads[2 * layer] = acts[layer].T @ g
                grads[2 * layer + 1] = g.sum(axis=0)
                if layer:
                    g = (g @ params[2 * layer].T) * (acts[layer] > 0) * masks[layer - 1]
            state["t"] += 1
            t = state["t"]
            for i, (pa, gr) in enumerate(zip(params, grads)):
                m[i] = 0.9 * m[i] + 0.1 * gr
                v[i] = 0.999 * v[i] + 0.001 * gr * gr
                pa -= 1e-3 / (1 - 0.9**t) * m[i] / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)

    return epoch


IMPLEMENTATIONS = [f"pynn-{b}" for b in CPU_BACKENDS] + ["numpy-plain"] + (["torch"] if torch is not None else [])


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_mlp_epoch(benchmark, data, impl):
    if impl == "torch":
        epoch = _torch_epoch(data)
    elif impl == "numpy-plain":
        epoch = _numpy_epoch(data)
    else:
        epoch = _pynn_epoch(data, impl.split("-", 1)[1])
    record(benchmark, "MLP training epoch", flops=6.0 * len(data[0]) * (784 * 256 + 256 * 128 + 128 * 10))
    benchmark.pedantic(epoch, rounds=3, warmup_rounds=1)


def _torch_cnn():
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )


@pytest.mark.parametrize("impl", ["pynn-numba"] + (["torch"] if torch is not None else []))
def test_cnn_epoch(benchmark, data, impl):
    x, y = data[0].reshape(-1, 1, 28, 28), data[1]
    if impl == "torch":
        torch.manual_seed(0)
        model = _torch_cnn()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def epoch():
            for idx in _batches(len(x), 0):
                idx = torch.from_numpy(idx)
                loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    else:
        pynn.manual_seed(0)
        model = pynn.models.cnn()
        loss_fn = pynn.CrossEntropyLoss()
        opt = pynn.Adam(model.parameters(), lr=1e-3)

        def epoch():
            with kernels.use_backend("numba"):
                for idx in _batches(len(x), 0):
                    loss_fn(model(x[idx]), y[idx])
                    opt.zero_grad()
                    model.backward(loss_fn.backward(), input_grad=False)
                    opt.step()

    benchmark.group = "CNN training epoch"
    benchmark.pedantic(epoch, rounds=2, warmup_rounds=0)
