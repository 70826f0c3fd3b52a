"""Residual: y = block(x) + x or + projection(x); the gradient is the sum of both paths (finite
differences and PyTorch agree), children are named as in torchvision, and configs rebuild it."""
import json

import numpy as np
import pytest

import pynn
from pynn.module import from_config
from tests.support import FAST_BACKENDS, torch_or_skip
from tests.test_conv_layers import layer_matches_finite_differences, layer_matches_torch


def _residual(projection: bool):
    pynn.manual_seed(0)
    block = pynn.Sequential(pynn.Linear(4, 6), pynn.Tanh(), pynn.Linear(6, 3 if projection else 4))
    return pynn.Residual(block, projection=pynn.Linear(4, 3, bias=False) if projection else None)


@pytest.mark.parametrize("projection", [False, True])
def test_backward_matches_finite_differences(projection):
    layer_matches_finite_differences(lambda: _residual(projection), (5, 4))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("projection", [False, True])
def test_matches_torch(projection, backend):
    torch = torch_or_skip()
    nn = torch.nn

    class TorchResidual(nn.Module):
        def __init__(self, block, projection=None):
            super().__init__()
            self.block, self.projection = block, projection

        def forward(self, x):
            return self.block(x) + (x if self.projection is None else self.projection(x))

    out = 3 if projection else 4
    theirs = TorchResidual(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, out)),
                           nn.Linear(4, 3, bias=False) if projection else None)
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    layer_matches_torch(_residual(projection), theirs, x, backend)


def test_config_round_trip_and_call_forms():
    for projection in (False, True):
        model = _residual(projection)
        cfg = json.loads(json.dumps(model.config()))
        assert [c["type"] for c in cfg["children"]] == ["Sequential"] + (["Linear"] if projection else [])
        rebuilt = from_config(cfg)
        assert rebuilt.config() == model.config()
        assert list(rebuilt.state_dict()) == list(model.state_dict())
    block, proj = pynn.Linear(2, 2), pynn.Linear(2, 2)
    positional = pynn.Residual(block, proj)
    assert positional.block is block and positional.projection is proj
    assert pynn.Residual(block).projection is None


def test_errors():
    with pytest.raises(TypeError, match="block and an optional projection"):
        pynn.Residual()
    with pytest.raises(TypeError, match="block and an optional projection"):
        pynn.Residual(pynn.ReLU(), pynn.ReLU(), projection=pynn.ReLU())
    with pytest.raises(TypeError, match="projection must be a Module"):
        pynn.Residual(pynn.ReLU(), projection=np.zeros(2))
    with pytest.raises(RuntimeError, match="before forward"):
        pynn.Residual(pynn.ReLU()).backward(np.ones((1, 2), np.float32))
    with pytest.raises(ValueError, match=r"block\(x\) has shape \(2, 3\) but x has shape \(2, 4\)"):
        pynn.Residual(pynn.Linear(4, 3))(np.ones((2, 4), np.float32))
