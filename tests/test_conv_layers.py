"""Conv2d, MaxPool2d, AvgPool2d and AdaptiveAvgPool2d: against torch.nn with the same weights
(forward, input gradient, every parameter gradient) on every CPU backend, backward against
central finite differences in float64, PyTorch's initialisation and state_dict, configs, and
bad hyper-parameters.

``layer_matches_torch`` and ``layer_matches_finite_differences`` are shared with the other
layer test files. Tolerances: float32 against PyTorch's float32, sums of up to a few hundred
products, rtol 1e-4 with a 1e-5 floor; float64 central differences (eps 1e-6) to 1e-6 / 1e-7.
"""
import copy
import json

import numpy as np
import pytest

import kernels
import pynn
from pynn.module import from_config
from tests.support import FAST_BACKENDS, numeric_grad, torch_or_skip

RTOL, ATOL = 1e-4, 1e-5
GRAD_RTOL, GRAD_ATOL = 1e-6, 1e-7


def layer_matches_torch(ours, theirs, x, backend, *, train=True):
    """Load ours' state into the torch module, run one forward and backward in both (mode
    ``train``), and compare outputs, input gradients, parameter gradients and the state after
    (running statistics)."""
    torch = torch_or_skip()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    ours.train(train)
    theirs.train(train)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    g = np.random.default_rng(99).standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    with kernels.use_backend(backend):
        y = ours(x)
        gx = ours.backward(g)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=RTOL, atol=ATOL)
    assert gx.shape == x.shape and gx.dtype == np.float32
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=RTOL, atol=ATOL)
    grads = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(grads)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name].grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)
    want = theirs.state_dict()
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(value, want[name].numpy(), rtol=RTOL, atol=ATOL, err_msg=name)


def layer_matches_finite_differences(make, shape, *, train=True, seed=0):
    """The layer's backward in float64 on the numpy backend against central differences of the
    scalar ``sum(layer(x) * w)``, for x and every parameter (each evaluation on a fresh copy)."""
    rng = np.random.default_rng(seed)
    with kernels.use_backend("numpy"):
        pynn.manual_seed(seed)
        template = make().to(np.float64).train(train)
        x = rng.standard_normal(shape)
        layer = copy.deepcopy(template)
        y = layer(x)
        w = rng.standard_normal(y.shape)
        gx = layer.backward(w)

        def loss(x_, name=None, value=None):
            m = copy.deepcopy(template)
            if name is not None:
                dict(m.named_parameters())[name].data[...] = value
            return float((m(x_) * w).sum())

        assert gx.shape == x.shape and gx.dtype == np.float64
        np.testing.assert_allclose(gx, numeric_grad(loss, x), rtol=GRAD_RTOL, atol=GRAD_ATOL)
        for name, p in layer.named_parameters():
            want = numeric_grad(lambda v, name=name: loss(x, name, v), p.data)
            np.testing.assert_allclose(p.grad, want, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=name)


# name -> (pynn layer, torch layer, input shape); odd sizes, batch 1, every hyper-parameter.
LAYERS = {
    "conv": (lambda: pynn.Conv2d(3, 4, 3), lambda nn: nn.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    "conv_strided_padded_no_bias": (
        lambda: pynn.Conv2d(2, 5, (3, 2), stride=(2, 1), padding=(1, 0), bias=False),
        lambda nn: nn.Conv2d(2, 5, (3, 2), stride=(2, 1), padding=(1, 0), bias=False), (1, 2, 7, 5)),
    "conv_dilated_groups": (
        lambda: pynn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2),
        lambda nn: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), (3, 4, 5, 5)),
    "conv_1x1_stride2": (lambda: pynn.Conv2d(3, 2, 1, stride=2), lambda nn: nn.Conv2d(3, 2, 1, stride=2),
                         (2, 3, 5, 5)),
    "max_pool": (lambda: pynn.MaxPool2d(2), lambda nn: nn.MaxPool2d(2), (2, 3, 7, 6)),
    "max_pool_overlap_padded": (lambda: pynn.MaxPool2d(3, stride=2, padding=1),
                                lambda nn: nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 7, 5)),
    "avg_pool": (lambda: pynn.AvgPool2d((2, 3)), lambda nn: nn.AvgPool2d((2, 3)), (2, 3, 5, 7)),
    "avg_pool_padded_exclusive": (
        lambda: pynn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        lambda nn: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 2, 6, 5)),
    "adaptive_avg_pool": (lambda: pynn.AdaptiveAvgPool2d(1), lambda nn: nn.AdaptiveAvgPool2d(1), (3, 4, 5, 3)),
}


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("name", LAYERS)
def test_layer_matches_torch(name, backend):
    torch = torch_or_skip()
    make, make_torch, shape = LAYERS[name]
    pynn.manual_seed(0)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    layer_matches_torch(make(), make_torch(torch.nn), x, backend)


