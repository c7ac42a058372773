"""The server's encoder against `PreprocessSpec.transform`: the same matrix, bit for bit, on both paths."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from gitml.config import load_params
from gitml.data.anonymize import anonymize_values
from gitml.data.features import CategoricalFeature, NumericFeature, PreprocessConfig, PreprocessSpec, fit, frame_columns
from gitml.data.schema import Column, DatasetSchema
from gitml.paths import Paths
from gitml.serve.encode import SMALL_BATCH, RecordEncoder
from tests.conftest import TOY_CONFIG, toy_config, toy_rows

Table = dict[str, list[Any]]
CONFIGS = {
    "min10": PreprocessConfig(log1p_skew_above=None, min_category_count=10),
    "min10-log1p": PreprocessConfig(min_category_count=10, log1p_skew_above=1.0),
}
UNSEEN = "never-seen-in-training"


def as_lists(frame: pd.DataFrame, schema: DatasetSchema) -> Table:
    """A split's feature columns as request columns: Python values, missing as None, whole numbers as int."""
    table: Table = {}
    for column in schema.feature_columns:
        values = frame[column.name].astype(object).tolist()
        missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
        if column.dtype == "integer" and column.output_dtype == "integer":
            table[column.name] = [None if m else int(v) for v, m in zip(values, missing, strict=True)]
        elif column.numeric and column.output_dtype != "categorical":
            table[column.name] = [None if m else float(v) for v, m in zip(values, missing, strict=True)]
        else:
            table[column.name] = [None if m else str(v) for v, m in zip(values, missing, strict=True)]
    return table


def missing_or_unseen(column: Column, default: Any) -> Any:
    if column.nullable:
        return None
    return UNSEEN if column.output_dtype == "categorical" else default


def with_edge_cases(table: Table, schema: DatasetSchema, spec: PreprocessSpec) -> Table:
    """The table with records added: each nullable column missing, each categorical never seen, rare categories."""
    extra: list[dict[str, Any]] = []
    first = {name: values[0] for name, values in table.items()}
    for column in schema.feature_columns:
        if column.nullable:
            extra.append({**first, column.name: None})
        if column.output_dtype == "categorical":
            extra.append({**first, column.name: UNSEEN})
    # Every column missing or unseen at once, where it can be.
    extra.append({c.name: missing_or_unseen(c, first[c.name]) for c in schema.feature_columns})
    for feature in spec.features:
        if isinstance(feature, CategoricalFeature):
            column = schema.column(feature.name)
            for category in column.output_categories or ():
                if category not in feature.categories:  # declared, but too rare in training: "other"
                    extra.append({**first, feature.name: category})
    out = {name: list(values) for name, values in table.items()}
    for record in extra:
        for name in out:
            out[name].append(record[name])
    return out


def as_floats(table: Table, schema: DatasetSchema) -> Table:
    """The same table with every number given as a float (23.0 for 23), as JSON may send it."""
    return {
        name: [v if v is None or isinstance(v, str) else float(v) for v in values] for name, values in table.items()
    }


def shuffled_numbers(table: Table, seed: int) -> Table:
    """Ints and floats mixed within one column."""
    rng = random.Random(seed)
    return {
        name: [v if v is None or isinstance(v, str) or rng.random() < 0.5 else float(v) for v in values]
        for name, values in table.items()
    }


def rows(table: Table, start: int, stop: int) -> Table:
    return {name: values[start:stop] for name, values in table.items()}


