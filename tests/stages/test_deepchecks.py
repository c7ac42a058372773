"""The deepchecks stage on a small sample of Adult with a tiny trained model, and on the toy schema."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gitml import bundle
from gitml.config import load_params
from gitml.data.schema import DatasetSchema
from gitml.data.split import load_split
from gitml.errors import GitmlError
from gitml.outputs import ChecksFile, Condition
from gitml.paths import Paths
from gitml.stages import deepchecks
from tests.conftest import REPO, copy_repo, toy_config

# One worker runs the module, so that the suites run on the trained sample once (`trained`).
pytestmark = pytest.mark.xdist_group("deepchecks")

Report = ChecksFile
Trained = tuple[Paths, Report]
CATEGORIES = {"PASS", "WARN", "FAIL", "ERROR"}


@pytest.fixture(scope="module")
def trained(trained_sample: tuple[Paths, Any], tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The suite's trained sample (tests/conftest.py), copied, and the deepchecks stage run on it once."""
    paths = copy_repo(trained_sample[0], tmp_path_factory.mktemp("suites"))
    return paths, deepchecks.run(load_params(paths.params), paths)


def outcome(report: Report, suite: str, check: str) -> Condition:
    """The one condition of `check`."""
    (item,) = [c for c in report["conditions"] if c["suite"] == suite and c["check"] == check]
    return item


def rewrite_split(paths: Paths, name: str, change: Callable[[pd.DataFrame, DatasetSchema], None]) -> None:
    schema = DatasetSchema.from_config(load_params(paths.params)["data"])
    frame = pd.read_parquet(paths.split_file(name))
    change(frame, schema)
    frame.to_parquet(paths.split_file(name), index=False)


def first_numeric_feature(schema: DatasetSchema) -> str:
    return next(c.name for c in schema.feature_columns if c.numeric and c.output_dtype != "categorical")


def test_every_suite_writes_its_report_and_every_condition(trained: Trained) -> None:
    paths, report = trained
    assert json.loads(paths.deepchecks_results.read_text()) == report
    assert str(paths.root) not in paths.deepchecks_results.read_text()
    assert list(report["suites"]) == list(deepchecks.SUITES)
    for name, entry in report["suites"].items():
        html = paths.root / entry["html"]
        assert entry["html"] == f"reports/deepchecks/{name}.html"
        assert 1_000_000 < html.stat().st_size < 15_000_000, name  # plotly.js inside, the charts small
        conditions = [c for c in report["conditions"] if c["suite"] == name]
        assert len(conditions) >= entry["checks"] > 0, name  # every check carries a condition
    assert sorted(p.name for p in paths.deepchecks.iterdir()) == sorted(f"{n}.html" for n in deepchecks.SUITES)
    for item in report["conditions"]:
        assert item["category"] in CATEGORIES
        assert item["condition"]
        assert "\n" not in item["details"]
    assert not [c for c in report["conditions"] if c["category"] == "ERROR"]  # every check ran
    # The limits of params.yaml are the conditions' (none of Deepchecks' defaults), raised where
    # this sample's splits are too small to tell them from sampling noise.
    config = deepchecks.read_config(load_params(paths.params)["gates"]["deepchecks"], "params.yaml")
    train, test = (load_split(paths, name) for name in ("train", "test"))
    label = DatasetSchema.from_config(load_params(paths.params)["data"]).label.name
    floors = deepchecks.noise_floors(
        config["sampling_noise_z"], len(train), len(test), int(test[label].astype(str).value_counts().min())
    )
    limit = deepchecks.widen(config, floors)[0]["train_test_validation"]["max_feature_drift"]
    drift = outcome(report, "train_test_validation", "Feature Drift")
    assert drift["condition"] == f"categorical drift score < {limit:g} and numerical drift score < {limit:g}"
    if limit > config["train_test_validation"]["max_feature_drift"]:
        assert "gates.deepchecks.sampling_noise_z" in drift["details"]
    assert drift["category"] == "PASS"


