"""reports/model_card.md: one model version described in the spirit of Mitchell et al. (2019),
"Model Cards for Model Reporting".

What the pipeline knows (architecture, data handling, metrics with their intervals, fairness per
group, the gate) is filled in from its outputs. What only people know about the data and its
use comes from the card config (conf/card/<dataset>.yaml), which each dataset writes for itself.
The card has no date: the same commit gives the same card.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gitml.checked_config import ConfigReader
from gitml.data.schema import DatasetSchema
from gitml.evaluate.classical import NAMES, in_order
from gitml.paths import MODEL
from gitml.report import Lineage, Outputs
from gitml.report.markdown import (
    BASELINES_HOW,
    NONE,
    baselines_table,
    ci,
    code,
    fairness_summary_rows,
    gated_gaps,
    group_table,
    interval,
    is_number,
    number,
    ordered_checks,
    table,
)

TEXTS = ("intended_use", "users", "source", "url", "licence")
LISTS = ("out_of_scope", "limitations", "ethical_considerations")


@dataclass(frozen=True)
class CardText:
    """The card config's text; a missing entry reads as what to add, and where."""

    dataset: str
    present: bool
    texts: Mapping[str, str]
    lists: Mapping[str, tuple[str, ...]]

    def _missing(self, key: str) -> str:
        config = f"conf/card/{self.dataset}.yaml"
        if not self.present:
            return f"not described: write {config} (conf/card/adult.yaml shows how) and select it in conf/config.yaml"
        return f"not described: add `{key}:` to the card config (conf/card/)"

    def text(self, key: str) -> str:
        return self.texts.get(key) or self._missing(key)

    def items(self, key: str) -> tuple[str, ...]:
        return self.lists.get(key) or (self._missing(key),)


def read_card(data: Mapping[str, Any], source: str) -> CardText:
    """The card config (params.yaml's `card` section, from conf/card/); `data` holds the dataset name and it."""
    name = str(data.get("name", "<name>"))
    if data.get("card") is None:
        return CardText(name, False, {}, {})
    reader = ConfigReader(source, "card (conf/card/)", data["card"], {*TEXTS, *LISTS})
    texts = {}
    for key in TEXTS:
        value = reader.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            reader.fail(f"{key} must be text, got {value!r}")
        if value is not None:
            texts[key] = " ".join(value.split())
    lists = {key: tuple(" ".join(v.split()) for v in reader.strings(key)) for key in LISTS if key in reader.mapping}
    return CardText(name, True, texts, lists)


def _target(spec: Any) -> str:
    """`AdamW (lr 0.003, weight_decay 0.0001)` from a Hydra `_target_` block."""
    if not isinstance(spec, Mapping):
        return NONE if spec is None else str(spec)
    name = str(spec.get("_target_", "?")).rsplit(".", 1)[-1]
    settings = ", ".join(f"{k} {v}" for k, v in spec.items() if not str(k).startswith("_"))
    return f"{name} ({settings})" if settings else name


