"""The preprocessing spec: fitted from the schema on training rows, applied by NumPy alone."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gitml.data.features import (
    MISSING,
    OTHER,
    CategoricalFeature,
    NumericFeature,
    PreprocessConfig,
    PreprocessSpec,
    fit,
    frame_columns,
    labels,
)
from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError
from tests.conftest import params_section, toy_config

# The toy schema after ingest: city generalised into country groups, balance top-coded,
# customer_id pseudonymised (an identifier, so never a model input).
SCHEMA = DatasetSchema.from_config(toy_config())


def toy_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    city = rng.choice(np.array(["Germany", "France", None], dtype=object), size=n, p=[0.6, 0.3, 0.1])
    return pd.DataFrame(
        {
            "customer_id": [f"{i:032x}" for i in range(n)],
            "age": rng.integers(18, 90, size=n),
            "city": pd.Categorical(city, categories=["Germany", "France"]),
            "balance": rng.exponential(800, size=n).round(2),
            "segment": pd.Categorical(rng.choice(["retail", "business"], size=n)),
            "churned": pd.Categorical(rng.choice(["no", "yes"], size=n)),
        }
    )


# The toy data's preprocessing: no log transform, every category its own column however rare.
ALL_KEPT: dict[str, Any] = {"log1p_skew_above": None, "min_category_count": 1}


def fitted(frame: pd.DataFrame | None = None, **config: object) -> PreprocessSpec:
    frame = toy_frame() if frame is None else frame
    columns = frame_columns(frame, [c.name for c in SCHEMA.feature_columns])
    return fit(SCHEMA, columns, PreprocessConfig(**{**ALL_KEPT, **config}))


def test_layout_follows_the_schema_feature_list() -> None:
    spec = fitted()
    assert spec.input_columns == ("age", "city", "balance", "segment")  # identifier and label are not inputs
    assert spec.output_names == (
        "age",
        "city=Germany", "city=France", f"city={OTHER}", f"city={MISSING}",  # nullable: a missing bucket
        "balance",
        "segment=retail", "segment=business", f"segment={OTHER}",
    )  # fmt: skip
    assert spec.width == len(spec.output_names)


def test_numbers_are_standardised_with_training_statistics() -> None:
    frame = toy_frame()
    spec = fitted(frame)
    x = spec.transform(frame_columns(frame, spec.input_columns))
    for name in ("age", "balance"):
        column = x[:, spec.output_names.index(name)]
        assert column.mean() == pytest.approx(0, abs=1e-5)
        assert column.std() == pytest.approx(1, abs=1e-4)
    # Applied to other rows, the training mean and scale are used, not the new rows' own.
    other = toy_frame(50, seed=9)
    age = spec.features[0]
    assert isinstance(age, NumericFeature)
    expected = (other["age"].to_numpy() - age.center) / age.scale
    np.testing.assert_allclose(spec.transform(frame_columns(other, spec.input_columns))[:, 0], expected, rtol=1e-5)


def test_one_hot_agrees_with_pandas_and_routes_unknown_and_missing() -> None:
    frame = toy_frame()
    spec = fitted(frame)
    x = spec.transform(frame_columns(frame, spec.input_columns))
    start = spec.output_names.index("city=Germany")
    block = x[:, start : start + 4]
    assert (block.sum(axis=1) == 1).all()  # exactly one bucket per row
    dummies = pd.get_dummies(frame["city"].astype(object).fillna(MISSING))
    np.testing.assert_array_equal(block[:, 0], dummies["Germany"].to_numpy())
    np.testing.assert_array_equal(block[:, 3], dummies[MISSING].to_numpy())
    record = {"age": [40], "city": ["Atlantis"], "balance": [None], "segment": ["retail"]}
    row = spec.transform(record)[0]
    assert row[spec.output_names.index(f"city={OTHER}")] == 1  # never seen in training
    assert row[spec.output_names.index("balance")] == 0  # missing number -> the training mean


def test_rare_categories_share_the_other_bucket() -> None:
    frame = toy_frame()
    frame.loc[:2, "segment"] = "business"
    frame.loc[3:, "segment"] = "retail"
    spec = fitted(frame, min_category_count=5)
    segment = spec.features[3]
    assert isinstance(segment, CategoricalFeature)
    assert segment.categories == ("retail",)  # 3 business rows < 5
    x = spec.transform(frame_columns(frame, spec.input_columns))
    assert x[:3, spec.output_names.index(f"segment={OTHER}")].tolist() == [1, 1, 1]


def test_log1p_only_for_skewed_non_negative_columns() -> None:
    spec = fitted(log1p_skew_above=1.0)
    flags = {f.name: f.log1p for f in spec.features if isinstance(f, NumericFeature)}
    assert flags == {"age": False, "balance": True}  # exponential balance: skewness ~2
    assert all(not f.log1p for f in fitted(log1p_skew_above=None).features if isinstance(f, NumericFeature))


def test_the_preprocess_config_is_params_preprocess() -> None:
    preprocess = params_section("preprocess")
    config = PreprocessConfig.from_config(preprocess, "params.yaml")
    assert dataclasses.asdict(config) == preprocess


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"min_category_count": 0}, r"min_category_count must be a whole number >= 1, got 0"),
        ({"log1p_skew_above": "high"}, r"log1p_skew_above must be a number, got 'high'"),
        ({"min_count": 3}, r"unknown key 'min_count'"),
    ],
)
def test_preprocess_config_mistakes_are_named(change: dict[str, object], message: str) -> None:
    preprocess = params_section("preprocess", **change)
    with pytest.raises(GitmlError, match=rf"params.yaml: preprocess: {message}"):
        PreprocessConfig.from_config(preprocess, "params.yaml")


def test_json_round_trip_gives_the_same_matrix(tmp_path: Path) -> None:
    frame = toy_frame()
    spec = fitted(frame)
    spec.save(tmp_path / "preprocess.json")
    loaded = PreprocessSpec.load(tmp_path / "preprocess.json")
    assert loaded == spec
    assert loaded.sha256 == spec.sha256
    columns = frame_columns(frame, spec.input_columns)
    np.testing.assert_array_equal(loaded.transform(columns), spec.transform(columns))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="something/2"), "expected 'gitml-preprocess/1'"),
        (lambda d: d["outputs"].pop(), "do not match its features"),
        (lambda d: d["features"][0].pop("center"), "malformed feature entry"),
    ],
)
def test_a_damaged_spec_is_refused(tmp_path: Path, edit: object, message: str) -> None:
    data = fitted().to_dict()
    edit(data)  # type: ignore[operator]
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(GitmlError, match=message):
        PreprocessSpec.load(tmp_path / "p.json")


def test_missing_spec_and_missing_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(GitmlError, match="train stage writes it"):
        PreprocessSpec.load(tmp_path / "absent.json")
    with pytest.raises(GitmlError, match="needs the columns balance"):
        fitted().transform({"age": [1], "city": ["France"], "segment": ["retail"]})
    with pytest.raises(GitmlError, match="no column 'balance'"):
        fit(SCHEMA, {"age": [1], "city": ["France"], "segment": ["retail"]}, PreprocessConfig(**ALL_KEPT))


def test_a_text_feature_is_refused_with_what_to_do() -> None:
    cfg = toy_config()
    cfg["columns"]["note"] = {"dtype": "string", "role": "feature", "pii": "keep"}
    schema = DatasetSchema.from_config(cfg)
    frame = toy_frame().assign(note="free text")
    with pytest.raises(GitmlError, match=r"'note' is a string feature.*role: identifier"):
        fit(schema, frame_columns(frame, [c.name for c in schema.feature_columns]), PreprocessConfig(**ALL_KEPT))


def test_labels_mark_the_positive_class() -> None:
    assert labels(SCHEMA, np.array(["yes", "no", "yes"], dtype=object)).tolist() == [1.0, 0.0, 1.0]


def test_features_module_needs_neither_pandas_nor_torch() -> None:
    """The server applies the spec; it has NumPy, not pandas or torch."""
    code = (
        "import sys; sys.modules['pandas'] = None; sys.modules['torch'] = None\nimport gitml.data.features\nprint('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr
