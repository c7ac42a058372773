"""The baselines stage: logistic regression and gradient boosting on the sample of the dataset conf/
selects, with the preprocessing fitted as train fits it and no network at all; their inputs
(categories as codes, unknown and missing values, more categories than gradient boosting takes);
the config switch, a subset of models, and config mistakes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from gitml.cli import main
from gitml.config import dataset_schema, load_params
from gitml.data.features import (
    CategoricalFeature,
    NumericFeature,
    PreprocessConfig,
    PreprocessSpec,
    fit,
    frame_columns,
    labels,
    matrices,
)
from gitml.errors import GitmlError
from gitml.evaluate.classical import (
    MAX_CATEGORIES,
    MODELS,
    BaselinesConfig,
    NativeColumns,
    fit_gradient_boosting,
    fit_logistic_regression,
)
from gitml.evaluate.config import read_config
from gitml.paths import Paths
from gitml.runlog import latest_parts
from gitml.stages import baselines
from tests.conftest import copy_repo, once_per_run, params_section


def fit_preprocessing(paths: Paths) -> None:
    """models/preprocess.json as the train stage fits it, without training a network."""
    params = load_params(paths.params)
    schema = dataset_schema(params, paths.params)
    train = pd.read_parquet(paths.split_file("train"))
    config = PreprocessConfig.from_config(params["preprocess"], "params.yaml")
    fit(schema, frame_columns(train, [c.name for c in schema.feature_columns]), config).save(paths.preprocess)


@pytest.fixture(scope="session")
def fitted(data_sample: Paths, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """`gitml baselines` once on the sample, with the preprocessing but no network."""

    def build(root: Path) -> None:
        paths = copy_repo(data_sample, root)
        fit_preprocessing(paths)
        assert main(["--root", str(paths.root), "baselines"]) == 0
        (root / "root").write_text(paths.root.name)

    root = once_per_run(tmp_path_factory, "baselines", build)
    return Paths(root / (root / "root").read_text())


def written(paths: Paths) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(paths.baselines.read_text())
    return data


def test_both_baselines_are_fitted_and_scored_like_the_network(fitted: Paths) -> None:
    params = load_params(fitted.params)
    schema = dataset_schema(params, fitted.params)
    result = written(fitted)
    assert result["enabled"] is True
    assert sorted(result["models"]) == sorted(MODELS)
    assert not fitted.onnx.exists()  # no network was needed
    assert not fitted.checkpoint.exists()
    test_rows = len(pd.read_parquet(fitted.split_file("test")))
    for name, metrics in result["models"].items():
        assert metrics["test"]["auroc"] > 0.5, name
        assert metrics["test"]["rows"] == test_rows
        assert metrics["threshold"]["rule"] == params["evaluate"]["threshold"]["rule"]
        assert metrics["threshold"]["chosen_on"] == "val"
        assert sorted(metrics["fairness"]) == sorted(c.name for c in schema.protected_columns)
    aurocs = {name: m["test"]["auroc"] for name, m in result["models"].items()}
    assert result["best"] == max(aurocs, key=aurocs.__getitem__)
    assert result["config"]["seed"] == params["train"]["seed"]
    assert result["models"]["logistic_regression"]["fit"]["converged"] is True
    features = [c.name for c in schema.feature_columns]
    categorical = [c.name for c in schema.feature_columns if c.output_dtype == "categorical"]
    assert result["models"]["gradient_boosting"]["fit"]["inputs"] == len(features)
    assert result["models"]["gradient_boosting"]["fit"]["categorical"] == sorted(categorical)
    # Fit times go to the run log, never into the committed file.
    assert set(latest_parts(fitted, "baselines")) == set(MODELS)
    assert "seconds" not in fitted.baselines.read_text()


def test_the_logistic_regression_is_measured_as_scikit_learn_measures_it(fitted: Paths) -> None:
    """Refitted with the same seed, the same scores: the file's AUROC is sklearn's, its threshold the rule's."""
    params = load_params(fitted.params)
    schema = dataset_schema(params, fitted.params)
    spec = PreprocessSpec.load(fitted.preprocess)
    frames = {name: pd.read_parquet(fitted.split_file(name)) for name in ("train", "val", "test")}
    x, y = matrices(spec, schema, frames["train"])
    model = fit_logistic_regression(spec, x, y, params["train"]["seed"], params["baselines"]["logistic_max_iter"])
    scores = model.score(frames["test"])
    y_test = labels(schema, frames["test"][schema.label.name].to_numpy())
    recorded = written(fitted)["models"]["logistic_regression"]
    assert recorded["test"]["auroc"] == pytest.approx(roc_auc_score(y_test, scores), abs=1e-6)
    y_val = labels(schema, frames["val"][schema.label.name].to_numpy())
    evaluate = read_config(params["evaluate"], "params.yaml")
    assert recorded["threshold"]["value"] == evaluate.threshold(model.score(frames["val"]), y_val)


def spec_of(*features: NumericFeature | CategoricalFeature) -> PreprocessSpec:
    return PreprocessSpec(dataset="made-up", features=features)


