"""The real server over HTTP: uvicorn on a loopback port, every endpoint, bad input, SIGTERM, schemathesis."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gitml import bundle
from gitml.bundle import Manifest
from gitml.data.schema import Column, DatasetSchema
from gitml.paths import Paths
from gitml.serve.predlog import labelled, predictions, read_lines
from gitml.serve.requests import request_columns
from tests.logs.conftest import request_field, required_field, served_schema
from tests.serve.conftest import GIT_SHA, MODEL_VERSION, Server, request_records

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def server(served: Paths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_dir = tmp_path_factory.mktemp("prediction-log")
    running = Server(served.root, log_dir, {"GITML_MODEL_VERSION": MODEL_VERSION, "GITML_GIT_SHA": GIT_SHA})
    running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.stop()


@pytest.fixture(scope="module")
def records(served: Paths) -> list[dict[str, Any]]:
    return request_records(served)


def metrics(server: Server) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """/metrics parsed: metric family name -> (sample name, labels, value)."""
    text = httpx.get(f"{server.url}/metrics").text
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of the samples called `name` with these labels (0 when there are none)."""
    return float(
        sum(
            value
            for samples in families.values()
            for sample_name, sample_labels, value in samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )
    )


def test_health_ready_and_version_describe_the_model(server: Server, served: Paths) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/ready").json() == {"ready": True, "reasons": []}
    version = httpx.get(f"{server.url}/version").json()
    threshold = json.loads(served.threshold.read_text())["threshold"]
    train_sha256 = hashlib.sha256(served.split_file("train").read_bytes()).hexdigest()
    assert version["model_version"] == MODEL_VERSION
    assert version["git_sha"] == GIT_SHA
    assert version["data_hash"] == train_sha256  # from the manifest, not git or dvc.lock
    assert version["model_sha256"] == hashlib.sha256(served.onnx.read_bytes()).hexdigest()
    assert version["threshold"] == threshold
    assert version["dataset"] == served_schema(served).name


def test_predictions_over_http_equal_the_evaluate_stage_scores(
    server: Server, served: Paths, records: list[dict[str, Any]]
) -> None:
    expected = pd.read_parquet(served.test_scores).sort_values("row")
    assert len(expected) == len(records)
    negative, positive = bundle.classes(served_schema(served))
    scores: list[float] = []
    decisions: list[bool] = []
    with httpx.Client(base_url=server.url) as client:
        for start in range(0, len(records), 300):
            answer = client.post("/predict", json=records[start : start + 300])
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model_version"] == MODEL_VERSION
            assert answer.headers["x-request-id"] == body["request_id"]
            scores += [p["score"] for p in body["predictions"]]
            decisions += [p["decision"] for p in body["predictions"]]
            assert all(p["class"] == (positive if p["decision"] else negative) for p in body["predictions"])
        singles = [client.post("/predict", json=record).json() for record in records[:40]]
    np.testing.assert_allclose(scores, expected["score"], rtol=0, atol=1e-6)
    np.testing.assert_allclose([s["score"] for s in singles], expected["score"][:40], rtol=0, atol=1e-6)
    # Away from the threshold every decision is the evaluate stage's. A test record equal to the
    # validation record the threshold was set at sits on it: its decision is its score against it.
    threshold = json.loads(served.threshold.read_text())["threshold"]
    clear = np.abs(expected["score"].to_numpy() - threshold) > 1e-6
    assert clear.mean() > 0.99
    served_decisions, served_scores = np.array(decisions), np.array(scores)
    assert served_decisions[clear].tolist() == expected["decision"].to_numpy()[clear].tolist()
    assert served_decisions[~clear].tolist() == (served_scores[~clear] >= threshold).tolist()
    assert [s["decision"] for s in singles] == decisions[:40]


