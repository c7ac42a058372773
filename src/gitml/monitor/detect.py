"""The drift check's statistics: one `Finding` per test, each an effect size held to a limit AND a p-value.

Every test alarms only when two things hold at once:
  significant   its p-value is below the check's family-wise false-alarm rate divided by the number
                of tests (Bonferroni): at a small window, chance differences do not alarm;
  large enough  its effect size is at least the configured minimum: at a large window, differences
                too small to matter (or the reference sample's own noise) do not alarm either.
A p-value alone alarms on everything once a window holds tens of thousands of rows; an effect size
alone alarms on noise in small windows. Effects are on scales a person can read:
  numeric      Wasserstein distance over the reference's standard deviation ("the values moved by
               0.4 sd"); significance from Kolmogorov-Smirnov or Welch's t, whichever is smaller (x2)
  categorical  total variation distance, the share of rows that would have to change category;
               significance from a chi-square test (categories expected fewer than 5 times merged)
  proportion   the difference of two rates (a label rate, a column's share of missing values)
  performance  the drop of a live metric below the test split's, one-sided z-test
  multivariate 2 x (AUROC - 0.5) of a classifier that tells reference rows from production rows
NumPy and SciPy only, every test in one pass over sorted arrays: a million rows take seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]

MISSING = "(missing)"
OTHER = "(other)"


@dataclass
class Finding:
    """One test: what it measured, against what limit, and whether it alarms."""

    name: str  # a feature, or "prediction", "label", "accuracy", ...
    # numeric | categorical | missing | new_categories | rejections | prediction | label | performance
    # | multivariate | fairness
    kind: str
    statistic: str  # what `effect` is, in words
    effect: float | None
    limit: float
    p_value: float | None = None
    alpha: float | None = None  # the per-test threshold of the p-value (after the correction)
    drifted: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # why a test could not run, or what it saw
    at_least: bool = False  # the limit is a minimum (a fairness ratio), not a maximum

    @property
    def severity(self) -> float:
        """How far toward its limit the effect is: above 1 is past it; findings are ranked by it."""
        if self.effect is None or self.limit <= 0:
            return 0.0
        if self.at_least:
            return self.limit / self.effect if self.effect > 0 else math.inf
        return abs(self.effect) / self.limit

    def decide(self, alpha: float) -> Finding:
        self.alpha = alpha
        significant = self.p_value is None or self.p_value < alpha
        self.drifted = self.effect is not None and significant and abs(self.effect) >= self.limit
        return self

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "statistic": self.statistic,
            "effect": _round(self.effect),
            "limit": self.limit,
            "p_value": None if self.p_value is None else float(f"{self.p_value:.3g}"),
            "alpha": None if self.alpha is None else float(f"{self.alpha:.3g}"),
            "drifted": self.drifted,
            "severity": round(min(self.severity, 1e6), 3),
            "note": self.note,
            "detail": self.detail,
        }


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


Floats = npt.NDArray[np.float64]


def numeric(name: str, reference: Floats, production: Floats, limit: float, kind: str = "numeric") -> Finding:
    """A numeric column (or the scores): Wasserstein distance in reference standard deviations."""
    ref = np.sort(reference[np.isfinite(reference)])
    prod = np.sort(production[np.isfinite(production)])
    statistic = "Wasserstein distance / reference sd"
    if ref.size < 2 or prod.size < 2:
        return Finding(name, kind, statistic, None, limit, note="fewer than two values on one side")
    sd = float(ref.std(ddof=1))
    scale = sd if sd > 0 else max(float(np.abs(ref).mean()), 1.0)  # a constant reference: any move is drift
    distance = _wasserstein_sorted(ref, prod) / scale
    ks = _ks_sorted(ref, prod)
    if sd > 0 or prod.std() > 0:
        welch = float(stats.ttest_ind(ref, prod, equal_var=False).pvalue)
    else:
        welch = 1.0 if ref[0] == prod[0] else 0.0
    p_value = min(1.0, 2 * min(ks[1], welch if math.isfinite(welch) else 1.0))
    detail = {
        "reference_mean": _round(float(ref.mean())),
        "production_mean": _round(float(prod.mean())),
        "mean_shift_sd": _round((float(prod.mean()) - float(ref.mean())) / scale),
        "reference_sd": _round(sd),
        "ks": _round(ks[0]),
        "reference_quantiles": _quantiles(ref),
        "production_quantiles": _quantiles(prod),
        "rows": int(prod.size),
    }
    return Finding(name, kind, statistic, distance, limit, p_value, detail=detail)


def _quantiles(values: Floats) -> list[float | None]:
    return [_round(float(q)) for q in np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])]


def _wasserstein_sorted(a: Floats, b: Floats) -> float:
    """The 1-Wasserstein distance of two sorted samples: the area between their CDFs."""
    both = np.concatenate([a, b])
    both.sort(kind="mergesort")
    deltas = np.diff(both)
    cdf_a = np.searchsorted(a, both[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, both[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * deltas))


def _ks_sorted(a: Floats, b: Floats) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value (ties handled by side=right)."""
    both = np.concatenate([a, b])
    d = float(
        np.max(
            np.abs(np.searchsorted(a, both, side="right") / a.size - np.searchsorted(b, both, side="right") / b.size)
        )
    )
    n = a.size * b.size / (a.size + b.size)
    return d, float(stats.kstwo.sf(d, round(n)))  # as scipy.stats.ks_2samp(method="asymp")


