"""The same MLP (784-256-128-10, ReLU) in PyTorch and pynn, same weights: forward outputs, the
gradient of every parameter, and the parameters after 20 Adam steps agree, on every CPU backend."""
import numpy as np
import pytest

import kernels
import pynn
from tests.support import FAST_BACKENDS, torch_or_skip

# float32 throughout; sums of up to 784 products in different orders differ by a few ulp,
# so a small absolute floor covers entries that are nearly zero.
RTOL, ATOL = 1e-5, 1e-6
SIZES = (784, 256, 128, 10)


def _models(torch):
    torch.manual_seed(0)
    nn = torch.nn
    theirs = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    ours = pynn.Sequential(pynn.Linear(784, 256), pynn.ReLU(), pynn.Linear(256, 128), pynn.ReLU(),
                           pynn.Linear(128, 10))
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _batch(rng, n=64):
    return rng.standard_normal((n, 784)).astype(np.float32), rng.integers(0, 10, n)


def _torch_step(torch, theirs, x, y):
    theirs.zero_grad()
    out = theirs(torch.from_numpy(x))
    loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
    loss.backward()
    return out.detach().numpy(), loss.item()


def _pynn_step(ours, loss_fn, x, y):
    ours.zero_grad()
    out = ours(x)
    loss = loss_fn(out, y)
    ours.backward(loss_fn.backward())
    return out, loss


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_outputs_and_gradients_match_torch(backend):
    torch = torch_or_skip()
    ours, theirs = _models(torch)
    x, y = _batch(np.random.default_rng(0))
    want_out, want_loss = _torch_step(torch, theirs, x, y)
    with kernels.use_backend(backend):
        out, loss = _pynn_step(ours, pynn.CrossEntropyLoss(), x, y)
    np.testing.assert_allclose(out, want_out, rtol=RTOL, atol=ATOL)
    assert loss == pytest.approx(want_loss, rel=RTOL)
    grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert np.abs(p.grad).max() > 0, name
        np.testing.assert_allclose(p.grad, grads[name].grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_adam_training_tracks_torch(backend):
    torch = torch_or_skip()
    ours, theirs = _models(torch)
    # Adam moves a weight by lr * m / (sqrt(v) + eps): where a gradient is tiny, a rounding
    # difference in it is divided by little more than eps. The GEMMs here, OpenBLAS and PyTorch's
    # each sum in their own order (with or without FMA), so gradients differ by up to ~2e-9, a
    # few float32 ulps. With eps=1e-8 that alone moves weights apart by lr * 2e-9 / 1e-8 = 2e-4
    # per step; eps=1e-5 keeps it near 2e-7, so the comparison below measures the update rule
    # rather than rounding noise.
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=1e-3, eps=1e-5)
    opt_ours = pynn.Adam(ours.parameters(), lr=1e-3, eps=1e-5)
    loss_fn = pynn.CrossEntropyLoss()
    initial = ours.state_dict()
    rng = np.random.default_rng(1)
    batches = [_batch(rng) for _ in range(20)]
    for x, y in batches:  # one framework at a time: interleaved, their thread pools contend
        _torch_step(torch, theirs, x, y)
        opt_theirs.step()
    with kernels.use_backend(backend):
        for x, y in batches:
            _pynn_step(ours, loss_fn, x, y)
            opt_ours.step()
    want = theirs.state_dict()
    moved = 0.0
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(value, want[name].numpy(), rtol=0, atol=1e-5, err_msg=name)
        moved = max(moved, float(np.abs(value - initial[name]).max()))
    assert moved > 1e-3  # the parameters did train
