"""Inference latency of the Fashion-MNIST MLP 784-256-128-10 (eval mode) at batch 1 and 64:
``model(x)`` in pynn on each CPU backend (one fused ``kernels.mlp`` call), the same three
layers in plain NumPy, and PyTorch CPU under ``torch.inference_mode``, side by side."""
import numpy as np
import pytest

import kernels
import pynn
from benchmarks.conftest import CPU_BACKENDS, record, torch

CONTENDERS = [f"pynn-{b}" for b in CPU_BACKENDS] + ["numpy-plain"] + (["torch"] if torch is not None else [])
FLOPS_PER_IMAGE = 2.0 * (784 * 256 + 256 * 128 + 128 * 10)


def _forward(contender, model, x):
    """A no-argument callable running one forward pass."""
    if contender == "torch":
        nn = torch.nn
        t = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 128),
                          nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10)).eval()
        t.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
        xt = torch.from_numpy(x)

        def run():
            with torch.inference_mode():
                return t(xt)

        return run
    if contender == "numpy-plain":
        w = [p.data for p in model.parameters()]
        wt = [w[0].T, w[2].T, w[4].T]  # what a careful NumPy user keeps: pre-transposed views
        xf = x.reshape(len(x), -1)
        return lambda: np.maximum(np.maximum(xf @ wt[0] + w[1], 0) @ wt[1] + w[3], 0) @ wt[2] + w[5]
    backend = contender.split("-", 1)[1]

    def run():
        with kernels.use_backend(backend):
            return model(x)

    return run


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("batch", [1, 64])
def test_mlp_inference(benchmark, batch, contender):
    pynn.manual_seed(0)
    model = pynn.models.mlp().eval()
    x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
    run = _forward(contender, model, x)
    with kernels.use_backend("numpy"):
        want = model(x)
    np.testing.assert_allclose(np.asarray(run()), want, rtol=1e-4, atol=1e-4)
    record(benchmark, f"MLP inference batch {batch}", flops=FLOPS_PER_IMAGE * batch)
    benchmark.pedantic(run, rounds=2000 if batch == 1 else 300, warmup_rounds=20)
