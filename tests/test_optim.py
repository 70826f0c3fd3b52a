"""Optimizer steps: every backend against the NumPy reference over several steps and every option
set, the reference against torch.optim over ten steps, and bad calls against clear errors.

Tolerances: float32 backends against the float64 reference use support's RTOL/ATOL (a few
float32 roundings per step, over three steps); the reference against PyTorch agrees to rounding
(rtol 1e-7 in float64, 1e-5 in float32).
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from tests.support import ATOL, BACKENDS, FAST_BACKENDS, RTOL, f32, host, sizes, torch_or_skip

# Each case: (optimizer name, options). Options that change the arithmetic are crossed; sgd's lr
# is required, the others keep PyTorch's defaults unless stated.
_FLAGS = list(itertools.product((0.0, 0.1), (False, True)))  # weight_decay, maximize
SGD = [
    dict(lr=0.1, momentum=mu, dampening=d, nesterov=nest, weight_decay=wd, maximize=mx)
    for mu, d, nest in ((0.0, 0.0, False), (0.9, 0.0, False), (0.9, 0.0, True), (0.9, 0.5, False))
    for wd, mx in _FLAGS
]
ADAM = [dict(lr=0.01, betas=(0.8, 0.95), weight_decay=wd, maximize=mx) for wd, mx in _FLAGS]
RMSPROP = [
    dict(lr=0.01, momentum=mu, centered=c, weight_decay=wd, maximize=mx)
    for mu, c in itertools.product((0.0, 0.9), (False, True))
    for wd, mx in _FLAGS
]
ADAGRAD = [dict(lr=0.1, lr_decay=ld, weight_decay=wd, maximize=mx) for ld in (0.0, 0.1) for wd, mx in _FLAGS]
CASES = (
    [("sgd", o) for o in SGD]
    + [(name, o) for name in ("adam", "adamw") for o in ADAM]
    + [("rmsprop", o) for o in RMSPROP]
    + [("adagrad", o) for o in ADAGRAD]
)
CASE_IDS = [name + "-" + "-".join(f"{k}={v}" for k, v in o.items() if k not in ("lr", "betas")) for name, o in CASES]

FUNCTIONS = {
    "sgd": kernels.sgd_step,
    "adam": kernels.adam_step,
    "adamw": kernels.adamw_step,
    "rmsprop": kernels.rmsprop_step,
    "adagrad": kernels.adagrad_step,
}
# Our state argument -> the key of torch.optim's per-parameter state.
TORCH_STATE = {"momentum_buffer": "momentum_buffer", "exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq",
               "square_avg": "square_avg", "grad_avg": "grad_avg", "state_sum": "sum"}


def state_names(name, opts):
    if name == "sgd":
        return ["momentum_buffer"] if opts["momentum"] else []
    if name in ("adam", "adamw"):
        return ["exp_avg", "exp_avg_sq"]
    if name == "rmsprop":
        return ["square_avg"] + ["momentum_buffer"] * (opts["momentum"] > 0) + ["grad_avg"] * opts["centered"]
    return ["state_sum"]


def take_step(name, opts, param, grad, states, step, backend):
    """One call of the public function; states is {argument name: array}."""
    extra = {} if name == "rmsprop" else {"step": step}
    assert FUNCTIONS[name](param, grad, **states, **opts, **extra, backend=backend) is None


def check_steps(name, opts, shape, backend, steps=3):
    """Run ``steps`` steps on float32 arrays with ``backend`` and on float64 copies with the
    reference, with fresh gradients each step, comparing the parameters and states after each."""
    rng = np.random.default_rng(int(np.prod(shape)) * 7 + len(shape))
    param = f32(rng, *shape)
    states = {k: np.zeros(shape, np.float32) for k in state_names(name, opts)}
    ref_param = param.astype(np.float64)
    ref_states = {k: v.astype(np.float64) for k, v in states.items()}
    for step in range(1, steps + 1):
        grad = f32(rng, *shape)
        take_step(name, opts, param, grad, states, step, backend)
        take_step(name, opts, ref_param, grad.astype(np.float64), ref_states, step, "numpy")
        for k, got in [("param", param), *states.items()]:
            want = ref_param if k == "param" else ref_states[k]
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{k} after step {step}")


def shapes(backend):
    """1-D and 2-D shapes: the public functions flatten either to the same buffer."""
    return st.lists(sizes(backend), min_size=1, max_size=2).map(tuple)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "opts"), CASES, ids=CASE_IDS)
def test_backend_matches_reference(backend, name, opts, monkeypatch):
    if backend == "cuda":
        from kernels.numba_cuda import _launch

        monkeypatch.setattr(_launch, "THREADS", 8)  # several blocks even at simulator sizes

    @settings(max_examples=3 if backend == "cuda" else 8)
    @given(shape=shapes(backend))
    def run(shape):
        check_steps(name, opts, shape, backend)

    run()


@pytest.mark.parametrize("backend", [b for b in FAST_BACKENDS if b != "numpy"])
@pytest.mark.parametrize(("name", "opts"), CASES, ids=CASE_IDS)
def test_large_buffers_match_reference(backend, name, opts):
    # past the C threshold of 32768 elements, so the OpenMP loop runs threaded
    check_steps(name, opts, (100_003,), backend, steps=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flat_buffer_equals_separate_tensors(backend):
    """A model's parameters packed in one flat buffer step exactly like the separate tensors."""
    rng = np.random.default_rng(4)
    shapes_ = [(3, 4), (4,), (2, 3, 2)]
    n = sum(int(np.prod(s)) for s in shapes_)
    flat = [f32(rng, n), f32(rng, n), np.zeros(n, np.float32), np.zeros(n, np.float32)]
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes_])
    parts = [[a[o:e].reshape(s).copy() for a in flat] for o, e, s in zip(offsets, offsets[1:], shapes_)]
    for step in (1, 2):
        kernels.adamw_step(*flat, step=step, backend=backend)
        for p in parts:
            kernels.adamw_step(*p, step=step, backend=backend)
    for i, a in enumerate(flat):
        np.testing.assert_allclose(a, np.concatenate([p[i].ravel() for p in parts]), rtol=1e-6, atol=0)


