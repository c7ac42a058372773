"""The prediction log: the writer thread, close, rotation, failures, reading back, and the clock."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gitml.errors import GitmlError
from gitml.serve.config import LogConfig, ServeConfig
from gitml.serve.predlog import (
    FEEDBACK,
    PREDICTIONS,
    REJECTIONS,
    Clock,
    PredictionLog,
    labelled,
    log_files,
    predictions,
    read_lines,
)
from tests.conftest import params_section

FLUSH = 0.01  # seconds: the writer's interval in these tests
NEVER = 3600.0  # a flush interval the writer never reaches within a test: only close() writes


def log_config(directory: Path, **changes: Any) -> LogConfig:
    """conf/serve/'s prediction log settings, writing to `directory`, with `changes`."""
    log = ServeConfig.from_config(params_section("serve"), "params.yaml", directory).log
    return dataclasses.replace(log, directory=directory, **changes)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until `condition` holds; the timeout only bounds a failing test."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(FLUSH / 4)


def healthy(log: PredictionLog) -> bool:
    """Read afresh each time (a property that mypy would otherwise take as fixed after one assert)."""
    return log.healthy


def line(i: int, text: str = "") -> bytes:
    """One log line as the server queues it: compact JSON in UTF-8."""
    return json.dumps({"i": i, "text": text}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@pytest.fixture
def open_log(tmp_path: Path) -> Iterator[Callable[..., PredictionLog]]:
    """Start prediction logs in tmp_path/log; any left open are closed at the end of the test."""
    logs: list[PredictionLog] = []

    def start(**settings: Any) -> PredictionLog:
        settings.setdefault("flush_seconds", FLUSH)
        log = PredictionLog(log_config(tmp_path / "log", **settings))
        log.start()
        logs.append(log)
        return log

    yield start
    for log in logs:
        log.close()


def numbers(directory: Path, stream: str = PREDICTIONS) -> list[int]:
    return [entry["i"] for entry in read_lines(directory, stream)]


def test_appended_lines_are_written_by_the_writer_thread_within_a_few_flush_intervals(
    open_log: Callable[..., PredictionLog], tmp_path: Path
) -> None:
    log = open_log()
    directory = tmp_path / "log"
    assert healthy(log)
    for i in range(50):
        log.append(PREDICTIONS, line(i))
    log.append(FEEDBACK, line(1000))
    started = time.monotonic()
    wait_for(lambda: log.lines_written == 51)
    assert time.monotonic() - started < 100 * FLUSH + 1.0  # a bound for a loaded machine, not a benchmark
    assert log.pending == 0
    assert numbers(directory) == list(range(50))  # readable while the server runs
    assert numbers(directory, FEEDBACK) == [1000]
    for i in range(50, 60):  # and it goes on writing
        log.append(PREDICTIONS, line(i))
    wait_for(lambda: log.lines_written == 61)
    assert numbers(directory) == list(range(60))
    assert healthy(log)
    assert log.write_errors == 0


def test_close_writes_everything_still_queued_in_order_and_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # the system call is the boundary; record what reached it
        synced.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    directory = tmp_path / "log"
    log = PredictionLog(log_config(directory, flush_seconds=NEVER))
    log.start()
    for i in range(20_000):
        log.append(PREDICTIONS, line(i))
        if i % 100 == 0:
            log.append(FEEDBACK, line(i))
    assert log.lines_written == 0  # nothing written yet: the writer waits for its interval
    log.close()
    assert numbers(directory) == list(range(20_000))
    assert numbers(directory, FEEDBACK) == list(range(0, 20_000, 100))
    assert log.pending == 0
    assert log.lines_written == 20_200
    files = sorted(str(p) for s in (PREDICTIONS, FEEDBACK) for p in log_files(directory, s))
    assert files
    assert not [f for f in files if not f.endswith(".jsonl")]  # closed: renamed from .jsonl.open
    # Each file fsynced while it was written (.open), then the directory, so that the renames last too.
    assert sorted(p for p in synced if p != str(directory)) == [f"{f}.open" for f in files]
    assert str(directory) in synced
    assert not healthy(log)  # stopped


def test_close_without_lines_writes_no_files(tmp_path: Path) -> None:
    log = PredictionLog(log_config(tmp_path / "log", flush_seconds=FLUSH))
    log.start()
    log.close()
    assert list((tmp_path / "log").iterdir()) == []  # no empty files, and prepare's probe is gone


FILE_NAME = re.compile(r"^(?P<stream>[a-z]+)-(?P<stamp>\d{8}T\d{12}Z)-(?P<host>[A-Za-z0-9._-]+)-(?P<pid>\d+)\.jsonl$")


def test_file_names_carry_the_stream_the_utc_start_time_the_host_and_the_pid(
    open_log: Callable[..., PredictionLog], tmp_path: Path
) -> None:
    before = datetime.now(UTC)
    log = open_log()
    log.append(PREDICTIONS, line(1))
    log.append(FEEDBACK, line(2))
    wait_for(lambda: log.lines_written == 2)
    log.close()
    after = datetime.now(UTC)
    names = sorted(p.name for p in (tmp_path / "log").iterdir())
    assert len(names) == 2
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    for name, stream in zip(names, (FEEDBACK, PREDICTIONS), strict=True):
        match = FILE_NAME.match(name)
        assert match, name
        assert match["stream"] == stream
        assert match["host"] == host
        assert match["pid"] == str(os.getpid())
        started = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
        assert before - timedelta(milliseconds=1) <= started <= after


@pytest.mark.parametrize("text", ["", "x" * 40, "✓" * 30], ids=["short", "ascii", "non-ascii"])
def test_files_rotate_by_size_with_whole_lines_read_back_in_order(
    open_log: Callable[..., PredictionLog], tmp_path: Path, text: str
) -> None:
    limit = 100
    log = open_log(rotate_bytes=limit)
    directory = tmp_path / "log"
    count = 0
    for _round in range(12):  # one line per round: each round is one write, so the files' limits can be checked
        log.append(PREDICTIONS, line(count, text))
        count += 1
        wait_for(lambda: log.lines_written == count)  # noqa: B023  # read at once, in this round
    log.close()
    files = log_files(directory, PREDICTIONS)
    assert len(files) > 1
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n")  # no line split across files
        lines = data.splitlines(keepends=True)
        assert all(json.loads(part) for part in lines)
        # A file takes lines until it reaches the limit (in bytes, as on disk), then the next write starts a new one.
        assert sum(len(part) for part in lines[:-1]) < limit, (path.name, len(data))
    assert numbers(directory) == list(range(count))


def test_a_tiny_size_limit_gives_a_file_per_write(open_log: Callable[..., PredictionLog], tmp_path: Path) -> None:
    log = open_log(rotate_bytes=1)
    directory = tmp_path / "log"
    written = 0
    for batch in range(5):
        for i in range(batch * 10, batch * 10 + 10):
            log.append(PREDICTIONS, line(i))
        written += 10
        wait_for(lambda: log.lines_written == written)  # noqa: B023
    log.close()
    files = log_files(directory, PREDICTIONS)
    assert len(files) == 5
    assert [[e["i"] for e in map(json.loads, p.read_text(encoding="utf-8").splitlines())] for p in files] == [
        list(range(b * 10, b * 10 + 10)) for b in range(5)
    ]
    assert numbers(directory) == list(range(50))


def test_files_rotate_by_age(open_log: Callable[..., PredictionLog], tmp_path: Path) -> None:
    age = 0.1
    log = open_log(rotate_seconds=age)
    directory = tmp_path / "log"
    started = time.monotonic()
    log.append(PREDICTIONS, line(0))
    wait_for(lambda: log.lines_written == 1)
    log.append(PREDICTIONS, line(1))
    wait_for(lambda: log.lines_written == 2)
    second = time.monotonic()  # the file that has line 1 was opened by now
    wait_for(lambda: time.monotonic() > second + age * 1.2)
    log.append(PREDICTIONS, line(2))
    wait_for(lambda: log.lines_written == 3)
    log.close()
    files = log_files(directory, PREDICTIONS)
    if second - started < age * 0.8:  # lines 0 and 1 came within the age, so they share a file
        assert len(files) == 2
    assert len(files) >= 2
    assert [json.loads(t)["i"] for t in files[-1].read_text(encoding="utf-8").splitlines()] == [2]
    assert numbers(directory) == [0, 1, 2]


def test_an_idle_stream_closes_its_file_once_it_is_old(open_log: Callable[..., PredictionLog], tmp_path: Path) -> None:
    log = open_log(rotate_seconds=0.05)
    log.append(PREDICTIONS, line(0))
    wait_for(lambda: log.lines_written == 1)
    [path] = log_files(tmp_path / "log", PREDICTIONS)

    def open_here() -> bool:
        targets = []
        for fd in Path("/proc/self/fd").iterdir():
            try:
                targets.append(str(fd.readlink()))
            except FileNotFoundError:  # another thread closed it between the listing and the read
                continue
        return str(path) in targets

    closed = path.with_name(path.name.removesuffix(".open"))
    # Closed (fsynced, and renamed from .jsonl.open) with no further writes, so it can be shipped.
    wait_for(lambda: not open_here() and log_files(tmp_path / "log", PREDICTIONS) == [closed])
    assert numbers(tmp_path / "log") == [0]
    assert healthy(log)


def test_a_file_is_written_as_open_and_renamed_when_it_closes(
    open_log: Callable[..., PredictionLog], tmp_path: Path
) -> None:
    directory = tmp_path / "log"
    log = open_log()
    log.append(PREDICTIONS, line(0))
    log.append(REJECTIONS, line(1))
    wait_for(lambda: log.lines_written == 2)
    names = sorted(p.name for p in directory.iterdir())
    assert [n.split("-")[0] for n in names] == [PREDICTIONS, REJECTIONS]
    assert all(n.endswith(".jsonl.open") for n in names), names  # a shipper copies .jsonl only
    assert numbers(directory) == [0]  # readers read the open files too
    assert numbers(directory, REJECTIONS) == [1]
    log.close()
    assert sorted(p.name for p in directory.iterdir()) == [n.removesuffix(".open") for n in names]
    assert numbers(directory) == [0]


def test_a_file_closed_between_listing_and_reading_is_read_under_its_closed_name(tmp_path: Path) -> None:
    path = write_file(tmp_path, PREDICTIONS, "20260101T000000000000Z", jsonl({"i": 0}), tag="h-1")
    listed = path.with_name(path.name + ".open")  # what a reader listed while the file was written
    assert [e["i"] for e in read_lines(tmp_path, PREDICTIONS)] == [0]
    assert log_files(tmp_path, PREDICTIONS) == [path]
    listed.write_bytes(jsonl({"i": 1}))
    # A closed file and an open one started at the same moment: the closed one first.
    assert log_files(tmp_path, PREDICTIONS) == [path, listed]


def dead_pid() -> int:
    """The process id of a process that has exited."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_files_a_killed_server_left_open_are_closed_when_the_next_one_starts(
    open_log: Callable[..., PredictionLog], tmp_path: Path
) -> None:
    directory = tmp_path / "log"
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    content = jsonl({"i": 0}) + b'{"i": 1, "cut sh'  # the killed writer's last line is cut short
    left = {
        "killed": f"{host}-{dead_pid()}",  # this host, a process that is gone: closed
        "restarted": f"{host}-{os.getpid()}",  # this host and this PID, written by no log here: closed
        "alive": f"{host}-{os.getppid()}",  # this host, a process that runs: left open
        "replica": f"other-host-{dead_pid()}",  # another host's, on a shared volume: its own server's
    }
    directory.mkdir()
    paths = {
        what: directory / f"{PREDICTIONS}-2026010{i}T000000000000Z-{tag}.jsonl.open"
        for i, (what, tag) in enumerate(left.items(), 1)
    }
    for path in paths.values():
        path.write_bytes(content)
    open_log()
    for what, path in paths.items():
        closed = path.with_name(path.name.removesuffix(".open"))
        if what in ("killed", "restarted"):
            assert closed.is_file(), what
            assert not path.exists(), what
            assert closed.read_bytes() == content  # as it was: readers drop the cut line
        else:
            assert path.is_file(), what
            assert not closed.exists(), what
    assert numbers(directory) == [0, 0, 0, 0]


WRITE_LIMIT_SCRIPT = """
import json, resource, signal, sys, time
from pathlib import Path
from gitml.serve.config import LogConfig
from gitml.serve.predlog import PREDICTIONS, PredictionLog

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, a write fails with EFBIG instead
directory, limit = Path(sys.argv[1]), int(sys.argv[2])
log = PredictionLog(LogConfig(directory, 0.01, 2**26, 3600.0, 100000, "unused"))
log.start()
line = lambda i: json.dumps({"i": i, "pad": "x" * 20}).encode()

def wait(condition):
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)

