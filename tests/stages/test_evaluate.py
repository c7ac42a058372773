"""The evaluate stage's probe (gitml.evaluate.probe): a record of the test split's typical values, in
the form the server takes, and the exported model's score for it, recorded in the bundle's manifest."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from pydantic import TypeAdapter

from gitml import bundle
from gitml.bundle import runtime
from gitml.data.features import frame_columns
from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError
from gitml.evaluate.probe import probe, probe_record, request_fields, typical_value
from gitml.paths import Paths
from gitml.serve.app import create_app
from gitml.serve.requests import Anonymizer, record_type, request_columns
from tests.conftest import Trained, params_section, run_toy_pipeline, toy_config


def assert_servable(schema: DatasetSchema, record: dict[str, Any]) -> None:
    """`record` has a value for each field of the server's records, within the schema's ranges and
    categories, as the stored data has it; the server's validator takes it and its generalisation
    leaves it as it is."""
    assert sorted(record) == sorted(c.name for c in request_columns(schema))
    for column in request_columns(schema):
        value = record[column.name]
        if value is None:
            assert column.nullable, column.name
        elif column.output_dtype in ("integer", "float"):
            assert isinstance(value, int if column.output_dtype == "integer" else float), column.name
            assert not isinstance(value, bool), column.name
            assert column.minimum is None or value >= column.minimum, column.name
            assert column.maximum is None or value <= column.maximum, column.name
        else:
            assert column.output_categories is None or value in column.output_categories, column.name
    TypeAdapter(record_type(schema)).validate_json(json.dumps(record))
    columns = {name: [value] for name, value in record.items()}
    Anonymizer(schema)(columns)
    assert columns == {name: [value] for name, value in record.items()}


def test_the_manifest_records_the_typical_test_record_and_its_score(trained_sample: Trained) -> None:
    paths, _ = trained_sample
    loaded = bundle.load(paths.models)
    recorded = loaded.manifest.probe
    schema = loaded.schema
    assert_servable(schema, recorded.record)
    test = pd.read_parquet(paths.split_file("test"))
    for column in request_columns(schema):
        values = test[column.name].dropna()
        if column.output_dtype in ("integer", "float"):
            assert recorded.record[column.name] == pytest.approx(values.median(), abs=0.5), column.name
        else:
            counts = values.astype(str).value_counts()
            assert counts[recorded.record[column.name]] == counts.max(), column.name
    # Scored as evaluate scores the test split: the preprocessing's matrix, the ONNX model's float32.
    x = loaded.spec.transform(frame_columns(pd.DataFrame([recorded.record]), loaded.spec.input_columns))
    assert recorded.score == float(runtime.run(loaded.session, x)[0])
    assert 0 < recorded.score < 1


def test_the_probe_is_deterministic_whatever_the_row_order(trained_sample: Trained) -> None:
    paths, _ = trained_sample
    loaded = bundle.load(paths.models)
    test = pd.read_parquet(paths.split_file("test"))
    shuffled = test.sample(frac=1, random_state=3).reset_index(drop=True)
    first = probe(loaded.schema, loaded.spec, loaded.session, test)
    assert first == probe(loaded.schema, loaded.spec, bundle.open_model(paths.onnx), shuffled)
    assert first == loaded.manifest.probe  # the JSON round trip keeps the float exactly


def test_the_committed_bundles_probe_is_a_record_its_server_takes(repo: Path) -> None:
    manifest = bundle.Manifest.read(Paths(repo).manifest)
    assert_servable(DatasetSchema.from_config(manifest.schema), manifest.probe.record)
    assert manifest.probe.score == float(np.float32(manifest.probe.score))  # a float32's value


def test_the_probe_takes_medians_the_most_frequent_values_and_sorted_ties() -> None:
    schema = DatasetSchema.from_config(toy_config())
    age, city, balance, segment = (schema.column(n) for n in ("age", "city", "balance", "segment"))
    assert typical_value(age, pd.Series([20, 31, 60, None], dtype="Int64")) == 31
    assert typical_value(age, pd.Series([20, 31])) == 26  # 25.5, rounded to a whole number
    assert isinstance(typical_value(age, pd.Series([20, 31])), int)
    assert typical_value(balance, pd.Series([1.0, 2.5, 4000.0, np.nan])) == 2.5
    stored = pd.Series(["Germany", "France", "Germany", "France", None], dtype="category")
    assert typical_value(city, stored) == "France"  # a tie: the first in sorted order
    assert typical_value(city, pd.Series(["Germany", "France", "Germany"])) == "Germany"
    assert typical_value(city, pd.Series([None, None], dtype=object)) is None  # nullable: null
    with pytest.raises(GitmlError, match="column 'segment' has no values in the test split"):
        typical_value(segment, pd.Series([None], dtype=object))


def test_the_probe_has_the_servers_fields_and_needs_them_in_the_test_split() -> None:
    columns = toy_config()["columns"]
    apart = toy_config(columns={**columns, "age": {**columns["age"], "feature": False}})
    adult = DatasetSchema.from_config(params_section("data"))
    for schema in (DatasetSchema.from_config(toy_config()), DatasetSchema.from_config(apart), adult):
        assert [c.name for c in request_fields(schema)] == [c.name for c in request_columns(schema)]
    assert [c.name for c in request_fields(DatasetSchema.from_config(apart))][-1] == "age"  # protected, no input
    frame = pd.DataFrame({"city": ["Germany"], "balance": [1.0], "segment": ["retail"]})
    with pytest.raises(GitmlError, match="the test split has no column age; re-run the split stage"):
        probe_record(DatasetSchema.from_config(toy_config()), frame)


async def post(app: FastAPI, path: str, body: Any) -> httpx.Response:
    """POST to the app in this process, between its start-up and shutdown (the server's warm-up and log)."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe") as client,
    ):
        return await client.post(path, json=body)


@pytest.mark.usefixtures("toy_key")
def test_another_datasets_probe_comes_back_from_its_server_with_its_score(repo: Path, tmp_path: Path) -> None:
    """The toy schema: a pseudonymised identifier (no field), a generalised category, a top-coded number."""
    paths = run_toy_pipeline(repo, tmp_path, 600, "trainer.max_epochs=1")
    recorded = bundle.Manifest.read(paths.manifest).probe
    schema = DatasetSchema.from_config(toy_config())
    assert_servable(schema, recorded.record)
    assert set(recorded.record) == {"age", "city", "balance", "segment"}
    assert recorded.record["city"] in ("Germany", "France")  # stored as its group
    assert recorded.record["balance"] <= 5000  # stored top-coded
    answer = asyncio.run(post(create_app(paths, env={}, log_dir=tmp_path / "log"), "/predict", recorded.record))
    assert answer.status_code == 200, answer.text
    assert abs(answer.json()["score"] - recorded.score) <= 1e-6
