"""What `gitml drift` writes for people: drift.md (an issue body, the verdict first) and Deepchecks' HTML.

drift.md renders on GitHub as it is: tables, and charts as Mermaid `xychart-beta` blocks (GitHub
draws them in issues and comments), so the issue drift.yml opens needs no image hosting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gitml.monitor.detect import Finding

KIND_WORDS = {
    "numeric": "distribution", "categorical": "categories", "missing": "missing values",
    "new_categories": "new categories", "rejections": "rejected requests", "prediction": "model scores",
    "label": "label rate", "performance": "live performance", "multivariate": "all features together",
    "fairness": "live fairness",
}  # fmt: skip
MARKER = "<!-- gitml drift report -->"


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def one_line(report: Mapping[str, Any], out: Path) -> str:
    drifted = report["drifted"]
    top = ", ".join(report["top_features"][:3])
    what = f"drift in {', '.join(drifted)}" + (f" (features: {top})" if top else "") if drifted else "no drift"
    return f"drift: {what}; {report['rows']:,} rows, {report['tests']} tests; wrote {out / 'drift.md'}"


def markdown(report: Mapping[str, Any], findings: Sequence[Finding]) -> str:
    drifted = [f for f in findings if f.drifted]
    lines = [MARKER]
    window = report["window"]
    where = f"`{report['source']}`" + (f", {window['since']} to {window['until']}" if window.get("until") else "")
    if drifted:
        kinds = ", ".join(report["drifted"])
        lines += [
            f"## Drift found: {kinds}",
            "",
            f"**{len(drifted)} of {len(findings)} checks alarm** on {report['rows']:,} production rows ({where}) "
            f"against {report['reference']['rows']:,} training rows.",
        ]
        if report["top_features"]:
            lines.append(f"Features first: **{', '.join(report['top_features'][:5])}**.")
    else:
        lines += [
            "## No drift",
            "",
            f"No check alarms on {report['rows']:,} production rows ({where}) against "
            f"{report['reference']['rows']:,} training rows.",
        ]
    nearest = [f for f in findings if f.kind != "fairness"][:8]
    lines += ["", _table(drifted or nearest, "What alarms" if drifted else "Closest to their limits")]
    chart = _severity_chart(findings)
    if chart:
        lines += ["", chart]
    top_numeric = next((f for f in findings if f.kind in ("numeric", "prediction") and f.drifted), None)
    if top_numeric is not None:
        lines += ["", _quantile_chart(top_numeric)]
    top_categorical = next((f for f in findings if f.kind == "categorical" and f.drifted), None)
    if top_categorical is not None:
        lines += ["", _category_table(top_categorical)]
    labels = report.get("labels") or {}
    lines += ["", "### Feedback labels", ""]
    if labels.get("labelled", 0) and "accuracy" in labels:
        lines.append(
            f"{labels['labelled']:,} labelled predictions: live accuracy {_number(labels.get('accuracy'))}, "
            f"AUROC {_number(labels.get('auroc'))}."
        )
    else:
        lines.append(labels.get("note", "No feedback labels."))
    fairness = [f for f in findings if f.kind == "fairness"]
    if fairness:
        lines += ["", "| Fairness (gates.fairness) | Live | Limit | Outcome |", "|---|---|---|---|"]
        for f in fairness:
            outcome = "**fails**" if f.drifted else ("passes (warning)" if f.detail.get("warning") else "passes")
            lines.append(f"| {f.name} | {_number(f.effect)} | {_number(f.limit)} | {outcome}: {f.note} |")
    elif (report.get("fairness") or {}).get("note"):
        lines += ["", f"Live fairness: {report['fairness']['note']}."]
    lines += [
        "",
        "<details><summary>Every check</summary>",
        "",
        _table(findings, ""),
        "",
        "</details>",
        "",
        f"Each check alarms when its p-value is below {report['alpha']:g} / {report['tests']} (the family-wise "
        "false-alarm rate over the tests) and its effect reaches the limit in conf/drift/. "
        "Reproduce: `gitml drift"
        + (
            f" --logs {report['source']} --since {window['since']} --until {window['until']}`"
            if window.get("until")
            else f" --data {report['source']}`"
        )
        + (f"; Deepchecks' report: `{report['html']}` in the run's artifacts." if report.get("html") else "."),
    ]
    return "\n".join(lines) + "\n"


def _arguments(report: Mapping[str, Any]) -> str:
    window = report["window"]
    if window.get("until"):
        return f"--logs {report['source']} --since {window['since']} --until {window['until']}"
    return f"--data {report['source']}"


def _table(findings: Sequence[Finding], title: str) -> str:
    rows = [f"**{title}**", ""] if title else []
    rows += ["| Check | What | Effect | Limit | p-value | |", "|---|---|---|---|---|---|"]
    for f in findings:
        mark = "**drift**" if f.drifted else ""
        rows.append(
            f"| {f.name} | {KIND_WORDS.get(f.kind, f.kind)}: {f.statistic} | {_number(f.effect)} | {_number(f.limit)} "
            f"| {_p(f.p_value)} | {mark} |"
        )
    return "\n".join(rows)


def _severity_chart(findings: Sequence[Finding]) -> str:
    """A bar chart of the ten checks nearest their limits, as effect / limit (1 is the limit)."""
    ranked = [f for f in findings if f.effect is not None and f.kind != "fairness"][:10]
    if not ranked:
        return ""
    names = ", ".join(f'"{f.name[:18]}"' for f in ranked)
    values = ", ".join(f"{min(f.severity, 99):.2f}" for f in ranked)
    top = max(1.5, max(min(f.severity, 99) for f in ranked) * 1.1)
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            '    title "Effect / limit (past 1 and significant: drift)"',
            f"    x-axis [{names}]",
            f'    y-axis "effect / limit" 0 --> {top:.1f}',
            f"    bar [{values}]",
            f"    line [{', '.join('1' for _ in ranked)}]",
            "```",
        ]
    )


def _quantile_chart(finding: Finding) -> str:
    ref, prod = finding.detail.get("reference_quantiles"), finding.detail.get("production_quantiles")
    if not ref or not prod:
        return ""
    values = [v for v in (*ref, *prod) if v is not None]
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or 1.0
    return "\n".join(
        [
            f"**{finding.name}**: quantiles 5, 25, 50, 75, 95 % (bars: training reference, line: production)",
            "",
            "```mermaid",
            "xychart-beta",
            f'    title "{finding.name}: reference (bars) and production (line)"',
            '    x-axis ["p5", "p25", "p50", "p75", "p95"]',
            f"    y-axis {low - pad:.4g} --> {high + pad:.4g}",
            f"    bar [{', '.join(f'{v:.4g}' for v in ref)}]",
            f"    line [{', '.join(f'{v:.4g}' for v in prod)}]",
            "```",
        ]
    )


def _category_table(finding: Finding) -> str:
    rows = [
        f"**{finding.name}**: the categories that moved most",
        "",
        "| Category | Reference | Production |",
        "|---|---|---|",
    ]
    for item in finding.detail.get("categories", [])[:6]:
        rows.append(
            f"| {item['category']} | {_number(item['reference_share'])} | {_number(item['production_share'])} |"
        )
    return "\n".join(rows)


def deepchecks_html(bundle: Any, reference: Any, production: Any, config: Any, path: Path) -> Path:
    """Deepchecks' drift checks (features, prediction, and label where labelled) as one HTML page.

    Over at most drift.deepchecks_rows rows of each side, sampled with the check's seed. The page
    links plotly.js rather than embedding it (embedded, it alone is 3.5 MB), so the file stays small.
    """
    from gitml.stages.deepchecks import class_names, quiet

    with quiet():  # Deepchecks' first import warns about its own dependencies
        from deepchecks.tabular import Dataset, Suite  # type: ignore[import-untyped]
        from deepchecks.tabular.checks import (  # type: ignore[import-untyped]
            FeatureDrift,
            LabelDrift,
            PredictionDrift,
        )

    schema = bundle.schema
    rng = np.random.default_rng(config.seed)
    negative, positive = class_names(schema)
    categorical = [c for c in reference.frame.columns if schema.column(c).output_dtype not in ("integer", "float")]
    label_name = schema.label.name

    def dataset(frame: pd.DataFrame, scores: Any, labels: Any, name: str) -> tuple[Any, Any]:
        take = np.sort(rng.choice(len(frame), min(config.deepchecks_rows, len(frame)), replace=False))
        data = frame.iloc[take].reset_index(drop=True)
        kwargs: dict[str, Any] = {}
        if labels is not None:
            data[label_name] = np.where(
                np.asarray(labels, dtype=object)[take] == schema.positive_class, positive, negative
            )
            kwargs = {"label": label_name, "label_type": "binary"}
        proba = np.column_stack([1 - scores[take], scores[take]])
        return Dataset(data, cat_features=categorical, dataset_name=name, **kwargs), proba

    labelled = production.labels is not None and all(v is not None for v in production.labels)
    with quiet():
        ref_ds, ref_proba = dataset(
            reference.frame, reference.scores, reference.labels if labelled else None, "reference"
        )
        prod_ds, prod_proba = dataset(
            production.frame, production.scores, production.labels if labelled else None, "production"
        )
        # No Multivariate Drift: drift.json has its own (calibrated) classifier test, and Deepchecks'
        # took twice as long as every other check together.
        checks = [FeatureDrift(), PredictionDrift()]
        if labelled:
            checks.append(LabelDrift())
        suite = Suite("gitml drift", *checks)
        result = suite.run(
            ref_ds, prod_ds, model_classes=[negative, positive], y_proba_train=ref_proba, y_proba_test=prod_proba
        )
        with path.open("w", encoding="utf-8") as out:
            result.save_as_html(out, as_widget=False, connected=False)
    return path
