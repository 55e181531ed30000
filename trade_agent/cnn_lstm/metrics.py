"""Prediction metrics for direction classifiers and return regressors.

Names follow the metric-prefix convention of the training logs (``val/accuracy``,
``test/ic``); the functions here return them unprefixed.
"""

from __future__ import annotations

import itertools

import numpy as np

from trade_agent.type_aliases import FloatArray, IntArray

N_CLASSES = 3


def _rankdata(values: FloatArray) -> FloatArray:
    """Average ranks (ties share their mean rank), as Spearman's rho needs."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1], True])
    for start, stop in itertools.pairwise(boundaries):
        ranks[order[start:stop]] = (start + stop - 1) / 2.0
    return ranks


def pearson(a: FloatArray, b: FloatArray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def spearman(a: FloatArray, b: FloatArray) -> float:
    """Spearman rank correlation (the information coefficient when a=prediction, b=outcome)."""
    return pearson(_rankdata(a), _rankdata(b)) if len(a) > 1 else 0.0


def prediction_metrics(
    direction_true: IntArray, direction_pred: IntArray, return_true: FloatArray, return_pred: FloatArray
) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 (3 classes), R², IC and directional accuracy.

    Args:
        direction_true / direction_pred: class ids 0 (down), 1 (flat), 2 (up).
        return_true / return_pred: realised and predicted forward log returns.

    Balanced accuracy and macro F1 average over the classes present in ``direction_true``;
    directional accuracy compares signs where the realised return is non-zero.
    """
    direction_true = np.asarray(direction_true, dtype=np.int64)
    direction_pred = np.asarray(direction_pred, dtype=np.int64)
    return_true = np.asarray(return_true, dtype=np.float64)
    return_pred = np.asarray(return_pred, dtype=np.float64)
    confusion = np.zeros((N_CLASSES, N_CLASSES))
    np.add.at(confusion, (direction_true, direction_pred), 1)
    support, predicted, correct = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    present = support > 0
    recall = np.divide(correct, support, out=np.zeros(N_CLASSES), where=present)
    precision = np.divide(correct, predicted, out=np.zeros(N_CLASSES), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(N_CLASSES), where=precision + recall > 0)
    residual = ((return_true - return_pred) ** 2).sum()
    total = ((return_true - return_true.mean()) ** 2).sum()
    moved = return_true != 0
    return {
        "accuracy": float(correct.sum() / max(len(direction_true), 1)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "r2": float(1.0 - residual / total) if total > 0 else 0.0,
        "ic": spearman(return_pred, return_true),
        "directional_accuracy": float(np.mean(np.sign(return_pred[moved]) == np.sign(return_true[moved])))
        if moved.any()
        else 0.0,
    }
