"""Modules and layers: backward passes against finite differences, state_dict against
torch.nn, load_state_dict errors, containers, config, initialisers, losses and penalties."""
import copy

import numpy as np
import pytest

import kernels
import pynn
from pynn import init
from tests.support import numeric_grad, torch_or_skip

# Central differences in float64 with eps 1e-6: truncation ~1e-12, rounding ~1e-10 on sums of ~50 terms.
GRAD_RTOL, GRAD_ATOL = 1e-6, 1e-7

LAYERS = {
    "linear": (lambda: pynn.Linear(4, 3), (5, 4)),
    "linear_3d_no_bias": (lambda: pynn.Linear(4, 3, bias=False), (2, 3, 4)),
    "relu": (pynn.ReLU, (4, 5)),
    "leaky_relu": (lambda: pynn.LeakyReLU(0.1), (4, 5)),
    "elu": (lambda: pynn.ELU(0.7), (4, 5)),
    "selu": (pynn.SELU, (4, 5)),
    "gelu": (pynn.GELU, (4, 5)),
    "gelu_tanh": (lambda: pynn.GELU("tanh"), (4, 5)),
    "sigmoid": (pynn.Sigmoid, (4, 5)),
    "tanh": (pynn.Tanh, (4, 5)),
    "softmax": (pynn.Softmax, (4, 5)),
    "softmax_dim0": (lambda: pynn.Softmax(0), (4, 5)),
    "log_softmax": (lambda: pynn.LogSoftmax(1), (2, 3, 4)),
    "dropout": (lambda: pynn.Dropout(0.3), (4, 5)),
    "flatten": (pynn.Flatten, (2, 3, 4)),
    "flatten_0_1": (lambda: pynn.Flatten(0, 1), (2, 3, 4)),
    "mlp": (lambda: pynn.Sequential(pynn.Linear(4, 6), pynn.Tanh(), pynn.Linear(6, 2), pynn.Sigmoid()), (3, 4)),
}


def _float64_template(make):
    pynn.manual_seed(0)
    return make().to(np.float64)


@pytest.mark.parametrize("name", LAYERS)
def test_backward_matches_finite_differences(name):
    make, shape = LAYERS[name]
    rng = np.random.default_rng(1)
    with kernels.use_backend("numpy"):
        template = _float64_template(make)
        x = rng.standard_normal(shape)
        layer = copy.deepcopy(template)  # every copy repeats the template's first forward (Dropout seed)
        y = layer(x)
        w = rng.standard_normal(y.shape)  # a fixed linear functional of y makes the loss scalar
        grad_x = layer.backward(w)

        def loss(x_, edit=None):
            m = copy.deepcopy(template)
            if edit:
                edit(m)
            return float((m(x_) * w).sum())

        assert grad_x.shape == x.shape and grad_x.dtype == np.float64
        np.testing.assert_allclose(grad_x, numeric_grad(loss, x), rtol=GRAD_RTOL, atol=GRAD_ATOL)
        for pname, p in layer.named_parameters():
            def set_param(v, pname=pname):
                return loss(x, lambda m: dict(m.named_parameters())[pname].data.__setitem__(Ellipsis, v))

            np.testing.assert_allclose(p.grad, numeric_grad(set_param, p.data), rtol=GRAD_RTOL, atol=GRAD_ATOL)


def test_backward_accumulates_into_grad_in_place():
    with kernels.use_backend("numpy"):
        layer = pynn.Linear(3, 2)
        grad_buffer = layer.weight.grad
        x, g = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
        layer(x)
        layer.backward(g)
        once = layer.weight.grad.copy()
        layer.backward(g)
        assert layer.weight.grad is grad_buffer
        np.testing.assert_allclose(layer.weight.grad, 2 * once)
        layer.zero_grad()
        assert not layer.weight.grad.any() and layer.weight.grad is grad_buffer


def test_backward_before_forward_raises():
    for layer in (pynn.Linear(2, 2), pynn.ReLU(), pynn.Dropout(), pynn.Flatten()):
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(np.ones((1, 2), np.float32))


def _twin_models(torch):
    pynn.manual_seed(0)
    torch.manual_seed(0)
    ours = pynn.Sequential(pynn.Flatten(), pynn.Linear(12, 8), pynn.ReLU(), pynn.Dropout(0.1),
                           pynn.Linear(8, 4, bias=False), pynn.Tanh(), pynn.Linear(4, 3))
    nn = torch.nn
    theirs = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Dropout(0.1),
                           nn.Linear(8, 4, bias=False), nn.Tanh(), nn.Linear(4, 3))
    return ours, theirs


