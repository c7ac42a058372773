"""split: seeded, stratified, complete and disjoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gitml.data.split import SPLITS
from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.stages import ingest, split
from tests.conftest import TOY_KEY, toy_config, toy_rows, write_csv

SPLIT_CFG: dict[str, Any] = {
    "seed": 7,
    "fractions": {"train": 0.6, "val": 0.2, "test": 0.2},
    "stratify": ["churned", "segment"],
    "reference_rows": 50,
}


@pytest.fixture
def ingested(tmp_path: Path) -> Paths:
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows(1000))
    paths = Paths(tmp_path)
    ingest.run({"data": toy_config()}, paths, TOY_KEY)
    return paths


def run_split(paths: Paths, **changes: Any) -> dict[str, Any]:
    return split.run({"data": toy_config(), "split": {**SPLIT_CFG, **changes}}, paths)


def test_splits_are_disjoint_complete_and_stratified(ingested: Paths) -> None:
    report = run_split(ingested)
    parts = {name: pd.read_parquet(ingested.split_file(name)) for name in (*SPLITS, "reference")}
    ids = {name: set(part["customer_id"]) for name, part in parts.items()}
    assert sum(len(ids[n]) for n in SPLITS) == 1000
    assert not (ids["train"] & ids["val"])
    assert not (ids["train"] & ids["test"])
    assert not (ids["val"] & ids["test"])
    assert ids["reference"] <= ids["train"]
    assert len(parts["reference"]) == 50
    assert [report[n]["rows"] for n in SPLITS] == [600, 200, 200]
    clean = pd.read_parquet(ingested.clean)
    overall = clean.groupby(["churned", "segment"], observed=True).size() / len(clean)
    for name in SPLITS:
        share = parts[name].groupby(["churned", "segment"], observed=True).size() / len(parts[name])
        assert np.allclose(share, overall, atol=0.01), name
    assert json.loads(ingested.split_report.read_text()) == report


def test_same_seed_same_bytes_other_seed_other_split(ingested: Paths) -> None:
    run_split(ingested)
    first = ingested.split_file("train").read_bytes()
    run_split(ingested)
    assert ingested.split_file("train").read_bytes() == first
    run_split(ingested, seed=8)
    assert ingested.split_file("train").read_bytes() != first


def test_categorical_dtypes_survive(ingested: Paths) -> None:
    run_split(ingested)
    train = pd.read_parquet(ingested.split_file("train"))
    assert list(train["city"].cat.categories) == ["Germany", "France"]
    assert str(train["age"].dtype) == "int64"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fractions": {"train": 0.8, "test": 0.2}}, r"split.fractions: give each of train, val, test a positive"),
        ({"fractions": {"train": 0.8, "val": 0.3, "test": 0.2}}, "add up to 1"),
        ({"fractions": {"train": 0.8, "vali": 0.2}}, r"unknown key 'vali' \(did you mean 'val'\?\)"),
        ({"fractions": {"train": "most", "val": 0.2, "test": 0.2}}, r"train must be a number, got 'most'"),
        ({"stratify": ["segmnt"]}, "split.stratify names segmnt"),
        ({"stratify": "segmnt"}, "split.stratify names segmnt"),
        ({"stratify": []}, r"split: stratify must name at least one column, e.g. the label: \[churned\]"),
        ({"reference_rows": 0}, r"reference_rows must be a whole number >= 1, got 0"),
        ({"seed": "abc"}, r"seed must be a whole number >= 0, got 'abc'"),
        ({"sed": 3}, r"params.yaml: split: unknown key 'sed' \(did you mean 'seed'\?\)"),
    ],
)
def test_bad_split_config(ingested: Paths, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(GitmlError, match=message):
        run_split(ingested, **changes)


def test_one_column_to_stratify_on_may_be_named_alone(ingested: Paths) -> None:
    assert run_split(ingested, stratify="churned")["stratify"] == ["churned"]


def test_no_stratify_columns_stratify_on_the_label_alone(ingested: Paths) -> None:
    # The generic default (conf/config.yaml): any dataset's label, whatever its name.
    assert run_split(ingested, stratify=None)["stratify"] == ["churned"]


@pytest.mark.parametrize("key", sorted(SPLIT_CFG))
def test_a_missing_key_is_named(ingested: Paths, key: str) -> None:
    config = {k: v for k, v in SPLIT_CFG.items() if k != key}
    with pytest.raises(GitmlError, match=rf"params.yaml: split: '{key}' is required"):
        split.run({"data": toy_config(), "split": config}, ingested)


def test_too_little_data(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows(3)[2:])  # one row, with a city
    paths = Paths(tmp_path)
    ingest.run({"data": toy_config()}, paths, TOY_KEY)
    with pytest.raises(GitmlError, match="leave val, test with no rows out of 1"):
        run_split(paths)


def test_split_before_ingest(tmp_path: Path) -> None:
    with pytest.raises(GitmlError, match="run the ingest stage first"):
        run_split(Paths(tmp_path))
