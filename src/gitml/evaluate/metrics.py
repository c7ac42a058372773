"""Classification and group-fairness metrics, computed with torchmetrics: the reference estimates of the
measures in gitml.evaluate.measures (evaluate.bootstrap computes them again, fast, for the intervals)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torchmetrics import MeanSquaredError
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryCalibrationError,
    BinaryF1Score,
    BinaryFairness,
    BinaryGroupStatRates,
    BinaryPrecision,
    BinaryRecall,
    MulticlassAccuracy,
)

from gitml.data.schema import DatasetSchema
from gitml.evaluate import Floats
from gitml.evaluate.measures import FAIRNESS

MISSING_GROUP = "(missing)"


def _round(value: float) -> float | None:
    return None if value != value else round(float(value), 6)


def headline(scores: Floats, y: Floats, threshold: float, bins: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy, precision, recall, F1 at the threshold; AUROC, AP, Brier, ECE on scores."""
    p = torch.from_numpy(np.asarray(scores, dtype=np.float32))
    t = torch.from_numpy(np.asarray(y)).long()
    predicted = (p >= threshold).long()
    at_threshold = {
        "accuracy": BinaryAccuracy(threshold=threshold),
        "precision": BinaryPrecision(threshold=threshold),
        "recall": BinaryRecall(threshold=threshold),
        "f1": BinaryF1Score(threshold=threshold),
    }
    # Decisions, not scores: torchmetrics thresholds scores with `>`, gitml (and its server) with `>=`.
    out = {name: metric(predicted, t).item() for name, metric in at_threshold.items()}
    out["balanced_accuracy"] = MulticlassAccuracy(num_classes=2, average="macro")(predicted, t).item()
    out["auroc"] = BinaryAUROC()(p, t).item()
    out["average_precision"] = BinaryAveragePrecision()(p, t).item()
    out["brier"] = MeanSquaredError()(p, t.float()).item()
    out["ece"] = BinaryCalibrationError(n_bins=bins, norm="l1")(p, t).item()
    out["selection_rate"] = predicted.float().mean().item()
    out["positive_rate"] = t.float().mean().item()
    return {k: _round(v) for k, v in out.items()} | {"rows": len(y)}


def group_codes(groups: npt.NDArray[Any]) -> tuple[list[str], npt.NDArray[np.int64]]:
    """Sorted group names and each row's index into them (missing values form their own group)."""
    names = np.array([MISSING_GROUP if g is None or g != g else str(g) for g in groups], dtype=object)
    uniques, codes = np.unique(names, return_inverse=True)
    return [str(u) for u in uniques], codes.astype(np.int64)


def group_metrics(scores: Floats, y: Floats, groups: npt.NDArray[Any], threshold: float) -> dict[str, dict[str, Any]]:
    """Per group: size, base rate, selection rate, TPR, FPR, precision, accuracy (BinaryGroupStatRates)."""
    names, codes = group_codes(groups)
    p = torch.from_numpy(np.asarray(scores, dtype=np.float32))
    t = torch.from_numpy(np.asarray(y)).long()
    decided = (p >= threshold).long()  # torchmetrics would threshold scores with `>`
    rates = BinaryGroupStatRates(num_groups=len(names), threshold=threshold)(decided, t, torch.from_numpy(codes))
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        tp, fp, tn, fn = (float(v) for v in rates[f"group_{i}"])
        out[name] = {
            "size": int((codes == i).sum()),
            "base_rate": _round(tp + fn),
            "selection_rate": _round(tp + fp),
            "tpr": _round(tp / (tp + fn)) if tp + fn > 0 else None,
            "fpr": _round(fp / (fp + tn)) if fp + tn > 0 else None,
            "precision": _round(tp / (tp + fp)) if tp + fp > 0 else None,
            "accuracy": _round(tp + tn),
        }
    return out


def _spread(values: list[float]) -> float | None:
    return _round(max(values) - min(values)) if len(values) >= 2 else None


SUMMARY_KEYS = tuple(m.name for m in FAIRNESS)