def _model_details(params: Mapping[str, Any], now: Outputs, lineage: Lineage, schema: DatasetSchema) -> list[str]:
    model = params.get("model") or {}
    train_cfg = params.get("train") or {}
    train = now.train or {}
    export = now.export or {}
    threshold: Mapping[str, Any] = now.metrics["threshold"] if now.metrics else {}
    layers = ", ".join(
        f"{k} {v}" for k, v in model.items() if not str(k).startswith("_") and not isinstance(v, Mapping | type(None))
    )
    features = train.get("features") or {}
    best = ", ".join(f"{k} {number(v)}" for k, v in (train.get("best") or {}).items())
    commit = NONE if lineage.commit is None else code(lineage.commit)
    if lineage.changed_paths:
        commit += f" with uncommitted changes in {lineage.changed_paths} paths"
    onnx = f"ONNX opset {export.get('opset', '?')}"
    model_sha256 = lineage.manifest.files.get(MODEL) if lineage.manifest else None
    if model_sha256 is not None:
        size = f"{number(lineage.model_bytes)} bytes, " if lineage.model_bytes is not None else ""
        onnx += f", {size}sha256 {code(model_sha256)}"
    if is_number(export.get("max_abs_diff")):
        onnx += f"; its scores match torch's within {export['max_abs_diff']:.1e} on {number(export.get('rows'))} rows"
    reweigh = train.get("reweigh") or []
    return [
        f"- **Task**: binary classification of `{schema.label.name}`; the model scores the probability of "
        f"`{schema.positive_class}`.",
        f"- **Architecture**: {str(model.get('_target_', '?')).rsplit('.', 1)[-1]} ({layers}).",
        f"- **Size**: {number(train.get('parameters'))} parameters; {number(features.get('width'))} inputs from "
        f"{number(features.get('columns'))} columns.",
        f"- **Training**: optimizer {_target(model.get('optimizer'))}, scheduler {_target(model.get('scheduler'))}; "
        f"batch size {train_cfg.get('batch_size', '?')}, class weight {train_cfg.get('class_weight', '?')}, "
        f"reweighing {'by ' + ', '.join(map(str, reweigh)) if reweigh else 'off'}; {train.get('epochs', '?')} epochs, "
        f"best epoch {train.get('best_epoch', '?')} ({best or NONE}).",
        f"- **Format**: {onnx}; the preprocessing (models/preprocess.json) is plain JSON applied with NumPy.",
        f"- **Decision threshold**: {number(threshold.get('value'))}, rule `{threshold.get('rule', '?')}`, chosen on "
        f"the {threshold.get('chosen_on', '?')} split.",
        f"- **Version**: built from commit {commit}; the model bundle's manifest (models/manifest.json) records "
        "the sha256 of its files and of the data it was trained, tuned and tested on.",
    ]


def _preprocessing(preprocess: Mapping[str, Any], now: Outputs) -> str:
    """How the model's inputs are made from the columns (conf/config.yaml `preprocess`, fitted on train)."""
    skew = preprocess.get("log1p_skew_above")
    log1p = f", log1p first where a column's skewness is above {skew:g}" if isinstance(skew, int | float) else ""
    features = ((now.train or {}).get("features")) or {}
    shape = (
        f"; {number(features.get('columns'))} columns become {number(features.get('width'))} inputs" if features else ""
    )
    return (
        "- **Preprocessing** (fitted on the train split only; models/preprocess.json): numbers standardised, with "
        f"a missing indicator where a column may be missing{log1p}; categories one-hot encoded over the values "
        f"seen at least {preprocess.get('min_category_count', '?')} times in training, rarer and unseen values "
        f'sharing an "other" input and missing ones a "missing" input{shape}.'
    )


def _data_handling(schema: DatasetSchema, now: Outputs) -> list[str]:
    def names(columns: Any) -> str:
        return ", ".join(f"`{c.name}`" for c in columns) or "none"

    dropped = [c for c in schema.columns if c.pii == "drop"]
    pseudonymised = [c for c in schema.columns if c.pii == "pseudonymize"]
    lines = [
        f"- **Dropped at ingest**: {names(dropped)}.",
        f"- **Pseudonymised** (keyed HMAC-SHA256): {names(pseudonymised)}.",
    ]
    for column in schema.columns:
        gen = column.generalization
        if gen is None:
            continue
        if gen.bin_labels is not None:
            how = f"into bands {', '.join(gen.bin_labels)}"
        elif gen.group_names is not None:
            how = f"into {len(gen.group_names)} groups ({', '.join(gen.group_names)})"
        else:
            how = f"top-coded at {number(gen.top_code)}"
        lines.append(f"- **Generalised**: `{column.name}` {how}.")
    for column in schema.protected_columns:
        groups = f"banded {', '.join(column.band_labels)}" if column.band_labels else "its categories as groups"
        use = "also a model input" if column.feature else "not a model input"
        lines.append(f"- **Protected attribute** `{column.name}`: {groups}; {use}.")
    ingest = now.ingest or {}
    if ingest:
        reasons = ", ".join(f"{k} {number(v)}" for k, v in sorted((ingest.get("quarantined_by_reason") or {}).items()))
        lines.append(
            f"- **Quarantined**: {number(ingest.get('rows_quarantined'))} of {number(ingest.get('rows_read'))} rows "
            f"read ({reasons or 'no reason recorded'}); {number(ingest.get('rows_clean'))} clean rows."
        )
    split = now.split or {}
    if split:
        sizes = {p: split.get(p) or {} for p in ("train", "val", "test")}
        parts = ", ".join(
            f"{p} {number(s.get('rows'))} (positive rate {number(s.get('label_rate'))})" for p, s in sizes.items()
        )
        stratify = ", ".join(map(str, split.get("stratify") or [])) or "nothing"
        lines.append(f"- **Splits** (seed {split.get('seed', '?')}, stratified by {stratify}): {parts}.")
    return lines