@pytest.mark.parametrize("name", LAYERS)
def test_backward_matches_finite_differences(name):
    make, _, shape = LAYERS[name]
    layer_matches_finite_differences(make, shape)


def test_conv_init_and_state_dict_follow_torch():
    torch = torch_or_skip()
    pynn.manual_seed(0)
    ours = pynn.Conv2d(16, 32, (3, 5), groups=2)
    theirs = torch.nn.Conv2d(16, 32, (3, 5), groups=2)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert (ours.kernel_size, ours.stride, ours.padding, ours.dilation) == \
        (theirs.kernel_size, theirs.stride, theirs.padding, theirs.dilation)
    # kaiming_uniform_(a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 16/2 * 3 * 5
    bound = 1 / np.sqrt(8 * 15)
    for p, q in ((ours.weight.data, theirs.weight), (ours.bias.data, theirs.bias)):
        assert p.dtype == np.float32 and np.abs(p).max() <= bound
        assert np.abs(q.detach().numpy()).max() <= bound
    w = ours.weight.data
    np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.05)
    pynn.manual_seed(0)
    np.testing.assert_array_equal(pynn.Conv2d(16, 32, (3, 5), groups=2).weight.data, w)
    assert "bias" not in pynn.Conv2d(1, 1, 1, bias=False).state_dict()


def test_configs_rebuild_every_layer():
    for make, _, _ in LAYERS.values():
        layer = make()
        cfg = json.loads(json.dumps(layer.config()))
        rebuilt = from_config(cfg)
        assert rebuilt.config() == layer.config()
        assert type(rebuilt) is type(layer)
    assert pynn.MaxPool2d(3).stride == (3, 3)
    assert pynn.AvgPool2d(3, stride=1).config()["kwargs"] == {
        "kernel_size": (3, 3), "stride": (1, 1), "padding": (0, 0), "count_include_pad": True}


@pytest.mark.parametrize("make, error, message", [
    (lambda: pynn.Conv2d(3, 4, 0), ValueError, "kernel_size must be >= 1"),
    (lambda: pynn.Conv2d(3, 4, 3, stride=0), ValueError, "stride must be >= 1"),
    (lambda: pynn.Conv2d(3, 4, 3, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: pynn.Conv2d(3, 4, (3, 3, 3)), TypeError, "kernel_size must be an int or a pair"),
    (lambda: pynn.Conv2d(3, 4, 2.5), TypeError, "kernel_size must be an int or a pair"),
    (lambda: pynn.Conv2d(3, 4, 3, groups=2), ValueError, r"in_channels \(3\) must be divisible by groups"),
    (lambda: pynn.Conv2d(0, 4, 3), ValueError, "in_channels must be >= 1"),
    (lambda: pynn.MaxPool2d(2, padding=2), ValueError, "at most half of kernel_size"),
    (lambda: pynn.AvgPool2d(3, stride=0), ValueError, "stride must be >= 1"),
    (lambda: pynn.AvgPool2d(3, count_include_pad=1), TypeError, "count_include_pad must be a bool"),
    (lambda: pynn.AdaptiveAvgPool2d(2), ValueError, "output_size 1"),
])
def test_bad_hyper_parameters(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_input_and_backward_before_forward():
    with kernels.use_backend("numpy"):
        conv = pynn.Conv2d(3, 4, 3)
        with pytest.raises(ValueError, match="x must be 4-D"):
            conv(np.zeros((3, 5, 5), np.float32))
        with pytest.raises(ValueError, match="weight must have shape"):
            conv(np.zeros((1, 2, 5, 5), np.float32))
        with pytest.raises(ValueError, match="too small"):
            conv(np.zeros((1, 3, 2, 2), np.float32))
        with pytest.raises(TypeError, match="x must have dtype"):
            pynn.MaxPool2d(2)(np.zeros((1, 1, 4, 4), np.int32))
    for layer in (pynn.Conv2d(1, 1, 1), pynn.MaxPool2d(2), pynn.AvgPool2d(2), pynn.AdaptiveAvgPool2d(1)):
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(np.ones((1, 1, 1, 1), np.float32))
