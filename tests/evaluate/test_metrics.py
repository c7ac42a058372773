"""Metrics and thresholds, checked against scikit-learn and against counting by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from gitml.evaluate.metrics import MISSING_GROUP, fairness_summary, group_metrics, headline
from gitml.evaluate.threshold import choose_threshold

Array = np.ndarray[Any, Any]


def sample(n: int = 3000, seed: int = 0) -> tuple[Array, Array, Array]:
    """Scores that carry signal, labels, and a group column whose groups differ in base rate."""
    rng = np.random.default_rng(seed)
    groups = rng.choice(np.array(["a", "b", "c"], dtype=object), size=n, p=[0.6, 0.35, 0.05])
    base = np.where(groups == "a", 0.35, np.where(groups == "b", 0.15, 0.25))
    y = (rng.random(n) < base).astype(np.float32)
    scores = np.clip(0.25 * y + 0.6 * rng.random(n) + 0.1 * (groups == "a"), 0, 1).astype(np.float32)
    return scores, y, groups


def test_headline_metrics_agree_with_scikit_learn() -> None:
    scores, y, _ = sample()
    threshold = 0.5
    predicted = (scores >= threshold).astype(int)
    out = headline(scores, y, threshold, bins=10)
    expected = {
        "accuracy": sk.accuracy_score(y, predicted),
        "balanced_accuracy": sk.balanced_accuracy_score(y, predicted),
        "precision": sk.precision_score(y, predicted),
        "recall": sk.recall_score(y, predicted),
        "f1": sk.f1_score(y, predicted),
        "auroc": sk.roc_auc_score(y, scores),
        "average_precision": sk.average_precision_score(y, scores),
        "brier": sk.brier_score_loss(y, scores),
        "selection_rate": predicted.mean(),
        "positive_rate": y.mean(),
    }
    for name, value in expected.items():
        assert out[name] == pytest.approx(value, abs=2e-6), name
    assert out["rows"] == len(y)


def test_expected_calibration_error_is_the_binned_gap() -> None:
    scores, y, _ = sample()
    bins = np.clip(np.ceil(scores * 10).astype(int) - 1, 0, 9)  # torchmetrics' right-closed bins
    ece = sum(abs(scores[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    assert headline(scores, y, 0.5, bins=10)["ece"] == pytest.approx(ece, abs=1e-5)


def test_per_group_rates_are_counts_within_each_group() -> None:
    scores, y, groups = sample()
    threshold = 0.45
    out = group_metrics(scores, y, groups, threshold)
    frame = pd.DataFrame({"g": groups, "y": y, "p": scores >= threshold})
    for name, part in frame.groupby("g"):
        m = out[str(name)]
        assert m["size"] == len(part)
        assert m["base_rate"] == pytest.approx(part["y"].mean(), abs=1e-6)
        assert m["selection_rate"] == pytest.approx(part["p"].mean(), abs=1e-6)
        assert m["tpr"] == pytest.approx(part.loc[part["y"] == 1, "p"].mean(), abs=1e-6)
        assert m["fpr"] == pytest.approx(part.loc[part["y"] == 0, "p"].mean(), abs=1e-6)
        assert m["precision"] == pytest.approx(part.loc[part["p"], "y"].mean(), abs=1e-6)
        assert m["accuracy"] == pytest.approx((part["p"] == (part["y"] == 1)).mean(), abs=1e-6)


def test_fairness_gaps_compare_only_groups_large_enough() -> None:
    scores, y, groups = sample()
    per_group = group_metrics(scores, y, groups, 0.5)
    out = fairness_summary(scores, y, groups, 0.5, per_group, min_group_size=500)
    assert out["groups_compared"] == ["a", "b"]
    assert out["groups_too_small"] == ["c"]  # ~150 rows
    a, b = per_group["a"], per_group["b"]
    assert out["demographic_parity_difference"] == pytest.approx(abs(a["selection_rate"] - b["selection_rate"]), 1e-5)
    low, high = sorted([a["selection_rate"], b["selection_rate"]])
    assert out["demographic_parity_ratio"] == pytest.approx(low / high, abs=1e-5)
    assert out["equal_opportunity_difference"] == pytest.approx(abs(a["tpr"] - b["tpr"]), abs=1e-5)
    low, high = sorted([a["tpr"], b["tpr"]])
    assert out["equal_opportunity_ratio"] == pytest.approx(low / high, abs=1e-5)
    assert out["equalized_odds_difference"] == pytest.approx(
        max(abs(a["tpr"] - b["tpr"]), abs(a["fpr"] - b["fpr"])), abs=1e-5
    )
    alone = fairness_summary(scores, y, groups, 0.5, per_group, min_group_size=1500)
    assert alone["groups_compared"] == ["a"]
    assert alone["demographic_parity_ratio"] is None


def test_missing_protected_values_form_their_own_group() -> None:
    scores, y, groups = sample(200)
    groups[:10] = None
    out = group_metrics(scores, y, groups, 0.5)
    assert out[MISSING_GROUP]["size"] == 10


def brute_force(scores: Array, y: Array, rule: str) -> float:
    best, best_t = -np.inf, None
    for t in sorted(set(scores.tolist()), reverse=True):
        p = scores >= t
        tp, fp = (p & (y == 1)).sum(), (p & (y == 0)).sum()
        fn, tn = ((~p) & (y == 1)).sum(), ((~p) & (y == 0)).sum()
        value = {
            "max_f1": 2 * tp / (2 * tp + fp + fn),
            "max_accuracy": (tp + tn) / len(y),
            "youden": tp / (tp + fn) - fp / (fp + tn),
        }[rule]
        if value > best + 1e-12:
            best, best_t = value, t
    assert best_t is not None
    return float(best_t)


@pytest.mark.parametrize("rule", ["max_f1", "max_accuracy", "youden"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_rules_pick_the_best_threshold(rule: str, seed: int) -> None:
    scores, y, _ = sample(400, seed)
    scores = np.round(scores, 2)  # ties between rows
    assert choose_threshold(scores, y, rule, 0.5) == pytest.approx(brute_force(scores, y, rule))


def test_fixed_threshold_and_unknown_rule() -> None:
    scores, y, _ = sample(50)
    assert choose_threshold(scores, y, "fixed", 0.3) == 0.3
    with pytest.raises(ValueError, match="max_f1, max_accuracy, youden, fixed"):
        choose_threshold(scores, y, "max_joy", 0.5)