def test_performance_bias_covers_every_protected_attribute(trained: Trained) -> None:
    paths, report = trained
    schema = DatasetSchema.from_config(load_params(paths.params)["data"])
    checks = {c["check"] for c in report["conditions"] if c["suite"] == "performance_bias"}
    assert checks == {f"Performance Bias - {deepchecks.group_column(schema, c.name)}" for c in schema.protected_columns}
    for column in schema.protected_columns:  # a banded number is scored by its bands, not value by value
        assert (f"Performance Bias - {column.name} (band)" in checks) == (column.bands is not None), column.name
    max_drop = load_params(paths.params)["gates"]["deepchecks"]["performance_bias"]["max_drop"]
    for column in schema.protected_columns:
        bias = outcome(report, "performance_bias", f"Performance Bias - {deepchecks.group_column(schema, column.name)}")
        assert bias["condition"] == f"Performance differences are bounded between -{max_drop:g} and inf."
    assert report["suites"]["performance_bias"]["checks"] == len(schema.protected_columns)


def test_a_schema_without_protected_attributes_has_an_empty_bias_suite(trained: Trained, tmp_path: Path) -> None:
    paths = copy_repo(trained[0], tmp_path)
    params = load_params(paths.params)
    for column in params["data"]["columns"].values():
        if column["role"] == "protected":  # the same model inputs, as plain features
            column["role"] = "feature"
            for key in ("feature", "bands"):
                column.pop(key, None)
    report = deepchecks.run(params, paths)
    assert report["suites"]["performance_bias"]["checks"] == 0
    assert not [c for c in report["conditions"] if c["suite"] == "performance_bias"]
    assert (paths.root / report["suites"]["performance_bias"]["html"]).is_file()


def test_a_column_in_other_units_in_test_fails_drift(trained: Trained, tmp_path: Path) -> None:
    """Test data from an export that writes one numeric column in other units (years as months)."""
    paths = copy_repo(trained[0], tmp_path)

    def in_months(frame: pd.DataFrame, schema: DatasetSchema) -> None:
        column = first_numeric_feature(schema)
        frame[column] = frame[column] * 12

    rewrite_split(paths, "test", in_months)
    report = deepchecks.run(load_params(paths.params), paths)
    drift = outcome(report, "train_test_validation", "Feature Drift")
    assert drift["category"] == "FAIL"
    assert first_numeric_feature(DatasetSchema.from_config(load_params(paths.params)["data"])) in drift["details"]
    assert outcome(report, "train_test_validation", "Multivariate Drift")["category"] == "FAIL"
    assert outcome(report, "data_integrity", "Feature Label Correlation")["category"] == "PASS"  # train is as it was


def test_a_column_filled_in_from_the_outcome_fails_leakage(trained: Trained, tmp_path: Path) -> None:
    """Training data in which a feature was recorded after the outcome: it holds the label itself."""
    paths = copy_repo(trained[0], tmp_path)

    def leak(frame: pd.DataFrame, schema: DatasetSchema) -> None:
        frame[first_numeric_feature(schema)] = (frame[schema.label.name] == schema.positive_class).astype("int64")

    rewrite_split(paths, "train", leak)
    report = deepchecks.run(load_params(paths.params), paths)
    column = first_numeric_feature(DatasetSchema.from_config(load_params(paths.params)["data"]))
    assert outcome(trained[1], "data_integrity", "Feature Label Correlation")["category"] == "PASS"
    leaked = outcome(report, "data_integrity", "Feature Label Correlation")
    assert leaked["category"] == "FAIL"
    assert f"'{column}'" in leaked["details"]
    changed = outcome(report, "train_test_validation", "Feature Label Correlation Change")
    assert changed["category"] == "FAIL"
    assert f"'{column}'" in changed["details"]  # predicts the label in train, not in test