def fairness_summary(
    scores: Floats,
    y: Floats,
    groups: npt.NDArray[Any],
    threshold: float,
    per_group: Mapping[str, Mapping[str, Any]],
    min_group_size: int,
    min_group_cases: int = 1,
) -> dict[str, Any]:
    """Gaps between the groups with enough test rows to compare.

    Selection rates are compared over the groups with at least `min_group_size` rows; of those,
    true positive rates over the groups with at least `min_group_cases` positives and false
    positive rates over those with at least `min_group_cases` negatives (a rate over a handful
    of cases says little).

    demographic_parity_difference   max - min selection rate
    demographic_parity_ratio        min / max selection rate (the "four-fifths" quantity)
    base_rate_ratio                 min / max share of positives in the data, over the same groups:
                                    the ratio a model that reproduced the labels exactly would have
    equal_opportunity_difference    max - min true positive rate
    equal_opportunity_ratio         min / max true positive rate
    equalized_odds_difference       the larger of the TPR gap and the FPR gap
    The two ratios of rates come from torchmetrics' BinaryFairness over the same groups.
    """
    compared = [g for g, m in per_group.items() if m["size"] >= min_group_size]
    positives = {g: round(per_group[g]["base_rate"] * per_group[g]["size"]) for g in compared}
    tpr_groups = [g for g in compared if positives[g] >= min_group_cases]
    fpr_groups = [g for g in compared if per_group[g]["size"] - positives[g] >= min_group_cases]
    summary: dict[str, Any] = {
        "groups_compared": compared,
        "groups_too_small": sorted(set(per_group) - set(compared)),
        "groups_compared_tpr": tpr_groups,
        "groups_compared_fpr": fpr_groups,
    }
    summary |= dict.fromkeys(SUMMARY_KEYS)
    if len(compared) >= 2:
        summary["demographic_parity_difference"] = _spread([per_group[g]["selection_rate"] for g in compared])
        summary["demographic_parity_ratio"] = _fairness_ratio(
            scores, y, groups, threshold, compared, "demographic_parity"
        )
        base_rates = [per_group[g]["base_rate"] for g in compared]
        summary["base_rate_ratio"] = _round(min(base_rates) / max(base_rates)) if max(base_rates) > 0 else None
    tprs = [per_group[g]["tpr"] for g in tpr_groups]
    fprs = [per_group[g]["fpr"] for g in fpr_groups]
    tpr_gap, fpr_gap = _spread(tprs), _spread(fprs)
    if len(tpr_groups) >= 2:
        summary["equal_opportunity_difference"] = tpr_gap
        summary["equal_opportunity_ratio"] = _fairness_ratio(
            scores, y, groups, threshold, tpr_groups, "equal_opportunity"
        )
    if len(tpr_groups) >= 2 and len(fpr_groups) >= 2 and tpr_gap is not None and fpr_gap is not None:
        summary["equalized_odds_difference"] = max(tpr_gap, fpr_gap)
    return summary


def protected_fairness(
    schema: DatasetSchema,
    frame: Any,
    scores: Floats,
    y: Floats,
    threshold: float,
    min_group_size: int,
    min_group_cases: int,
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Each protected attribute's groups in `frame` (a split's DataFrame): every group's metrics
    (group_metrics) and the gaps between them (fairness_summary)."""
    per_attribute: dict[str, dict[str, dict[str, Any]]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for column in schema.protected_columns:
        groups = schema.protected_groups(column.name, frame[column.name].to_numpy())
        per_attribute[column.name] = group_metrics(scores, y, groups, threshold)
        summaries[column.name] = fairness_summary(
            scores, y, groups, threshold, per_attribute[column.name], min_group_size, min_group_cases
        )
    return per_attribute, summaries


def _fairness_ratio(
    scores: Floats, y: Floats, groups: npt.NDArray[Any], threshold: float, among: list[str], task: str
) -> float | None:
    """min / max of a rate over the groups `among`, from torchmetrics' BinaryFairness."""
    names, codes = group_codes(groups)
    wanted = sorted(names.index(g) for g in among)
    keep = np.isin(codes, wanted)
    recoded = np.searchsorted(wanted, codes[keep])
    with warnings.catch_warnings():  # "demographic_parity does not require a target": it is passed for both tasks
        warnings.simplefilter("ignore", UserWarning)
        result = BinaryFairness(num_groups=len(among), task=task, threshold=threshold)(  # type: ignore[arg-type]
            torch.from_numpy(np.asarray(scores, dtype=np.float32)[keep] >= np.float32(threshold)).long(),
            torch.from_numpy(np.asarray(y)[keep]).long(),
            torch.from_numpy(recoded.astype(np.int64)),
        )
    return _round(float(next(iter(result.values()))))
