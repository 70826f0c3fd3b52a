"""Dropout: masks identical on every backend, inverted scaling, statistics, gradient, bad calls."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from tests.support import BACKENDS, f32, host, sizes, torch_or_skip


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=10)
@given(data=st.data(), p=st.sampled_from([0.0, 0.1, 0.2, 0.5, 0.9, 1.0]), seed=st.integers(0, 2**64 - 1))
def test_every_backend_gives_the_reference_mask(backend, data, p, seed):
    shape = (data.draw(sizes(backend)), data.draw(sizes(backend)))
    x = f32(np.random.default_rng(seed % 1000), *shape)
    y_ref, m_ref = kernels.dropout(x, p, seed=seed, backend="numpy")
    y, m = kernels.dropout(x, p, seed=seed, backend=backend)
    if p == 0:
        assert m is None and y is x
        return
    np.testing.assert_array_equal(host(m), m_ref)
    np.testing.assert_array_equal(host(y), y_ref)
    g = f32(np.random.default_rng(1), *shape)
    np.testing.assert_array_equal(
        host(kernels.dropout_backward(g, m_ref, p, backend=backend)),
        kernels.dropout_backward(g, m_ref, p, backend="numpy"),
    )


def test_reference_matches_torch_semantics():
    torch = torch_or_skip()
    x = np.ones(200_000, np.float32)
    for p in (0.2, 0.5):
        y, mask = kernels.dropout(x, p, seed=7, backend="numpy")
        t = torch.nn.functional.dropout(torch.from_numpy(x), p).numpy()
        # Kept elements carry the same inverted scale as PyTorch's, dropped ones are zero.
        np.testing.assert_allclose(np.unique(y), np.unique(t), rtol=1e-7)
        # Keep rate within 5 standard deviations of 1 - p.
        sd = np.sqrt(p * (1 - p) / x.size)
        assert abs(mask.mean() - (1 - p)) < 5 * sd
    y, mask = kernels.dropout(x, 1.0, seed=1, backend="numpy")
    assert not y.any() and not mask.any()


def test_masks_differ_between_seeds_and_are_uncorrelated_across_positions():
    x = np.ones(100_000, np.float32)
    _, a = kernels.dropout(x, 0.5, seed=1, backend="numpy")
    _, b = kernels.dropout(x, 0.5, seed=2, backend="numpy")
    assert 0.45 < (a != b).mean() < 0.55
    corr = np.corrcoef(a[:-1].astype(float), a[1:].astype(float))[0, 1]
    assert abs(corr) < 0.02


def test_backward_is_the_masked_scale():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5))
    y, mask = kernels.dropout(x, 0.3, seed=3, backend="numpy")
    g = rng.standard_normal((4, 5))
    # y is linear in x with slope mask / (1 - p): the gradient is exact, no finite differences needed.
    np.testing.assert_allclose(kernels.dropout_backward(g, mask, 0.3, backend="numpy"), g * mask / 0.7, rtol=1e-12)
    np.testing.assert_allclose(y, x * mask / 0.7, rtol=1e-12)


def test_eval_mode_is_identity():
    x = np.ones((3, 3), np.float32)
    y, mask = kernels.dropout(x, 0.5, training=False, seed=0)
    assert y is x and mask is None
    assert kernels.dropout_backward(x, None, 0.5) is x


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_calls_raise(backend):
    x = np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match="p must lie"):
        kernels.dropout(x, 1.5, seed=0, backend=backend)
    with pytest.raises(ValueError, match="seed"):
        kernels.dropout(x, 0.5, seed=-1, backend=backend)
    with pytest.raises(TypeError, match="seed"):
        kernels.dropout(x, 0.5, seed=0.5, backend=backend)
    with pytest.raises(TypeError, match="mask"):
        kernels.dropout_backward(x, np.ones((3, 3), np.float32), 0.5, backend=backend)
    with pytest.raises(ValueError, match="mask"):
        kernels.dropout_backward(x, np.ones((3, 4), np.uint8), 0.5, backend=backend)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.dropout(np.ones((3, 6), np.float32)[:, ::2], 0.5, seed=0, backend=backend)