def test_state_dict_keys_and_values_match_torch():
    torch = torch_or_skip()
    ours, theirs = _twin_models(torch)
    theirs_sd = theirs.state_dict()
    assert list(ours.state_dict()) == list(theirs_sd) == ["1.weight", "1.bias", "4.weight", "6.weight", "6.bias"]
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in theirs_sd.items()}
    ours.load_state_dict(theirs_sd)
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(v, theirs_sd[k].numpy())
    x = np.random.default_rng(2).standard_normal((5, 3, 4)).astype(np.float32)
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    # and back: our arrays load into torch strictly
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})


def test_state_dict_is_a_copy_and_load_writes_in_place():
    model = pynn.Sequential(pynn.Linear(3, 2))
    sd = model.state_dict()
    sd["0.weight"] += 1.0
    assert not np.array_equal(sd["0.weight"], model[0].weight.data)
    before = model[0].weight.data
    model.load_state_dict(sd)
    assert model[0].weight.data is before
    np.testing.assert_array_equal(model[0].weight.data, sd["0.weight"])


def test_load_state_dict_errors_name_the_keys_and_change_nothing():
    model = pynn.Sequential(pynn.Linear(3, 2), pynn.ReLU(), pynn.Linear(2, 1))
    good = model.state_dict()
    original = model.state_dict()
    bad = dict(good)
    del bad["2.bias"]
    bad["9.weight"] = np.zeros(3, np.float32)
    bad["0.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    assert "missing keys: 2.bias" in message and "unexpected keys: 9.weight" in message
    assert "0.weight: expected shape (2, 3), got (3, 3)" in message
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, original[k])
    # strict=False tolerates missing/unexpected keys, never a shape mismatch
    partial = {"0.bias": np.full(2, 7.0), "extra": np.zeros(1)}
    result = model.load_state_dict(partial, strict=False)
    assert result.unexpected_keys == ["extra"] and "0.weight" in result.missing_keys
    np.testing.assert_array_equal(model[0].bias.data, [7.0, 7.0])
    with pytest.raises(ValueError, match="0.bias: expected shape"):
        model.load_state_dict({"0.bias": np.zeros(3)}, strict=False)
    with pytest.raises(TypeError, match="0.bias"):
        model.load_state_dict({**good, "0.bias": np.array(["a", "b"])})


def test_sequential_container_behaviour():
    a, b, c = pynn.Linear(2, 3), pynn.ReLU(), pynn.Linear(3, 1)
    model = pynn.Sequential(a, b)
    model.append(c)
    assert len(model) == 3 and list(model) == [a, b, c] and model[-1] is c
    head = model[:2]
    assert isinstance(head, pynn.Sequential) and list(head) == [a, b] and head[0] is a
    assert list(model.children()) == [a, b, c]
    assert [n for n, _ in model.named_modules()] == ["", "0", "1", "2"]
    with pytest.raises(TypeError, match="Modules"):
        model.append(np.zeros(2))
    shared = pynn.Sequential(a, pynn.Sequential(a, c))
    assert len(list(shared.parameters())) == 4  # a's two and c's two, shared ones once
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_config_rebuilds_the_same_architecture():
    model = pynn.Sequential(pynn.Flatten(), pynn.Linear(6, 4, bias=False), pynn.LeakyReLU(0.2), pynn.GELU("tanh"),
                            pynn.Dropout(0.25), pynn.Softmax(0))
    cfg = model.config()
    rebuilt = pynn.from_config(cfg)
    assert rebuilt.config() == cfg
    assert repr(rebuilt) == repr(model)
    assert rebuilt[1].bias is None and rebuilt[2].negative_slope == 0.2


def test_linear_init_follows_pytorch_bounds_and_seed():
    pynn.manual_seed(3)
    layer = pynn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    for p in (layer.weight.data, layer.bias.data):
        assert p.dtype == np.float32 and np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.98 * bound
    # variance of U(-b, b) is b^2 / 3
    np.testing.assert_allclose(layer.weight.data.var(), bound**2 / 3, rtol=0.02)
    pynn.manual_seed(3)
    np.testing.assert_array_equal(pynn.Linear(400, 300).weight.data, layer.weight.data)
    with pytest.raises(ValueError, match="in_features"):
        pynn.Linear(0, 3)
    with pytest.raises(TypeError, match="out_features"):
        pynn.Linear(3, 2.5)


def test_dropout_modes_masks_and_seeds():
    x = np.ones((64, 64), np.float32)
    pynn.manual_seed(5)
    layer = pynn.Dropout(0.25)
    first, second = layer(x), layer(x)
    assert set(np.unique(first)) == {0.0, np.float32(1 / 0.75)}
    assert abs((first == 0).mean() - 0.25) < 0.03
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(layer.backward(x), second)
    pynn.manual_seed(5)
    twin = pynn.Dropout(0.25)
    np.testing.assert_array_equal(twin(x), first)
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)
    with pytest.raises(ValueError, match="p must lie"):
        pynn.Dropout(1.5)


def test_dropout_masks_agree_across_backends():
    x = np.random.default_rng(0).standard_normal((8, 9)).astype(np.float32)
    outputs = []
    for backend in [b for b in kernels.backends() if b != "cuda"]:
        pynn.manual_seed(1)
        with kernels.use_backend(backend):
            outputs.append(pynn.Dropout(0.5)(x))
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="approximate"):
        pynn.GELU("erf")
    with pytest.raises(TypeError, match="dim"):
        pynn.Softmax(1.0)
    with pytest.raises(ValueError, match="cannot flatten"):
        pynn.Flatten(2)(np.ones((3, 4), np.float32))


LOSSES = {
    "cross_entropy_index": (pynn.CrossEntropyLoss, "cross_entropy",
                            lambda r: (r.standard_normal((6, 4)), r.integers(0, 4, 6))),
    "cross_entropy_prob": (pynn.CrossEntropyLoss, "cross_entropy",
                           lambda r: (r.standard_normal((6, 4)), r.dirichlet(np.ones(4), 6))),
    "mse": (pynn.MSELoss, "mse_loss", lambda r: (r.standard_normal((6, 4)), r.standard_normal((6, 4)))),
    "l1": (pynn.L1Loss, "l1_loss", lambda r: (r.standard_normal((6, 4)), r.standard_normal((6, 4)))),
    "bce": (pynn.BCELoss, "binary_cross_entropy", lambda r: (r.uniform(0.05, 0.95, (6, 4)), r.uniform(0, 1, (6, 4)))),
    "bce_logits": (pynn.BCEWithLogitsLoss, "binary_cross_entropy_with_logits",
                   lambda r: (r.standard_normal((6, 4)), r.uniform(0, 1, (6, 4)))),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", LOSSES)
def test_losses_match_torch(name, reduction):
    torch = torch_or_skip()
    cls, fn, draw = LOSSES[name]
    x, t = draw(np.random.default_rng(4))
    x = x.astype(np.float32)
    t = t if t.dtype == np.int64 else t.astype(np.float32)
    loss_fn = cls(reduction=reduction)
    value = loss_fn(x, t)
    tx = torch.tensor(x, requires_grad=True)
    want = getattr(torch.nn.functional, fn)(tx, torch.from_numpy(t), reduction=reduction)
    want.sum().backward()
    if reduction == "none":
        assert isinstance(value, np.ndarray)
    else:
        assert isinstance(value, float)
    # float32 sums in different orders: relative 1e-5
    np.testing.assert_allclose(value, want.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss_fn.backward(), tx.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_loss_errors():
    with pytest.raises(ValueError, match="reduction"):
        pynn.MSELoss(reduction="avg")
    with pytest.raises(RuntimeError, match="before the loss"):
        pynn.CrossEntropyLoss().backward()


def test_init_gains_and_fans_match_torch():
    torch = torch_or_skip()
    for nl in ("linear", "sigmoid", "tanh", "relu", "selu", "conv2d"):
        assert init.calculate_gain(nl) == pytest.approx(torch.nn.init.calculate_gain(nl))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(torch.nn.init.calculate_gain("leaky_relu", 0.2))
    for shape in ((3, 4), (8, 3, 5, 5)):
        assert init._calculate_fan_in_and_fan_out(np.empty(shape)) == \
            torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    with pytest.raises(ValueError, match="at least 2"):
        init.xavier_uniform_(np.empty(5))
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_normal_(np.empty((3, 3)), mode="fan_avg")


@pytest.mark.parametrize("fn, kwargs, std, uniform", [
    (init.xavier_uniform_, {"gain": 2.0}, 2.0 * np.sqrt(2 / (500 + 400)), True),
    (init.xavier_normal_, {}, np.sqrt(2 / (500 + 400)), False),
    (init.kaiming_uniform_, {"nonlinearity": "relu"}, np.sqrt(2 / 400), True),
    (init.kaiming_normal_, {"mode": "fan_out", "nonlinearity": "relu"}, np.sqrt(2 / 500), False),
    (init.lecun_uniform_, {}, np.sqrt(1 / 400), True),
    (init.lecun_normal_, {}, np.sqrt(1 / 400), False),
])
def test_initialisers_have_the_stated_spread(fn, kwargs, std, uniform):
    pynn.manual_seed(0)
    w = np.empty((500, 400), np.float32)
    assert fn(w, **kwargs) is w
    # 200,000 draws: the sample std is within 1% of the target with overwhelming probability
    np.testing.assert_allclose(w.std(), std, rtol=0.01)
    assert abs(w.mean()) < 0.01 * std
    if uniform:
        assert np.abs(w).max() <= np.sqrt(3) * std * (1 + 1e-6)


def test_regularization_penalties_and_gradients():
    rng = np.random.default_rng(6)
    p = pynn.Parameter(rng.standard_normal((3, 4)), dtype=np.float64)
    q = pynn.Parameter(rng.standard_normal(5), dtype=np.float64)
    l1 = pynn.l1_penalty([p, q], 0.3)
    assert l1 == pytest.approx(0.3 * (np.abs(p.data).sum() + np.abs(q.data).sum()))
    np.testing.assert_allclose(p.grad, 0.3 * np.sign(p.data))
    p.grad[...] = 1.0
    l2 = pynn.l2_penalty(p, 0.5)
    assert l2 == pytest.approx(0.25 * (p.data**2).sum())
    np.testing.assert_allclose(p.grad, 1.0 + numeric_grad(lambda v: 0.25 * (v**2).sum(), p.data), rtol=1e-7)
    with pytest.raises(ValueError, match="weight"):
        pynn.l2_penalty([p], -1.0)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_backward_without_input_grad_gives_the_same_parameter_gradients(name):
    """``input_grad=False`` skips the layers before the first parameter and that layer's input
    gradient (``fit`` uses it), and leaves every parameter gradient as a full backward gives it."""
    from pynn.models import MODELS

    pynn.manual_seed(0)
    model = MODELS[name]().eval()  # the same dropout masks (none) in both passes
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    g = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    grads = []
    for input_grad in (True, False):
        model.zero_grad()
        model(x)
        gx = model.backward(g, input_grad=input_grad)
        assert (gx is None) == (not input_grad) and (gx is None or gx.shape == x.shape)
        grads.append([p.grad.copy() for p in model.parameters()])
    for full, skipped in zip(*grads):
        np.testing.assert_array_equal(full, skipped)


def _layer_by_layer(model, x):
    for m in model:
        x = m(x)
    return x


def _seeded(build):
    pynn.manual_seed(0)
    return build()


def _backward_layer_by_layer(model, g):
    for m in reversed(list(model)):
        g = m.backward(g)
    return g


FUSABLE = {
    "mlp": lambda: pynn.models.mlp(),
    "no_relu_no_flatten": lambda: pynn.Sequential(pynn.Linear(784, 5), pynn.Dropout(0.5),
                                                  pynn.Linear(5, 3, bias=False)),
    "one_linear": lambda: pynn.Sequential(pynn.Flatten(), pynn.Linear(784, 10)),
    "relu_no_dropout": lambda: pynn.Sequential(pynn.Linear(784, 7), pynn.ReLU(), pynn.Linear(7, 3)),
}
NOT_FUSABLE = {
    "sigmoid": lambda: pynn.Sequential(pynn.Linear(784, 5), pynn.Sigmoid(), pynn.Linear(5, 3)),
    "trailing_relu": lambda: pynn.Sequential(pynn.Linear(784, 5), pynn.ReLU()),
    "double_relu": lambda: pynn.Sequential(pynn.Linear(784, 5), pynn.ReLU(), pynn.ReLU(), pynn.Linear(5, 3)),
    "mixed": lambda: pynn.Sequential(pynn.Linear(784, 5), pynn.ReLU(), pynn.Linear(5, 4), pynn.Linear(4, 3)),
    "flatten_later": lambda: pynn.Sequential(pynn.Linear(28, 5), pynn.Flatten(), pynn.Linear(140, 3)),
    "dropout_before_relu": lambda: pynn.Sequential(pynn.Linear(784, 5), pynn.Dropout(0.5), pynn.ReLU(),
                                                   pynn.Linear(5, 3)),
}
FLAT_INPUT = ("no_relu_no_flatten", "relu_no_dropout", "sigmoid", "trailing_relu", "double_relu", "mixed",
              "dropout_before_relu")


@pytest.mark.parametrize("backend", ["numpy", "numba", "c"])
@pytest.mark.parametrize("name", sorted(FUSABLE) + sorted(NOT_FUSABLE))
def test_dense_stacks_run_as_one_kernel_call_with_the_layers_results(name, backend, monkeypatch):
    """A [Flatten] Linear [ReLU] [Dropout] ... Linear Sequential is one kernels.mlp call forward
    and one kernels.mlp_backward call backward, in both modes, with the results of its layers run
    one by one bit for bit (dropout masks, parameter gradients and the input gradient included);
    other stacks run layer by layer. "dropout_before_relu" fuses in eval mode only."""
    if backend not in kernels.backends():
        pytest.skip(f"{backend} is not usable here")
    build = {**FUSABLE, **NOT_FUSABLE}[name]
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    if name in FLAT_INPUT:
        x = x.reshape(3, 784)
    calls = []
    for op in ("mlp", "mlp_backward"):
        real = getattr(kernels, op)
        monkeypatch.setattr(kernels, op, lambda *a, _real=real, _op=op, **k: calls.append(_op) or _real(*a, **k))
    with kernels.use_backend(backend):
        for training in (True, False):
            fused, plain = (_seeded(build).train(training) for _ in range(2))
            for _ in range(2):  # the second call draws new dropout masks
                calls.clear()
                y = fused(x)
                g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
                gx = fused.backward(g)
                fuses = name in FUSABLE or (name == "dropout_before_relu" and not training)
                assert calls == (["mlp", "mlp_backward"] if fuses else [])
                np.testing.assert_array_equal(y, _layer_by_layer(plain, x))
                np.testing.assert_array_equal(gx, _backward_layer_by_layer(plain, g))
                for a, b in zip(fused.parameters(), plain.parameters()):
                    np.testing.assert_array_equal(a.grad, b.grad)
            assert fused.backward(g, input_grad=False) is None


def test_eval_forward_of_the_mlp_is_one_kernel_call_per_image_batch(monkeypatch):
    """A child switched to training mode alone stops the fusion (modes must agree)."""
    pynn.manual_seed(0)
    model = pynn.models.mlp().eval()
    calls = []
    real = kernels.mlp
    monkeypatch.setattr(kernels, "mlp", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = np.zeros((1, 1, 28, 28), np.float32)
    model(x)
    assert calls == [1]
    model[0].train()
    model(x)
    assert calls == [1]


@pytest.mark.parametrize("backend", ["numpy", "numba", "c"])
def test_max_pool_runs_before_relu_with_the_layers_results(backend, monkeypatch):
    """ReLU then MaxPool2d run as MaxPool2d then ReLU (on the pooled cells only) with the values
    and gradients of the declared order: windows all negative, tied, mixed, and padded ones."""
    if backend not in kernels.backends():
        pytest.skip(f"{backend} is not usable here")
    build = lambda: pynn.Sequential(  # noqa: E731
        pynn.Conv2d(2, 3, 3, padding=1), pynn.ReLU(), pynn.MaxPool2d(2),
        pynn.ReLU(), pynn.MaxPool2d(3, stride=2, padding=1), pynn.Flatten(), pynn.Linear(12, 4),
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 9, 9)).astype(np.float32)
    x[0, :, :4, :4] = -1.0  # all-negative windows, and ties among equal cells
    relu_sizes = []
    real = kernels.relu
    monkeypatch.setattr(kernels, "relu", lambda v, **k: relu_sizes.append(v.size) or real(v, **k))
    with kernels.use_backend(backend):
        fused, plain = _seeded(build), _seeded(build)
        y = fused(x)
        assert relu_sizes == [2 * 3 * 4 * 4, 2 * 3 * 2 * 2]  # after each pooling, not before
        g = rng.standard_normal(y.shape).astype(np.float32)
        gx = fused.backward(g)
        np.testing.assert_array_equal(y, _layer_by_layer(plain, x))
        np.testing.assert_array_equal(gx, _backward_layer_by_layer(plain, g))
        for a, b in zip(fused.parameters(), plain.parameters()):
            np.testing.assert_array_equal(a.grad, b.grad)