for i in range(5):
    log.append(PREDICTIONS, line(i))
wait(lambda: log.lines_written == 5)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
for i in range(5, 25):  # one write that crosses the limit part way through a line
    log.append(PREDICTIONS, line(i))
wait(lambda: log.write_errors > 0)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
wait(lambda: log.pending == 0)
log.close()
print(log.write_errors)
"""


def test_a_write_that_fails_part_way_leaves_whole_lines_in_a_closed_file_and_none_twice(tmp_path: Path) -> None:
    """A write cut short by the disk (here a file size limit): the file is cut back to the lines
    written before it and closed visibly; the kept lines go to the next file, once."""
    directory = tmp_path / "log"
    done = subprocess.run(
        [sys.executable, "-c", WRITE_LIMIT_SCRIPT, str(directory), "300"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1
    files = log_files(directory, PREDICTIONS)
    assert [p.name.endswith(".jsonl") for p in files] == [True, True]
    first = files[0].read_bytes()
    assert first.endswith(b"\n")
    assert [json.loads(x)["i"] for x in first.splitlines()] == list(range(5))
    assert numbers(directory) == list(range(25))


@pytest.mark.parametrize("where", ["under-a-file", "is-a-file"])
def test_prepare_on_an_unwritable_location_names_it_and_what_to_do(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    directory = blocker / "log" if where == "under-a-file" else blocker
    log = PredictionLog(log_config(directory))
    with pytest.raises(GitmlError) as info:
        log.prepare()
    message = str(info.value)
    assert str(directory) in message
    assert "not writable" in message
    assert "serve.prediction_log.dir" in message
    assert "--log-dir" in message
    with pytest.raises(GitmlError):
        log.start()
    assert not healthy(log)  # no writer thread


@pytest.mark.parametrize("rotate_bytes", [64 * 2**20, 1], ids=["first-file", "next-file"])
def test_a_write_failure_keeps_the_lines_and_writes_them_once_the_directory_is_back(
    open_log: Callable[..., PredictionLog], tmp_path: Path, rotate_bytes: int
) -> None:
    directory = tmp_path / "log"
    log = open_log(rotate_bytes=rotate_bytes)
    first = 0
    if rotate_bytes == 1:  # a file is open and written; the next write must open another
        log.append(PREDICTIONS, line(-1))
        wait_for(lambda: log.lines_written == 1)
        first = 1
    shutil.rmtree(directory)  # root ignores permission bits: remove the directory so opening a file fails
    for i in range(10):
        log.append(PREDICTIONS, line(i))
    wait_for(lambda: log.write_errors > 0)
    assert not healthy(log)
    assert "No such file or directory" in (log.last_error or "")
    for i in range(10, 20):  # lines keep coming while the disk is gone
        log.append(PREDICTIONS, line(i))
    wait_for(lambda: log.write_errors > 1)
    assert log.pending == 20
    assert log.lines_written == first
    directory.mkdir()
    wait_for(lambda: log.pending == 0)
    assert healthy(log)
    assert log.last_error is None
    assert log.lines_written == first + 20
    assert numbers(directory) == list(range(20))  # every kept line, once, in order


def test_a_failure_that_outlasts_close_reports_the_lines_it_could_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "log"
    log = PredictionLog(log_config(directory, flush_seconds=NEVER))
    log.start()
    shutil.rmtree(directory)
    for i in range(7):
        log.append(PREDICTIONS, line(i))
    log.close()
    assert log.pending == 7
    assert log.write_errors == 1
    err = capsys.readouterr().err
    assert f"7 prediction log lines could not be written to {directory}" in err


def test_the_log_is_unhealthy_once_pending_reaches_max_pending(tmp_path: Path) -> None:
    log = PredictionLog(log_config(tmp_path / "log", flush_seconds=NEVER, max_pending=5))
    assert not healthy(log)  # not started
    log.start()
    assert healthy(log)
    for i in range(4):
        log.append(PREDICTIONS if i % 2 else FEEDBACK, line(i))
        assert healthy(log)
    log.append(PREDICTIONS, line(4))
    assert log.pending == 5
    assert not healthy(log)  # both streams count
    log.close()
    assert log.pending == 0
    assert log.lines_written == 5


# Reading the log back.


def write_file(directory: Path, stream: str, stamp: str, content: bytes, tag: str = "host-1") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stream}-{stamp}-{tag}.jsonl"
    path.write_bytes(content)
    return path


def jsonl(*entries: dict[str, Any]) -> bytes:
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode()


@pytest.mark.parametrize(
    "cut",
    [b'{"i": 9', b'{"i": 9}', b"{", b'{"text": "Z\xc3', b'{"text": "\xe2\x9c'],
    ids=["mid-line", "whole-json-no-newline", "one-byte", "mid-character", "mid-character-3"],
)
def test_read_lines_skips_a_last_line_cut_short(tmp_path: Path, cut: bytes) -> None:
    write_file(tmp_path, PREDICTIONS, "20260101T000000000000Z", jsonl({"i": 0}, {"i": 1}) + cut)
    write_file(tmp_path, PREDICTIONS, "20260101T000001000000Z", jsonl({"i": 2}))  # the restarted server's file
    assert numbers(tmp_path) == [0, 1, 2]


@pytest.mark.parametrize(
    "damaged",
    [b'{"i": 1\n', b"not json\n", b"\n", b'{"i": 1}{"i": 2}\n', b'{"text": "\xff"}\n'],
    ids=["truncated", "text", "empty", "two-objects", "not-utf8"],
)
def test_read_lines_raises_on_a_damaged_whole_line(tmp_path: Path, damaged: bytes) -> None:
    path = write_file(tmp_path, PREDICTIONS, "20260101T000000000000Z", jsonl({"i": 0}) + damaged + jsonl({"i": 2}))
    with pytest.raises(GitmlError) as info:
        list(read_lines(tmp_path, PREDICTIONS))
    assert f"{path}:2:" in str(info.value)
    assert "damaged" in str(info.value)


def test_read_lines_goes_through_files_in_the_order_they_were_started(tmp_path: Path) -> None:
    write_file(tmp_path, PREDICTIONS, "20260101T000000000002Z", jsonl({"i": 2}), tag="a-host-9")
    write_file(tmp_path, PREDICTIONS, "20251231T235959999999Z", jsonl({"i": 0}), tag="z-1")
    write_file(tmp_path, PREDICTIONS, "20260101T000000000001Z", jsonl({"i": 1}, {"i": 1.5}), tag="m_host-12")
    write_file(tmp_path, FEEDBACK, "20250101T000000000000Z", jsonl({"i": -1}))  # another stream
    (tmp_path / "predictions-20200101T000000000000Z-h-1.jsonl.gz").write_bytes(b"\x1f\x8b")  # not a log file
    assert [e["i"] for e in read_lines(tmp_path, PREDICTIONS)] == [0, 1, 1.5, 2]
    assert [p.name.split("-")[1] for p in log_files(tmp_path, PREDICTIONS)] == [
        "20251231T235959999999Z", "20260101T000000000001Z", "20260101T000000000002Z",
    ]  # fmt: skip
    assert list(read_lines(tmp_path / "absent", PREDICTIONS)) == []


RID = ["a" * 32, "b" * 32, "c" * 32]


def prediction_line(rid: str, n: int, time_: str = "2026-01-01T00:00:00.000000Z") -> dict[str, Any]:
    return {
        "time": time_, "request_id": rid, "model_version": "v1",
        "inputs": {"age": [30 + i for i in range(n)], "sex": ["Male", "Female"][: n] + ["Male"] * max(0, n - 2),
                   "workclass": [None] * n},
        "scores": [i / 10 for i in range(n)], "decisions": [i % 2 == 1 for i in range(n)],
    }  # fmt: skip


def test_predictions_flattens_each_line_into_a_row_per_record(tmp_path: Path) -> None:
    write_file(tmp_path, PREDICTIONS, "20260101T000000000000Z", jsonl(prediction_line(RID[0], 3)))
    write_file(tmp_path, PREDICTIONS, "20260101T000001000000Z", jsonl(prediction_line(RID[1], 1, "t2")))
    rows = list(predictions(tmp_path))
    assert rows == [
        {"time": "2026-01-01T00:00:00.000000Z", "request_id": RID[0], "index": 0, "model_version": "v1",
         "score": 0.0, "decision": False, "age": 30, "sex": "Male", "workclass": None},
        {"time": "2026-01-01T00:00:00.000000Z", "request_id": RID[0], "index": 1, "model_version": "v1",
         "score": 0.1, "decision": True, "age": 31, "sex": "Female", "workclass": None},
        {"time": "2026-01-01T00:00:00.000000Z", "request_id": RID[0], "index": 2, "model_version": "v1",
         "score": 0.2, "decision": False, "age": 32, "sex": "Male", "workclass": None},
        {"time": "t2", "request_id": RID[1], "index": 0, "model_version": "v1",
         "score": 0.0, "decision": False, "age": 30, "sex": "Male", "workclass": None},
    ]  # fmt: skip


def test_a_line_the_server_writes_reads_back_as_its_rows(
    open_log: Callable[..., PredictionLog], tmp_path: Path
) -> None:
    log = open_log()
    entry = prediction_line(RID[2], 5)
    log.append(PREDICTIONS, json.dumps(entry, separators=(",", ":")).encode("utf-8"))
    log.close()
    rows = list(predictions(tmp_path / "log"))
    assert [r["index"] for r in rows] == list(range(5))
    assert [r["score"] for r in rows] == entry["scores"]
    assert [r["age"] for r in rows] == entry["inputs"]["age"]


@pytest.mark.parametrize("name", ["index", "score", "decision", "request_id", "time", "model_version"])
def test_an_input_named_like_a_row_field_does_not_replace_it(tmp_path: Path, name: str) -> None:
    """A dataset may well have a column called `score` or `index`; the logged prediction must stay intact."""
    entry = prediction_line(RID[0], 2)
    entry["inputs"][name] = ["input-0", "input-1"]
    write_file(tmp_path, PREDICTIONS, "20260101T000000000000Z", jsonl(entry))
    write_file(tmp_path, FEEDBACK, "20260101T000000000000Z", jsonl(
        {"time": "t", "request_id": RID[0], "index": 1, "label": ">50K"}))  # fmt: skip
    rows = list(predictions(tmp_path))
    assert [(r["request_id"], r["index"], r["score"], r["decision"]) for r in rows] == [
        (RID[0], 0, 0.0, False), (RID[0], 1, 0.1, True),
    ]  # fmt: skip
    assert [r["time"] for r in rows] == [entry["time"]] * 2
    assert [r["model_version"] for r in rows] == ["v1"] * 2
    [joined] = labelled(tmp_path)
    assert (joined["request_id"], joined["index"], joined["label"]) == (RID[0], 1, ">50K")


def feedback(rid: str, index: int, label: str) -> dict[str, Any]:
    return {"time": "2026-01-01T00:00:02.000000Z", "request_id": rid, "index": index, "label": label}


def test_labelled_joins_feedback_by_request_and_index_and_the_latest_wins(tmp_path: Path) -> None:
    write_file(tmp_path, PREDICTIONS, "20260101T000000000000Z", jsonl(prediction_line(RID[0], 3)))
    write_file(tmp_path, PREDICTIONS, "20260101T000000000001Z", jsonl(prediction_line(RID[1], 2)), tag="other-2")
    write_file(tmp_path, FEEDBACK, "20260101T000000000000Z", jsonl(
        feedback(RID[0], 2, "<=50K"),
        feedback(RID[1], 0, ">50K"),
        feedback(RID[0], 0, ">50K"),
        feedback(RID[0], 2, ">50K"),  # a correction, later in the same file
        feedback(RID[2], 0, ">50K"),  # for a prediction this log does not have
        feedback(RID[1], 5, ">50K"),  # for a record the request did not have
    ))  # fmt: skip
    write_file(tmp_path, FEEDBACK, "20260102T000000000000Z", jsonl(feedback(RID[1], 0, "<=50K")))  # a later file
    rows = labelled(tmp_path)
    assert [(r["request_id"], r["index"], r["label"]) for r in rows] == [
        (RID[0], 0, ">50K"), (RID[0], 2, ">50K"), (RID[1], 0, "<=50K"),
    ]  # fmt: skip
    assert rows[1]["age"] == 32
    assert rows[1]["score"] == 0.2
    assert labelled(tmp_path / "absent") == []


# The clock.

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def reference(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_the_clock_gives_iso_8601_utc_with_microseconds() -> None:
    clock = Clock()
    before = datetime.now(UTC)
    stamp = clock()
    after = datetime.now(UTC)
    assert ISO.match(stamp), stamp
    assert before - timedelta(microseconds=1) <= datetime.fromisoformat(stamp) <= after
    assert clock(0.0) == "1970-01-01T00:00:00.000000Z"
    assert clock(1_767_225_600.25) == "2026-01-01T00:00:00.250000Z"


def test_the_clock_agrees_with_datetime_for_many_times() -> None:
    rng = random.Random(11)
    times = [rng.uniform(0, 4e9) for _ in range(5000)]
    times += [rng.randrange(0, 2**32) + rng.randrange(10**6) / 1e6 for _ in range(5000)]  # whole microseconds
    clock = Clock()
    wrong = [(t, clock(t), reference(t)) for t in times if clock(t) != reference(t)]
    assert not wrong, f"{len(wrong)} of {len(times)} differ, e.g. {wrong[:3]}"


def test_the_clock_agrees_with_datetime_across_a_second_boundary() -> None:
    clock = Clock()  # one clock, in time order, so the cached date part must change at the right moment
    for second in (1_767_225_599, 1_767_225_600, 1_767_311_999):
        for step in range(-30, 30):
            t = second + step * 1e-7
            assert clock(t) == reference(t), t
