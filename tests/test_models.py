"""The model builders: the CNN and the ResNet built in pynn and in PyTorch with the same weights
give the same outputs, loss and gradients; their state_dicts are PyTorch's; save/load
reproduces them, batch-norm buffers included; the conv layers run on the CUDA backend too."""
import copy

import numpy as np
import pytest

import kernels
import pynn
from pynn.models import MODELS, cnn, resnet
from tests.support import BACKENDS, FAST_BACKENDS, torch_or_skip

# float32 sums of up to 3136 products in different orders, through several layers.
RTOL, ATOL = 1e-4, 1e-5


def _torch_cnn(nn):
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def _torch_resnet(nn):
    class Residual(nn.Module):
        def __init__(self, block, projection=None):
            super().__init__()
            self.block, self.projection = block, projection

        def forward(self, x):
            return self.block(x) + (x if self.projection is None else self.projection(x))

    def basic_block(cin, cout, stride):
        block = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                              nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        shortcut = None
        if stride != 1 or cin != cout:
            shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        return Residual(block, shortcut)

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        basic_block(16, 16, 1), nn.ReLU(), basic_block(16, 32, 2), nn.ReLU(), basic_block(32, 64, 2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, n)


def _twins(name, torch):
    pynn.manual_seed(0)
    ours = MODELS[name]()
    theirs = {"cnn": _torch_cnn, "resnet": _torch_resnet}[name](torch.nn)
    want_keys = theirs.state_dict()
    assert sorted(ours.state_dict()) == sorted(want_keys)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_model_matches_torch(name, backend, train):
    torch = torch_or_skip()
    ours, theirs = _twins(name, torch)
    ours.train(train)
    theirs.train(train)
    x, y = _batch()
    out = theirs(torch.from_numpy(x))
    loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
    loss.backward()
    loss_fn = pynn.CrossEntropyLoss()
    with kernels.use_backend(backend):
        got = ours(x)
        value = loss_fn(got, y)
        ours.backward(loss_fn.backward())
    np.testing.assert_allclose(got, out.detach().numpy(), rtol=RTOL, atol=ATOL)
    assert value == pytest.approx(loss.item(), rel=RTOL)
    grads = dict(theirs.named_parameters())
    for pname, p in ours.named_parameters():
        assert np.abs(p.grad).max() > 0, pname
        np.testing.assert_allclose(p.grad, grads[pname].grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=pname)
    want = theirs.state_dict()  # running statistics after the step
    for key, v in ours.state_dict().items():
        np.testing.assert_allclose(v, want[key].numpy(), rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.skipif("cuda" not in BACKENDS, reason="no CUDA backend (device or simulator)")
def test_conv_layers_run_on_cuda(monkeypatch):
    # Tiny sizes and 16-thread blocks: the simulator runs one Python thread per CUDA thread.
    from kernels.numba_cuda import _launch

    monkeypatch.setattr(_launch, "THREADS", 16)
    pynn.manual_seed(0)
    block = pynn.Sequential(pynn.Conv2d(2, 3, 3, padding=1), pynn.BatchNorm2d(3), pynn.ReLU())
    models = [pynn.Sequential(pynn.Residual(block, projection=pynn.Conv2d(2, 3, 1)), pynn.MaxPool2d(2),
                              pynn.AvgPool2d(1), pynn.AdaptiveAvgPool2d(1), pynn.Flatten())]
    models.append(copy.deepcopy(models[0]))
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    results = []
    for model, backend in zip(models, ("cuda", "numpy")):
        with kernels.use_backend(backend):
            y = model(x)
            results.append((y, model.backward(np.ones_like(y)), model))
    (y, gx, ours), (y_ref, gx_ref, ref) = results
    np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gx, gx_ref, rtol=RTOL, atol=ATOL)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=RTOL, atol=ATOL, err_msg=name)
    for (name, a), b in zip(ours.named_buffers(), ref.buffers()):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("build", [cnn, resnet])
def test_save_load_round_trip(build, tmp_path):
    pynn.manual_seed(1)
    model = build()
    x, y = _batch(4, 1)
    loss_fn = pynn.CrossEntropyLoss()
    optimizer = pynn.SGD(model.parameters(), lr=0.1)
    with kernels.use_backend("numpy"):
        for _ in range(2):  # moves the weights and the batch-norm running statistics
            optimizer.zero_grad()
            loss_fn(model(x), y)
            model.backward(loss_fn.backward())
            optimizer.step()
        pynn.save(model, tmp_path)
        loaded = pynn.load(tmp_path)
        assert loaded.config() == model.config()
        state, again = model.state_dict(), loaded.state_dict()
        assert list(again) == list(state)
        for key, v in state.items():
            assert again[key].dtype == v.dtype, key
            np.testing.assert_array_equal(again[key], v, err_msg=key)
        if build is resnet:
            assert int(state["1.num_batches_tracked"]) == 2 and not np.all(state["1.running_var"] == 1)
        np.testing.assert_array_equal(loaded.eval()(x), model.eval()(x))


def test_builders_shapes_and_registry():
    assert set(MODELS) == {"mlp", "cnn", "resnet"}
    x, _ = _batch(2)
    with kernels.use_backend("numpy"):
        for build in MODELS.values():
            assert build()(x).shape == (2, 10)
    counts = {name: sum(p.data.size for p in build().parameters()) for name, build in MODELS.items()}
    # mlp 784*256+256 + 256*128+128 + 1290; cnn 320 + 18496 + 401536 + 1290
    assert counts["mlp"] == 235146 and counts["cnn"] == 421642