def test_a_second_run_replaces_the_reports_and_writes_the_same_results(trained: Trained, tmp_path: Path) -> None:
    paths = copy_repo(trained[0], tmp_path)  # the reports of the first run are there
    deepchecks.run(load_params(paths.params), paths)
    assert paths.deepchecks_results.read_bytes() == trained[0].deepchecks_results.read_bytes()
    # Deepchecks, given a file name, would write "name (1).html" next to an existing report.
    assert sorted(p.name for p in paths.deepchecks.iterdir()) == sorted(f"{n}.html" for n in deepchecks.SUITES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_drift": 0.1}, r"gates.deepchecks: unknown key 'max_drift'"),
        (
            {"train_test_validation": {"max_feature_drfit": 0.1}},
            r"gates.deepchecks.train_test_validation: unknown key 'max_feature_drfit' "
            r"\(did you mean 'max_feature_drift'\?\)",
        ),
        ({"model_evaluation": {"min_auroc": 1.5}}, r"min_auroc must be a number in \[0, 1\], got 1.5"),
        ({"model_evaluation": {"weak_segment_features": 1}}, r"weak_segment_features must be a whole number >= 2"),
        ({"data_integrity": {"max_null_ratio": "10%"}}, r"data_integrity: max_null_ratio must be a number, got '10%'"),
        ({"performance_bias": {"scorer": "auc"}}, r"performance_bias: scorer 'auc' is not one of roc_auc"),
        ({"performance_bias": {"min_subgroup_size": 0}}, r"min_subgroup_size must be a whole number >= 1, got 0"),
        ({"random_state": None}, r"gates.deepchecks: random_state must be a whole number"),
    ],
)
def test_config_mistakes_name_the_key(trained: Trained, change: dict[str, Any], message: str) -> None:
    paths, _ = trained
    params = load_params(paths.params)
    deepchecks_cfg = params["gates"]["deepchecks"]
    for key, value in change.items():  # a suite's settings replace only those of conf/gates/
        deepchecks_cfg[key] = {**deepchecks_cfg[key], **value} if isinstance(value, dict) else value
    with pytest.raises(GitmlError, match=message):
        deepchecks.run(params, paths)


def test_importance_is_the_exported_models_and_a_column_it_cannot_use_has_none(trained: Trained) -> None:
    paths, _ = trained
    schema = DatasetSchema.from_config(load_params(paths.params)["data"])
    model = bundle.load(paths.models)
    frame = load_split(paths, "test")
    columns = deepchecks.data_columns(schema)[0]

    importance = deepchecks.permutation_importance(model, schema, frame, columns, 1000, 0)
    assert sorted(importance.index) == sorted(columns)
    assert importance.sum() == pytest.approx(1.0)
    assert (importance >= 0).all()
    for name in set(columns) - set(model.spec.input_columns):  # a protected attribute the model does not take
        assert importance[name] == 0
    again = deepchecks.permutation_importance(model, schema, frame, columns, 1000, 0)
    assert again.equals(importance)  # the seed decides the rows and the shuffles

    # The most important column held at one value: shuffling it changes no score.
    top = str(importance.idxmax())
    frame[top] = frame[top].iloc[0]
    held = deepchecks.permutation_importance(model, schema, frame, columns, 1000, 0)
    assert held[top] == 0
    assert held.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["model.onnx", "preprocess.json", "threshold.json"])
def test_a_missing_model_file_names_the_stage_to_run(trained: Trained, tmp_path: Path, name: str) -> None:
    paths = copy_repo(trained[0], tmp_path)
    (paths.models / name).unlink()
    with pytest.raises(GitmlError, match=rf"{name}: not found; the \w+ stage writes it. Re-run the pipeline"):
        deepchecks.run(load_params(paths.params), paths)


def toy_split(n: int, seed: int) -> pd.DataFrame:
    """A split of the toy dataset as ingest leaves it: pseudonymised ids, city in country groups."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"{i:064x}" for i in range(n)],
            "age": rng.integers(18, 90, n),
            "city": pd.Categorical(
                rng.choice(np.array(["Germany", "France", None]), n), categories=["Germany", "France"]
            ),
            "balance": rng.uniform(0, 5000, n),
            "segment": rng.choice(["retail", "business"], n),
            "churned": rng.choice(["no", "yes"], n),
        }
    )


def test_datasets_come_from_the_schema_alone() -> None:
    """Nothing names an Adult column: the toy schema's features, categories, groups and label."""
    schema = DatasetSchema.from_config(toy_config())
    built = deepchecks.datasets(schema, {"train": toy_split(60, 0), "test": toy_split(40, 1)})
    data, groups = built["train"]
    assert data.features == ["age", "city", "balance", "segment"]  # the identifier is never checked
    assert sorted(data.cat_features) == ["city", "segment"]
    assert data.label_name == "churned"
    assert set(data.label_col) == {"no", "yes"}
    assert groups.features == ["age (band)"] == groups.cat_features
    assert set(groups.data["age (band)"]) <= {"<30", "30-49", "50+"}
    test_data, _ = built["test"]
    assert list(data.data.index) == list(range(60))
    assert list(test_data.data.index) == list(range(60, 100))  # no index value shared with train


