"""The short summary `make run` prints after the pipeline: what each stage produced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gitml.evaluate.classical import NAMES, best_test, in_order
from gitml.evaluate.measures import label
from gitml.outputs import BASELINES, METRICS, MetricsFile, json_object, read_json
from gitml.paths import Paths

# What the summary shows of the test metrics and of each attribute's fairness (with its digits).
HEADLINE_SHOWN = ("auroc", "accuracy", "balanced_accuracy", "f1", "ece")
FAIRNESS_SHOWN = (
    ("demographic_parity_ratio", 2),
    ("equal_opportunity_difference", 3),
    ("equalized_odds_difference", 3),
)


def _load(path: Path, stage: str) -> dict[str, Any]:
    return json_object(read_json(path, stage), path)


def _number(value: float | None, digits: int) -> str:
    """A rate or gap; n/a where no group had the cases to define it (no positives, say)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _model_lines(paths: Paths) -> list[str]:
    """Training, test metrics and fairness gaps; absent until the evaluate stage has run."""
    if not paths.metrics.is_file():
        return []
    train = _load(paths.train_report, "train")
    export = _load(paths.export_report, "export")
    metrics = METRICS.read(paths)
    test, threshold = metrics["test"], metrics["threshold"]
    best = ", ".join(f"{k} {v:.4f}" for k, v in train["best"].items())
    lines = [
        f"  train       {train['epochs']} epochs, best epoch {train['best_epoch']} ({best}); "
        f"{train['parameters']:,} parameters, {train['features']['width']} inputs",
        f"  export      {paths.onnx.relative_to(paths.root)}; ONNX Runtime vs torch on {export['rows']:,} test rows: "
        f"max |diff| {export['max_abs_diff']:.1e}",
        "  test        " + " | ".join(f"{label(name)} {test[name]:.3f}" for name in HEADLINE_SHOWN),
        f"  threshold   {threshold['value']:.3f} ({threshold['rule']} on {threshold['chosen_on']}); "
        + ", ".join(f"{label(name)} {test[name]:.1%}" for name in ("selection_rate", "positive_rate")),
    ]
    for i, (attribute, gaps) in enumerate(sorted(metrics["fairness"].items())):
        head = "  fairness    " if i == 0 else "              "
        if gaps["demographic_parity_ratio"] is None:
            lines.append(f"{head}{attribute:<6} fewer than two groups large enough to compare")
            continue
        shown = " | ".join(f"{label(name)} {_number(gaps[name], digits)}" for name, digits in FAIRNESS_SHOWN)
        lines.append(f"{head}{attribute:<6} {shown}")
    lines.append(f"  per group   {paths.fairness.relative_to(paths.root)}; plots: dvc plots show")
    return lines + _baseline_lines(paths, metrics)


def _baseline_lines(paths: Paths, metrics: MetricsFile) -> list[str]:
    """Each baseline's test AUROC and the network's against the best; absent until the stage has run."""
    if not paths.baselines.is_file():
        return []
    baselines = BASELINES.read(paths)
    if not baselines.get("enabled"):
        return ["  baselines   off (baselines.enabled: false)"]
    models = baselines["models"]
    shown = " | ".join(f"{NAMES.get(n, n)} {_number(models[n]['test'].get('auroc'), 3)}" for n in in_order(models))
    ours = metrics["test"].get("auroc")
    theirs = (best_test(baselines) or ("", {}))[1].get("auroc")
    versus = f"; network vs best {ours - theirs:+.3f}" if ours is not None and theirs is not None else ""
    return [f"  baselines   AUROC {shown}{versus} ({paths.baselines.relative_to(paths.root)})"]


def pipeline_summary(paths: Paths) -> str:
    """A few lines a person reads at the end of `make run`."""
    ingest = _load(paths.ingest_report, "ingest")
    split = _load(paths.split_report, "split")
    reasons = sorted(ingest["quarantined_by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))
    why = ", ".join(f"{code} {n:,}" for code, n in reasons[:4]) + (", ..." if len(reasons) > 4 else "")
    parts = ("train", "val", "test")
    return "\n".join(
        [
            "gitml pipeline summary",
            f"  ingest      {ingest['rows_read']:,} rows read -> {ingest['rows_clean']:,} clean, "
            f"{ingest['rows_quarantined']:,} quarantined ({ingest['quarantined_fraction']:.2%}"
            + (f": {why})" if why else ")"),
            "  split       "
            + " | ".join(f"{p} {split[p]['rows']:,}" for p in parts)
            + f" | drift reference {split['reference']['rows']:,}",
            f"  label rate  {split['label']} = {split['positive_class']}: "
            + " | ".join(f"{p} {split[p]['label_rate']:.1%}" for p in parts),
            f"  quarantine  {paths.quarantine.relative_to(paths.root)} (each rejected row with its reason)",
            *_model_lines(paths),
            *_time_line(paths),
        ]
    )


def _time_line(paths: Paths) -> list[str]:
    """Each stage's latest time, from the run log (timings stay out of every tracked output)."""
    from gitml.runlog import latest_seconds

    took = latest_seconds(paths)
    if not took:
        return []
    stages = " | ".join(f"{stage} {seconds:.1f} s" for stage, seconds in took.items())
    return [f"  took        {stages} ({paths.run_log.relative_to(paths.root)})"]
