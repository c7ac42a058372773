"""Bootstrap confidence intervals of the test metrics and the fairness gaps, in NumPy.

Each resample draws the test rows with replacement; a resample is a row of counts (how often each
row was drawn), so every metric is a weighted sum and all resamples are computed at once. With
counts of one for every row the functions give the plain estimates, the same numbers torchmetrics
gives in metrics.py (a test holds them together).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gitml.evaluate import Floats

Matrix = npt.NDArray[np.float64]  # resamples x something


@dataclass(frozen=True)
class BootstrapConfig:
    """evaluate.bootstrap (conf/config.yaml), and how many resamples are computed at once."""

    resamples: int
    confidence: float
    seed: int
    chunk: int = 250  # resamples computed together (memory: chunk x rows x 8 bytes), not a setting


def _divide(a: Matrix, b: Matrix) -> Matrix:
    with np.errstate(divide="ignore", invalid="ignore"):
        out: Matrix = np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)
    return out


def weighted_headline(scores: Floats, y: Floats, threshold: float, bins: int, counts: Matrix) -> dict[str, Matrix]:
    """The headline metrics of metrics.headline (but rows) for each row of `counts`."""
    s = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(y).astype(bool)
    chosen = s >= np.float32(threshold)
    total = counts.sum(axis=1)
    tp = counts[:, positive & chosen].sum(axis=1)
    fp = counts[:, ~positive & chosen].sum(axis=1)
    fn = counts[:, positive & ~chosen].sum(axis=1)
    tn = counts[:, ~positive & ~chosen].sum(axis=1)
    precision, recall = _divide(tp, tp + fp), _divide(tp, tp + fn)
    out = {
        "accuracy": _divide(tp + tn, total),
        "precision": np.nan_to_num(precision),  # torchmetrics: 0 when nothing is chosen
        "recall": np.nan_to_num(recall),
        "f1": np.nan_to_num(_divide(2 * tp, 2 * tp + fp + fn)),
        "balanced_accuracy": (recall + _divide(tn, tn + fp)) / 2,
        "selection_rate": _divide(tp + fp, total),
        "brier": _divide(counts @ (s - positive) ** 2, total),
    }
    out |= _ranking(s, positive, counts)
    out["ece"] = _calibration_error(s, positive, bins, counts)
    return out


def _ranking(s: Floats, positive: npt.NDArray[np.bool_], counts: Matrix) -> dict[str, Matrix]:
    """AUROC (ties count half) and average precision (the step-wise sum, as torchmetrics computes it)."""
    order = np.argsort(-s, kind="stable")
    s_desc = s[order]
    starts = np.flatnonzero(np.r_[True, s_desc[1:] != s_desc[:-1]])  # one block per distinct score
    pos_w = np.add.reduceat(counts[:, order] * positive[order], starts, axis=1)
    neg_w = np.add.reduceat(counts[:, order] * ~positive[order], starts, axis=1)
    n_pos, n_neg = pos_w.sum(axis=1), neg_w.sum(axis=1)
    neg_below = n_neg[:, None] - np.cumsum(neg_w, axis=1)  # negatives scored lower than each block
    auroc = _divide((pos_w * (neg_below + 0.5 * neg_w)).sum(axis=1), n_pos * n_neg)
    tp, fp = np.cumsum(pos_w, axis=1), np.cumsum(neg_w, axis=1)
    precision = np.nan_to_num(_divide(tp, tp + fp))
    average_precision = _divide((pos_w * precision).sum(axis=1), n_pos)
    return {"auroc": auroc, "average_precision": average_precision}


def _calibration_error(s: Floats, positive: npt.NDArray[np.bool_], bins: int, counts: Matrix) -> Matrix:
    """Expected calibration error over equal-width bins (torchmetrics' binning, L1 norm)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, s.astype(np.float32), side="right") - 1, 0, bins - 1)
    gap = np.zeros((counts.shape[0], bins))
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap[:, b] = counts[:, inside] @ (s[inside] - positive[inside])
    return np.asarray(np.abs(gap).sum(axis=1) / counts.sum(axis=1))


def rate_of(counts: Matrix, hits: npt.NDArray[np.bool_], among: npt.NDArray[np.bool_]) -> Matrix:
    """Weighted share of `hits` among the rows `among`, per resample."""
    return _divide(counts[:, hits].sum(axis=1), counts[:, among].sum(axis=1))


def weighted_gaps(
    y: Floats,
    chosen: npt.NDArray[np.bool_],
    codes: npt.NDArray[np.int64],
    selection_groups: Sequence[int],
    tpr_groups: Sequence[int],
    fpr_groups: Sequence[int],
    counts: Matrix,
) -> dict[str, Matrix]:
    """The fairness summaries of metrics.fairness_summary over fixed groups, for each row of `counts`."""
    positive = np.asarray(y).astype(bool)

    def rate(group: int, among: npt.NDArray[np.bool_]) -> Matrix:
        inside = (codes == group) & among
        return rate_of(counts, inside & chosen, inside)

    everyone = np.ones_like(positive)
    nan = np.full(counts.shape[0], np.nan)

    def spread(rates: list[Matrix]) -> tuple[Matrix, Matrix]:
        if len(rates) < 2:
            return nan, nan
        stacked = np.vstack(rates)
        with warnings.catch_warnings():  # all-NaN columns (no case in any group): NaN is what is meant
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)
        return high - low, _divide(low, high)

    selection = [rate(g, everyone) for g in selection_groups]
    base = [
        _divide(counts[:, (codes == g) & positive].sum(axis=1), counts[:, codes == g].sum(axis=1))
        for g in selection_groups
    ]
    dp_diff, dp_ratio = spread(selection)
    eo_diff, eo_ratio = spread([rate(g, positive) for g in tpr_groups])
    fpr_diff, _ = spread([rate(g, ~positive) for g in fpr_groups])
    odds = np.maximum(eo_diff, fpr_diff)  # NaN where either is undefined, as in fairness_summary
    return {
        "demographic_parity_difference": dp_diff,
        "demographic_parity_ratio": dp_ratio,
        "base_rate_ratio": spread(base)[1],
        "equal_opportunity_difference": eo_diff,
        "equal_opportunity_ratio": eo_ratio,
        "equalized_odds_difference": odds,
    }


