"""Bootstrap intervals: with every row drawn once they are the torchmetrics estimates; resampled, they cover them."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from gitml.evaluate.bootstrap import (
    BootstrapConfig,
    intervals,
    resample_counts,
    summary_groups,
    weighted_gaps,
    weighted_headline,
)
from gitml.evaluate.measures import FAIRNESS, HEADLINE
from gitml.evaluate.metrics import fairness_summary, group_codes, group_metrics, headline
from tests.evaluate.test_metrics import sample


def test_counts_of_one_give_the_torchmetrics_estimates() -> None:
    scores, y, _ = sample(n=4000, seed=3)
    scores = np.round(scores, 2)  # many tied scores: AUROC and AP must count ties as torchmetrics does
    threshold = 0.47
    expected = headline(scores, y, threshold, bins=12)
    got = weighted_headline(scores, y, threshold, 12, np.ones((1, len(y))))
    # Both compute exactly the measures defined in gitml.evaluate.measures; the base rate is the
    # data's, so it has no interval.
    assert set(expected) - {"rows"} == {m.name for m in HEADLINE}
    assert set(got) == set(expected) - {"rows", "positive_rate"}
    for name, values in got.items():
        assert values[0] == pytest.approx(expected[name], abs=2e-6), name


def test_counts_of_one_give_the_fairness_summary() -> None:
    scores, y, groups = sample(n=5000, seed=4)
    threshold = 0.5
    per_group = group_metrics(scores, y, groups, threshold)
    summary = fairness_summary(scores, y, groups, threshold, per_group, min_group_size=100, min_group_cases=40)
    names, codes = group_codes(groups)
    got = weighted_gaps(y, scores >= threshold, codes, *summary_groups(names, summary), np.ones((1, len(y))))
    assert set(got) == {m.name for m in FAIRNESS} == set(summary) - {k for k in summary if k.startswith("groups_")}
    for name, values in got.items():
        assert values[0] == pytest.approx(summary[name], abs=2e-6), name


def test_a_group_with_too_few_positives_leaves_the_tpr_gap_but_not_the_selection_gap() -> None:
    scores, y, groups = sample(n=3000, seed=5)
    y = y.copy()
    y[(groups == "c") & (np.arange(len(y)) % 5 != 0)] = 0  # group c keeps about a fifth of its positives
    per_group = group_metrics(scores, y, groups, 0.5)
    positives_c = round(per_group["c"]["base_rate"] * per_group["c"]["size"])
    summary = fairness_summary(scores, y, groups, 0.5, per_group, min_group_size=50, min_group_cases=positives_c + 1)
    assert "c" in summary["groups_compared"]
    assert "c" not in summary["groups_compared_tpr"]
    assert "c" in summary["groups_compared_fpr"]  # plenty of negatives
    tprs = [per_group[g]["tpr"] for g in ("a", "b")]
    assert summary["equal_opportunity_difference"] == pytest.approx(max(tprs) - min(tprs), abs=1e-6)


def test_intervals_cover_the_estimate_and_narrow_with_more_rows() -> None:
    widths = []
    for n in (1000, 8000):
        scores, y, _ = sample(n=n, seed=6)
        estimate = headline(scores, y, 0.5, bins=10)
        out = intervals(
            partial(weighted_headline, scores, y, 0.5, 10), n, BootstrapConfig(resamples=300, confidence=0.95, seed=1)
        )
        for name in ("accuracy", "auroc", "f1", "brier"):
            low, high = out[name]  # type: ignore[misc]
            assert low <= estimate[name] <= high, name
        widths.append(out["auroc"][1] - out["auroc"][0])  # type: ignore[index]
    assert widths[1] < widths[0] / 2  # about 1/sqrt(8) as wide


def test_the_same_seed_gives_the_same_intervals() -> None:
    scores, y, _ = sample(n=1500, seed=7)
    compute = partial(weighted_headline, scores, y, 0.5, 10)
    config = BootstrapConfig(resamples=200, confidence=0.95, seed=9, chunk=64)  # chunks of unequal size
    assert intervals(compute, len(y), config) == intervals(compute, len(y), config)


def test_resamples_draw_every_row_count_times() -> None:
    counts = resample_counts(50, 7, np.random.default_rng(0))
    assert counts.shape == (7, 50)
    assert (counts.sum(axis=1) == 50).all()
