"""Metrics against hand-computed cases, the zero-division convention, and scikit-learn when present."""
import warnings

import numpy as np
import pytest

from pynn.metrics import accuracy, classification_report, confusion_matrix, precision_recall_f1

# Hand-worked case: 7 samples, 3 classes.
Y_TRUE = [0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0, 0]
CM = [[1, 1, 0], [0, 2, 0], [2, 0, 1]]
PRECISION = [1 / 3, 2 / 3, 1.0]  # column sums 3, 3, 1
RECALL = [1 / 2, 1.0, 1 / 3]  # row sums 2, 2, 3
F1 = [0.4, 0.8, 0.5]  # 2pr / (p + r)


def test_hand_computed_case():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 7)
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED), CM)
    s = precision_recall_f1(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(s["precision"], PRECISION, rtol=1e-12)
    np.testing.assert_allclose(s["recall"], RECALL, rtol=1e-12)
    np.testing.assert_allclose(s["f1"], F1, rtol=1e-12)
    np.testing.assert_array_equal(s["support"], [2, 2, 3])
    assert s["macro"] == pytest.approx({"precision": 2 / 3, "recall": 11 / 18, "f1": 1.7 / 3}, rel=1e-12)


def test_scores_are_reduced_by_argmax():
    scores = np.eye(3)[Y_PRED] * 2.0 - 0.5
    assert accuracy(Y_TRUE, scores) == pytest.approx(4 / 7)
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, scores), CM)


def test_zero_division_gives_zero_without_warnings():
    # Class 1 is never predicted, class 3 never occurs and is never predicted.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = precision_recall_f1([0, 1, 1, 2], [0, 0, 2, 2], num_classes=4)
    np.testing.assert_allclose(s["precision"], [0.5, 0.0, 0.5, 0.0])
    np.testing.assert_allclose(s["recall"], [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(s["f1"], [2 / 3, 0.0, 2 / 3, 0.0])
    assert s["macro"]["f1"] == pytest.approx(1 / 3)


def test_confusion_matrix_size_and_invariants():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    cm = confusion_matrix(y, p, num_classes=7)
    assert cm.shape == (7, 7) and cm.dtype == np.int64 and cm.sum() == 200
    assert np.trace(cm) / 200 == pytest.approx(accuracy(y, p))
    np.testing.assert_array_equal(cm.sum(axis=1)[:5], np.bincount(y, minlength=5))


@pytest.mark.parametrize("y_true,y_pred,num_classes,message", [
    ([0, 1], [0], None, "same length"),
    ([], [], None, "empty"),
    ([0.0, 1.0], [0, 1], None, "integer label"),
    ([0, -1], [0, 1], None, "negative label"),
    ([0, 3], [0, 1], 3, r"labels must lie in \[0, 3\)"),
])
def test_bad_labels_raise(y_true, y_pred, num_classes, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(np.array(y_true), np.array(y_pred), num_classes)


def test_report_lists_every_class_and_the_averages():
    text = classification_report(Y_TRUE, Y_PRED, ["cat", "dog", "bird", "fish"], digits=3)
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1", "support"]
    assert lines[2].split() == ["cat", "0.333", "0.500", "0.400", "2"]
    assert lines[5].split() == ["fish", "0.000", "0.000", "0.000", "0"]
    assert lines[-2].split() == ["accuracy", "0.571", "7"]
    assert lines[-1].split() == ["macro", "avg", f"{0.5:.3f}", f"{11 / 24:.3f}", f"{1.7 / 4:.3f}", "7"]


def test_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 6, 500), rng.integers(0, 6, 500)
    s = precision_recall_f1(y, p, num_classes=6)
    want = sk.precision_recall_fscore_support(y, p, labels=range(6), zero_division=0)
    for ours, theirs in zip((s["precision"], s["recall"], s["f1"], s["support"]), want):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    np.testing.assert_array_equal(confusion_matrix(y, p, 6), sk.confusion_matrix(y, p, labels=range(6)))
