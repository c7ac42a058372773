"""Rejected requests are logged by field and reason, and no value a sender sent ever reaches the log."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gitml.logs.read import read_window
from gitml.paths import Paths
from gitml.serve.predlog import read_lines
from gitml.serve.requests import request_columns
from tests.logs.conftest import (
    bounded_field,
    categorical_field,
    required_field,
    served_label,
    served_records,
    served_schema,
)

pytestmark = pytest.mark.slow

# Values nobody else would send: if one is anywhere in the log folder, the log echoed a sender.
SECRET_CATEGORY = "Zorblax-category-7731"
SECRET_FIELD = "zorblax_field_8812"
SECRET_TEXT = "zorblax-not-json-5519"


def test_rejections_are_logged_by_field_and_reason_and_never_with_a_value(
    served: Paths, start_server: Any, tmp_path: Any
) -> None:
    # The fields to get wrong, from the served dataset's schema (whichever conf/ selects): one that takes
    # listed categories, a bounded number (and a value past its bound), and one that may not be left out.
    schema = served_schema(served)
    category, (number, too_big), required = categorical_field(schema), bounded_field(schema), required_field(schema)
    names = [c.name for c in request_columns(schema)]
    server = start_server(served.root, log_dir=tmp_path / "log")
    record = served_records(served)[0]
    url = server.url

    def post(path: str, body: Any = None, content: bytes | None = None) -> httpx.Response:
        if content is not None:
            return httpx.post(url + path, content=content, headers={"content-type": "application/json"}, timeout=30)
        return httpx.post(url + path, json=body, timeout=30)

    answers = [
        post("/predict", {**record, category: SECRET_CATEGORY}),  # a bad category in field `category`
        post("/predict", [record, {**record, category: SECRET_CATEGORY, number: too_big}]),
        post("/predict", {**record, SECRET_FIELD: 1}),
        post("/predict", {k: v for k, v in record.items() if k != required}),
        post("/predict", content=SECRET_TEXT.encode()),
        post("/predict", [record] * 1001),
        post("/predict", content=b"[" + b"1," * 2_200_000 + b"1]"),  # past max_body_bytes
        post("/predict", [record, 5]),
    ]
    assert [a.status_code for a in answers] == [422, 422, 422, 422, 400, 413, 413, 422]
    assert SECRET_CATEGORY in answers[0].text  # the sender is told what was wrong with their value...
    ok = post("/predict", record)
    assert ok.status_code == 200
    wrong_index = post("/feedback", {"request_id": ok.json()["request_id"], "index": 5, "label": served_label(served)})
    assert wrong_index.status_code == 404
    _, output = server.stop()
    assert "Traceback" not in output

    lines = list(read_lines(server.log_dir, "rejections"))
    assert [(line["endpoint"], line["status"]) for line in lines] == [
        *[("/predict", s) for s in (422, 422, 422, 422, 400, 413, 413, 422)], ("/feedback", 404),
    ]  # fmt: skip
    both = sorted([(number, "less_than_equal"), (category, "literal_error")], key=lambda e: names.index(e[0]))
    assert [line["errors"] for line in lines] == [
        [{"field": category, "reason": "literal_error"}],
        [{"field": field, "reason": reason} for field, reason in both],  # in the order of the fields
        [{"field": "unknown_field", "reason": "extra_forbidden"}],  # the name the sender used stays out
        [{"field": required, "reason": "missing"}],
        [{"field": "invalid_json", "reason": "invalid_json"}],
        [{"field": "batch_size", "reason": "batch_size"}],
        [{"field": "body_size", "reason": "body_size"}],
        [{"field": "body", "reason": "dict_type"}],
        [{"field": "index", "reason": "index_out_of_range"}],
    ]
    # How many records the body held, where the server knows without parsing it again.
    assert [line.get("records") for line in lines] == [1, None, 1, 1, None, 1001, None, None, None]
    assert {tuple(sorted(line)) for line in lines} <= {
        ("endpoint", "errors", "status", "time"), ("endpoint", "errors", "records", "status", "time"),
    }  # fmt: skip

    # ...but the log is not: no value and no unknown field's name, in any file of any stream.
    everything = b"".join(path.read_bytes() for path in server.log_dir.iterdir())
    for secret in (SECRET_CATEGORY, SECRET_FIELD, SECRET_TEXT):
        assert secret.encode() not in everything, secret

    window = read_window(server.log_dir, schema)
    rejected = window.rejections
    categorical = rejected[rejected["field"] == category]
    assert categorical["reason"].tolist() == ["literal_error", "literal_error"]
    assert categorical["request"].tolist() == [0, 1]
    assert rejected["request"].nunique() == 9
    assert window.requests == 1  # the one request answered
    assert json.dumps(rejected.to_dict("records")).count(SECRET_CATEGORY) == 0