def counts(values: Any) -> dict[str, int]:
    """How often each value of a column (a pandas Series) occurs; missing values count as MISSING."""
    import pandas as pd

    found = pd.Series(values).value_counts(dropna=False)
    out: dict[str, int] = {}
    for value, count in found.items():
        key = MISSING if value is None or (isinstance(value, float) and value != value) else str(value)
        out[key] = out.get(key, 0) + int(count)
    return out


def categorical(name: str, reference: dict[str, int], production: dict[str, int], limit: float) -> Finding:
    """A categorical column: total variation distance; chi-square over categories with enough rows."""
    statistic = "total variation distance"
    n_ref, n_prod = sum(reference.values()), sum(production.values())
    if n_ref == 0 or n_prod == 0:
        return Finding(name, "categorical", statistic, None, limit, note="no values on one side")
    names = sorted(set(reference) | set(production))
    ref = np.array([reference.get(c, 0) for c in names], dtype=np.float64)
    prod = np.array([production.get(c, 0) for c in names], dtype=np.float64)
    distance = 0.5 * float(np.abs(ref / n_ref - prod / n_prod).sum())
    p_value = _chi_square(ref, prod)
    shares = sorted(names, key=lambda c: -abs(production.get(c, 0) / n_prod - reference.get(c, 0) / n_ref))
    detail = {
        "categories": [
            {
                "category": c,
                "reference_share": _round(reference.get(c, 0) / n_ref),
                "production_share": _round(production.get(c, 0) / n_prod),
            }
            for c in shares[:10]
        ],
        "rows": n_prod,
    }
    return Finding(name, "categorical", statistic, distance, limit, p_value, detail=detail)


def _chi_square(ref: Floats, prod: Floats) -> float:
    """Chi-square test of homogeneity; categories expected fewer than 5 times in either sample are pooled."""
    total = ref + prod
    expected_small = np.minimum(total * ref.sum() / total.sum(), total * prod.sum() / total.sum()) < 5
    if expected_small.any():
        ref = np.append(ref[~expected_small], ref[expected_small].sum())
        prod = np.append(prod[~expected_small], prod[expected_small].sum())
        keep = (ref + prod) > 0
        ref, prod = ref[keep], prod[keep]
    if ref.size < 2:
        return 1.0
    return float(stats.chi2_contingency(np.vstack([ref, prod]), correction=False).pvalue)


def proportion(
    name: str, kind: str, hits_ref: int, n_ref: int, hits_prod: int, n_prod: int, limit: float, statistic: str
) -> Finding:
    """Two rates, their difference (production - reference) and a two-proportion z-test."""
    if n_ref == 0 or n_prod == 0:
        return Finding(name, kind, statistic, None, limit, note="no rows on one side")
    p_ref, p_prod = hits_ref / n_ref, hits_prod / n_prod
    pooled = (hits_ref + hits_prod) / (n_ref + n_prod)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_prod))
    p_value = float(2 * stats.norm.sf(abs(p_prod - p_ref) / se)) if se > 0 else float(p_prod == p_ref)
    detail = {"reference_rate": _round(p_ref), "production_rate": _round(p_prod), "rows": n_prod}
    return Finding(name, kind, statistic, p_prod - p_ref, limit, p_value, detail=detail)


