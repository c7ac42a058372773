"""Classification and group-fairness metrics, computed with torchmetrics."""

from __future__ import annotations

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

from gitml.evaluate import Floats

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
    out = {name: metric(p, t).item() for name, metric in at_threshold.items()}
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
    rates = BinaryGroupStatRates(num_groups=len(names), threshold=threshold)(p, t, torch.from_numpy(codes))
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


def fairness_summary(
    scores: Floats,
    y: Floats,
    groups: npt.NDArray[Any],
    threshold: float,
    per_group: Mapping[str, Mapping[str, Any]],
    min_group_size: int,
) -> dict[str, Any]:
    """Gaps between the groups large enough to compare (at least `min_group_size` rows).

    demographic_parity_difference   max - min selection rate
    demographic_parity_ratio        min / max selection rate (the "four-fifths" quantity)
    equal_opportunity_difference    max - min true positive rate
    equal_opportunity_ratio         min / max true positive rate
    equalized_odds_difference       the larger of the TPR gap and the FPR gap
    The ratios come from torchmetrics' BinaryFairness over the same groups.
    """
    compared = [g for g, m in per_group.items() if m["size"] >= min_group_size]
    summary: dict[str, Any] = {"groups_compared": compared, "groups_too_small": sorted(set(per_group) - set(compared))}
    keys = (
        "demographic_parity_difference", "demographic_parity_ratio", "equal_opportunity_difference",
        "equal_opportunity_ratio", "equalized_odds_difference",
    )  # fmt: skip
    if len(compared) < 2:
        return summary | dict.fromkeys(keys)
    names, codes = group_codes(groups)
    keep = np.isin(codes, [names.index(g) for g in compared])
    recoded = np.searchsorted([names.index(g) for g in compared], codes[keep])
    fairness = BinaryFairness(num_groups=len(compared), task="all", threshold=threshold)(
        torch.from_numpy(np.asarray(scores, dtype=np.float32)[keep]),
        torch.from_numpy(np.asarray(y)[keep]).long(),
        torch.from_numpy(recoded.astype(np.int64)),
    )
    ratio = {key.split("_")[0]: float(value) for key, value in fairness.items()}
    tprs = [per_group[g]["tpr"] for g in compared if per_group[g]["tpr"] is not None]
    fprs = [per_group[g]["fpr"] for g in compared if per_group[g]["fpr"] is not None]
    tpr_gap, fpr_gap = _spread(tprs), _spread(fprs)
    gaps = [g for g in (tpr_gap, fpr_gap) if g is not None]
    return summary | {
        "demographic_parity_difference": _spread([per_group[g]["selection_rate"] for g in compared]),
        "demographic_parity_ratio": _round(ratio["DP"]),
        "equal_opportunity_difference": tpr_gap,
        "equal_opportunity_ratio": _round(ratio["EO"]),
        "equalized_odds_difference": max(gaps) if gaps else None,
    }