def test_categories_become_codes_with_one_for_every_other_value_and_nan_for_missing() -> None:
    spec = spec_of(
        NumericFeature("amount", log1p=False, center=0.0, scale=1.0, missing_indicator=True),
        CategoricalFeature("colour", categories=("red", "green"), missing_bucket=True),
    )
    train = pd.DataFrame({"amount": [1.5, None, 3.0], "colour": ["red", "green", "red"]})
    columns = NativeColumns.fit(spec, train)
    assert columns.categorical.tolist() == [False, True]
    frame = pd.DataFrame({"amount": [2.0, None, 7.0, 1.0], "colour": ["green", "blue", None, "red"]})
    matrix = columns.matrix(frame)
    assert matrix[:, 0].tolist()[::2] == [2.0, 7.0]
    assert np.isnan(matrix[1, 0])
    assert matrix[[0, 1, 3], 1].tolist() == [1.0, 2.0, 0.0]  # green, unknown blue -> "other", red
    assert np.isnan(matrix[2, 1])  # missing stays missing
    assert columns.bucketed == {}


def test_more_categories_than_gradient_boosting_takes_keep_the_most_frequent() -> None:
    many = tuple(f"c{i:03d}" for i in range(300))
    spec = spec_of(
        CategoricalFeature("code", categories=many, missing_bucket=False),
        NumericFeature("x", log1p=False, center=0.0, scale=1.0, missing_indicator=False),
    )
    rng = np.random.default_rng(0)
    # c000..c099 three times each, the rest once: the 100 frequent ones must be among those kept.
    values = [c for c in many[:100] for _ in range(3)] + list(many[100:])
    train = pd.DataFrame({"code": values, "x": rng.normal(size=len(values))})
    columns = NativeColumns.fit(spec, train)
    kept = columns.codes["code"]
    assert len(kept) == MAX_CATEGORIES
    assert set(many[:100]) <= set(kept)
    assert columns.bucketed == {"code": 300 - MAX_CATEGORIES}
    codes = columns.matrix(train)[:, 0]
    assert codes.max() == MAX_CATEGORIES  # the "other" code, the 255th value
    y = (rng.random(len(values)) < 0.3).astype(np.float32)
    model = fit_gradient_boosting(spec, train, y, seed=0)  # more than 255 categories: no error
    assert model.details["categories_bucketed"] == {"code": 300 - MAX_CATEGORIES}
    scores = model.score(pd.DataFrame({"code": ["c000", "never-seen", None], "x": [0.0, 0.0, 0.0]}))
    assert scores.dtype == np.float32
    assert ((scores > 0) & (scores < 1)).all()


def test_off_fits_nothing_and_says_so(repo: Path, tmp_path: Path) -> None:
    params = load_params(repo / "params.yaml")
    params["baselines"]["enabled"] = False
    paths = Paths(tmp_path)  # no data, no preprocessing: nothing is read
    result = baselines.run(params, paths)
    assert written(paths) == {"enabled": False, "config": written(paths)["config"], "models": {}, "best": None}
    assert written(paths)["config"]["models"] == []
    assert "off (baselines.enabled: false)" in baselines.message(result, paths)


def test_a_subset_fits_only_the_models_listed(fitted: Paths, tmp_path: Path) -> None:
    paths = copy_repo(fitted, tmp_path)
    params = load_params(paths.params)
    params["baselines"] |= {"models": ["logistic_regression"], "logistic_max_iter": 2}
    result = baselines.run(params, paths)
    assert list(written(paths)["models"]) == ["logistic_regression"]
    assert written(paths)["best"] == "logistic_regression"
    # Too few iterations to converge: recorded, and the message says which key to raise.
    assert written(paths)["models"]["logistic_regression"]["fit"]["converged"] is False
    assert "raise baselines.logistic_max_iter" in baselines.message(result, paths)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"enabled": "yes"}, r"enabled must be true or false, got 'yes'"),
        ({"models": ["xgboost"]}, r"models lists 'xgboost'; the baselines are logistic_regression, gradient_boosting"),
        ({"models": ["gradient_boost"]}, r"did you mean 'gradient_boosting'"),
        ({"models": []}, r"models is empty; list some of .*or set enabled: false"),
        ({"models": "gradient_boosting"}, r"models must be a list of strings"),
        ({"logistic_max_iter": 0}, r"logistic_max_iter must be a whole number >= 1"),
        ({"model": ["gradient_boosting"]}, r"unknown key 'model' \(did you mean 'models'\?\)"),
    ],
)
def test_config_mistakes_name_the_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(GitmlError, match=rf"^params.yaml: baselines: .*{message}"):
        BaselinesConfig.from_config({**params_section("baselines"), **changes}, "params.yaml")


def test_off_with_no_models_is_fine() -> None:
    config = BaselinesConfig.from_config({**params_section("baselines"), "enabled": False, "models": []}, "x")
    assert not config.enabled


def test_a_config_mistake_is_a_message_without_a_traceback(
    fitted: Paths, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    paths = copy_repo(fitted, tmp_path)
    params = copy.deepcopy(load_params(paths.params))
    params["baselines"]["models"] = ["xgboost"]
    paths.params.write_text(yaml.safe_dump(params))
    assert main(["--root", str(paths.root), "baselines"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gitml baselines: error: params.yaml: baselines: models lists 'xgboost'")
    assert "Traceback" not in err
