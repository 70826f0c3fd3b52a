"""BatchNorm1d and BatchNorm2d: against torch.nn with the same state in train and eval mode
(output, input gradient, weight and bias gradients, running statistics after the step) on
every CPU backend, backward against finite differences, PyTorch's state_dict (an int64
num_batches_tracked included) through load and save, and bad input.

Tolerances as in tests/test_conv_layers.py.
"""
import json

import numpy as np
import pytest

import kernels
import pynn
from pynn.module import from_config
from tests.support import FAST_BACKENDS, torch_or_skip
from tests.test_conv_layers import layer_matches_finite_differences, layer_matches_torch

# name -> (pynn layer, torch layer, input shape)
LAYERS = {
    "2d": (lambda: pynn.BatchNorm2d(3), lambda nn: nn.BatchNorm2d(3), (4, 3, 5, 3)),
    "2d_batch1_no_affine": (lambda: pynn.BatchNorm2d(2, affine=False, momentum=0.3),
                            lambda nn: nn.BatchNorm2d(2, affine=False, momentum=0.3), (1, 2, 3, 5)),
    "2d_no_running_stats": (lambda: pynn.BatchNorm2d(2, eps=1e-3, track_running_stats=False),
                            lambda nn: nn.BatchNorm2d(2, eps=1e-3, track_running_stats=False), (3, 2, 2, 3)),
    "1d_features": (lambda: pynn.BatchNorm1d(5), lambda nn: nn.BatchNorm1d(5), (7, 5)),
    "1d_sequences": (lambda: pynn.BatchNorm1d(3, momentum=None), lambda nn: nn.BatchNorm1d(3, momentum=None),
                     (2, 3, 5)),
}


def _randomise_state(layer, seed=3):
    """Weights and running statistics away from their initial ones, so eval mode is a real test."""
    rng = np.random.default_rng(seed)
    for name, a in layer.state_dict().items():
        if name == "num_batches_tracked":
            value = np.array(5)
        elif name == "running_var":
            value = rng.uniform(0.5, 2.0, a.shape)
        else:
            value = rng.standard_normal(a.shape)
        layer.load_state_dict({name: value}, strict=False)
    return layer


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("name", LAYERS)
def test_layer_matches_torch(name, backend, train):
    torch = torch_or_skip()
    make, make_torch, shape = LAYERS[name]
    x = (np.random.default_rng(1).standard_normal(shape) * 2 + 0.5).astype(np.float32)
    layer_matches_torch(_randomise_state(make()), make_torch(torch.nn), x, backend, train=train)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", LAYERS)
def test_backward_matches_finite_differences(name, train):
    make, _, shape = LAYERS[name]
    layer_matches_finite_differences(lambda: _randomise_state(make()), shape, train=train)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_track_torch_over_steps(momentum):
    torch = torch_or_skip()
    ours, theirs = pynn.BatchNorm2d(3, momentum=momentum), torch.nn.BatchNorm2d(3, momentum=momentum)
    rng = np.random.default_rng(2)
    with kernels.use_backend("numpy"):
        for step in range(4):
            x = (rng.standard_normal((5, 3, 4, 4)) * (step + 1) + step).astype(np.float32)
            ours(x)
            theirs(torch.from_numpy(x))
    want = theirs.state_dict()
    assert ours.num_batches_tracked.dtype == np.int64 and int(ours.num_batches_tracked) == 4
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(value, want[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    before = ours.state_dict()
    with kernels.use_backend("numpy"):
        ours.eval()(x)
    for name, value in ours.state_dict().items():  # eval mode leaves the statistics alone
        np.testing.assert_array_equal(value, before[name])


def test_state_dict_is_torchs_and_round_trips(tmp_path):
    torch = torch_or_skip()
    theirs = torch.nn.Sequential(torch.nn.BatchNorm2d(4), torch.nn.BatchNorm1d(3, affine=False))
    theirs.train()
    theirs[0](torch.randn(6, 4, 2, 2))
    theirs[1](torch.randn(6, 3))
    ours = pynn.Sequential(pynn.BatchNorm2d(4), pynn.BatchNorm1d(3, affine=False))
    want = theirs.state_dict()
    assert sorted(ours.state_dict()) == sorted(want)
    ours.load_state_dict(want)
    assert ours[0].num_batches_tracked.shape == () and ours[0].num_batches_tracked.dtype == np.int64
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(value, want[name].numpy())
    assert "running_mean" not in pynn.BatchNorm2d(2, track_running_stats=False).state_dict()
    pynn.save(ours, tmp_path / "bn")
    loaded = pynn.load(tmp_path / "bn")
    assert loaded.config() == ours.config()
    for name, value in ours.state_dict().items():
        got = loaded.state_dict()[name]
        assert got.dtype == value.dtype and got.shape == value.shape
        np.testing.assert_array_equal(got, value)
    cfg = json.loads(json.dumps(pynn.BatchNorm1d(3, 1e-3, None, False, False).config()))
    assert from_config(cfg).config() == pynn.BatchNorm1d(3, 1e-3, None, False, False).config()


def test_bad_arguments_and_input():
    with pytest.raises(ValueError, match="num_features must be >= 1"):
        pynn.BatchNorm2d(0)
    with pytest.raises(ValueError, match="eps must lie in"):
        pynn.BatchNorm2d(3, eps=0.0)
    with pytest.raises(ValueError, match="momentum must lie in"):
        pynn.BatchNorm1d(3, momentum=1.5)
    with pytest.raises(TypeError, match="affine must be a bool"):
        pynn.BatchNorm1d(3, affine=1)
    with kernels.use_backend("numpy"):
        with pytest.raises(ValueError, match=r"BatchNorm2d expects x of shape \(N, C, H, W\), got \(4, 3\)"):
            pynn.BatchNorm2d(3)(np.zeros((4, 3), np.float32))
        with pytest.raises(ValueError, match=r"\(N, C\) or \(N, C, L\)"):
            pynn.BatchNorm1d(3)(np.zeros((4, 3, 2, 2), np.float32))
        with pytest.raises(ValueError, match="3 channels on axis 1"):
            pynn.BatchNorm1d(3)(np.zeros((4, 2), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        pynn.BatchNorm2d(1).backward(np.ones((2, 1, 1, 1), np.float32))