def test_the_positive_class_is_the_one_deepchecks_scores() -> None:
    """Deepchecks sorts the classes and scores the second; the names keep the positive one there."""
    assert deepchecks.class_names(DatasetSchema.from_config(toy_config())) == ("no", "yes")
    config = toy_config()
    config["columns"]["churned"] = {
        "dtype": "categorical",
        "categories": ["stayed", "left"],
        "role": "label",
        "positive": "left",
    }
    assert deepchecks.class_names(DatasetSchema.from_config(config)) == ("0: stayed", "1: left")


def test_pages_that_differ_only_in_random_ids_and_check_order_are_written_alike() -> None:
    """plotly's chart ids, pandas' table ids and Deepchecks' set-ordered opening line vary run to run."""

    def page(chart: str, table: str, named: str) -> str:
        return (
            f"<p>The suite is composed of various checks such as: {named}, etc...</p>"
            f'<div id="{chart}"></div><script>Plotly.newPlot("{chart}")</script>'
            f'<style>#{table} td {{}}</style><td id="{table}_row0_col0">0.5</td>'
        )

    names = ["Label Drift", "Feature Drift", "New Category Train Test", "Multivariate Drift"]
    first = deepchecks.stable_html(
        page(str(uuid.uuid4()), "T_1a2b3", "Label Drift, Feature Drift, New Category"), "s", names
    )
    second = deepchecks.stable_html(
        page(str(uuid.uuid4()), "T_9f8e7", "Multivariate Drift, Label Drift, X"), "s", names
    )
    assert first == second
    assert "these checks: Feature Drift, Label Drift, Multivariate Drift, New Category Train Test." in first
    assert first.count("T_00000") == 2  # the table's id, consistently replaced


def test_noise_bound_limits_are_raised_to_the_sampling_noise_of_small_splits_only() -> None:
    config = deepchecks.read_config(load_params(REPO / "params.yaml")["gates"]["deepchecks"], "params.yaml")
    config["sampling_noise_z"] = 3.0
    big = deepchecks.noise_floors(3.0, 34_152, 7_318, 1_752)
    small = deepchecks.noise_floors(3.0, 700, 150, 45)
    assert all(small[key] > big[key] for key in big)
    # A floor falls as the splits grow: 1/sqrt(n), never a constant.
    assert small[("train_test_validation", "max_pps_change")] == pytest.approx(3 / 150**0.5)
    assert small[("model_evaluation", "max_relative_degradation")] == pytest.approx(3 / 45**0.5)
    for where in small:  # every floor is a limit of read_config, named by the key that sets it
        assert where[1] in config[where[0]]
    generous = {name: dict(v) if isinstance(v, dict) else v for name, v in config.items()}
    for suite, key in small:
        generous[suite][key] = 0.5  # above every small-split floor here
    unchanged, notes = deepchecks.widen(generous, small)
    assert unchanged == generous
    assert notes == {}
    tight = {name: dict(v) if isinstance(v, dict) else v for name, v in config.items()}
    for suite, key in small:
        tight[suite][key] = 0.01
    raised, notes = deepchecks.widen(tight, small)
    for (suite, key), floor in small.items():
        assert raised[suite][key] == pytest.approx(min(floor, 1.0), abs=1e-3)
        assert "gates.deepchecks.sampling_noise_z" in notes[f"gates.deepchecks.{suite}.{key}"]
    assert deepchecks.widen(tight, deepchecks.noise_floors(0.0, 700, 150, 45))[1] == {}  # z 0: as written


def test_performance_bias_scores_only_groups_with_enough_cases_of_both_classes() -> None:
    """A group of many rows but few positives (or few negatives) has an AUROC of noise: not scored."""
    from deepchecks.tabular import Dataset  # type: ignore[import-untyped]

    labels = {"even": [0, 1] * 30, "few positives": [1] * 3 + [0] * 57, "few negatives": [0] * 5 + [1] * 55}
    frame = pd.DataFrame(
        {"group": [g for g, y in labels.items() for _ in y], "y": [v for y in labels.values() for v in y]}
    )
    data = Dataset(frame, label="y", cat_features=["group"])
    check = deepchecks.every_group_performance_bias()

    def scored(cases: int) -> set[str]:
        return {str(g.label) for g in check("group", min_subgroup_cases=cases)._make_partitions(data)["group"]}

    assert scored(10) == {"even"}
    assert scored(5) == {"even", "few negatives"}
    assert scored(0) == set(labels)  # 0: every group, as Deepchecks' own check