def test_the_manifests_probe_comes_back_with_its_score(server: Server, served: Paths) -> None:
    """What the deploy smoke test does: the probe record, posted, is scored as the evaluate stage scored it."""
    probe = Manifest.read(served.manifest).probe
    answer = httpx.post(f"{server.url}/predict", json=probe.record)
    assert answer.status_code == 200, answer.text
    assert abs(answer.json()["score"] - probe.score) <= 1e-6
    threshold = np.float32(json.loads(served.threshold.read_text())["threshold"])
    assert answer.json()["decision"] == bool(np.float32(probe.score) >= threshold)


BAD_BODIES: list[tuple[str, bytes, int, list[Any] | None]] = [
    ("not json", b"age=39&sex=Male", 400, None),
    ("truncated json", b'{"age": 39, "sex": ', 400, None),
    ("empty body", b"", 400, None),
    ("json scalar", b"42", 422, ["body"]),
    ("json string", b'"a record"', 422, ["body"]),
    ("empty batch", b"[]", 422, ["body"]),
]


@pytest.mark.parametrize(("case", "body", "status", "loc"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_a_body_that_is_not_records_is_rejected_with_a_reason(
    server: Server, case: str, body: bytes, status: int, loc: list[Any] | None
) -> None:
    answer = httpx.post(f"{server.url}/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    if loc is None:
        assert isinstance(detail, str)
        assert "JSON" in detail
    else:
        assert detail[0]["loc"] == loc


def integer_field(schema: DatasetSchema) -> Column:
    """A non-nullable integer field with declared bounds (pytest skips where the dataset has none)."""
    return request_field(
        schema,
        "bounded integer",
        lambda c: c.dtype == "integer" and not c.nullable and None not in (c.minimum, c.maximum),
    )


def bad_field(schema: DatasetSchema, case: str) -> tuple[str, Any, str]:
    """(field, value, what the 422 says) for one kind of bad value, on a field of the served schema."""
    if case.startswith("integer"):
        column = integer_field(schema)
        low, high = int(column.minimum or 0), int(column.maximum or 0)
        return column.name, *{
            "integer-text": ("forty", "valid number"),
            "integer-bool": (True, "valid number"),
            "integer-fraction": (low + 0.5, "fractional part"),
            "integer-above": (high + 60, f"less than or equal to {high}"),
            "integer-huge": (10**40, f"less than or equal to {high}"),  # past 64 bits: rejected, not echoed back
            "integer-below": (low - 14, f"greater than or equal to {low}"),
            "integer-null": (None, "valid number"),
            "integer-object": ({"value": 40}, "valid number"),
        }[case]
    column = request_field(schema, "categorical", lambda c: c.dtype == "categorical" and not c.nullable)
    assert column.categories is not None
    first = f"'{column.categories[0]}'"
    return column.name, *{"category-unknown": ("Astronaut", first), "category-number": (7, first),
                          "category-list": ([column.categories[0]], first)}[case]  # fmt: skip


FIELD_ERRORS = [
    "integer-text", "integer-bool", "integer-fraction", "integer-above", "integer-huge", "integer-below",
    "integer-null", "integer-object", "category-unknown", "category-number", "category-list",
]  # fmt: skip


@pytest.mark.parametrize("case", FIELD_ERRORS)
def test_a_bad_field_gets_422_naming_the_field(
    server: Server, served: Paths, records: list[dict[str, Any]], case: str
) -> None:
    name, value, message = bad_field(served_schema(served), case)
    batch = [dict(records[0]), {**records[1], name: value}, dict(records[2])]
    single = httpx.post(f"{server.url}/predict", json=batch[1])
    assert single.status_code == 422
    assert [(e["loc"], message in e["msg"]) for e in single.json()["detail"]] == [(["body", name], True)], single.text
    many = httpx.post(f"{server.url}/predict", json=batch)
    assert many.status_code == 422
    assert [e["loc"] for e in many.json()["detail"]] == [["body", 1, name]]


def test_missing_and_unknown_fields_are_named(server: Server, served: Paths, records: list[dict[str, Any]]) -> None:
    schema = served_schema(served)
    name = required_field(schema)
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")  # one letter off: a misspelt field
    record = {k: v for k, v in records[0].items() if k != name}
    record[typo] = records[0][name]
    detail = httpx.post(f"{server.url}/predict", json=record).json()["detail"]
    assert {e["type"]: e["loc"] for e in detail} == {"missing": ["body", name], "extra_forbidden": ["body", typo]}
    assert f"did you mean '{name}'" in next(e["msg"] for e in detail if e["type"] == "extra_forbidden")
    # A nullable field (where the dataset has one) may be null or left out.
    for nullable in [c.name for c in request_columns(schema) if c.nullable][:1]:
        left_out = {k: v for k, v in records[0].items() if k != nullable}
        assert httpx.post(f"{server.url}/predict", json=left_out).status_code == 200
        assert httpx.post(f"{server.url}/predict", json={**records[0], nullable: None}).status_code == 200


def test_an_oversized_batch_or_body_gets_413(server: Server, records: list[dict[str, Any]]) -> None:
    too_many = httpx.post(f"{server.url}/predict", json=(records * (1001 // len(records) + 1))[:1001])
    assert too_many.status_code == 413
    assert "1000" in too_many.json()["detail"]
    too_big = httpx.post(f"{server.url}/predict", content=b"[" + b" " * (5 * 2**20) + b"]")
    assert too_big.status_code == 413
    assert "bytes" in too_big.json()["detail"]


def test_feedback_gives_live_accuracy(server: Server, served: Paths, records: list[dict[str, Any]]) -> None:
    schema = served_schema(served)
    truth = pd.read_parquet(served.split_file("test"))[schema.label.name].astype(str).tolist()
    positive = bundle.classes(schema)[1]
    rng = random.Random(3)
    chosen = rng.sample(range(len(records)), 60)
    batch = httpx.post(f"{server.url}/predict", json=[records[i] for i in chosen]).json()
    before = metrics(server)
    feedback = [{"request_id": batch["request_id"], "index": k, "label": truth[i]} for k, i in enumerate(chosen)]
    answer = httpx.post(f"{server.url}/feedback", json=feedback)
    assert answer.status_code == 202
    assert answer.json() == {"accepted": 60, "matched": 60}
    unknown = httpx.post(f"{server.url}/feedback", json={"request_id": "f" * 32, "label": positive})
    assert unknown.json() == {"accepted": 1, "matched": 0}
    out_of_range = httpx.post(
        f"{server.url}/feedback", json={"request_id": batch["request_id"], "index": 60, "label": positive}
    )
    assert out_of_range.status_code == 404
    assert "index 60" in out_of_range.json()["detail"][0]["msg"]
    huge_index = httpx.post(
        f"{server.url}/feedback", json={"request_id": batch["request_id"], "index": 10**30, "label": positive}
    )
    assert huge_index.status_code == 422
    assert huge_index.json()["detail"][0]["loc"] == ["body", "index"]
    bad_label = httpx.post(f"{server.url}/feedback", json={"request_id": batch["request_id"], "label": "rich"})
    assert bad_label.status_code == 422
    assert bad_label.json()["detail"][0]["loc"] == ["body", "label"]

    after = metrics(server)
    correct = sum(p["decision"] == (truth[i] == positive) for p, i in zip(batch["predictions"], chosen, strict=True))
    labelled_before = sample(before, "gitml_live_labelled")
    assert sample(after, "gitml_live_labelled") == labelled_before + 60
    if labelled_before == 0:
        assert sample(after, "gitml_live_accuracy") == pytest.approx(correct / 60)
    assert (
        sample(after, "gitml_feedback_total", outcome="matched")
        - sample(before, "gitml_feedback_total", outcome="matched")
        == 60
    )
    assert (
        sample(after, "gitml_feedback_total", outcome="unmatched")
        - sample(before, "gitml_feedback_total", outcome="unmatched")
        == 1
    )


def test_metrics_count_requests_scores_batches_and_rejections(server: Server, records: list[dict[str, Any]]) -> None:
    before = metrics(server)
    for size in (1, 7, 50):
        assert httpx.post(f"{server.url}/predict", json=records[:size] if size > 1 else records[0]).status_code == 200
    assert httpx.post(f"{server.url}/predict", json={**records[0], "age": 500}).status_code == 422
    assert httpx.post(f"{server.url}/predict", content=b"{").status_code == 400
    after = metrics(server)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("gitml_http_requests_total", endpoint="/predict", status="200") == 3
    assert grew("gitml_http_requests_total", endpoint="/predict", status="422") == 1
    assert grew("gitml_http_request_duration_seconds_count", endpoint="/predict", status="200") == 3
    assert grew("gitml_predict_batch_size_count") == 3
    assert grew("gitml_predict_batch_size_sum") == 58
    assert grew("gitml_prediction_score_count") == 58
    assert grew("gitml_predictions_total") == 58
    assert grew("gitml_validation_failures_total", endpoint="/predict", reason="age") == 1
    assert grew("gitml_validation_failures_total", endpoint="/predict", reason="invalid_json") == 1
    assert sample(after, "gitml_model_info", model_version=MODEL_VERSION, git_sha=GIT_SHA) == 1
    assert not [s for s in after["gitml_http_requests"] if s[1].get("status", "").startswith("5")]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server: Server, tmp_path: Path) -> None:
    """Property-based requests from the server's own OpenAPI document, every check schemathesis has."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "60",
        "--seed",
        "7",
        "--warnings",
        "off",
        "--report-dir",
        str(tmp_path / "schemathesis"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "generated" in done.stdout


def test_every_answered_prediction_is_in_the_log_after_sigterm_mid_load(
    served: Paths, records: list[dict[str, Any]], start_server: Any
) -> None:
    server: Server = start_server(served.root)
    answered: list[tuple[str, int]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while not stop.is_set():
                size = rng.choice([1, 1, 5, 40])
                body = rng.sample(records, size) if size > 1 else rng.choice(records)
                try:
                    answer = http.post("/predict", json=body)
                except httpx.TransportError:
                    return  # the server stopped listening: not accepted, so not owed a log line
                if answer.status_code == 200:
                    answered.append((answer.json()["request_id"], size))
                elif answer.status_code != 503:
                    failures.append(f"{answer.status_code}: {answer.text[:200]}")

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    status, output = server.stop()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the process ends "killed by SIGTERM",
    # as process managers expect; the lifespan's end (which flushes the log) must have run first.
    assert status in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert not failures
    assert "Traceback" not in output
    assert len(answered) > 100  # the load really was running when SIGTERM came
    logged = {line["request_id"]: len(line["scores"]) for line in read_lines(server.log_dir, "predictions")}
    missing = [rid for rid, _ in answered if rid not in logged]
    assert missing == [], f"{len(missing)} of {len(answered)} answered requests are not in the log"
    assert all(logged[rid] == (size if size > 1 else 1) for rid, size in answered)
    rows = list(predictions(server.log_dir))
    assert len(rows) == sum(logged.values())
    assert set(records[0]) <= set(rows[0])  # every input column is logged


def test_feedback_joins_predictions_by_request_id_in_the_log(
    served: Paths, records: list[dict[str, Any]], start_server: Any
) -> None:
    server: Server = start_server(served.root)
    negative, positive = bundle.classes(served_schema(served))
    first = httpx.post(f"{server.url}/predict", json=records[:3]).json()
    second = httpx.post(f"{server.url}/predict", json=records[3]).json()
    httpx.post(
        f"{server.url}/feedback",
        json=[
            {"request_id": first["request_id"], "index": 2, "label": positive},
            {"request_id": second["request_id"], "label": negative},
            {"request_id": first["request_id"], "index": 2, "label": negative},  # a correction: the latest wins
        ],
    )
    server.stop()
    joined = {(row["request_id"], row["index"]): row for row in labelled(server.log_dir)}
    assert set(joined) == {(first["request_id"], 2), (second["request_id"], 0)}
    assert joined[(first["request_id"], 2)]["label"] == negative
    assert joined[(first["request_id"], 2)]["score"] == first["predictions"][2]["score"]
    field = next(iter(records[3]))
    assert joined[(second["request_id"], 0)][field] == records[3][field]
