"""2-D convolution: every backend against the NumPy reference (forward and all three gradients)
on random configurations, the reference against PyTorch's autograd, the backward against
finite differences, inf and NaN propagation, device arrays, and bad calls against clear errors.

Tolerances: float32 backends against the float64 reference rtol 2e-4 and atol 1e-4 (the weight
gradient sums up to a few thousand products of unit normals, whose float32 rounding reaches
about 1e-5 of their size); the float64 reference against float64 PyTorch 1e-10; central
differences (eps 1e-6) in float64 1e-6 / 1e-8.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from tests.support import BACKENDS, FAST_BACKENDS, check_backends, f32, host, numeric_grad, sizes, torch_or_skip

ATOL = 1e-4
# The CPU backends run each configuration with both of their strategies forced.
STRATEGIES = [(b, s) for b in BACKENDS for s in (("gemm", "direct") if b in ("numba", "c") else (None,))]
by_strategy = pytest.mark.parametrize(
    "backend,strategy", STRATEGIES, ids=[b + (f"-{s}" if s else "") for b, s in STRATEGIES]
)
TINY = [1, 2, 3, 5, 7]  # spatial sizes on the CUDA simulator, which runs one Python thread per CUDA thread


@st.composite
def configs(draw, backend):
    """(x shape, weight shape, hyper-parameters) of a valid convolution: dense, grouped or
    depthwise; non-square kernels, strides 1-3, padding 0-2, dilation 1-2, odd sizes, batch 1."""
    tiny = backend == "cuda"
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    if kind == "depthwise":
        groups = draw(st.integers(1, 3 if tiny else 6))
        cpg = opg = 1
    else:
        groups = 1 if kind == "dense" else 2
        cpg = draw(st.integers(1, 2 if tiny else 6))
        opg = draw(st.integers(1, 3 if tiny else 8))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    hyper = dict(
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=(draw(st.integers(0, 2)), draw(st.integers(0, 2))),
        dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        groups=groups,
    )
    side = st.sampled_from(TINY) if tiny else sizes(backend)
    # The smallest input the kernel fits in once padded, so that the output is at least 1x1.
    h = max(draw(side), hyper["dilation"][0] * (kh - 1) + 1 - 2 * hyper["padding"][0])
    w = max(draw(side), hyper["dilation"][1] * (kw - 1) + 1 - 2 * hyper["padding"][1])
    n = draw(st.sampled_from([1, 2] if tiny else [1, 2, 3]))
    return (n, groups * cpg, h, w), (groups * opg, cpg, kh, kw), hyper


def _examples(backend, body):
    """Run ``body(data)`` under hypothesis: few examples on the slow CUDA simulator."""
    settings(max_examples=6 if backend == "cuda" else 25)(given(data=st.data())(body))()


@pytest.fixture
def force(monkeypatch):
    """force(strategy): make the CPU backends use im2col + GEMM ("gemm") or direct loops."""

    def apply(strategy):
        if strategy is not None:
            monkeypatch.setattr(kernels.conv, "gemm_pays", lambda *shape: strategy == "gemm")

    return apply


@pytest.fixture
def few_threads(monkeypatch):
    """Small CUDA blocks, so the simulator's small arrays still span several blocks."""
    if "cuda" in BACKENDS:
        from kernels.numba_cuda import _launch

        monkeypatch.setattr(_launch, "THREADS", 16)


def _check_all(backend, x_shape, w_shape, hyper, rng, with_bias=True):
    x, w = f32(rng, *x_shape), f32(rng, *w_shape)
    g = f32(rng, *kernels.conv2d(x, w, **hyper, backend="numpy").shape)
    b = f32(rng, w_shape[0]) if with_bias else None
    check_backends(kernels.conv2d, (x, w, b), backend, atol=ATOL, **hyper)
    check_backends(kernels.conv2d_backward, (g, x, w), backend, atol=ATOL, bias=with_bias, **hyper)


@by_strategy
def test_every_backend_matches_reference(backend, strategy, force, few_threads):
    force(strategy)

    def body(data):
        x_shape, w_shape, hyper = data.draw(configs(backend))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        _check_all(backend, x_shape, w_shape, hyper, rng, with_bias=data.draw(st.booleans()))

    _examples(backend, body)


def test_strategy_rule():
    assert not kernels.conv.gemm_pays(1, 3, 3, 32)  # the CNN's first layer
    assert kernels.conv.gemm_pays(32, 3, 3, 64)  # its second
    assert not kernels.conv.gemm_pays(1, 3, 3, 1)  # depthwise
    assert not kernels.conv.gemm_pays(32, 3, 3, 4)


