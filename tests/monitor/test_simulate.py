"""`gitml simulate` against the real server (`gitml serve` on the trained sample): what it sends is
what the prediction log holds, its feedback joins its predictions, rejected rows are counted, a
shift shows in the logged inputs, and no server is a clear error."""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gitml.errors import GitmlError
from gitml.monitor.simulate import COMMANDS
from gitml.paths import Paths
from gitml.serve.predlog import FEEDBACK, PREDICTIONS, labelled, predictions, read_lines
from tests.logs.conftest import categorical_field, request_field, served_schema


def numeric_field(paths: Paths) -> str:
    """A request field the log keeps as a number (a shift moves its mean)."""
    schema = served_schema(paths)
    return request_field(schema, "numeric", lambda c: c.output_dtype in ("integer", "float")).name


def simulate(paths: Paths, *argv: str) -> str:
    """`gitml simulate ARGV` on `paths`, parsed by the arguments the subcommand declares."""
    handler, _, add_arguments = COMMANDS["simulate"]
    parser = argparse.ArgumentParser()
    assert add_arguments is not None
    add_arguments(parser)
    return handler(paths, parser.parse_args(list(argv)))


def logged(server: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The server's predictions and its labelled predictions, once it has stopped (its log written out)."""
    status, output = server.stop()
    assert status in (0, -signal.SIGTERM), output  # uvicorn ends "killed by SIGTERM", its log written out
    assert "Application shutdown complete" in output
    return pd.DataFrame(list(predictions(server.log_dir))), pd.DataFrame(labelled(server.log_dir))


def test_replayed_rows_are_logged_and_their_feedback_joins_them(
    served: Paths, start_server: Any, tmp_path: Path
) -> None:
    """Labels made a function of a numeric field: a label joined to the wrong prediction would break it."""
    schema = served_schema(served)
    field, label = numeric_field(served), schema.label
    positive = schema.positive_class
    negative = next(c for c in label.categories or () if c != positive)
    rows = pd.read_parquet(served.split_file("test"))
    cut = rows[field].median()
    rows[label.name] = np.where(rows[field] >= cut, positive, negative)
    source = tmp_path / "rows.csv"
    rows.to_csv(source, index=False)  # a CSV: categories and missing values come back from text
    server = start_server(served.root)
    line = simulate(
        served, "--url", server.url, "--from", str(source), "--rows", "400", "--batch", "25",
        "--feedback-share", "0.5", "--feedback-delay", "0.3", "--concurrency", "2", "--seed", "3",
    )  # fmt: skip
    assert line.startswith(f"simulate: 400 rows of rows.csv, scenario none, in 16 requests to {server.url}: ")
    assert "400 answered, 0 rejected; 200 labels sent as feedback after 0.3 s" in line

    sent, joined = logged(server)
    assert len(sent) == 400
    assert sent["request_id"].nunique() == 16
    assert set(sent["index"]) == set(range(25))
    assert len(joined) == 200
    assert set(joined["request_id"]) <= set(sent["request_id"])
    assert ((joined[field] >= cut) == (joined["label"] == positive)).all()
    assert set(sent.columns) >= set(rows.columns) - {label.name}  # every request field, and no label
    assert label.name not in sent.columns

    answered = {
        entry["request_id"]: datetime.fromisoformat(entry["time"]) for entry in read_lines(server.log_dir, PREDICTIONS)
    }
    for feedback in read_lines(server.log_dir, FEEDBACK):
        waited = datetime.fromisoformat(feedback["time"]) - answered[feedback["request_id"]]
        assert waited.total_seconds() >= 0.29


def test_rows_with_a_new_category_are_rejected_and_counted(served: Paths, start_server: Any) -> None:
    field = categorical_field(served_schema(served))  # a category it never declared is rejected
    server = start_server(served.root)
    line = simulate(
        served, "--url", server.url, "--rows", "200", "--batch", "1", "--feedback-share", "1",
        "--scenario", f"new-category:{field}=0.05",
    )  # fmt: skip
    assert "190 answered, 10 rejected (10 requests: HTTP 422 x10); 190 labels sent as feedback" in line
    sent, joined = logged(server)
    assert len(sent) == len(joined) == 190
    assert f"{field}-new" not in set(sent[field].dropna())


def test_a_shift_moves_the_logged_column(served: Paths, start_server: Any) -> None:
    field = numeric_field(served)
    test = pd.read_parquet(served.split_file("test"))
    server = start_server(served.root)
    line = simulate(
        served, "--url", server.url, "--rows", "1000", "--batch", "50", "--feedback-share", "0",
        "--scenario", f"shift:{field}=0.5",
    )  # fmt: skip
    assert f"scenario shift:{field}=0.5" in line
    assert "1,000 answered, 0 rejected; 0 labels sent" in line
    sent, joined = logged(server)
    assert len(sent) == 1000
    assert joined.empty
    moved = (sent[field].mean() - test[field].mean()) / test[field].std(ddof=0)
    assert 0.35 < moved < 0.65


def test_a_score_shift_moves_the_logged_scores(served: Paths, start_server: Any) -> None:
    scores = pd.read_parquet(served.test_scores)["score"]  # the evaluate stage's, of the whole test split
    server = start_server(served.root)
    simulate(served, "--url", server.url, "--rows", "1000", "--batch", "100", "--scenario", "score:0.5")
    sent, _ = logged(server)
    moved = (sent["score"].mean() - scores.mean()) / scores.std(ddof=0)
    assert 0.35 < moved < 0.65


def test_a_stopped_server_is_a_clear_error(served: Paths, start_server: Any) -> None:
    server = start_server(served.root)
    server.stop()
    with pytest.raises(GitmlError, match=rf"no server at {server.url} \(.*\); start one with `make serve`"):
        simulate(served, "--url", server.url, "--rows", "10")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "localhost:8000"], "'localhost:8000' is not an http(s) URL"),
        (["--rows", "0"], "--rows must be at least 1, not 0"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--feedback-share", "1.5"], "--feedback-share is a share of the predictions, from 0 to 1, not 1.5"),
        (["--feedback-delay", "-1"], "--feedback-delay is seconds, 0 or more, not -1"),
        (["--from", "nowhere.csv"], "nowhere.csv: not found; pass a CSV or Parquet file"),
    ],
)
def test_arguments_are_checked_before_anything_is_sent(served: Paths, argv: list[str], message: str) -> None:
    with pytest.raises(GitmlError) as caught:
        simulate(served, "--url", "http://127.0.0.1:9", *argv)  # port 9: nothing may be sent
    assert message in str(caught.value)


