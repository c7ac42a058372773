"""`read_window`: a time window of the three streams, column-wise, from a log folder or storage."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from gitml.errors import GitmlError
from gitml.logs.read import LATE, ROW_FIELDS, read_window
from gitml.paths import Paths
from gitml.serve.predlog import predictions as predlog_predictions
from gitml.serve.requests import request_columns
from tests.logs.conftest import (
    RECORD,
    feedback,
    prediction,
    rejection,
    request_id,
    served_records,
    served_schema,
    ship_logs,
    toy_schema,
    write_log,
)

DAY = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR = 3600.0
NAMES = [c.name for c in request_columns(toy_schema())]  # the toy request fields, in order


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(DAY + seconds, UTC)


def test_predictions_explode_into_a_row_per_record_in_schema_order(tmp_path: Path) -> None:
    assert list(RECORD) == NAMES  # a record of every toy request field, and nothing else
    write_log(tmp_path, "predictions", DAY, [prediction(0, DAY, 3), prediction(1, DAY + 1, 1)])
    window = read_window(tmp_path, toy_schema())
    frame = window.predictions
    assert list(frame.columns) == [*NAMES, *ROW_FIELDS]
    assert len(frame) == 4
    assert window.requests == 2
    assert frame["request_id"].tolist() == [request_id(0)] * 3 + [request_id(1)]
    assert frame["index"].tolist() == [0, 1, 2, 0]
    assert frame["age"].tolist() == [20.0, 21.0, 22.0, 21.0]
    assert frame["score"].tolist() == [0.0, 0.01, 0.02, 0.07]
    assert frame["decision"].tolist() == [False] * 4
    assert frame["time"].tolist() == ["2026-01-01T00:00:00.000000Z"] * 3 + ["2026-01-01T00:00:01.000000Z"]
    assert frame["model_version"].unique().tolist() == ["v1.0.0"]
    assert frame["city"].unique().tolist() == [RECORD["city"]]
    dtypes = frame.dtypes.astype(str).to_dict()
    assert dtypes["age"] == dtypes["balance"] == dtypes["score"] == "float64"
    assert dtypes["segment"] == dtypes["time"] == dtypes["request_id"] == "object"
    assert (dtypes["index"], dtypes["decision"]) == ("int64", "bool")
    assert window.files == [str(next(tmp_path.iterdir()))]


def test_the_window_is_since_inclusive_until_exclusive_on_each_line(tmp_path: Path) -> None:
    write_log(tmp_path, "predictions", DAY, [prediction(i, DAY + i * 60) for i in range(10)])
    write_log(tmp_path, "feedback", DAY, [feedback(i, DAY + i * 60 + 30) for i in range(10)])
    write_log(tmp_path, "rejections", DAY, [rejection(DAY + i * 60, ("age", "missing")) for i in range(10)])
    window = read_window(tmp_path, toy_schema(), at(120), at(300))
    assert window.predictions["request_id"].tolist() == [request_id(i) for i in (2, 3, 4)]
    assert window.requests == 3
    assert window.feedback["request_id"].tolist() == [request_id(i) for i in (2, 3, 4)]
    assert window.rejections["time"].tolist() == [f"2026-01-01T00:0{m}:00.000000Z" for m in (2, 3, 4)]
    assert window.rejections["request"].tolist() == [0, 1, 2]
    # Either end open; a time zone other than UTC; a naive datetime is UTC.
    assert len(read_window(tmp_path, toy_schema(), since=at(540)).predictions) == 1
    assert len(read_window(tmp_path, toy_schema(), until=at(60)).predictions) == 1
    paris = timezone(timedelta(hours=1))
    shifted = read_window(tmp_path, toy_schema(), at(120).astimezone(paris), at(300).replace(tzinfo=None))
    pd.testing.assert_frame_equal(shifted.predictions, window.predictions)


def test_files_that_cannot_hold_a_line_of_the_window_are_not_read(tmp_path: Path) -> None:
    early = write_log(tmp_path, "predictions", DAY, [prediction(0, DAY)], tag="a-1")
    os.utime(early, (DAY + 10, DAY + 10))  # last written then: nothing newer in it
    within = write_log(tmp_path, "predictions", DAY + 5 * HOUR, [prediction(1, DAY + 5 * HOUR)], tag="a-2")
    # A line can be written a moment after its time, into a file started later: read up to LATE past until.
    late = write_log(tmp_path, "predictions", DAY + 6 * HOUR + 1, [prediction(2, DAY + 6 * HOUR - 1)], tag="a-3")
    after = write_log(tmp_path, "predictions", DAY + 6 * HOUR + LATE.total_seconds() + 1, [prediction(3, DAY)])
    window = read_window(tmp_path, toy_schema(), at(4 * HOUR), at(6 * HOUR))
    assert window.files == [str(within), str(late)]
    assert window.predictions["request_id"].tolist() == [request_id(1), request_id(2)]
    assert str(early) in read_window(tmp_path, toy_schema(), at(10 - LATE.total_seconds() + 1)).files
    assert str(after) in read_window(tmp_path, toy_schema()).files


def test_inputs_a_line_does_not_have_or_has_all_null_read_as_missing(tmp_path: Path) -> None:
    no_segment = prediction(0, DAY, 2)
    del no_segment["inputs"]["segment"]  # a model with other inputs logged this one
    write_log(tmp_path, "predictions", DAY, [no_segment], tag="a-1")
    all_null = prediction(1, DAY + 1, 2, city=[None, None], age=[None, None])
    write_log(tmp_path, "predictions", DAY + 1, [all_null], tag="a-2")  # a whole file without a value
    extra = prediction(2, DAY + 2, 1)
    extra["inputs"]["shoe-size"] = [44]  # an input this schema does not know: ignored
    write_log(tmp_path, "predictions", DAY + 2, [extra], tag="a-3")
    frame = read_window(tmp_path, toy_schema()).predictions
    assert frame["segment"].tolist() == [None, None, "retail", "retail", "retail"]
    assert frame["city"].tolist() == ["Germany", "Germany", None, None, "Germany"]
    assert np.isnan(frame["age"].iloc[2:4]).all()
    assert "shoe-size" not in frame.columns


def test_feedback_keeps_the_latest_label_of_each_prediction(tmp_path: Path) -> None:
    write_log(tmp_path, "feedback", DAY, [feedback(0, DAY + 5, "no"), feedback(1, DAY + 6, "yes", index=2)])
    write_log(tmp_path, "feedback", DAY + 7, [feedback(0, DAY + 8, "yes"), feedback(1, DAY + 9)], tag="b-1")
    frame = read_window(tmp_path, toy_schema()).feedback
    assert list(frame.columns) == ["request_id", "index", "label", "time"]
    rows = sorted(frame.itertuples(index=False, name=None))
    assert rows == [
        (request_id(0), 0, "yes", "2026-01-01T00:00:08.000000Z"),
        (request_id(1), 0, "yes", "2026-01-01T00:00:09.000000Z"),
        (request_id(1), 2, "yes", "2026-01-01T00:00:06.000000Z"),
    ]


def test_rejections_have_a_row_per_error_and_a_number_per_request(tmp_path: Path) -> None:
    write_log(
        tmp_path,
        "rejections",
        DAY,
        [
            rejection(DAY, ("segment", "literal_error"), ("unknown_field", "extra_forbidden")),
            rejection(DAY + 1, ("body_size", "body_size"), status=413),
            rejection(DAY + 2, ("index", "index_out_of_range"), status=404, endpoint="/feedback"),
        ],
    )
    frame = read_window(tmp_path, toy_schema()).rejections
    assert list(frame.columns) == ["time", "endpoint", "status", "field", "reason", "request"]
    assert frame[["endpoint", "status", "field", "reason", "request"]].values.tolist() == [
        ["/predict", 422, "segment", "literal_error", 0],
        ["/predict", 422, "unknown_field", "extra_forbidden", 0],
        ["/predict", 413, "body_size", "body_size", 1],
        ["/feedback", 404, "index", "index_out_of_range", 2],
    ]


def test_an_empty_window_has_every_column(tmp_path: Path) -> None:
    write_log(tmp_path, "predictions", DAY, [prediction(0, DAY)])
    window = read_window(tmp_path, toy_schema(), since=at(HOUR))
    assert window.requests == 0
    assert list(window.predictions.columns) == [*NAMES, *ROW_FIELDS]
    assert window.predictions.empty
    assert list(window.feedback.columns) == ["request_id", "index", "label", "time"]
    assert list(window.rejections.columns) == ["time", "endpoint", "status", "field", "reason", "request"]
    assert window.predictions.dtypes["score"] == np.float64


def test_a_last_line_cut_short_is_dropped(tmp_path: Path) -> None:
    path = write_log(tmp_path, "predictions", DAY, [prediction(0, DAY), prediction(1, DAY)])
    whole = path.read_bytes()
    path.write_bytes(whole + orjson.dumps(prediction(2, DAY))[:-40])  # the writer was killed mid-line
    assert read_window(tmp_path, toy_schema()).requests == 2
    path.write_bytes(whole[:-1])  # the newline of the last line missing: that line may be cut short too
    assert read_window(tmp_path, toy_schema()).requests == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (b'{"time": "2026-01-01T00:00:00.000000Z", "request_id": \n', "not the log's JSON"),
        (b"not json\n", "not the log's JSON"),
        (
            b'{"time": "2026\xff", "request_id": "", "model_version": "", "inputs": {}, "scores": [0], '
            b'"decisions": [true]}\n',
            "not UTF-8",
        ),
        (b'{"request_id": "x"}\n', "has no 'time'"),
    ],
    ids=["cut-inside", "text", "not-utf8", "no-time"],
)
def test_a_damaged_line_names_its_file(tmp_path: Path, damage: bytes, message: str) -> None:
    good = write_log(tmp_path, "predictions", DAY, [prediction(0, DAY)], tag="a-1")
    path = write_log(tmp_path, "predictions", DAY + 1, [prediction(1, DAY + 1)], tag="a-2")
    path.write_bytes(path.read_bytes() + damage + orjson.dumps(prediction(2, DAY + 2)) + b"\n")
    with pytest.raises(GitmlError, match=message) as info:
        read_window(tmp_path, toy_schema())
    assert str(path) in str(info.value)
    assert str(good) not in str(info.value)
    assert "damaged" in str(info.value)


def test_inputs_and_scores_of_different_lengths_are_damage(tmp_path: Path) -> None:
    line = prediction(0, DAY, 3)
    line["inputs"]["segment"] = ["retail"]
    path = write_log(tmp_path, "predictions", DAY, [line])
    with pytest.raises(GitmlError, match="'segment' and 'scores' differ in length") as info:
        read_window(tmp_path, toy_schema())
    assert str(path) in str(info.value)


def test_a_location_that_is_not_there_is_named(tmp_path: Path) -> None:
    with pytest.raises(GitmlError, match="no such log folder or storage location"):
        read_window(tmp_path / "absent", toy_schema())


def test_the_shipped_layout_reads_as_the_log_folder_did(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    for n in range(3):
        lines = [prediction(n * 10 + i, DAY + n * 86_400 + i, 4) for i in range(5)]
        write_log(log_dir, "predictions", DAY + n * 86_400, lines)
        write_log(log_dir, "feedback", DAY + n * 86_400, [feedback(n * 10, DAY + n * 86_400 + 9)])
    open_file = log_dir / "predictions-20260105T000000000000Z-host-1.jsonl.open"
    open_file.write_bytes(orjson.dumps(prediction(99, DAY + 4 * 86_400)) + b"\n")
    local = read_window(log_dir, toy_schema())
    assert local.requests == 16  # the open file is read in the server's folder...
    ship_logs(tmp_path, "--log-dir", str(log_dir), "--to", str(tmp_path / "store"))
    shipped = read_window(tmp_path / "store", toy_schema())
    assert shipped.requests == 15  # ...and never shipped
    pd.testing.assert_frame_equal(
        shipped.predictions, local.predictions[local.predictions["request_id"] != request_id(99)]
    )
    pd.testing.assert_frame_equal(shipped.feedback, local.feedback)
    assert sorted(p.parent.name for p in (tmp_path / "store" / "predictions").rglob("*.jsonl")) == [
        "date=2026-01-01", "date=2026-01-02", "date=2026-01-03",
    ]  # fmt: skip


@pytest.mark.slow
def test_a_real_servers_log_reads_as_the_row_reader_reads_it(served: Paths, start_server: Any, tmp_path: Path) -> None:
    import httpx

    server = start_server(served.root, log_dir=tmp_path / "log")
    schema = served_schema(served)  # the served dataset's, whichever conf/ selects
    names = [c.name for c in request_columns(schema)]
    records = served_records(served)
    sent = sum(len(records[:size]) for size in (1, 7, 100))  # 108, from a test split of 100 rows or more
    for size in (1, 7, 100):
        assert httpx.post(f"{server.url}/predict", json=records[:size] if size > 1 else records[0]).status_code == 200
    deadline = time.monotonic() + 30
    while len(live := read_window(server.log_dir, schema).predictions) < sent:  # written every 0.2 s
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert all(p.name.endswith(".jsonl.open") for p in server.log_dir.iterdir())  # read as the server writes
    server.stop()
    window = read_window(server.log_dir, schema)
    rows = pd.DataFrame(list(predlog_predictions(server.log_dir)))
    assert len(window.predictions) == len(rows) == sent
    for name in [*names, *ROW_FIELDS]:
        expected = rows[name].tolist()
        got = window.predictions[name].tolist()
        if window.predictions[name].dtype == np.float64:
            expected = [np.nan if v is None else float(v) for v in expected]
            np.testing.assert_array_equal(np.array(got), np.array(expected), err_msg=name)
        else:
            assert got == expected, name
    pd.testing.assert_frame_equal(live, window.predictions)
