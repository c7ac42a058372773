"""`gitml drift`: production data over a window against the training reference.

Production is either the server's logs (a log directory or the bucket `gitml ship-logs` copies
them to, read for a time window), or any CSV or Parquet table of records (a batch checked before
it is scored). The reference is data/processed/reference.parquet, training rows the split stage
keeps, scored by the bundle in models/. The tests (gitml.monitor.detect says how each decides):

  every request field   numeric: Wasserstein / sd; categorical: total variation; missing shares;
                        categories the reference never has
  rejections            the share of /predict requests rejected for each field (logs only)
  prediction            the model's scores
  multivariate          a classifier telling reference rows from production rows
  with feedback labels  label rate, live accuracy and AUROC against the test split's, and live
                        fairness: the gate's summaries and limits (gates.fairness) on the labelled
                        predictions, decided on bootstrap intervals as the gate's interval rule does

Outputs: reports/drift.json (every test), reports/drift.md (an issue body: the verdict first), and
reports/drift.html (Deepchecks' drift checks on the same rows). Exit 0: no drift; 1: drift; 2: the
input cannot be judged (no rows in the window, columns missing), with a message that says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from gitml.checked_config import ConfigReader
from gitml.config import section
from gitml.errors import GitmlError, UnusableInputError
from gitml.monitor import detect
from gitml.monitor.command import duration, stamp
from gitml.monitor.detect import Finding
from gitml.paths import Paths

LIMITS = (
    "numeric", "categorical", "missing", "new_categories", "rejections", "prediction", "label",
    "multivariate", "accuracy", "auroc",
)  # fmt: skip
_KEYS = {
    "window", "min_rows", "alpha", "limits", "min_count", "multivariate_rows", "seed", "min_labels",
    "fairness", "deepchecks_rows",
}  # fmt: skip
# What a finding's kind is drift of: drift.yml keeps one open issue per group.
GROUPS = {
    "numeric": "data", "categorical": "data", "missing": "data", "new_categories": "data",
    "rejections": "data", "multivariate": "data", "prediction": "prediction", "label": "label",
    "performance": "performance", "fairness": "fairness",
}  # fmt: skip
FEATURE_KINDS = ("numeric", "categorical", "missing", "new_categories", "rejections")


@dataclass(frozen=True)
class DriftConfig:
    """The `drift` section of params.yaml (conf/drift/)."""

    window: timedelta
    min_rows: int
    alpha: float
    limits: Mapping[str, float]
    min_count: int
    multivariate_rows: int
    seed: int
    min_labels: int
    fairness_decide_on: str
    fairness_min_labels: int
    deepchecks_rows: int

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], source: str) -> DriftConfig:
        reader = ConfigReader(source, "drift", cfg, _KEYS)
        limits = ConfigReader(source, "drift.limits", reader.required("limits"), set(LIMITS))
        fairness = ConfigReader(source, "drift.fairness", reader.required("fairness"), {"decide_on", "min_labels"})
        return cls(
            window=duration(reader.text("window"), f"{source}: drift.window"),
            min_rows=reader.integer("min_rows", minimum=1),
            alpha=reader.bounded("alpha", 0, 1, open_ends=True),
            limits={name: limits.bounded(name, 0, 1, open_ends=True) for name in LIMITS},
            min_count=reader.integer("min_count", minimum=1),
            multivariate_rows=reader.integer("multivariate_rows", minimum=100),
            seed=reader.integer("seed"),
            min_labels=reader.integer("min_labels", minimum=10),
            fairness_decide_on=fairness.choice("decide_on", ("interval", "gate")),
            fairness_min_labels=fairness.integer("min_labels", minimum=10),
            deepchecks_rows=reader.integer("deepchecks_rows", minimum=0),
        )


@dataclass
class Production:
    """The rows a check judges, with the model's scores and, where feedback exists, labels."""

    frame: pd.DataFrame  # the request fields, as the model saw them (generalised)
    scores: npt.NDArray[np.float64]
    decisions: npt.NDArray[np.bool_]
    labels: npt.NDArray[Any] | None  # the label of each row, None where there is none
    source: str
    since: datetime | None = None
    until: datetime | None = None
    requests: int | None = None  # /predict requests answered (logs only)
    rejections: pd.DataFrame | None = None  # one row per (rejected request, field) (logs only)
    versions: dict[str, int] | None = None


@dataclass
class Reference:
    frame: pd.DataFrame
    scores: npt.NDArray[np.float64]
    labels: npt.NDArray[Any]


def load_bundle(paths: Paths) -> Any:
    from gitml.bundle import load

    return load(paths.models)