# The CNN's layers and their relatives at batch 2, each CPU backend choosing its own strategy:
# direct loops for the one-channel, depthwise and dilated ones, im2col + GEMM for the others.
CNN_LIKE = {
    "one-channel": ((2, 1, 28, 28), (8, 1, 3, 3), dict(padding=1)),
    "dense": ((2, 8, 14, 14), (16, 8, 3, 3), dict(padding=1)),
    "strided": ((2, 4, 11, 11), (8, 4, 3, 3), dict(stride=2, padding=1)),
    "grouped": ((2, 8, 9, 9), (16, 4, 3, 3), dict(padding=(1, 0), groups=2)),
    "depthwise": ((2, 6, 9, 9), (6, 1, 3, 3), dict(padding=1, groups=6)),
    "dilated": ((1, 3, 13, 13), (5, 3, 5, 3), dict(padding=2, dilation=2)),
    # Direct loops by output rows: 34 outputs (8 blocks of 4, then 2 single channels), an odd
    # width (the last 8-position vector overlaps), enough work for every thread; a row stride.
    "one-channel wide": ((4, 1, 29, 29), (34, 1, 3, 3), dict(padding=1)),
    "depthwise row-strided": ((2, 6, 17, 12), (12, 1, 3, 3), dict(padding=1, groups=6, stride=(2, 1))),
    # More taps (576) than one K slice of the GEMM, 70 outputs (12 row blocks, the last partial),
    # and more samples than threads.
    "deep": ((5, 64, 7, 9), (70, 64, 3, 3), dict(padding=1)),
}


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("name", CNN_LIKE)
def test_cnn_shapes_match_reference(backend, name):
    x_shape, w_shape, hyper = CNN_LIKE[name]
    _check_all(backend, x_shape, w_shape, hyper, np.random.default_rng(1))


def test_reference_equals_torch():
    torch = torch_or_skip()
    F = torch.nn.functional

    @settings(max_examples=30)
    @given(cfg=configs("numpy"), with_bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
    def body(cfg, with_bias, seed):
        x_shape, w_shape, hyper = cfg
        rng = np.random.default_rng(seed)
        x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
        tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
        ty = F.conv2d(tx, tw, tb if with_bias else None, **hyper)
        g = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(g))
        y = kernels.conv2d(x, w, b if with_bias else None, **hyper, backend="numpy")
        gx, gw, gb = kernels.conv2d_backward(g, x, w, **hyper, bias=with_bias, backend="numpy")
        assert y.dtype == gx.dtype == gw.dtype == np.float64
        for ours, theirs in ((y, ty), (gx, tx.grad), (gw, tw.grad)) + (((gb, tb.grad),) if with_bias else ()):
            np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-10)
        assert with_bias or gb is None

    body()


@pytest.mark.parametrize(
    "hyper", [dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2), dict(padding=1, groups=4)]
)
def test_backward_equals_finite_differences(hyper):
    rng = np.random.default_rng(3)
    x, b = rng.standard_normal((2, 4, 5, 6)), rng.standard_normal(4)
    w = rng.standard_normal((4, 4 // hyper["groups"], 3, 2))
    r = rng.standard_normal(kernels.conv2d(x, w, **hyper, backend="numpy").shape)

    def loss(x_, w_, b_):  # a fixed linear functional of y makes the loss scalar
        return float((kernels.conv2d(x_, w_, b_, **hyper, backend="numpy") * r).sum())

    gx, gw, gb = kernels.conv2d_backward(r, x, w, **hyper, backend="numpy")
    np.testing.assert_allclose(gx, numeric_grad(lambda v: loss(v, w, b), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, numeric_grad(lambda v: loss(x, v, b), w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, numeric_grad(lambda v: loss(x, w, v), b), rtol=1e-6, atol=1e-8)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@by_strategy
def test_inf_and_nan_propagate_as_in_the_reference(backend, strategy, force):
    force(strategy)
    # Border cells matter: the stride-1 kernels lay positions out on padded rows, and the extra
    # positions must neither produce values nor absorb an inf.
    rng = np.random.default_rng(4)
    for x_shape, w_shape in (((1, 4, 6, 5), (4, 4, 3, 3)), ((1, 1, 6, 5), (2, 1, 3, 3))):
        x, w, g = f32(rng, *x_shape), f32(rng, *w_shape), f32(rng, 1, w_shape[0], 6, 5)
        x[0, 0, 2, 0], x[0, -1, 5, 4], x[0, 0, 0, 3] = np.inf, -np.inf, np.nan
        check_backends(kernels.conv2d, (x, w, None), backend, atol=ATOL, padding=1)
        check_backends(kernels.conv2d_backward, (g, x, w), backend, atol=ATOL, padding=1)
        x, w[-1, 0, 0, 2] = f32(rng, *x_shape), np.inf  # an inf weight must reach only the cells it taps
        check_backends(kernels.conv2d_backward, (g, x, w), backend, atol=ATOL, padding=1)


def test_cuda_device_arrays_stay_on_device(few_threads):
    if "cuda" not in BACKENDS:
        pytest.skip("no cuda backend")
    from numba import cuda

    rng = np.random.default_rng(5)
    x, w, b, g = f32(rng, 1, 2, 5, 4), f32(rng, 3, 2, 2, 3), f32(rng, 3), f32(rng, 1, 3, 4, 2)
    y = kernels.conv2d(cuda.to_device(x), cuda.to_device(w), cuda.to_device(b))  # device input picks cuda
    assert not isinstance(y, np.ndarray)
    np.testing.assert_allclose(y.copy_to_host(), kernels.conv2d(x, w, b, backend="numpy"), rtol=2e-4, atol=ATOL)
    grads = kernels.conv2d_backward(cuda.to_device(g), cuda.to_device(x), cuda.to_device(w), bias=False)
    assert grads[2] is None and not isinstance(grads[0], np.ndarray)
    for ours, want in zip(grads[:2], kernels.conv2d_backward(g, x, w, bias=False, backend="numpy")):
        np.testing.assert_allclose(ours.copy_to_host(), want, rtol=2e-4, atol=ATOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_calls_raise_clear_errors(backend):
    x, w = np.ones((2, 4, 5, 5), np.float32), np.ones((6, 2, 3, 3), np.float32)
    g = np.ones((2, 6, 3, 3), np.float32)

    def conv(x_=x, w_=w, **kw):
        return kernels.conv2d(x_, w_, backend=backend, **{"groups": 2, **kw})

    with pytest.raises(ValueError, match=r"x must be 4-D, got shape \(4, 5, 5\)"):
        conv(x[0])
    with pytest.raises(ValueError, match="weight must be 4-D"):
        conv(w_=w[0])
    with pytest.raises(ValueError, match="divisible by groups=3"):
        conv(groups=3)
    with pytest.raises(ValueError, match=r"weight must have shape \(C_out, C_in / groups, kH, kW\) = \(6, 4, 3, 3\)"):
        conv(groups=1)
    with pytest.raises(ValueError, match="too small: padded by .* it is 5x5, but the 3x3 kernel .* spans 7x7"):
        conv(dilation=3)
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        conv(stride=0)
    with pytest.raises(ValueError, match=r"padding must be >= 0, got \(1, -1\)"):
        conv(padding=(1, -1))
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        conv(dilation=(0, 1))
    with pytest.raises(ValueError, match="groups must be >= 1"):
        conv(groups=0)
    with pytest.raises(TypeError, match="groups must be an int"):
        conv(groups=2.0)
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
        conv(stride=(1, 1, 1))
    with pytest.raises(TypeError, match="padding must be an int or a pair of ints"):
        conv(padding=True)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        kernels.conv2d(x, w, np.ones(4, np.float32), groups=2, backend=backend)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        conv(np.ones((2, 4, 5, 10), np.float32)[..., ::2])
    with pytest.raises(ValueError, match="x is empty"):
        conv(np.ones((0, 4, 5, 5), np.float32))
    with pytest.raises(TypeError, match="x must have dtype"):
        conv(x.astype(np.int32))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        conv(x.tolist())
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 6, 3, 3\).*got \(2, 6, 3, 4\)"):
        kernels.conv2d_backward(np.ones((2, 6, 3, 4), np.float32), x, w, groups=2, backend=backend)
    with pytest.raises(TypeError, match="grad_output (has|must have) dtype"):
        kernels.conv2d_backward(g.astype(np.float64), x, w, groups=2, backend=backend)
    with pytest.raises(ValueError, match="divisible by groups"):
        kernels.conv2d_backward(g, x, w, groups=4, backend=backend)
    if backend != "numpy":
        with pytest.raises(TypeError, match="weight must have dtype float32"):
            conv(x.astype(np.float64), w.astype(np.float64))


def test_numpy_keeps_float64():
    x, w = np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3))
    assert kernels.conv2d(x, w, backend="numpy").dtype == np.float64
    assert all(a.dtype == np.float64 for a in kernels.conv2d_backward(np.ones((1, 3, 2, 2)), x, w, backend="numpy"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_input_grad_only_grad_x_is_left_out(backend, few_threads):
    rng = np.random.default_rng(6)
    for x_shape, w_shape in (((2, 1, 7, 6), (4, 1, 3, 3)), ((2, 8, 5, 6), (8, 8, 3, 3))):  # direct, GEMM
        x, w = f32(rng, *x_shape), f32(rng, *w_shape)
        g = f32(rng, x_shape[0], w_shape[0], *x_shape[2:])
        full = kernels.conv2d_backward(g, x, w, padding=1, backend=backend)
        gx, gw, gb = kernels.conv2d_backward(g, x, w, padding=1, input_grad=False, backend=backend)
        assert gx is None
        np.testing.assert_array_equal(host(gw), host(full[1]))
        np.testing.assert_array_equal(host(gb), host(full[2]))