def _percent(confidence: Any) -> str:
    """reports/intervals.json's confidence level, as evaluate recorded it."""
    return f"{confidence:.0%}" if is_number(confidence) else "?"


def _metrics(now: Outputs) -> list[str]:
    test: Mapping[str, Any] = now.metrics["test"] if now.metrics else {}
    intervals: Mapping[str, Any] = now.intervals or {}
    bounds = intervals.get("test") or {}
    if intervals:
        how = (
            f"{_percent(intervals.get('confidence'))} bootstrap intervals over "
            f"{number(intervals.get('resamples'))} resamples of the test rows (seed {intervals.get('seed', '?')})."
        )
    else:
        how = "No confidence intervals: reports/intervals.json is absent (the evaluate stage writes it)."
    rows = [
        [code(k), number(v), interval(bounds.get(k))] for k, v in test.items() if k not in ("rows", "positive_rate")
    ]
    return [
        f"On the held-out test split: {number(test.get('rows'))} rows, positive rate "
        f"{number(test.get('positive_rate'))}. {how}",
        "",
        *table(("Metric", "Value", ci(now.intervals)), rows, right=2),
    ]


def _baselines(now: Outputs, gated: list[tuple[str, str]]) -> list[str]:
    """How the network compares with the classical baselines (reports/baselines.json), in numbers."""
    found = now.baselines
    if found is None:
        return ["Not compared: reports/baselines.json is absent (the baselines stage writes it)."]
    if not found.get("enabled"):
        return ["Not compared: the classical baselines are off for this dataset (`baselines.enabled: false`)."]
    ours = now.metrics["test"].get("auroc") if now.metrics else None
    compared = []
    for name in in_order(found["models"]):
        theirs = found["models"][name]["test"].get("auroc")
        if not is_number(ours) or not is_number(theirs):
            continue
        gap = round(ours - theirs, 3)
        side = "the same as" if gap == 0 else f"{abs(gap):.3f} {'above' if gap > 0 else 'below'}"
        best = ", the best baseline" if name == found.get("best") else ""
        compared.append(f"{side} {NAMES.get(name, name)} ({theirs:.3f}{best})")
    said = (
        f"The network's test AUROC is {ours:.3f}: {'; '.join(compared)}."
        if compared and is_number(ours)
        else "No test AUROC to compare."
    )
    return [said, "", BASELINES_HOW, "", *baselines_table(now, gated)]


def _fairness(now: Outputs) -> list[str]:
    summaries: Mapping[str, Any] = now.metrics["fairness"] if now.metrics else {}
    intervals = now.intervals["fairness"] if now.intervals else {}
    lines = []
    for attribute, groups in now.protected_groups().items():
        rows = fairness_summary_rows(attribute, summaries.get(attribute) or {}, None, intervals.get(attribute))
        lines += [f"**{attribute}**", "", *group_table(groups), ""]
        if rows:
            lines += [*table(("Attribute", "Gap", "Value", ci(now.intervals)), rows, right=2), ""]
    return lines[:-1] or ["No protected attribute is declared in the dataset config."]


def _gate(now: Outputs) -> list[str]:
    gate = now.gate
    if gate is None:
        return ["The gate has not run (reports/gate.json is absent): this version has no verdict."]
    lines = [f"**{str(gate.get('verdict', '?')).upper()}**: {str(gate.get('reason', '')).rstrip('.')}."]
    champion = (gate.get("champion") or {}).get("description")
    if champion:
        lines.append(f"The champion it was compared with: {champion}.")
    lines.append("")
    for check in ordered_checks(gate):
        if not check.get("passed") or check.get("warning"):
            outcome = "passed with a warning" if check.get("passed") else "failed"
            lines.append(f"- `{check.get('name')}` {outcome}: {check.get('reason', '')}")
    return lines if lines[-1] else lines[:-1]


