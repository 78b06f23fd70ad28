"""Threshold search on labelled scores: F1 of the harmful class, and the threshold that maximises it.

`flexguard calibrate` and `flexguard eval` use these; the runtime policy (`flexguard_plugins.policy`) only
reads the thresholds they produce.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def f1_at(scores: Sequence[float], labels: Sequence[int], threshold: float) -> float:
    """F1 of the harmful class when flagging `score ≥ threshold`, in [0, 1]."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    predicted = s >= threshold
    tp = float(np.sum(predicted & y))
    denominator = float(np.sum(predicted) + np.sum(y))
    return 0.0 if denominator == 0 else 2 * tp / denominator


def _candidates(scores: np.ndarray) -> np.ndarray:
    """Thresholds worth trying: midpoints between adjacent distinct scores, plus the ends."""
    distinct = np.unique(scores)
    mids = (distinct[1:] + distinct[:-1]) / 2 if len(distinct) > 1 else distinct
    return np.clip(np.concatenate([[0.0], mids, distinct, [100.0]]), 0, 100)


def f1_curve(scores: Sequence[float], labels: Sequence[int],
             grid: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, F1) for plotting and for picking the F1-maximising threshold."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    thresholds = np.asarray(grid if grid is not None else np.unique(_candidates(s)), dtype=float)
    order = np.argsort(-s)
    s_sorted, y_sorted = s[order], y[order]
    cum_tp = np.concatenate([[0], np.cumsum(y_sorted)])
    # number flagged at threshold t = count of s >= t
    flagged = len(s) - np.searchsorted(s_sorted[::-1], thresholds, side="left")
    tp = cum_tp[flagged]
    denominator = flagged + y.sum()
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return thresholds, f1


def calibrate_threshold(scores: Sequence[float], labels: Sequence[int], *,
                        max_false_positive_rate: float | None = None) -> tuple[float, float]:
    """(threshold, F1) maximising F1, or the lowest threshold whose false-positive rate ≤ the target.

    Ties go to the threshold nearest the middle of the tied run, so calibration is stable.
    """
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    if len(s) == 0 or not y.any():
        raise ValueError("calibration needs labelled data with at least one harmful item")
    thresholds, f1 = f1_curve(s, y)
    if max_false_positive_rate is not None:
        negatives = s[~y]
        fpr = np.array([(negatives >= t).mean() if len(negatives) else 0.0 for t in thresholds])
        allowed = np.flatnonzero(fpr <= max_false_positive_rate)
        index = int(allowed[0]) if len(allowed) else len(thresholds) - 1
        return float(thresholds[index]), float(f1[index])
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    index = int(best[len(best) // 2])
    return float(thresholds[index]), float(f1[index])
