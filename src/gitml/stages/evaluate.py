"""evaluate stage: the exported ONNX model on the test split, at a threshold chosen on validation.

Writes reports/metrics.json (headline metrics and the fairness summaries, a DVC metrics file),
reports/fairness.json (every group of every protected attribute), reports/intervals.json
(bootstrap confidence intervals of both), the plot data under
reports/plots/, models/threshold.json and the test scores. It completes the model bundle
(gitml.bundle) and writes its manifest, models/manifest.json, with the bundle's probe: a record
built from the test split and the model's score for it (gitml.evaluate.probe).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from gitml.bundle import Threshold, check_model_spec, open_model, runtime, write_manifest
from gitml.config import dataset_schema, section
from gitml.data.features import PreprocessSpec, matrices
from gitml.data.split import SPLITS, load_split
from gitml.errors import GitmlError
from gitml.evaluate.bootstrap import Matrix, intervals, summary_groups, weighted_gaps, weighted_headline
from gitml.evaluate.config import read_config
from gitml.evaluate.metrics import group_codes, headline, protected_fairness
from gitml.evaluate.plots import write_plots
from gitml.evaluate.probe import probe
from gitml.io import write_json, write_parquet
from gitml.outputs import FAIRNESS, INTERVALS, METRICS, MetricsFile
from gitml.paths import Paths


def run(cfg: Mapping[str, Any], paths: Paths) -> MetricsFile:
    """Evaluate; returns what reports/metrics.json holds."""
    config = read_config(section(cfg, "evaluate", paths.params), paths.params.name)
    rule, bins, boot = config.rule, config.calibration_bins, config.bootstrap
    min_group_size, min_group_cases = config.min_group_size, config.min_group_cases
    schema = dataset_schema(cfg, paths.params)
    spec = PreprocessSpec.load(paths.preprocess)
    if not paths.onnx.is_file():
        raise GitmlError(f"{paths.onnx}: not found; run the export stage first (dvc repro export).")
    session = open_model(paths.onnx)  # one session scores val, test and the probe
    check_model_spec(session, paths.onnx, spec.sha256)

    x_val, y_val = matrices(spec, schema, load_split(paths, "val"))
    threshold = config.threshold(runtime.run(session, x_val), y_val)
    test = load_split(paths, "test")
    x_test, y_test = matrices(spec, schema, test)
    scores = runtime.run(session, x_test)

    per_attribute, summaries = protected_fairness(
        schema, test, scores, y_test, threshold, min_group_size, min_group_cases
    )
    # Every metric and gap of one resample is computed from the same drawn rows.
    resampled: dict[str, Callable[[Matrix], Mapping[str, Matrix]]] = {
        "test": partial(weighted_headline, scores, y_test, threshold, bins)
    }
    chosen = scores >= np.float32(threshold)
    for column in schema.protected_columns:
        names, codes = group_codes(schema.protected_groups(column.name, test[column.name].to_numpy()))
        compared = summary_groups(names, summaries[column.name])
        resampled[column.name] = partial(weighted_gaps, y_test, chosen, codes, *compared)
    bounds = intervals(
        lambda counts: {f"{part}/{k}": v for part, compute in resampled.items() for k, v in compute(counts).items()},
        len(y_test),
        boot,
    )
    by_part: dict[str, dict[str, Any]] = {}
    for key, value in bounds.items():
        part, name = key.split("/", 1)
        by_part.setdefault(part, {})[name] = value
    INTERVALS.write(
        paths,
        {
            "confidence": boot.confidence,
            "resamples": boot.resamples,
            "seed": boot.seed,
            "test": by_part.pop("test"),
            "fairness": by_part,
        },
    )
    metrics: MetricsFile = {
        "threshold": {"rule": rule, "value": threshold, "chosen_on": "val"},
        "test": headline(scores, y_test, threshold, bins),
        "fairness": summaries,
    }
    METRICS.write(paths, metrics)
    FAIRNESS.write(
        paths,
        {"threshold": threshold, "min_group_size": min_group_size, "min_group_cases": min_group_cases, **per_attribute},
    )
    labels = tuple(c for c in (schema.label.categories or ()) if c != schema.positive_class)[:1] or ("negative",)
    write_plots(paths.plots, scores, y_test, threshold, (labels[0], schema.positive_class), per_attribute, bins)
    write_json(paths.threshold, Threshold(threshold, rule, "val", schema.positive_class).as_json())
    write_parquet(
        paths.test_scores,
        pd.DataFrame({"row": range(len(scores)), "score": scores, "decision": scores >= threshold}),
    )
    # The last file of the bundle is written: record it, with what it was built from.
    write_manifest(
        paths.models,
        section(cfg, "data", paths.params),
        schema,
        {name: paths.split_file(name) for name in SPLITS},
        cfg,
        {**metrics["test"], "threshold": threshold},
        probe(schema, spec, session, test),
    )
    return metrics


def message(metrics: MetricsFile, paths: Paths) -> str:
    test = metrics["test"]
    return (
        f"evaluate: test AUROC {test['auroc']:.4f}, accuracy {test['accuracy']:.4f} at threshold "
        f"{metrics['threshold']['value']:.3f} ({metrics['threshold']['rule']} on val)"
    )