def automatic_limitations(now: Outputs, schema: DatasetSchema, min_positives: int) -> list[str]:
    """What the outputs themselves show: groups too small to trust, undefined gaps, protected inputs."""
    found = []
    summaries: Mapping[str, Any] = now.metrics["fairness"] if now.metrics else {}
    min_size = (now.fairness or {}).get("min_group_size")
    for attribute, groups in now.protected_groups().items():
        summary = summaries.get(attribute) or {}
        tpr_compared = summary.get("groups_compared_tpr")
        for group, m in groups.items():
            size, base = m.get("size"), m.get("base_rate")
            if is_number(size) and is_number(base) and round(size * base) < min_positives:
                left_out = isinstance(tpr_compared, list) and group not in tpr_compared
                found.append(
                    f"{attribute}={group} has only {round(size * base)} positives in test ({number(size)} rows, "
                    f"fewer than {min_positives}): its TPR is uncertain"
                    + (" and left out of the TPR gaps." if left_out else ".")
                )
        small = summary.get("groups_too_small") or []
        if small:
            found.append(
                f"{attribute}: {', '.join(map(str, small))} "
                f"{'has' if len(small) == 1 else 'have'} fewer than {number(min_size)} test rows and "
                f"{'is' if len(small) == 1 else 'are'} left out of the fairness gaps."
            )
        undefined = [k for k, v in summary.items() if v is None]
        if undefined:
            found.append(f"{attribute}: {', '.join(undefined)} undefined (too few groups or cases to compare).")
    inputs = [c.name for c in schema.protected_columns if c.feature]
    if inputs:
        found.append(
            f"The model takes the protected attributes {', '.join(inputs)} as inputs (`feature: true` in the "
            "dataset config)."
        )
    rows = now.metrics["test"].get("rows") if now.metrics else None
    found.append(
        f"The metrics come from a held-out split of the same data ({number(rows)} rows): they say nothing about "
        "data from another time, place or population."
    )
    return found


def render_model_card(
    params: Mapping[str, Any],
    schema: DatasetSchema,
    card: CardText,
    now: Outputs,
    lineage: Lineage,
    min_positives: int,
) -> str:
    """The whole model_card.md; `min_positives` is evaluate.min_group_cases, as evaluate used it."""
    description = (params.get("data") or {}).get("description") or schema.name

    def bullets(items: Any) -> list[str]:
        return [f"- {item}" for item in items]

    lines = [
        f"# Model card: {schema.name} (commit {lineage.short})",
        "",
        f"{description}. Written by `gitml report` from the pipeline's outputs; the text about the data and its use "
        "comes from the card config (conf/card/).",
        "",
        "## Model details",
        "",
        *_model_details(params, now, lineage, schema),
        "",
        "## Intended use",
        "",
        f"- **Primary uses**: {card.text('intended_use')}",
        f"- **Primary users**: {card.text('users')}",
        "- **Out of scope**:",
        *(f"  - {item}" for item in card.items("out_of_scope")),
        "",
        "## Data",
        "",
        f"- **Source**: {card.text('source')}" + (f" <{card.texts['url']}>" if "url" in card.texts else ""),
        f"- **Licence**: {card.text('licence')}",
        *_data_handling(schema, now),
        _preprocessing(params.get("preprocess") or {}, now),
        "",
        "## Metrics",
        "",
        *_metrics(now),
        "",
        "## Compared with classical baselines",
        "",
        *_baselines(now, gated_gaps(params, now.metrics["fairness"] if now.metrics else {})),
        "",
        "## Fairness by group (test)",
        "",
        "Groups are the values (or bands) of each protected attribute; `*_difference` is the largest group's rate "
        "minus the smallest's, `*_ratio` the smallest over the largest.",
        "",
        *_fairness(now),
        "",
        "## Gate",
        "",
        *_gate(now),
        "",
        "## Ethical considerations",
        "",
        *bullets(card.items("ethical_considerations")),
        "",
        "## Limitations",
        "",
        *bullets(card.items("limitations")),
        *bullets(automatic_limitations(now, schema, min_positives)),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