def assert_encodes_as_transform(spec: PreprocessSpec, table: Table) -> None:
    """Batch path on the whole table, row path record by record, and every batch size around SMALL_BATCH."""
    encode = RecordEncoder(spec)
    n = len(next(iter(table.values())))
    assert n > SMALL_BATCH
    expected = spec.transform(table)
    assert expected.shape == (n, spec.width)
    assert np.isfinite(expected).all()
    whole = encode(table, n)
    assert whole.dtype == np.float32
    assert_same(whole, expected, "batch")
    for i in range(n):
        assert_same(encode(rows(table, i, i + 1), 1), expected[i : i + 1], f"row {i}")
    for size in range(1, SMALL_BATCH + 3):  # both sides of the switch between the paths
        for start in range(0, n - size, max(1, n // 40)):
            got = encode(rows(table, start, start + size), size)
            assert_same(got, expected[start : start + size], f"records {start}..{start + size - 1}")


def assert_same(got: npt.NDArray[np.float32], expected: npt.NDArray[np.float32], where: str) -> None:
    if not np.array_equal(got, expected):
        bad = np.argwhere(got != expected)
        i, j = bad[0]
        raise AssertionError(
            f"{where}: {len(bad)} entries differ, first at [{i}, {j}]: {got[i, j]!r} != {expected[i, j]!r}"
        )


@pytest.fixture(scope="module")
def selected(data_sample: Paths) -> tuple[DatasetSchema, pd.DataFrame, pd.DataFrame]:
    """The schema, train and test split of the dataset conf/ selects (the suite's data sample)."""
    schema = DatasetSchema.from_config(load_params(data_sample.params)["data"], "params.yaml")
    return schema, pd.read_parquet(data_sample.split_file("train")), pd.read_parquet(data_sample.split_file("test"))


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_the_encoder_matches_transform_on_the_selected_datasets_test_split(
    selected: tuple[DatasetSchema, pd.DataFrame, pd.DataFrame], config: PreprocessConfig
) -> None:
    schema, train, test = selected
    spec = fit(schema, frame_columns(train, [c.name for c in schema.feature_columns]), config)
    numeric = [f for f in spec.features if isinstance(f, NumericFeature)]
    categorical = [f for f in spec.features if isinstance(f, CategoricalFeature)]
    assert numeric
    assert categorical
    if config.log1p_skew_above is not None:
        assert any(f.log1p for f in numeric)  # so the log1p arithmetic is held to transform too
        assert not all(f.log1p for f in numeric)
    table = as_lists(test, schema)
    if any(c.nullable for c in schema.feature_columns):  # the split has missing values of its own
        assert any(None in values for values in table.values())
    table = with_edge_cases(table, schema, spec)
    seen = {c.name: train[c.name].astype(str).value_counts() for c in schema.feature_columns if c.output_categories}
    rare = [
        category
        for name, counts in seen.items()
        for category in schema.column(name).output_categories or ()
        if counts.get(category, 0) < config.min_category_count
    ]
    if rare:
        assert any(  # declared categories too rare to keep are encoded as "other"
            c not in f.categories for f in categorical for c in schema.column(f.name).output_categories or ()
        )
    for variant in (table, as_floats(table, schema), shuffled_numbers(table, 3)):
        assert_encodes_as_transform(spec, variant)


def toy_table(schema: DatasetSchema, n: int, seed: int) -> Table:
    """Toy records as the server has them after the anonymiser (groups, top code), ints for integers."""
    raw = toy_rows(n, seed)
    rng = random.Random(seed)
    table: Table = {}
    for position, column in enumerate(schema.columns):
        if column not in schema.feature_columns:
            continue
        values: list[Any] = [None if r[position] == "?" else r[position] for r in raw]
        if column.numeric:
            values = [None if v is None else float(v) for v in values]
            if column.nullable:
                values = [None if rng.random() < 0.1 else v for v in values]
        stored = anonymize_values(column, values, None).tolist() if column.pii == "generalize" else values
        if column.dtype == "integer":
            stored = [None if v is None else int(v) for v in stored]
        elif column.numeric:
            stored = [None if v is None or v != v else v for v in stored]
        table[column.name] = stored
    return table


TOY_NULLABLE_NUMBER = toy_config(
    columns={**TOY_CONFIG["columns"], "balance": {**TOY_CONFIG["columns"]["balance"], "nullable": True}}
)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
@pytest.mark.parametrize("cfg", [TOY_CONFIG, TOY_NULLABLE_NUMBER], ids=["toy", "toy-nullable-number"])
def test_the_encoder_matches_transform_on_toy_data(cfg: dict[str, Any], config: PreprocessConfig) -> None:
    schema = DatasetSchema.from_config(cfg, "toy")
    spec = fit(schema, toy_table(schema, 400, seed=0), config)
    if schema.column("balance").nullable:
        balance = next(f for f in spec.features if f.name == "balance")
        assert isinstance(balance, NumericFeature)
        assert balance.missing_indicator  # the indicator column is exercised
    table = with_edge_cases(toy_table(schema, 150, seed=1), schema, spec)
    assert None in table["city"]
    assert "Spain" not in table["city"]
    table["city"][:3] = ["Spain", "Germany", "France"]  # a group never seen: "other"
    for variant in (table, as_floats(table, schema), shuffled_numbers(table, 5)):
        assert_encodes_as_transform(spec, variant)


def test_the_encoder_puts_each_value_where_the_spec_names_it() -> None:
    """Not only equal to transform: the layout itself (so a bug shared by both would show)."""
    spec = PreprocessSpec(
        dataset="hand-made",
        features=(
            NumericFeature("x", log1p=False, center=10.0, scale=2.0, missing_indicator=True),
            CategoricalFeature("c", categories=("a", "b"), missing_bucket=True),
            NumericFeature("y", log1p=True, center=0.0, scale=1.0, missing_indicator=False),
            CategoricalFeature("d", categories=("p",), missing_bucket=False),
        ),
    )
    assert spec.output_names == ("x", "x__missing__", "c=a", "c=b", "c=__other__", "c=__missing__", "y", "d=p",
                                 "d=__other__")  # fmt: skip
    table: Table = {
        "x": [12, None, 9.0, 10, 14, 10.5],
        "c": ["a", "b", "zzz", None, "a", "b"],
        "y": [0, math.e - 1, 1.5, 0.0, 7, 3],
        "d": ["p", "q", "p", "p", "p", "p"],
    }
    expected = np.array(
        [
            [1.0, 0, 1, 0, 0, 0, 0.0, 1, 0],
            [0.0, 1, 0, 1, 0, 0, math.log1p(math.e - 1), 0, 1],
            [-0.5, 0, 0, 0, 1, 0, math.log1p(1.5), 1, 0],
            [0.0, 0, 0, 0, 0, 1, 0.0, 1, 0],
            [2.0, 0, 1, 0, 0, 0, math.log1p(7), 1, 0],
            [0.25, 0, 0, 1, 0, 0, math.log1p(3), 1, 0],
        ],
        dtype=np.float32,
    )
    assert np.array_equal(spec.transform(table), expected)
    encode = RecordEncoder(spec)
    assert_same(encode(table, 6), expected, "batch")
    for i in range(6):
        assert_same(encode(rows(table, i, i + 1), 1), expected[i : i + 1], f"row {i}")
