"""Optimizer classes and schedulers against torch.optim over several steps, clip_grad_norm_
against torch.nn.utils, and the flat parameter/gradient buffers staying shared with the model."""
import numpy as np
import pytest

import kernels
import pynn
from tests.support import FAST_BACKENDS, torch_or_skip

SHAPES = ((4, 3), (3,), (2, 2, 2))
# The same float32 formulas elementwise: only the order of a few roundings differs.
RTOL, ATOL = 1e-6, 1e-7

CONFIGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1, "maximize": True}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    ("RMSprop", {}),
    ("RMSprop", {"momentum": 0.9, "centered": True, "weight_decay": 0.01}),
    ("RMSprop", {"alpha": 0.9, "centered": True, "maximize": True}),
    ("Adagrad", {}),
    ("Adagrad", {"lr_decay": 0.01, "weight_decay": 0.1, "initial_accumulator_value": 0.1}),
]


def _pair(torch, name, kwargs, seed=0):
    rng = np.random.default_rng(seed)
    ours = [pynn.Parameter(rng.standard_normal(s)) for s in SHAPES]
    theirs = [torch.nn.Parameter(torch.tensor(p.data.copy())) for p in ours]
    return ours, theirs, getattr(pynn, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs)


def _step_both(torch, ours, theirs, opt_ours, opt_theirs, rng):
    for p, t in zip(ours, theirs):
        g = rng.standard_normal(p.shape).astype(np.float32)
        p.grad[...] = g
        t.grad = torch.tensor(g)
    opt_ours.step()
    opt_theirs.step()


def _assert_same(ours, theirs):
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_optimizer_matches_torch(name, kwargs, backend):
    torch = torch_or_skip()
    ours, theirs, opt_ours, opt_theirs = _pair(torch, name, kwargs)
    rng = np.random.default_rng(1)
    with kernels.use_backend(backend):
        for _ in range(6):
            _step_both(torch, ours, theirs, opt_ours, opt_theirs, rng)
            _assert_same(ours, theirs)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_defaults_match_torch(name):
    torch = torch_or_skip()
    _, _, opt_ours, opt_theirs = _pair(torch, name, {})
    for k in opt_ours._hyper:
        assert getattr(opt_ours, k) == opt_theirs.defaults[k], k


@pytest.mark.parametrize("name, kwargs", [CONFIGS[2], CONFIGS[4], CONFIGS[8], CONFIGS[11]])
def test_state_dict_resumes_exactly(name, kwargs):
    torch = torch_or_skip()
    ours, theirs, opt_ours, opt_theirs = _pair(torch, name, kwargs)
    rng = np.random.default_rng(2)
    for _ in range(3):
        _step_both(torch, ours, theirs, opt_ours, opt_theirs, rng)
    saved = opt_ours.state_dict()
    assert isinstance(saved["steps"], int) and all(isinstance(v, np.ndarray) for v in saved["state"].values())
    fresh = [pynn.Parameter(p.data) for p in ours]
    resumed = getattr(pynn, name)(fresh, **{**kwargs, "lr": 123.0})
    resumed.load_state_dict(saved)
    assert resumed.lr == opt_ours.lr and resumed.steps == 3
    for _ in range(2):
        _step_both(torch, ours, theirs, opt_ours, opt_theirs, rng)
        for p, f in zip(ours, fresh):
            f.grad[...] = p.grad
        resumed.step()
    _assert_same(fresh, theirs)
    with pytest.raises(ValueError, match="state"):
        pynn.SGD(fresh).load_state_dict(saved)


