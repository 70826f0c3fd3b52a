"""XOR, the textbook case for hidden layers: a 2-2-1 MLP learns it, while a single-layer
perceptron trained with Rosenblatt's rule cannot (Minsky & Papert, *Perceptrons*, 1969)
but does learn AND, which is linearly separable."""
import numpy as np
import pytest

import kernels
import pynn
from tests.support import FAST_BACKENDS

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
XOR = np.array([0, 1, 1, 0], np.float32)
AND = np.array([0, 0, 0, 1], np.float32)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_mlp_learns_xor(backend):
    # A 2-2-1 net has local minima where one point stays misclassified (with this setup, seeds
    # 0, 2 and 3 end there): the seed is fixed to one that trains, on every backend alike.
    pynn.manual_seed(1)
    model = pynn.Sequential(pynn.Linear(2, 2), pynn.Tanh(), pynn.Linear(2, 1), pynn.Sigmoid())
    optimizer = pynn.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loss_fn = pynn.BCELoss()
    target = XOR[:, None]
    with kernels.use_backend(backend):
        for _ in range(300):
            optimizer.zero_grad()
            loss = loss_fn(model(X), target)
            model.backward(loss_fn.backward())
            optimizer.step()
        predictions = model(X)[:, 0] > 0.5
    assert np.array_equal(predictions, XOR == 1)
    assert loss < 0.01


def _perceptron_epochs(targets, epochs, lr=1.0):
    """Rosenblatt's rule (1958) on a pynn.Linear(2, 1) with a step output: after each sample,
    ``w += lr * (t - y) * x`` and ``b += lr * (t - y)``. Yields the predictions after each epoch."""
    pynn.manual_seed(0)
    unit = pynn.Linear(2, 1)
    for _ in range(epochs):
        for x, t in zip(X, targets):
            error = t - float(unit(x[None])[0, 0] > 0)
            unit.weight.data[0] += lr * error * x
            unit.bias.data[0] += lr * error
        yield (unit(X)[:, 0] > 0).astype(np.float32)


def test_perceptron_learns_and():
    # Linearly separable: the perceptron convergence theorem (Novikoff 1962) bounds the updates.
    history = list(_perceptron_epochs(AND, 50))
    assert np.array_equal(history[-1], AND)


def test_perceptron_never_learns_xor():
    # No line separates XOR's classes, so at most 3 of the 4 points are ever right.
    for epoch, predictions in enumerate(_perceptron_epochs(XOR, 200)):
        assert (predictions == XOR).sum() <= 3, epoch
