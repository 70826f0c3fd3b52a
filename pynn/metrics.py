"""Classification metrics: accuracy, confusion matrix, per-class precision/recall/F1, a text report.

Definitions follow scikit-learn's ``metrics`` module: confusion-matrix rows are true classes and
columns predicted ones; a ratio whose denominator is zero (a class never predicted, or absent
from the true labels) counts as 0; the macro average is the unweighted mean over classes.
"""
from __future__ import annotations

import numpy as np


def _labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Integer label vectors of one length; scores (N, C) in ``y_pred`` become their argmax."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {y_true.shape} and {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("y_true and y_pred are empty")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError(f"{name} must be a 1-D integer label array, got {y.dtype} {y.shape}")
        if y.min() < 0:
            raise ValueError(f"{name} has a negative label {y.min()}")
    return y_true, y_pred


def accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose predicted label equals the true one.

    y_true: (N,) integer labels; y_pred: (N,) integer labels or (N, C) scores (argmax taken).
    Raises ValueError for mismatched lengths, empty or non-integer labels.
    """
    y_true, y_pred = _labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """int64 (C, C) counts: entry [i, j] is the number of samples of true class i predicted as j.

    C is ``num_classes``, or one more than the largest label seen. Arguments as for ``accuracy``.
    Raises ValueError also when a label is >= ``num_classes``.
    """
    y_true, y_pred = _labels(y_true, y_pred)
    seen = int(max(y_true.max(), y_pred.max())) + 1
    c = seen if num_classes is None else num_classes
    if seen > c:
        raise ValueError(f"labels must lie in [0, {c}), got label {seen - 1}")
    return np.bincount(y_true.astype(np.int64) * c + y_pred, minlength=c * c).reshape(c, c)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, np.float64), where=den > 0)


def precision_recall_f1(y_true, y_pred, num_classes: int | None = None) -> dict:
    """Per-class precision, recall, F1 and support, and their macro averages.

    Returns ``{"precision", "recall", "f1", "support"}`` (arrays of length C) plus ``"macro"``, a
    dict of the unweighted means of precision, recall and F1 over all C classes. Zero
    denominators give 0, as scikit-learn's ``zero_division=0``. Arguments as for
    ``confusion_matrix``.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    precision = _ratio(tp, cm.sum(axis=0))
    recall = _ratio(tp, cm.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": cm.sum(axis=1),
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
    }


def classification_report(y_true, y_pred, class_names=None, digits: int = 4) -> str:
    """A table of per-class precision, recall, F1 and support, then accuracy and the macro row.

    ``class_names`` labels the rows (default: the class indices) and fixes the number of classes.
    """
    num_classes = None if class_names is None else len(class_names)
    scores = precision_recall_f1(y_true, y_pred, num_classes)
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(len(scores["f1"]))]
    width = max(12, *(len(n) for n in names))
    col = digits + 6
    head = f"{'':>{width}}" + "".join(f"{h:>{col}}" for h in ("precision", "recall", "f1", "support"))
    rows = [head, ""]
    for i, name in enumerate(names):
        vals = "".join(f"{scores[k][i]:>{col}.{digits}f}" for k in ("precision", "recall", "f1"))
        rows.append(f"{name:>{width}}{vals}{scores['support'][i]:>{col}d}")
    n = int(scores["support"].sum())
    macro = scores["macro"]
    rows += [
        "",
        f"{'accuracy':>{width}}{'':>{2 * col}}{accuracy(y_true, y_pred):>{col}.{digits}f}{n:>{col}d}",
        f"{'macro avg':>{width}}" + "".join(f"{macro[k]:>{col}.{digits}f}" for k in ("precision", "recall", "f1"))
        + f"{n:>{col}d}",
    ]
    return "\n".join(rows)
