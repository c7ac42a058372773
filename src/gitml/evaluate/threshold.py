"""Choosing the decision threshold on the validation split (threshold.json is read by gitml.bundle)."""

from __future__ import annotations

import numpy as np

from gitml.evaluate import Floats

RULES = ("max_f1", "max_accuracy", "youden", "fixed")


def choose_threshold(scores: Floats, y: Floats, rule: str, value: float) -> float:
    """The threshold (predict positive when score >= threshold) that the rule picks on (scores, y).

    Every distinct score is a candidate; ties go to the highest threshold, so the choice is stable.
    """
    if rule == "fixed":
        return float(value)
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {', '.join(RULES)}")
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order].astype(np.float64)
    sorted_y = y[order].astype(np.float64)
    # Predicting positive the top k rows, for k at each last position of a run of equal scores.
    last = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    tp = np.cumsum(sorted_y)[last]
    fp = (last + 1) - tp
    positives, negatives = sorted_y.sum(), len(sorted_y) - sorted_y.sum()
    fn, tn = positives - tp, negatives - fp
    if rule == "max_f1":
        objective = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    elif rule == "max_accuracy":
        objective = (tp + tn) / len(sorted_y)
    else:  # youden
        tpr = tp / positives if positives else np.zeros_like(tp)
        fpr = fp / negatives if negatives else np.zeros_like(fp)
        objective = tpr - fpr
    best = int(np.argmax(objective))
    return float(sorted_scores[last[best]])
