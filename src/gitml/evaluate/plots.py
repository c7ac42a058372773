"""Plot data for DVC (dvc plots show / diff): small JSON and CSV tables, one per plot."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import BinaryPrecisionRecallCurve, BinaryROC

from gitml.evaluate import Floats
from gitml.io import write_json

CURVE_POINTS = 201  # thresholds 0, 0.005, ..., 1: curves stay small files whatever the test size


def _r(value: float) -> float:
    return round(float(value), 6)


def curves(scores: Floats, y: Floats) -> dict[str, list[dict[str, float]]]:
    p = torch.from_numpy(np.asarray(scores, dtype=np.float32))
    t = torch.from_numpy(np.asarray(y)).long()
    grid = torch.linspace(0, 1, CURVE_POINTS)
    fpr, tpr, thresholds = BinaryROC(thresholds=grid)(p, t)
    precision, recall, pr_thresholds = BinaryPrecisionRecallCurve(thresholds=grid)(p, t)
    roc = [{"fpr": _r(a), "tpr": _r(b), "threshold": _r(c)} for a, b, c in zip(fpr, tpr, thresholds, strict=True)]
    # precision and recall carry one extra end point (recall 0, precision 1) without a threshold.
    pr = [
        {"recall": _r(r), "precision": _r(pr_), "threshold": _r(th)}
        for r, pr_, th in zip(recall[:-1], precision[:-1], pr_thresholds, strict=True)
    ]
    return {"roc": roc, "pr": pr}


def calibration(scores: Floats, y: Floats, bins: int) -> list[dict[str, Any]]:
    """Reliability diagram: per equal-width score bin, mean score against observed positive rate."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        members = index == b
        if members.any():
            out.append(
                {
                    "bin": b,
                    "mean_predicted": _r(scores[members].mean()),
                    "fraction_positive": _r(y[members].mean()),
                    "rows": int(members.sum()),
                }
            )
    return out


def write_plots(
    directory: Path,
    scores: Floats,
    y: Floats,
    threshold: float,
    labels: tuple[str, str],
    per_group: Mapping[str, Mapping[str, Mapping[str, Any]]],
    bins: int,
) -> None:
    """roc.json, pr.json, calibration.json, confusion.csv and groups.json under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, points in curves(scores, y).items():
        write_json(directory / f"{name}.json", points)
    write_json(directory / "calibration.json", calibration(scores, y, bins))
    negative, positive = labels
    with (directory / "confusion.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        for truth, score in zip(y, scores, strict=True):
            writer.writerow([positive if truth else negative, positive if score >= threshold else negative])
    rows = [
        {"group": f"{attribute}={group}", "attribute": attribute, **{k: m[k] for k in ("selection_rate", "tpr", "fpr")}}
        for attribute, groups in per_group.items()
        for group, m in groups.items()
    ]
    write_json(directory / "groups.json", rows)