def resample_counts(rows: int, resamples: int, rng: np.random.Generator) -> Matrix:
    """How often each row is drawn in each resample (rows drawn with replacement, `rows` times)."""
    return rng.multinomial(rows, np.full(rows, 1.0 / rows), size=resamples).astype(np.float64)


def _interval(values: Matrix, confidence: float) -> list[float] | None:
    finite = values[np.isfinite(values)]
    if finite.size < 0.9 * values.size:  # undefined in too many resamples to say anything
        return None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [round(float(low), 6), round(float(high), 6)]


def intervals(
    compute: Callable[[Matrix], Mapping[str, Matrix]], rows: int, config: BootstrapConfig
) -> dict[str, list[float] | None]:
    """Percentile intervals of every quantity `compute(counts)` returns, over `config.resamples` resamples."""
    rng = np.random.default_rng(config.seed)
    parts: dict[str, list[Matrix]] = {}
    done = 0
    while done < config.resamples:
        size = min(config.chunk, config.resamples - done)
        for name, values in compute(resample_counts(rows, size, rng)).items():
            parts.setdefault(name, []).append(values)
        done += size
    return {name: _interval(np.concatenate(chunks), config.confidence) for name, chunks in parts.items()}


def summary_groups(names: Sequence[str], summary: Mapping[str, Any]) -> tuple[list[int], list[int], list[int]]:
    """Indices (into `names`) of the groups a fairness summary compared: for selection rates, TPR, FPR."""
    index = {name: i for i, name in enumerate(names)}

    def indices(key: str) -> list[int]:
        return [index[g] for g in summary[key]]

    return indices("groups_compared"), indices("groups_compared_tpr"), indices("groups_compared_fpr")