@pytest.mark.skipif("cuda" not in BACKENDS, reason="no CUDA backend")
def test_cuda_device_arrays_are_updated_in_place():
    from numba import cuda

    rng = np.random.default_rng(5)
    param, grad = f32(rng, 3, 5), f32(rng, 3, 5)
    buf = np.zeros_like(param)
    d_param, d_grad, d_buf = (cuda.to_device(a) for a in (param, grad, buf))
    kernels.sgd_step(d_param, d_grad, d_buf, lr=0.1, step=1, momentum=0.9)  # device arrays pick cuda
    kernels.sgd_step(param, grad, buf, lr=0.1, step=1, momentum=0.9, backend="numpy")
    np.testing.assert_allclose(host(d_param), param, rtol=1e-6)
    np.testing.assert_allclose(host(d_buf), buf, rtol=1e-6)
    np.testing.assert_array_equal(host(d_grad), grad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "opts"), CASES, ids=CASE_IDS)
def test_reference_equals_torch(name, opts, dtype):
    torch = torch_or_skip()
    rng = np.random.default_rng(6)
    shape = (5, 7)
    param = rng.standard_normal(shape).astype(dtype)
    states = {k: np.zeros(shape, dtype) for k in state_names(name, opts)}
    tp = torch.tensor(param.copy(), requires_grad=True)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[name]
    opt = cls([tp], **opts, foreach=False)
    rtol, atol = (1e-7, 1e-10) if dtype == np.float64 else (1e-5, 1e-6)
    for step in range(1, 11):
        grad = rng.standard_normal(shape).astype(dtype)
        tp.grad = torch.tensor(grad)
        opt.step()
        take_step(name, opts, param, grad, states, step, "numpy")
        np.testing.assert_allclose(param, tp.detach().numpy(), rtol=rtol, atol=atol, err_msg=f"step {step}")
        for k, v in states.items():
            np.testing.assert_allclose(v, opt.state[tp][TORCH_STATE[k]].numpy(), rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_calls_raise_clear_errors(backend):
    p, g = np.ones((3, 4), np.float32), np.ones((3, 4), np.float32)
    z = np.zeros((3, 4), np.float32)
    before = p.copy()
    bad = [
        (ValueError, r"grad must have shape \(3, 4\)", lambda: kernels.adam_step(p, g[:2], z, z.copy(), step=1)),
        (ValueError, "exp_avg_sq must have shape", lambda: kernels.adam_step(p, g, z, z.ravel(), step=1)),
        (TypeError, "dtype", lambda: kernels.adagrad_step(p, g, z.astype(np.float64), step=1)),
        (TypeError, "dtype", lambda: kernels.adagrad_step(p.astype(np.int32), g, z, step=1)),
        (TypeError, "numpy.ndarray", lambda: kernels.adagrad_step(p, g.tolist(), z, step=1)),
        (ValueError, "C-contiguous", lambda: kernels.adagrad_step(p.T, g.T, z.T, step=1)),
        (ValueError, "empty", lambda: kernels.adagrad_step(p[:0], g[:0], z[:0], step=1)),
        (ValueError, "momentum_buffer is required", lambda: kernels.sgd_step(p, g, lr=0.1, step=1, momentum=0.9)),
        (ValueError, "momentum_buffer must be None", lambda: kernels.sgd_step(p, g, z, lr=0.1, step=1)),
        (ValueError, "nesterov", lambda: kernels.sgd_step(p, g, z, lr=0.1, step=1, momentum=0.9, dampening=0.1,
                                                            nesterov=True)),
        (ValueError, "nesterov", lambda: kernels.sgd_step(p, g, lr=0.1, step=1, nesterov=True)),
        (ValueError, "lr", lambda: kernels.sgd_step(p, g, lr=-0.1, step=1)),
        (ValueError, "momentum", lambda: kernels.sgd_step(p, g, z, lr=0.1, step=1, momentum=-0.5)),
        (ValueError, "weight_decay", lambda: kernels.adamw_step(p, g, z, z.copy(), step=1, weight_decay=-1)),
        (ValueError, r"betas\[1\]", lambda: kernels.adam_step(p, g, z, z.copy(), step=1, betas=(0.9, 1.0))),
        (ValueError, r"betas\[0\]", lambda: kernels.adam_step(p, g, z, z.copy(), step=1, betas=(-0.1, 0.9))),
        (ValueError, "betas must be a pair", lambda: kernels.adam_step(p, g, z, z.copy(), step=1, betas=(0.9,))),
        (ValueError, "eps", lambda: kernels.adam_step(p, g, z, z.copy(), step=1, eps=-1e-8)),
        (ValueError, "step", lambda: kernels.adam_step(p, g, z, z.copy(), step=0)),
        (TypeError, "step", lambda: kernels.adam_step(p, g, z, z.copy(), step=1.5)),
        (TypeError, "lr", lambda: kernels.adagrad_step(p, g, z, step=1, lr="0.1")),
        (ValueError, "lr_decay", lambda: kernels.adagrad_step(p, g, z, step=1, lr_decay=-0.1)),
        (ValueError, "alpha", lambda: kernels.rmsprop_step(p, g, z, alpha=-0.5)),
        (ValueError, "grad_avg is required", lambda: kernels.rmsprop_step(p, g, z, centered=True)),
        (ValueError, "momentum_buffer is required", lambda: kernels.rmsprop_step(p, g, z, momentum=0.9)),
        (ValueError, "grad_avg must be None", lambda: kernels.rmsprop_step(p, g, z, grad_avg=z.copy())),
    ]
    if backend != "numpy":
        bad.append((TypeError, "float32", lambda: kernels.adagrad_step(*(a.astype(np.float64) for a in (p, g, z)),
                                                                        step=1)))
    for exc, match, call in bad:
        with kernels.use_backend(backend), pytest.raises(exc, match=match):
            call()
    np.testing.assert_array_equal(p, before)  # nothing was updated by a refused call
    np.testing.assert_array_equal(z, 0)


def test_unknown_backend_is_refused():
    x = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="unknown backend"):
        kernels.adagrad_step(x, x, x.copy(), step=1, backend="fortran")