def test_bad_optimizer_arguments():
    p = [pynn.Parameter(np.ones(3))]
    with pytest.raises(ValueError, match="lr"):
        pynn.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        pynn.SGD(p, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        pynn.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty"):
        pynn.Adam([])
    with pytest.raises(TypeError, match="Parameters"):
        pynn.Adam([np.ones(3)])
    with pytest.raises(TypeError, match="dtype"):
        pynn.Adam([pynn.Parameter(np.ones(3)), pynn.Parameter(np.ones(3), dtype=np.float64)])


SCHEDULES = [
    ("StepLR", {"step_size": 3, "gamma": 0.5}, "StepLR", {"step_size": 3, "gamma": 0.5}),
    ("CosineAnnealingLR", {"T_max": 10, "eta_min": 0.001}, "CosineAnnealingLR", {"T_max": 10, "eta_min": 0.001}),
    ("CosineAnnealingWarmRestarts", {"T_0": 4}, "CosineAnnealingWarmRestarts", {"T_0": 4}),
    ("CosineAnnealingWarmRestarts", {"T_0": 3, "T_mult": 2, "eta_min": 0.01},
     "CosineAnnealingWarmRestarts", {"T_0": 3, "T_mult": 2, "eta_min": 0.01}),
    ("LinearWarmup", {"warmup_steps": 5, "start_factor": 0.1}, "LinearLR",
     {"start_factor": 0.1, "end_factor": 1.0, "total_iters": 5}),
]


@pytest.mark.parametrize("ours_name, ours_kw, theirs_name, theirs_kw", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_scheduler_matches_torch(ours_name, ours_kw, theirs_name, theirs_kw):
    torch = torch_or_skip()
    opt_ours = pynn.SGD([pynn.Parameter(np.zeros(1))], lr=0.1)
    opt_theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ours = getattr(pynn.schedulers, ours_name)(opt_ours, **ours_kw)
    theirs = getattr(torch.optim.lr_scheduler, theirs_name)(opt_theirs, **theirs_kw)
    lrs = []
    for epoch in range(25):
        # torch's chainable forms accumulate rounding; closed forms agree to ~1e-12
        assert opt_ours.lr == pytest.approx(opt_theirs.param_groups[0]["lr"], rel=1e-9, abs=1e-12), epoch
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-9, abs=1e-12)
        lrs.append(opt_ours.lr)
        opt_theirs.step()
        ours.step()
        theirs.step()
    assert len(set(lrs)) > 3
    # resume from a state_dict on a fresh optimizer
    opt_new = pynn.SGD([pynn.Parameter(np.zeros(1))], lr=0.1)
    resumed = getattr(pynn.schedulers, ours_name)(opt_new, **ours_kw)
    resumed.load_state_dict(ours.state_dict())
    for _ in range(3):
        assert opt_new.lr == opt_ours.lr
        ours.step()
        resumed.step()


def test_bad_scheduler_arguments():
    opt = pynn.SGD([pynn.Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        pynn.StepLR(opt, 0)
    with pytest.raises(TypeError, match="T_max"):
        pynn.CosineAnnealingLR(opt, 2.5)
    with pytest.raises(ValueError, match="start_factor"):
        pynn.LinearWarmup(opt, 3, start_factor=0.0)
    with pytest.raises(ValueError, match="keys"):
        pynn.StepLR(opt, 2).load_state_dict({"last_epoch": 1})


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    ours = [pynn.Parameter(np.zeros(s)) for s in SHAPES]
    theirs = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    for p, t in zip(ours, theirs):
        p.grad[...] = rng.standard_normal(p.shape)
        t.grad = torch.tensor(p.grad.copy())
    total = pynn.clip_grad_norm_(ours, max_norm, norm_type)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total == pytest.approx(float(want), rel=1e-6)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_flat_buffers_stay_shared_with_the_model():
    pynn.manual_seed(0)
    model = pynn.Sequential(pynn.Linear(3, 4), pynn.ReLU(), pynn.Linear(4, 2))
    before = model.state_dict()
    opt = pynn.SGD(model.parameters(), lr=0.1)
    params = list(model.parameters())
    for (name, value), p in zip(before.items(), params):
        np.testing.assert_array_equal(p.data, value, err_msg=name)  # values preserved by the move
        assert np.shares_memory(p.data, opt._data) and np.shares_memory(p.grad, opt._grad)
    views = [(p.data, p.grad) for p in params]
    x = np.ones((5, 3), np.float32)
    model(x)
    model.backward(np.ones((5, 2), np.float32))
    assert opt._grad.any()  # the layers accumulated into the flat gradient buffer
    opt.step()
    assert not np.array_equal(model[0].weight.data, before["0.weight"])
    # loading a state_dict writes through the views; the optimizer still drives the model
    model.load_state_dict(before)
    assert all(p.data is d and p.grad is g for p, (d, g) in zip(params, views))
    np.testing.assert_array_equal(opt._data[:12].reshape(4, 3), before["0.weight"])
    opt.zero_grad()
    assert not any(p.grad.any() for p in params)
    model.zero_grad()
    # a second optimizer over the same parameters shares the buffers instead of moving them
    second = pynn.Adam(model.parameters())
    assert second._data is opt._data and second._grad is opt._grad
    assert all(p.data is d for p, (d, _) in zip(params, views))