def performance(name: str, live: float, expected: float, se: float, rows: int, tolerance: float) -> Finding:
    """A live metric against the test split's: alarms when it is lower by the tolerance or more, beyond noise."""
    drop = expected - live
    p_value = float(stats.norm.sf(drop / se)) if se > 0 else float(drop <= 0)
    detail = {"live": _round(live), "test": _round(expected), "standard_error": _round(se), "labelled_rows": rows}
    return Finding(name, "performance", f"drop from the test split's {name}", drop, tolerance, p_value, detail=detail)


def auroc(scores: Floats, y: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """AUROC (Mann-Whitney, ties halved) and its standard error (Hanley & McNeil, 1982)."""
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return math.nan, math.nan
    ranks = stats.rankdata(scores)
    auc = (float(ranks[y].sum()) - pos * (pos + 1) / 2) / (pos * neg)
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (pos - 1) * (q1 - auc * auc) + (neg - 1) * (q2 - auc * auc)) / (pos * neg)
    return auc, math.sqrt(max(variance, 0.0))


def domain_classifier(
    reference: npt.NDArray[np.float32],
    production: npt.NDArray[np.float32],
    columns: Sequence[str],
    limit: float,
    rows: int,
    seed: int,
) -> Finding:
    """Can a classifier tell production rows from reference rows? 2 x (AUROC - 0.5) on held-out folds.

    Equal samples of at most `rows` from each side, 2-fold cross-validated gradient-boosted trees on
    the model's own inputs (preprocess.json): the drift of any combination of features, not one at a
    time. Under no drift the held-out AUROC is 0.5 with the Mann-Whitney standard error.

    Identical rows share a fold, wherever they come from: a record seen three times (a client that
    retries, a replay drawn with replacement) would otherwise be learnt in one fold and recognised in
    the other. The standard error counts distinct rows only, for the same reason.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    statistic = "2 x (AUROC - 0.5) of a reference-vs-production classifier"
    rng = np.random.default_rng(seed)
    m = min(rows, len(reference), len(production))
    if m < 50:
        return Finding("multivariate", "multivariate", statistic, None, limit, note="fewer than 50 rows on one side")
    x = np.vstack(
        [
            reference[rng.choice(len(reference), m, replace=False)],
            production[rng.choice(len(production), m, replace=False)],
        ]
    )
    y = np.repeat([False, True], m)
    _, same = np.unique(x, axis=0, return_inverse=True)
    same = same.reshape(-1)
    fold = rng.integers(0, 2, size=int(same.max()) + 1)[same]
    scores = np.zeros(2 * m)
    # One OpenMP thread: the fit is small (at most 2 x `rows` rows), and parallel workers (CI, a
    # scheduler running several checks) would otherwise oversubscribe the cores many times over.
    with threadpool_limits(limits=1, user_api="openmp"):
        for k in (0, 1):
            model = HistGradientBoostingClassifier(max_iter=60, max_depth=3, learning_rate=0.1, random_state=seed)
            model.fit(x[fold != k], y[fold != k])
            scores[fold == k] = model.predict_proba(x[fold == k])[:, 1]
    auc, _ = auroc(scores, y)
    # AUROC's standard error when the classes do not differ, over the distinct rows of each side.
    n_ref, n_prod = (len(np.unique(same[y == side])) for side in (False, True))
    se = math.sqrt((n_ref + n_prod + 1) / (12 * n_ref * n_prod))
    p_value = float(stats.norm.sf((auc - 0.5) / se))
    detail = {"auroc": _round(auc), "rows_each": m, "distinct_rows": [n_ref, n_prod], "features": len(columns)}
    return Finding("multivariate", "multivariate", statistic, 2 * (auc - 0.5), limit, p_value, detail=detail)