def test_a_misspelt_field_is_named_with_the_one_meant(served: Paths) -> None:
    field = numeric_field(served)
    with pytest.raises(GitmlError, match=rf"no field '{field}x' \(did you mean '{field}'\?\)"):
        simulate(served, "--url", "http://127.0.0.1:9", "--scenario", f"shift:{field}x=0.4")


def test_rows_without_the_request_fields_are_refused(served: Paths, tmp_path: Path) -> None:
    field, label = numeric_field(served), served_schema(served).label.name
    source = tmp_path / "rows.parquet"
    pd.read_parquet(served.split_file("test")).drop(columns=[field, label]).to_parquet(source)
    with pytest.raises(GitmlError, match=rf"rows.parquet: lacks the columns {field}, {label}; a row needs the request"):
        simulate(served, "--url", "http://127.0.0.1:9", "--from", str(source))


class FakeServer(http.server.ThreadingHTTPServer):
    """A stand-in for the server that answers every POST with one status and body, and counts them."""

    def __init__(self, status: int, body: bytes, keep_alive: bool = True) -> None:
        self.status, self.body, self.keep_alive = status, body, keep_alive
        self.posts: list[tuple[str, Any]] = []
        super().__init__(("127.0.0.1", 0), FakeHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.posts.append((self.path, json.loads(body)))
        status = 202 if self.path == "/feedback" else self.server.status
        self.send_response(status)
        self.send_header("content-length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)
        # without "connection: close": the client finds out when it next sends on this connection
        self.close_connection = not self.server.keep_alive

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def start(status: int, body: bytes, keep_alive: bool = True) -> FakeServer:
        servers.append(FakeServer(status, body, keep_alive))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_server_that_closes_idle_connections_gets_each_request_once(served: Paths, fake: Any) -> None:
    server = fake(200, json.dumps({"request_id": "a" * 32}).encode(), keep_alive=False)
    line = simulate(served, "--url", server.url, "--rows", "60", "--batch", "10", "--feedback-share", "1")
    assert "60 answered, 0 rejected; 60 labels sent as feedback" in line
    paths = [path for path, _ in server.posts]
    assert paths.count("/predict") == 6
    assert paths.count("/feedback") == 6


def test_a_server_that_answers_no_prediction_is_an_error(served: Paths, fake: Any) -> None:
    server = fake(404, b'{"detail": "Not Found"}')
    with pytest.raises(GitmlError, match=r"answered no prediction; the first failure: /predict: HTTP 404: .*Not Found"):
        simulate(served, "--url", server.url, "--rows", "10")
    server = fake(200, b"{}")
    with pytest.raises(GitmlError, match=r"answered 200 without a request id .* is it a gitml server"):
        simulate(served, "--url", server.url, "--rows", "10")
