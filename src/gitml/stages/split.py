"""split stage: clean table -> seeded, stratified train / val / test, plus the drift reference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from gitml.config import dataset_schema, section
from gitml.data.split import SPLITS, SplitConfig, stratified_split
from gitml.errors import GitmlError
from gitml.io import write_json, write_parquet
from gitml.paths import Paths


def run(cfg: Mapping[str, Any], paths: Paths) -> dict[str, Any]:
    """Split the clean table; returns the split report."""
    schema = dataset_schema(cfg, paths.params)
    label, positive = schema.label.name, schema.positive_class
    config = SplitConfig.from_config(section(cfg, "split", paths.params), label, paths.params.name)
    if not paths.clean.is_file():
        raise GitmlError(f"{paths.clean}: not found; run the ingest stage first (dvc repro ingest).")
    clean = pd.read_parquet(paths.clean)
    if clean.empty:
        raise GitmlError(f"{paths.clean}: has no rows to split; reports/ingest.json says why they were quarantined.")
    unknown = [c for c in config.stratify if c not in clean.columns]
    if unknown:
        raise GitmlError(
            f"split.stratify names {', '.join(unknown)}, which the clean table does not have "
            f"({', '.join(clean.columns)})."
        )
    strata = clean[list(config.stratify)].astype(str).agg("|".join, axis=1)
    positions = stratified_split(strata, config.fractions, config.seed)
    empty = [name for name, rows in positions.items() if len(rows) == 0]
    if empty:
        raise GitmlError(
            f"split.fractions leave {', '.join(empty)} with no rows out of {len(clean)}; "
            "there is too little data for a train / val / test split."
        )

    report: dict[str, Any] = {
        "seed": config.seed,
        "stratify": list(config.stratify),
        "rows": len(clean),
        "label": label,
        "positive_class": positive,
    }
    for name, rows in positions.items():
        part = clean.iloc[rows].reset_index(drop=True)
        write_parquet(paths.split_file(name), part)
        report[name] = {"rows": len(part), "label_rate": round(float((part[label] == positive).mean()), 6)}

    # The drift reference: a seeded sample of training rows that production data is compared with.
    train_rows = positions["train"]
    n_reference = min(config.reference_rows, len(train_rows))
    sample = np.sort(np.random.default_rng(config.seed + 1).choice(train_rows, n_reference, replace=False))
    reference = clean.iloc[sample].reset_index(drop=True)
    write_parquet(paths.split_file("reference"), reference)
    report["reference"] = {"rows": n_reference, "label_rate": round(float((reference[label] == positive).mean()), 6)}
    write_json(paths.split_report, report)
    return report


def message(report: dict[str, Any], paths: Paths) -> str:
    sizes = ", ".join(f"{name} {report[name]['rows']:,}" for name in (*SPLITS, "reference"))
    return f"split: {sizes}"