def score(bundle: Any, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
    """The bundle's scores of a table of request fields."""
    from gitml.bundle import runtime
    from gitml.data.features import frame_columns

    if frame.empty:
        return np.zeros(0)
    x = bundle.spec.transform(frame_columns(frame, bundle.spec.input_columns))
    return runtime.run(bundle.session, x).astype(np.float64)


def request_names(schema: Any) -> list[str]:
    from gitml.serve.requests import request_columns

    return [c.name for c in request_columns(schema)]


def reference(paths: Paths, bundle: Any) -> Reference:
    path = paths.split_file("reference")
    if not path.is_file():
        raise UnusableInputError(
            f"{path}: not found; the split stage writes the drift reference. Run `make run` (or `dvc repro split`), "
            "or fetch it with `dvc pull`."
        )
    frame = pd.read_parquet(path)
    label = bundle.schema.label.name
    names = request_names(bundle.schema)
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise UnusableInputError(
            f"{path}: lacks the columns {', '.join(missing)} of the bundle's schema; it comes from another "
            "dataset or pipeline run. Re-run the pipeline (`dvc repro`) or `dvc pull`."
        )
    return Reference(frame[names], score(bundle, frame[names]), frame[label].to_numpy(dtype=object))


def from_table(path: Path, bundle: Any) -> Production:
    """A CSV or Parquet table of records, generalised and scored as the server would."""
    from gitml.serve.requests import Anonymizer

    if not path.is_file():
        raise UnusableInputError(f"{path}: not found; give a CSV or Parquet file of records (--data).")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=None, engine="python", na_values=["", "NA", "?"], keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise UnusableInputError(f"{path}: not readable as a CSV or Parquet table ({exc}).") from exc
    schema = bundle.schema
    names = request_names(schema)
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise UnusableInputError(
            f"{path}: the columns {', '.join(missing)} are missing; a record has the fields {', '.join(names)} "
            f"(conf/data/, dataset '{schema.name}'). Its columns: {', '.join(map(str, frame.columns)) or 'none'}."
        )
    out = pd.DataFrame(index=range(len(frame)))
    for name in names:
        column, values = schema.column(name), frame[name].reset_index(drop=True)
        if column.numeric and not (column.generalization is not None and column.generalization.bin_labels):
            numbers = pd.to_numeric(values, errors="coerce")
            bad = values.notna() & numbers.isna()
            if bad.any():
                example = str(values[bad].iloc[0])[:40]
                raise UnusableInputError(
                    f"{path}: column {name}: {int(bad.sum())} values are not numbers (e.g. '{example}'); "
                    "the dataset config declares it numeric."
                )
            out[name] = numbers.astype(np.float64)
        else:
            out[name] = values.astype(object).where(values.notna(), None).map(lambda v: v if v is None else str(v))
    columns = {name: out[name].tolist() for name in names}
    Anonymizer(schema)(columns)
    frame_out = pd.DataFrame(columns)
    for name in names:
        if schema.column(name).output_dtype in ("integer", "float"):
            frame_out[name] = pd.to_numeric(frame_out[name], errors="coerce").astype(np.float64)
    scores = score(bundle, frame_out)
    labels = None
    if schema.label.name in frame.columns:
        labels = frame[schema.label.name].astype(object).where(frame[schema.label.name].notna(), None).to_numpy()
        labels = np.array([None if v is None else str(v).strip() for v in labels], dtype=object)
    return Production(frame_out, scores, scores >= bundle.threshold.value, labels, source=str(path))


def from_logs(source: str, bundle: Any, since: datetime | None, until: datetime | None) -> Production:
    """The logged predictions of a window, with their feedback labels and the window's rejections."""
    from gitml.logs.read import read_window

    try:
        window = read_window(source, bundle.schema, since, until)
    except GitmlError as exc:  # nothing shipped there, storage that cannot be listed, a damaged file
        raise UnusableInputError(str(exc)) from exc
    predictions = window.predictions
    names = request_names(bundle.schema)
    labels = None
    if not window.feedback.empty and not predictions.empty:
        joined = predictions[["request_id", "index"]].merge(
            window.feedback[["request_id", "index", "label"]], on=["request_id", "index"], how="left"
        )
        labels = joined["label"].astype(object).where(joined["label"].notna(), None).to_numpy()
    versions = predictions["model_version"].value_counts().to_dict() if not predictions.empty else {}
    return Production(
        predictions[names].reset_index(drop=True),
        predictions["score"].to_numpy(dtype=np.float64),
        predictions["decision"].to_numpy(dtype=bool),
        labels,
        source=source,
        since=since,
        until=until,
        requests=window.requests,
        rejections=window.rejections,
        versions={str(k): int(v) for k, v in versions.items()},
    )


# --- the tests -------------------------------------------------------------------------------------


def feature_findings(schema: Any, ref: pd.DataFrame, prod: pd.DataFrame, config: DriftConfig) -> list[Finding]:
    """Per request field: its distribution, its missing share, categories the reference never has."""
    limits, out = config.limits, []
    for name in request_names(schema):
        column = schema.column(name)
        if column.output_dtype in ("integer", "float"):
            r = ref[name].to_numpy(dtype=np.float64, na_value=np.nan)
            p = prod[name].to_numpy(dtype=np.float64, na_value=np.nan)
            out.append(detect.numeric(name, r, p, limits["numeric"]))
            missing_ref, missing_prod = int(np.isnan(r).sum()), int(np.isnan(p).sum())
            if missing_ref or missing_prod:
                out.append(
                    detect.proportion(
                        name, "missing", missing_ref, r.size, missing_prod, p.size, limits["missing"],
                        "change in the share of missing values",
                    )
                )  # fmt: skip
            continue
        r_counts, p_counts = detect.counts(ref[name]), detect.counts(prod[name])
        out.append(detect.categorical(name, r_counts, p_counts, limits["categorical"]))
        unseen = {c: n for c, n in p_counts.items() if c not in r_counts and c != detect.MISSING}
        total = sum(p_counts.values())
        if unseen and total:
            share = sum(unseen.values()) / total
            declared = set(column.output_categories or ())
            finding = Finding(
                name, "new_categories", "share of rows with a category the reference never has", share,
                limits["new_categories"],
                detail={
                    "categories": [
                        {"category": c if c in declared else "(not in the schema)", "rows": n}
                        for c, n in sorted(unseen.items(), key=lambda item: -item[1])[:10]
                    ],
                    "rows": total,
                },
            )  # fmt: skip
            # Unknown values are never echoed: a category the schema does not declare may be anything.
            finding.drifted = share >= limits["new_categories"] and sum(unseen.values()) >= config.min_count
            out.append(finding)
    return out


def rejection_findings(production: Production, config: DriftConfig) -> list[Finding]:
    """The share of /predict requests rejected for each field: an upstream change shows here first."""
    rejected = production.rejections
    if rejected is None or rejected.empty:
        return []
    predict = rejected[rejected["endpoint"] == "/predict"]
    total = (production.requests or 0) + int(predict["request"].nunique())
    out = []
    for field_name, rows in predict.groupby("field"):
        requests = int(rows["request"].nunique())
        share = requests / total if total else 0.0
        reasons = rows["reason"].value_counts().head(5)
        finding = Finding(
            str(field_name), "rejections", "share of /predict requests rejected for this field", share,
            config.limits["rejections"],
            detail={"requests": requests, "of": total, "reasons": {str(k): int(v) for k, v in reasons.items()}},
        )  # fmt: skip
        finding.drifted = share >= config.limits["rejections"] and requests >= config.min_count
        out.append(finding)
    return out


def label_findings(
    schema: Any, production: Production, ref: Reference, expected: Mapping[str, float], config: DriftConfig
) -> tuple[list[Finding], dict[str, Any]]:
    """Label rate, live accuracy and AUROC of the labelled predictions; and how many there are."""
    if production.labels is None:
        return [], {"labelled": 0, "note": "no feedback labels in the input"}
    has = np.array([v is not None for v in production.labels], dtype=bool)
    n = int(has.sum())
    info: dict[str, Any] = {"labelled": n}
    if n < config.min_labels:
        info["note"] = f"{n} labelled predictions, fewer than drift.min_labels ({config.min_labels})"
        return [], info
    positive = schema.positive_class
    y = production.labels[has] == positive
    ref_y = ref.labels == positive
    findings = [
        detect.proportion(
            "label", "label", int(ref_y.sum()), int(ref_y.size), int(y.sum()), n, config.limits["label"],
            f"change in the share of '{positive}' labels",
        )
    ]  # fmt: skip
    accuracy = float((production.decisions[has] == y).mean())
    if "accuracy" in expected:
        a = float(expected["accuracy"])
        se = math.sqrt(max(a * (1 - a), 1e-12) / n)
        findings.append(detect.performance("accuracy", accuracy, a, se, n, config.limits["accuracy"]))
    auc, se = detect.auroc(production.scores[has], y)
    if "auroc" in expected and math.isfinite(auc):
        findings.append(detect.performance("auroc", auc, float(expected["auroc"]), se, n, config.limits["auroc"]))
    info |= {"accuracy": round(accuracy, 6), "auroc": None if not math.isfinite(auc) else round(auc, 6)}
    return findings, info


def fairness_findings(
    params: Mapping[str, Any], source: Path, schema: Any, production: Production, threshold: float, config: DriftConfig
) -> tuple[list[Finding], dict[str, Any]]:
    """The gate's fairness checks on the labelled predictions (gates.fairness; evaluate's groups and bootstrap)."""
    from gitml.evaluate.bootstrap import summary_groups
    from gitml.evaluate.config import read_config
    from gitml.evaluate.measures import label, measure
    from gitml.evaluate.metrics import fairness_summary, group_codes, group_metrics
    from gitml.gates.fairness import fairness_checks, gated_limits

    if production.labels is None:
        return [], {}
    has = np.array([v is not None for v in production.labels], dtype=bool)
    n = int(has.sum())
    if n < config.fairness_min_labels:
        return [], {
            "note": f"{n} labelled predictions, fewer than drift.fairness.min_labels ({config.fairness_min_labels})"
        }
    evaluate = read_config(section(params, "evaluate", source), source.name)
    gates = section(params, "gates", source)
    limits = gated_limits(gates.get("fairness", {}), source.name, [c.name for c in schema.protected_columns])
    if config.fairness_decide_on == "interval":
        limits = {a: {m: {**v, "decide_on": "interval"} for m, v in ms.items()} for a, ms in limits.items()}
    if not limits:
        return [], {"note": "gates.fairness gates no attribute"}
    scores = production.scores[has].astype(np.float32)
    y = (production.labels[has] == schema.positive_class).astype(np.float32)
    chosen = production.decisions[has]
    summaries: dict[str, Any] = {}
    by_attribute: dict[str, dict[str, Any]] = {}
    groups_out: dict[str, Any] = {}
    for attribute in limits:
        values = production.frame[attribute].to_numpy(dtype=object)[has]
        groups = schema.protected_groups(attribute, values)
        per_group = group_metrics(scores, y, groups, threshold)
        summaries[attribute] = fairness_summary(
            scores, y, groups, threshold, per_group, evaluate.min_group_size, evaluate.min_group_cases
        )
        names, codes = group_codes(groups)
        compared = summary_groups(names, summaries[attribute])
        by_attribute[attribute] = cell_intervals(y, chosen, codes, compared, evaluate.bootstrap)
        groups_out[attribute] = per_group
    checks = fairness_checks(limits, summaries, by_attribute, evaluate.bootstrap.confidence)
    out = []
    for check in checks:
        metric = check.name.rsplit("/", 1)[1]
        finding = Finding(
            check.name.removeprefix("fairness/"), "fairness", label(metric), check.value, check.threshold or 0.0,
            detail={"interval": list(check.interval) if check.interval else None, "warning": check.warning},
            at_least=measure(metric).better == "higher",
        )  # fmt: skip
        # A summary the labels cannot define yet (too few cases in a group) is no alarm: the gate fails
        # it because a candidate must show its fairness; a window may simply be small.
        finding.drifted = not check.passed and check.value is not None
        finding.note = check.reason
        out.append(finding)
    info = {"labelled": n, "confidence": evaluate.bootstrap.confidence, "groups": groups_out, "summaries": summaries}
    return out, info


def cell_intervals(
    y: npt.NDArray[np.float32],
    chosen: npt.NDArray[np.bool_],
    codes: npt.NDArray[np.int64],
    compared: tuple[list[int], list[int], list[int]],
    config: Any,
) -> dict[str, list[float] | None]:
    """The evaluate stage's percentile bootstrap of the fairness summaries, drawn over cells, not rows.

    A summary depends on a row only through its (group, label, decision) cell, so drawing n rows with
    replacement is drawing the cells' counts from a multinomial over the cells' shares: the same
    distribution as gitml.evaluate.bootstrap's, in a time that does not grow with the window.
    """
    from gitml.evaluate.bootstrap import _interval, weighted_gaps

    keys = np.stack([codes, y.astype(np.int64), chosen.astype(np.int64)], axis=1)
    cells, sizes = np.unique(keys, axis=0, return_counts=True)
    rng = np.random.default_rng(config.seed)
    counts = rng.multinomial(len(y), sizes / sizes.sum(), size=config.resamples).astype(np.float64)
    gaps = weighted_gaps(cells[:, 1].astype(np.float32), cells[:, 2].astype(bool), cells[:, 0], *compared, counts)
    return {name: _interval(values, config.confidence) for name, values in gaps.items()}


def multivariate_finding(bundle: Any, ref: Reference, production: Production, config: DriftConfig) -> Finding:
    from gitml.data.features import frame_columns

    rng = np.random.default_rng(config.seed)
    m = config.multivariate_rows
    take = rng.choice(len(production.frame), min(m, len(production.frame)), replace=False)
    sample = production.frame.iloc[np.sort(take)]
    x_ref = bundle.spec.transform(frame_columns(ref.frame, bundle.spec.input_columns))
    x_prod = bundle.spec.transform(frame_columns(sample, bundle.spec.input_columns))
    return detect.domain_classifier(
        x_ref, x_prod, bundle.spec.input_columns, config.limits["multivariate"], m, config.seed
    )


@dataclass
class DriftResult:
    findings: list[Finding]
    report: dict[str, Any]
    reference: Reference  # read and scored once: the Deepchecks report compares the same rows

    @property
    def drifted(self) -> bool:
        return any(f.drifted for f in self.findings)


def check(
    paths: Paths, params: Mapping[str, Any], production: Production, bundle: Any, config: DriftConfig,
    ref: Reference | None = None, multivariate: bool = True,
) -> DriftResult:  # fmt: skip
    """Every test of production against the reference, decided; the report as drift.json holds it."""
    schema = bundle.schema
    rows = len(production.frame)
    if rows < config.min_rows:
        window = f" between {stamp(production.since)} and {stamp(production.until)}" if production.until else ""
        raise UnusableInputError(
            f"{production.source}: {rows} predictions{window}, fewer than drift.min_rows ({config.min_rows}); "
            "widen the window (--since, drift.window) or lower drift.min_rows."
        )
    ref = ref or reference(paths, bundle)
    findings = feature_findings(schema, ref.frame, production.frame, config)
    findings += rejection_findings(production, config)
    findings.append(
        detect.numeric("prediction", ref.scores, production.scores, config.limits["prediction"], "prediction")
    )
    if multivariate:
        findings.append(multivariate_finding(bundle, ref, production, config))
    labelled, labels = label_findings(schema, production, ref, bundle.manifest.metrics, config)
    findings += labelled
    tested = [f for f in findings if f.p_value is not None]
    alpha = config.alpha / max(len(tested), 1)
    for finding in tested:
        finding.decide(alpha)
    fairness, fairness_info = fairness_findings(
        params, paths.params, schema, production, bundle.threshold.value, config
    )
    findings += fairness
    findings.sort(key=lambda f: (not f.drifted, -f.severity))
    _twins_first(findings, ref.frame, schema)
    drifted = [f for f in findings if f.drifted]
    groups = sorted({GROUPS[f.kind] for f in drifted})
    report = {
        "verdict": "drift" if drifted else "no drift",
        "drifted": groups,
        "source": production.source,
        "window": {"since": stamp(production.since), "until": stamp(production.until)},
        "rows": rows,
        "requests": production.requests,
        "model_versions": production.versions,
        "reference": {"rows": len(ref.frame), "path": paths.split_file("reference").relative_to(paths.root).as_posix()},
        "alpha": config.alpha,
        "tests": len(tested),
        "labels": labels,
        "fairness": fairness_info,
        "top_features": [f.name for f in findings if f.kind in FEATURE_KINDS and f.drifted],
        "findings": [f.as_json() for f in findings],
    }
    return DriftResult(findings, report, ref)


def _twins_first(findings: list[Finding], ref: pd.DataFrame, schema: Any) -> None:
    """A numeric feature ahead of a categorical one that is its copy (education-num and education).

    A categorical column that determines a numeric one in the reference (one value per category) moves
    with it, and its total variation often ranks it above the column that was shifted. The number is
    named first and the category is marked as its twin.
    """
    index = {id(f): i for i, f in enumerate(findings)}
    for cat in [f for f in findings if f.drifted and f.kind == "categorical"]:
        for num in [f for f in findings if f.drifted and f.kind == "numeric"]:
            if index[id(num)] < index[id(cat)]:
                continue
            values = ref[[cat.name, num.name]].dropna()
            if (
                values.empty
                or values[cat.name].nunique() < 2
                or (values.groupby(cat.name, observed=True)[num.name].nunique() > 1).any()
            ):
                continue
            cat.detail["twin_of"] = num.name
            findings.remove(num)
            findings.insert(findings.index(cat), num)
            index = {id(f): i for i, f in enumerate(findings)}
