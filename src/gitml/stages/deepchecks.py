"""deepchecks stage: Deepchecks suites on the splits and the exported model's scores.

Writes one HTML report per suite under reports/deepchecks/ and every condition's outcome to
reports/deepchecks.json, which the gate reads:
  data_integrity         the train split on its own
  train_test_validation  train against test: drift, new categories, leakage
  model_evaluation       the model on test, against its train scores and a simple tree
  performance_bias       the model's score in each group of each protected attribute, on test

Deepchecks gets the model as its scores (static predictions), never as an object: given a model it
would compute permutation feature importance first, minutes on a CPU. The stage computes that
importance itself with the exported model in the ONNX runtime (permutation_importance, under a
second) and hands it over: Feature Drift ranks the columns by it and the weak-segment search takes
the most important ones. So the checks that need the
model object (Boosting Overfit, Unused Features, Model Inference Time) are left out, as are those
that need a date or index column and those that ingest already guarantees through the dataset
schema (string variants, special characters, mixed types and nulls, unknown labels). Every check
that runs carries the conditions of gates.deepchecks, none of Deepchecks' defaults. Which columns
are features, categories, protected attributes and the label comes from the dataset schema.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from gitml.bundle import load as load_bundle
from gitml.bundle import runtime
from gitml.checked_config import ConfigReader
from gitml.config import dataset_schema, section
from gitml.data.features import labels, matrices
from gitml.data.schema import DatasetSchema
from gitml.data.split import load_split
from gitml.gates import SECTIONS as GATE_SECTIONS
from gitml.outputs import CHECKS, ChecksFile, Condition
from gitml.paths import Paths

SUITES = ("data_integrity", "train_test_validation", "model_evaluation", "performance_bias")
SCORERS = ("roc_auc", "accuracy", "recall", "precision", "f1")

# The settings of gates.deepchecks, per suite; their values live in conf/gates/ only. Each is a
# whole number (a key of MINIMUM, at least that), the scorer's name (a key of CHOICES), or else
# a number in [0, 1] ([-1, 1] for the keys of SIGNED).
SETTINGS: dict[str, tuple[str, ...]] = {
    "data_integrity": (
        "max_null_ratio",
        "max_duplicate_ratio",
        "max_conflicting_label_ratio",
        "max_feature_label_pps",
        "correlation_threshold",
        "max_correlated_pairs",
    ),
    "train_test_validation": (
        "min_test_rows",
        "max_new_category_ratio",
        "max_train_test_overlap",
        "max_pps_change",
        "max_feature_drift",
        "max_label_drift",
        "max_multivariate_drift",
    ),
    "model_evaluation": (
        "max_relative_degradation",
        "min_auroc",
        "max_misclassified_cell_ratio",
        "max_prediction_drift",
        "min_gain_over_tree",
        "max_weak_segment_drop",
        "weak_segment_rows",
        "weak_segment_features",
    ),
    "performance_bias": ("scorer", "min_subgroup_size", "min_subgroup_cases", "max_drop"),
}
MINIMUM = {
    "max_correlated_pairs": 0,
    "min_test_rows": 1,
    "weak_segment_rows": 100,
    "weak_segment_features": 2,
    "min_subgroup_size": 1,
    "min_subgroup_cases": 0,
}
CHOICES = {"scorer": SCORERS}
# Settings that may be negative: a gain over the simple model may be allowed to be a small loss,
# where the test split is too small to tell the two apart.
SIGNED = {"min_gain_over_tree"}


def read_config(cfg: Mapping[str, Any], source: str) -> dict[str, Any]:
    """gates.deepchecks, checked: {random_state, <suite>: {setting: value}}; every setting is required."""
    reader = ConfigReader(source, "gates.deepchecks", cfg, {"random_state", "sampling_noise_z", *SETTINGS})
    config: dict[str, Any] = {
        "random_state": reader.integer("random_state"),
        "sampling_noise_z": reader.bounded("sampling_noise_z", 0),
    }
    for suite, keys in SETTINGS.items():
        part = ConfigReader(source, f"gates.deepchecks.{suite}", reader.required(suite), set(keys))
        values: dict[str, Any] = {}
        for key in keys:
            if key in CHOICES:
                values[key] = part.choice(key, CHOICES[key])
            elif key in MINIMUM:
                values[key] = part.integer(key, minimum=MINIMUM[key])
            elif key in SIGNED:
                values[key] = part.bounded(key, -1, 1)
            else:
                values[key] = part.bounded(key, 0, 1)
        config[suite] = values
    return config


def noise_floors(z: float, train_rows: int, test_rows: int, fewest_cases: int) -> dict[tuple[str, str], float]:
    """The least each noise-bound limit can be on splits this size: `z` standard errors of what it
    measures when nothing is wrong, so that a split too small to tell a real change from sampling
    noise does not fail on noise. Approximate standard errors: a distance between two samples
    (KS, Cramer's V, a domain classifier), sqrt(1/n_train + 1/n_test); a score over the test rows,
    1/sqrt(n_test); a per-class rate over the smaller class's test cases, relative, 1/sqrt(cases).
    On large splits the floors are far below the configured limits, which then hold as they are."""
    two_samples = math.sqrt(1 / max(train_rows, 1) + 1 / max(test_rows, 1))
    return {
        ("train_test_validation", "max_pps_change"): z / math.sqrt(max(test_rows, 1)),
        ("train_test_validation", "max_feature_drift"): z * two_samples,
        ("train_test_validation", "max_multivariate_drift"): z * two_samples,
        ("model_evaluation", "max_prediction_drift"): z * two_samples,
        ("model_evaluation", "max_relative_degradation"): z / math.sqrt(max(fewest_cases, 1)),
    }


def widen(config: Mapping[str, Any], floors: Mapping[tuple[str, str], float]) -> tuple[dict[str, Any], dict[str, str]]:
    """`config` with every limit below its floor raised to it (never above 1), and for each setting
    raised, the line that says so (added to its condition's details)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
    notes: dict[str, str] = {}
    for (suite, key), floor in floors.items():
        configured = float(out[suite][key])
        raised = round(min(max(configured, floor), 1.0), 3)
        if raised > configured:
            out[suite][key] = raised
            notes[f"gates.deepchecks.{suite}.{key}"] = (
                f"limit {configured:g} raised to {raised:g}: {config['sampling_noise_z']:g} standard errors of "
                "the sampling noise of splits this size (gates.deepchecks.sampling_noise_z)"
            )
    return out, notes


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No progress bars, log lines or warnings from Deepchecks and the libraries under it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import deepchecks  # type: ignore[import-untyped]  # noqa: F401  (its first import sets the log level)

        logger = logging.getLogger("deepchecks")
        level = logger.level
        logger.setLevel(logging.ERROR)  # progress bars show at INFO
        try:
            yield
        finally:
            logger.setLevel(level)


def class_names(schema: DatasetSchema) -> tuple[str, str]:
    """(negative, positive) as Deepchecks shows the label: it sorts the classes and scores the second as positive."""
    positive = schema.positive_class
    others = [c for c in schema.label.categories or () if c != positive]
    negative = others[0] if len(others) == 1 else f"not {positive}"
    return (negative, positive) if negative < positive else (f"0: {negative}", f"1: {positive}")


def data_columns(schema: DatasetSchema) -> tuple[list[str], list[str]]:
    """The columns Deepchecks checks (model inputs and protected attributes), and which of them are categorical."""
    columns = [c for c in schema.kept_columns if c in schema.feature_columns or c in schema.protected_columns]
    return [c.name for c in columns], [c.name for c in columns if c.output_dtype not in ("integer", "float")]


def group_column(schema: DatasetSchema, name: str) -> str:
    """The column name of a protected attribute's groups: `age (band)` where numbers fall into bands."""
    return f"{name} (band)" if schema.column(name).bands is not None else name


def datasets(schema: DatasetSchema, frames: Mapping[str, pd.DataFrame]) -> dict[str, tuple[Any, Any]]:
    """{split: (data Dataset, protected-groups Dataset)}; the splits' rows keep distinct index values in order."""
    from deepchecks.tabular import Dataset  # type: ignore[import-untyped]

    columns, categorical = data_columns(schema)
    label = schema.label.name
    negative, positive = class_names(schema)
    out: dict[str, tuple[Any, Any]] = {}
    start = 0
    for name, frame in frames.items():
        index = pd.RangeIndex(start, start + len(frame))
        start += len(frame)
        target = np.where(labels(schema, frame[label].to_numpy()) == 1, positive, negative)
        data = frame[columns].set_axis(index, axis="index").assign(**{label: target})
        groups = pd.DataFrame(
            {
                group_column(schema, c.name): schema.protected_groups(c.name, frame[c.name].to_numpy())
                for c in schema.protected_columns
            },
            index=index,
        )
        group_names = list(groups.columns)
        groups[label] = target
        out[name] = (
            Dataset(data, label=label, cat_features=categorical, label_type="binary", dataset_name=name),
            Dataset(groups, label=label, cat_features=group_names, label_type="binary", dataset_name=name),
        )
    return out


# The key of gates.deepchecks.<suite> that sets each check's limit, in build_suites' order (None:
# a check with no limit to set); every check of performance_bias has the same.
LIMIT_KEYS: dict[str, tuple[str | None, ...]] = {
    "data_integrity": (
        None, "max_null_ratio", "max_duplicate_ratio", "max_conflicting_label_ratio", "max_feature_label_pps",
        "max_correlated_pairs",
    ),
    "train_test_validation": (
        "min_test_rows", "max_new_category_ratio", "max_train_test_overlap", "max_pps_change", "max_feature_drift",
        "max_label_drift", "max_multivariate_drift",
    ),
    "model_evaluation": (
        "max_relative_degradation", "min_auroc", "max_misclassified_cell_ratio", "max_prediction_drift",
        "min_gain_over_tree", "max_weak_segment_drop",
    ),
}  # fmt: skip


def setting(suite: str, position: int) -> str | None:
    """`gates.deepchecks.<suite>.<key>` of the check at `position` of a suite, or None."""
    keys = LIMIT_KEYS.get(suite)
    key = "max_drop" if keys is None else keys[position] if position < len(keys) else None
    return None if key is None else f"gates.deepchecks.{suite}.{key}"


def build_suites(config: Mapping[str, Any], group_columns: Sequence[str]) -> dict[str, Any]:
    """The four suites, each check with the conditions of `config` (see read_config)."""
    from deepchecks.tabular import Suite
    from deepchecks.tabular import checks as dc

    seed = config["random_state"]
    di, tt, me, pb = (config[name] for name in SUITES)
    performance_bias = every_group_performance_bias()
    return {
        "data_integrity": Suite(
            "Data Integrity (train)",
            dc.IsSingleValue().add_condition_not_single_value(),
            dc.PercentOfNulls(random_state=seed).add_condition_percent_of_nulls_not_greater_than(di["max_null_ratio"]),
            dc.DataDuplicates(random_state=seed).add_condition_ratio_less_or_equal(di["max_duplicate_ratio"]),
            dc.ConflictingLabels(random_state=seed).add_condition_ratio_of_conflicting_labels_less_or_equal(
                di["max_conflicting_label_ratio"]
            ),
            dc.FeatureLabelCorrelation(random_state=seed).add_condition_feature_pps_less_than(
                di["max_feature_label_pps"]
            ),
            dc.FeatureFeatureCorrelation(random_state=seed).add_condition_max_number_of_pairs_above_threshold(
                di["correlation_threshold"], di["max_correlated_pairs"]
            ),
        ),
        "train_test_validation": Suite(
            "Train-Test Validation",
            dc.DatasetsSizeComparison().add_condition_test_size_greater_or_equal(tt["min_test_rows"]),
            dc.NewCategoryTrainTest().add_condition_new_category_ratio_less_or_equal(tt["max_new_category_ratio"]),
            dc.TrainTestSamplesMix(random_state=seed).add_condition_duplicates_ratio_less_or_equal(
                tt["max_train_test_overlap"]
            ),
            dc.FeatureLabelCorrelationChange(random_state=seed).add_condition_feature_pps_difference_less_than(
                tt["max_pps_change"]
            ),
            dc.FeatureDrift(random_state=seed).add_condition_drift_score_less_than(
                tt["max_feature_drift"], tt["max_feature_drift"]
            ),
            dc.LabelDrift(random_state=seed).add_condition_drift_score_less_than(tt["max_label_drift"]),
            dc.MultivariateDrift(random_state=seed).add_condition_overall_drift_value_less_than(
                tt["max_multivariate_drift"]
            ),
        ),
        "model_evaluation": Suite(
            "Model Evaluation (test)",
            dc.TrainTestPerformance(random_state=seed).add_condition_train_test_relative_degradation_less_than(
                me["max_relative_degradation"]
            ),
            dc.RocReport(random_state=seed).add_condition_auc_greater_than(me["min_auroc"]),
            dc.ConfusionMatrixReport(random_state=seed).add_condition_misclassified_samples_lower_than_condition(
                me["max_misclassified_cell_ratio"]
            ),
            dc.PredictionDrift(random_state=seed).add_condition_drift_score_less_than(me["max_prediction_drift"]),
            dc.SimpleModelComparison(strategy="tree", random_state=seed).add_condition_gain_greater_than(
                me["min_gain_over_tree"]
            ),
            # It fits trees on every pair of the most important features (permutation_importance):
            # the feature count bounds the pairs, the row sample each fit.
            dc.WeakSegmentsPerformance(
                n_top_features=me["weak_segment_features"], n_samples=me["weak_segment_rows"], random_state=seed
            ).add_condition_segments_relative_performance_greater_than(me["max_weak_segment_drop"]),
        ),
        "performance_bias": Suite(
            "Performance Bias (test)",
            *(
                performance_bias(
                    column,
                    scorer=pb["scorer"],
                    min_subgroup_size=pb["min_subgroup_size"],
                    min_subgroup_cases=pb["min_subgroup_cases"],
                    random_state=seed,
                ).add_condition_bounded_performance_difference(-pb["max_drop"])
                for column in group_columns
            ),
        ),
    }


def permutation_importance(
    bundle: Any, schema: DatasetSchema, frame: pd.DataFrame, columns: Sequence[str], rows: int, seed: int
) -> pd.Series:  # type: ignore[type-arg]
    """Each checked column's share of the model's permutation importance on `rows` rows of `frame`.

    A column's importance is how much the exported model's log loss rises when that column's
    values are shuffled among the rows (three shuffles, averaged; a rise below zero counts as
    none); a column the model does not take has none. Scored with the ONNX runtime, well under a
    second, where Deepchecks, given only the scores, would spend seconds permuting a stand-in
    model that cannot respond to a shuffle. Equal shares if no column matters.
    """
    rng = np.random.default_rng(seed)
    if len(frame) > rows:
        frame = frame.iloc[np.sort(rng.choice(len(frame), rows, replace=False))]
    frame = frame.reset_index(drop=True)
    y = labels(schema, frame[schema.label.name].to_numpy())

    def log_loss(sample: pd.DataFrame) -> float:
        p = np.clip(
            runtime.run(bundle.session, matrices(bundle.spec, schema, sample)[0]).astype(np.float64), 1e-7, 1 - 1e-7
        )
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    base = log_loss(frame)
    inputs = set(bundle.spec.input_columns)
    rises = {}
    for name in columns:
        if name not in inputs:
            rises[name] = 0.0
            continue
        shuffled = frame.copy()
        total = 0.0
        for _ in range(3):
            shuffled[name] = frame[name].to_numpy()[rng.permutation(len(frame))]
            total += log_loss(shuffled) - base
        rises[name] = max(total / 3, 0.0)
    importance = pd.Series(rises, dtype=np.float64)
    if importance.sum() <= 0:
        return pd.Series(1.0 / len(columns), index=list(columns))
    return importance / importance.sum()


def every_group_performance_bias() -> type[Any]:
    """PerformanceBias scoring every group with enough cases of both classes.

    Deepchecks' own puts the groups beyond 90% of rows together as 'Others', and scores a group
    by its rows alone: a group of 1,222 rows with 11 positives passes min_subgroup_size, but its
    AUROC, a ranking of 11 positives, is known to about +-0.15. As in the fairness summaries
    (evaluate.min_group_cases), a group with fewer than `min_subgroup_cases` positive or negative
    rows is not scored.
    """
    from deepchecks.tabular.checks.model_evaluation import performance_bias  # type: ignore[import-untyped]
    from deepchecks.utils.performance.partition import partition_column  # type: ignore[import-untyped]

    class PerformanceBias(performance_bias.PerformanceBias):  # type: ignore[misc]
        def __init__(self, *args: Any, min_subgroup_cases: int = 0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.min_subgroup_cases = min_subgroup_cases

        def _make_partitions(self, dataset: Any) -> dict[str, Any]:
            groups = partition_column(dataset, self.protected_feature, max_segments=np.inf, max_cat_proportions=1.0)
            if self.min_subgroup_cases > 0:
                label = dataset.data[dataset.label_name]
                groups = [
                    g
                    for g in groups
                    if label[g.filter(dataset.data).index].value_counts().reindex(label.unique(), fill_value=0).min()
                    >= self.min_subgroup_cases
                ]
            return {self.protected_feature: groups}

    return PerformanceBias


def outcomes(name: str, suite: Any, result: Any) -> list[Condition]:
    """One entry per condition of every check, in the suite's order; a check that raised gives category ERROR."""
    position = {id(check): i for i, check in suite.checks.items()}
    out: list[Condition] = []
    # Deepchecks lists failures first; the suite's order keeps the file's diff to what changed.
    for check_result in sorted(result.results, key=lambda r: position[id(r.check)]):
        header = check_result.get_header()
        limit = setting(name, position[id(check_result.check)])
        if hasattr(check_result, "exception"):
            error = " ".join(f"{type(check_result.exception).__name__}: {check_result.exception}".split())
            names = [c.name for c in check_result.check._conditions.values()] or ["the check runs"]
            out += [
                {
                    "suite": name,
                    "check": header,
                    "condition": n,
                    "category": "ERROR",
                    "details": error,
                    "setting": limit,
                }
                for n in names
            ]
            continue
        for condition in check_result.conditions_results:
            out.append(
                {
                    "suite": name,
                    "check": header,
                    "condition": condition.name,
                    "category": condition.category.value,
                    "details": " ".join(str(condition.details).split()),
                    "setting": limit,
                }
            )
    return out


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STYLER_ID = re.compile(r"(?<![A-Za-z0-9_])T_[0-9a-f]{5}(?![0-9a-f])")  # pandas Styler's random table ids
PROLOGUE = re.compile(r"The suite is composed of various checks such as: [^<]*?, etc\.\.\.")


def stable_html(page: str, suite: str, check_names: Sequence[str]) -> str:
    """The same page for the same results, so that DVC sees no change when nothing changed.

    Deepchecks names three of a suite's checks in the page's opening line, picked in set order
    (which differs from one process to the next); plotly gives each chart a random id, and pandas
    each styled table. The line here names every check, sorted, and each id is derived from the
    suite and its place in the page.
    """
    ids: dict[str, str] = {}
    tables: dict[str, str] = {}

    def stable_id(match: re.Match[str]) -> str:
        return ids.setdefault(match.group(0), str(uuid.uuid5(uuid.NAMESPACE_URL, f"gitml/{suite}/{len(ids)}")))

    def table_id(match: re.Match[str]) -> str:
        return tables.setdefault(match.group(0), f"T_{len(tables):05x}")

    every = f"The suite is composed of these checks: {', '.join(sorted(set(check_names)))}."
    return STYLER_ID.sub(table_id, UUID.sub(stable_id, PROLOGUE.sub(every, page)))


def run(cfg: Mapping[str, Any], paths: Paths) -> ChecksFile:
    """Run the four suites; returns what reports/deepchecks.json holds."""
    source = paths.params.name
    gates = ConfigReader(source, "gates", section(cfg, "gates", paths.params), set(GATE_SECTIONS))
    config = read_config(gates.required("deepchecks"), source)
    schema = dataset_schema(cfg, paths.params)
    bundle = load_bundle(paths.models)
    spec, threshold, session = bundle.spec, bundle.threshold.value, bundle.session
    frames = {name: load_split(paths, name) for name in ("train", "test")}
    cases = frames["test"][schema.label.name].astype(str).value_counts()
    fewest = int(cases.min()) if len(cases) == 2 else 0
    floors = noise_floors(config["sampling_noise_z"], len(frames["train"]), len(frames["test"]), fewest)
    config, widened = widen(config, floors)

    negative, positive = class_names(schema)
    proba: dict[str, npt.NDArray[np.float64]] = {}
    predicted: dict[str, npt.NDArray[np.str_]] = {}
    for name, frame in frames.items():
        scores = runtime.run(session, matrices(spec, schema, frame)[0]).astype(np.float64)
        proba[name] = np.column_stack([1 - scores, scores])
        predicted[name] = np.where(scores >= threshold, positive, negative)

    report: ChecksFile = {"suites": {}, "conditions": []}
    paths.deepchecks.mkdir(parents=True, exist_ok=True)
    with quiet():
        from deepchecks.core import SuiteResult  # type: ignore[import-untyped]

        data = datasets(schema, frames)
        group_columns = [group_column(schema, c.name) for c in schema.protected_columns]
        suites = build_suites(config, group_columns)
        me = config["model_evaluation"]
        importance = permutation_importance(
            bundle, schema, frames["test"], data_columns(schema)[0], me["weak_segment_rows"], config["random_state"]
        )
        both = {
            "model_classes": [negative, positive],
            "y_proba_train": proba["train"],
            "y_proba_test": proba["test"],
            "y_pred_train": predicted["train"],
            "y_pred_test": predicted["test"],
        }
        results = {
            "data_integrity": suites["data_integrity"].run(data["train"][0]),
            "train_test_validation": suites["train_test_validation"].run(
                data["train"][0], data["test"][0], feature_importance=importance
            ),
            "model_evaluation": suites["model_evaluation"].run(
                data["train"][0], data["test"][0], run_single_dataset="Test", feature_importance=importance, **both
            ),
            # One dataset (test), which Deepchecks takes in the train position.
            "performance_bias": suites["performance_bias"].run(
                data["test"][1],
                model_classes=[negative, positive],
                y_proba_train=proba["test"],
                y_pred_train=predicted["test"],
            )
            if group_columns
            else SuiteResult(suites["performance_bias"].name, []),  # a schema without protected attributes
        }
        for check_result in results["performance_bias"].results:
            check_result.header = f"Performance Bias - {check_result.check.protected_feature}"
        for name in SUITES:
            html = paths.deepchecks / f"{name}.html"
            # A file object: given a name, Deepchecks writes "name (1).html" next to an existing report.
            # A full page without widgets always carries plotly.js (about 5 MB), so it opens offline.
            with html.open("w", encoding="utf-8") as out:
                results[name].save_as_html(out, as_widget=False, connected=False, unique_id=name)
            names = [check.name() for check in suites[name].checks.values()]
            html.write_text(stable_html(html.read_text(encoding="utf-8"), name, names), encoding="utf-8")
            checks = len(suites[name].checks)
            report["suites"][name] = {"html": html.relative_to(paths.root).as_posix(), "checks": checks}
            report["conditions"] += outcomes(name, suites[name], results[name])
    for condition in report["conditions"]:
        note = widened.get(condition.get("setting") or "")
        if note:
            condition["details"] = f"{condition['details']} ({note})".strip()
    CHECKS.write(paths, report)
    return report


def message(results: ChecksFile, paths: Paths) -> str:
    counts: dict[str, int] = {}
    for item in results["conditions"]:
        counts[item["category"]] = counts.get(item["category"], 0) + 1
    tally = ", ".join(f"{n} {category}" for category, n in sorted(counts.items())) or "no conditions"
    return (
        f"deepchecks: {len(results['suites'])} suites, {len(results['conditions'])} conditions ({tally}); "
        f"HTML in {paths.deepchecks.relative_to(paths.root)}/"
    )
