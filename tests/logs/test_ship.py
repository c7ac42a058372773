"""`gitml ship-logs`: closed files reach storage, once, in their stream and day; open ones never do;
the shipper and the server can die at any point without losing or doubling a file."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from gitml.errors import GitmlError
from gitml.logs.read import read_window
from gitml.logs.ship import STORAGE_ENV, destination, watch
from gitml.logs.storage import open_storage
from gitml.paths import Paths
from tests.conftest import copy_repo, params_section
from tests.logs.conftest import (
    S3,
    bounded_field,
    feedback,
    prediction,
    rejection,
    served_label,
    served_records,
    served_schema,
    ship_logs,
    shipper,
    start_moto,
    stop,
    toy_schema,
    write_log,
)
from tests.serve.conftest import free_port

DAY = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def some_logs(directory: Path) -> dict[str, Path]:
    """Closed files of each stream on two days, an open one, and files that are not log files."""
    files = {
        "predictions": write_log(directory, "predictions", DAY + 5, [prediction(1, DAY + 5, 3)]),
        "feedback": write_log(directory, "feedback", DAY + 86_400 + 7, [feedback(1, DAY + 86_407)] * 3),
        "rejections": write_log(
            directory, "rejections", DAY + 9, [rejection(DAY + 9, ("age", "less_than_equal"))], tag="pod-a-1"
        ),
    }
    open_file = directory / "predictions-20260101T010000000000Z-host-1.jsonl.open"
    open_file.write_bytes(b'{"time": "2026-01-01T01:00:00.000000Z"}\n{"half a li')
    (directory / "notes.txt").write_text("not a log file")
    (directory / "predictions-20260101T000000000000Z-host-1.jsonl.gz").write_bytes(b"\x1f\x8b")
    return files


def test_closed_files_go_to_their_stream_and_day_and_leave_the_log_folder(tmp_path: Path) -> None:
    log_dir, store = tmp_path / "log", tmp_path / "store"
    files = some_logs(log_dir)
    contents = {stream: path.read_bytes() for stream, path in files.items()}
    message = ship_logs(tmp_path, "--log-dir", str(log_dir), "--to", str(store))
    assert message == f"ship-logs: 3 files sent to {store}, 3 local files removed"
    day = {"predictions": "2026-01-01", "feedback": "2026-01-02", "rejections": "2026-01-01"}
    for stream, path in files.items():
        assert (store / stream / f"date={day[stream]}" / path.name).read_bytes() == contents[stream]
        assert not path.exists()
    shipped = sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())
    assert len(shipped) == 3, shipped  # no .part left, no open file, nothing that is not a log file
    assert sorted(p.name for p in log_dir.iterdir()) == [
        "notes.txt", "predictions-20260101T000000000000Z-host-1.jsonl.gz",
        "predictions-20260101T010000000000Z-host-1.jsonl.open",
    ]  # fmt: skip
    assert ship_logs(tmp_path, "--log-dir", str(log_dir), "--to", str(store)) == f"ship-logs: 0 files sent to {store}"


def test_keep_leaves_the_files_and_a_file_already_there_is_not_sent_again(tmp_path: Path) -> None:
    log_dir, store = tmp_path / "log", tmp_path / "store"
    files = some_logs(log_dir)
    assert ship_logs(tmp_path, "--log-dir", str(log_dir), "--to", f"file://{store}", "--keep").startswith(
        f"ship-logs: 3 files sent to file://{store}"
    )
    assert all(path.exists() for path in files.values())
    target = store / "predictions" / "date=2026-01-01" / files["predictions"].name
    os.utime(target, (1, 1))  # a file sent again would get a new modification time
    again = ship_logs(tmp_path, "--log-dir", str(log_dir), "--to", f"file://{store}")
    assert again == f"ship-logs: 0 files sent to file://{store}, 3 already there, 3 local files removed"
    assert target.stat().st_mtime == 1
    assert not any(path.exists() for path in files.values())


def test_a_copy_cut_short_is_sent_again_whole(tmp_path: Path) -> None:
    """A shipper killed mid-copy leaves a .part file (a folder) or nothing (an object store); a
    file of the wrong size in place is replaced."""
    log_dir, store = tmp_path / "log", tmp_path / "store"
    files = some_logs(log_dir)
    first = store / "predictions" / "date=2026-01-01" / files["predictions"].name
    first.parent.mkdir(parents=True)
    first.write_bytes(b"{")  # not the same size: a broken copy
    second = store / "rejections" / "date=2026-01-01" / files["rejections"].name
    second.parent.mkdir(parents=True)
    Path(f"{second}.part").write_bytes(b'{"time"')
    expected = {path.name: path.read_bytes() for path in files.values()}
    assert ship_logs(tmp_path, "--log-dir", str(log_dir), "--to", str(store)).startswith(
        f"ship-logs: 3 files sent to {store}"
    )
    assert first.read_bytes() == expected[first.name]
    assert second.read_bytes() == expected[second.name]
    assert not Path(f"{second}.part").exists()


def serve_params(root: Path, **log: Any) -> None:
    """root/params.yaml with the repository's serve section, its prediction_log changed."""
    serve = params_section("serve")
    serve["prediction_log"].update(log)
    (root / "params.yaml").write_text(yaml.safe_dump({"serve": serve}))


def test_the_storage_is_the_flag_else_the_environment_else_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_params(tmp_path, dir="var/log", storage="shipped/here")
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    some_logs(tmp_path / "var" / "log")
    assert ship_logs(tmp_path).startswith(f"ship-logs: 3 files sent to {tmp_path / 'shipped' / 'here'}")
    some_logs(tmp_path / "var" / "log")
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "from-env"))
    assert ship_logs(tmp_path).startswith(f"ship-logs: 3 files sent to {tmp_path / 'from-env'}")
    some_logs(tmp_path / "var" / "log")
    assert ship_logs(tmp_path, "--to", str(tmp_path / "flag")).startswith(
        f"ship-logs: 3 files sent to {tmp_path / 'flag'}"
    )
    assert len(list((tmp_path / "flag").rglob("*.jsonl"))) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--log-dir", "{tmp}/absent", "--to", "{tmp}/store"], "no such log folder"),
        (["--log-dir", "{tmp}/log", "--to", "{tmp}/store", "--watch", "0"], "--watch 0.0: give the seconds"),
        (["--log-dir", "{tmp}/log", "--to", "nosuchscheme://bucket/x"], "no storage handles the scheme 'nosuchscheme'"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, argv: list[str], message: str) -> None:
    (tmp_path / "log").mkdir()
    with pytest.raises(GitmlError, match=message):
        ship_logs(tmp_path, *[a.format(tmp=tmp_path) for a in argv])


def test_a_file_that_cannot_be_shipped_is_named_and_stays(tmp_path: Path) -> None:
    log_dir, store = tmp_path / "log", tmp_path / "store"
    files = some_logs(log_dir)
    store.mkdir()
    (store / "feedback").write_text("a file where the stream's folder goes")
    with pytest.raises(GitmlError) as info:
        ship_logs(tmp_path, "--log-dir", str(log_dir), "--to", str(store))
    assert f"1 of 3 files were not shipped to {store}" in str(info.value)
    assert files["feedback"].name in str(info.value)
    assert files["feedback"].exists()
    assert not files["predictions"].exists()


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def test_watch_reports_storage_errors_and_ships_once_they_pass(tmp_path: Path) -> None:
    log_dir, store = tmp_path / "log", tmp_path / "store"
    files = some_logs(log_dir)
    store.mkdir()
    blocker = store / "feedback"
    blocker.write_text("a file where the stream's folder goes")  # every round fails for this file
    complaints: list[str] = []
    said: list[str] = []
    stop_event = threading.Event()
    loop = threading.Thread(
        target=watch, args=(log_dir, open_storage(store), 0.02, stop_event),
        kwargs={"complain": complaints.append, "say": said.append},
    )  # fmt: skip
    loop.start()
    try:
        wait_for(lambda: len(complaints) >= 3, what="three failed rounds")
        assert files["feedback"].exists()
        assert all(files["feedback"].name in c for c in complaints)
        assert loop.is_alive()  # the loop goes on
        blocker.unlink()
        wait_for(lambda: not files["feedback"].exists(), what="the file shipped once storage takes it")
    finally:
        stop_event.set()
        loop.join(timeout=30)
    assert not loop.is_alive()
    assert (store / "feedback" / "date=2026-01-02" / files["feedback"].name).is_file()
    assert said[0].startswith(f"ship-logs: 2 files sent to {store}")


# --- Against S3 (moto's server) ----------------------------------------------------------------


def post(url: str, body: Any) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30)


def traffic(served: Paths, url: str, rounds: int, pause: float = 0.0) -> set[str]:
    """Single and batch predictions, feedback and a rejected request, `rounds` times, to a server
    of `served`'s model, from its test split and schema; the request ids answered."""
    records, label = served_records(served), served_label(served)
    number, too_big = bounded_field(served_schema(served))
    answered = set()
    for i in range(rounds):
        one = post(f"{url}/predict", records[i % len(records)])
        batch = post(f"{url}/predict", records[: 2 + i % 7])
        for answer in (one, batch):
            assert answer.status_code == 200, answer.text
            answered.add(answer.json()["request_id"])
        assert post(f"{url}/feedback", {"request_id": one.json()["request_id"], "label": label}).status_code == 202
        assert post(f"{url}/predict", {**records[0], number: too_big}).status_code == 422
        time.sleep(pause)
    return answered


@pytest.mark.slow
def test_a_real_servers_logs_reach_s3_and_read_back_as_they_were(
    served: Paths, start_server: Any, moto: S3, bucket: str, tmp_path: Path
) -> None:
    server = start_server(served.root, log_dir=tmp_path / "log")
    answered = traffic(served, server.url, 20)
    status, output = server.stop()
    assert status == -signal.SIGTERM, output  # uvicorn ends "killed by SIGTERM" once it has shut down
    schema = served_schema(served)
    local = read_window(server.log_dir, schema)
    files = sorted(p.name for p in server.log_dir.iterdir())
    assert files
    assert all(name.endswith(".jsonl") for name in files), files  # SIGTERM closed every file
    url = f"s3://{bucket}/prod/logs"
    assert ship_logs(tmp_path, "--log-dir", str(server.log_dir), "--to", url).startswith(
        f"ship-logs: {len(files)} files sent to {url}"
    )
    assert list(server.log_dir.iterdir()) == []
    keys = moto.keys(bucket)
    assert sorted(keys) == sorted(f"prod/logs/{destination(name)}" for name in files)
    shipped = read_window(url, schema)
    assert set(shipped.predictions["request_id"]) == answered
    assert shipped.requests == local.requests == len(answered)
    pd.testing.assert_frame_equal(shipped.predictions, local.predictions)
    pd.testing.assert_frame_equal(shipped.feedback, local.feedback)
    pd.testing.assert_frame_equal(shipped.rejections, local.rejections)
    assert len(shipped.rejections) == 20
    assert [f.rpartition("/")[2] for f in shipped.files] == [f.rpartition("/")[2] for f in local.files]
    assert all(f.startswith(f"s3://{bucket}/prod/logs/") for f in shipped.files)


def rotating_repo(served: Paths, parent: Path, seconds: float) -> Path:
    """A copy of the served repository whose server closes its log files every `seconds`."""
    paths = copy_repo(served, parent)
    params = yaml.safe_load(paths.params.read_text())
    params["serve"]["prediction_log"]["rotate_seconds"] = seconds
    paths.params.write_text(yaml.safe_dump(params, sort_keys=False))
    return paths.root


@pytest.mark.slow
def test_the_sidecar_ships_closed_files_while_the_server_runs_and_the_rest_after_sigterm(
    served: Paths, start_server: Any, moto: S3, bucket: str, tmp_path: Path
) -> None:
    root = rotating_repo(served, tmp_path / "repo", 0.3)
    log_dir = tmp_path / "log"
    server = start_server(root, log_dir=log_dir)
    url = f"s3://{bucket}/logs"
    sidecar = shipper(root, ["--log-dir", str(log_dir), "--to", url, "--watch", "0.1"], moto.env())
    try:
        answered = traffic(served, server.url, 15, pause=0.1)
        wait_for(lambda: len(moto.names(bucket)) >= 3, what="files closed on rotation, shipped while serving")
        assert not [k for k in moto.names(bucket) if not k.endswith(".jsonl")]  # never an .open file
        status, output = server.stop()  # SIGTERM: the server closes its files...
        assert status == -signal.SIGTERM, output  # uvicorn ends "killed by SIGTERM" once it has shut down
        sidecar.send_signal(signal.SIGTERM)  # ...then the pod stops its native sidecar
        out, err = sidecar.communicate(timeout=60)
    finally:
        stop(sidecar)
    assert sidecar.returncode == 0, err
    assert "ship-logs: stopped;" in out
    assert list(log_dir.iterdir()) == []  # every file closed, shipped and removed
    window = read_window(url, served_schema(served))
    assert set(window.predictions["request_id"]) == answered
    assert window.requests == len(answered)
    assert len(window.feedback) == 15
    assert len(window.rejections) == 15


@pytest.mark.slow
def test_sigterm_ships_what_the_server_closed_on_its_way_out(
    served: Paths, start_server: Any, moto: S3, bucket: str, tmp_path: Path
) -> None:
    """The sidecar is between two rounds an hour apart when the pod stops: it ships at once, and exits 0."""
    log_dir = tmp_path / "log"
    server = start_server(served.root, log_dir=log_dir)
    url = f"s3://{bucket}/logs"
    sidecar = shipper(served.root, ["--log-dir", str(log_dir), "--to", url, "--watch", "3600"], moto.env())
    try:
        assert sidecar.stdout is not None
        assert sidecar.stdout.readline().startswith("ship-logs: shipping")  # its first round is under way
        answered = traffic(served, server.url, 5)
        assert moto.names(bucket) == []  # every file is still open
        status, _ = server.stop()
        assert status == -signal.SIGTERM
        closed = sorted(p.name for p in log_dir.iterdir())
        assert closed
        assert all(name.endswith(".jsonl") for name in closed)
        started = time.monotonic()
        sidecar.send_signal(signal.SIGTERM)
        _, err = sidecar.communicate(timeout=60)
    finally:
        stop(sidecar)
    assert sidecar.returncode == 0, err
    assert time.monotonic() - started < 30
    assert sorted(k.rpartition("/")[2] for k in moto.keys(bucket)) == closed
    assert set(read_window(url, served_schema(served)).predictions["request_id"]) == answered


@pytest.mark.slow
def test_a_shipper_killed_mid_run_and_started_again_loses_and_doubles_no_file(
    moto: S3, bucket: str, tmp_path: Path
) -> None:
    log_dir, originals = tmp_path / "log", tmp_path / "originals"
    lines = [feedback(i, DAY + i) | {"pad": "x" * 200} for i in range(400)]  # about 100 kB a file
    for n in range(150):
        write_log(log_dir, "feedback", DAY + n * 600, lines, tag=f"pod-{n % 3}-1")
    shutil.copytree(log_dir, originals)
    expected = {f"run/{destination(p.name)}": p.read_bytes() for p in originals.iterdir()}
    url = f"s3://{bucket}/run"
    first = shipper(tmp_path, ["--log-dir", str(log_dir), "--to", url, "--watch", "0.05"], moto.env())
    try:
        wait_for(lambda: len(moto.names(bucket)) >= 20, what="a first part shipped")
        first.send_signal(signal.SIGKILL)  # the pod dies: no SIGTERM, no clean-up
        first.wait(timeout=30)
    finally:
        stop(first)
    assert first.returncode == -signal.SIGKILL
    left = len(list(log_dir.iterdir()))
    assert 0 < left < 150, "the kill came mid-run"
    again = shipper(tmp_path, ["--log-dir", str(log_dir), "--to", url], moto.env())
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert out.startswith("ship-logs: ")
    assert list(log_dir.iterdir()) == []
    assert moto.keys(bucket) == expected  # every file, once, whole; nothing else (no temporary object)


@pytest.mark.slow
def test_s3_down_then_back_the_files_wait_and_go(
    moto: S3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage outage: each round fails and says so on stderr, the loop goes on, and the files go once it is back."""
    log_dir = tmp_path / "log"
    files = some_logs(log_dir)
    port = free_port()
    down = f"http://127.0.0.1:{port}"  # nothing listens there yet
    env = {**moto.env(), "AWS_ENDPOINT_URL": down}
    sidecar = shipper(tmp_path, ["--log-dir", str(log_dir), "--to", f"s3://{bucket}/x", "--watch", "0.1"], env)
    outage = None
    try:
        time.sleep(3)
        assert sidecar.poll() is None, sidecar.communicate()
        assert all(path.exists() for path in files.values())
        outage = start_moto(port)  # storage is back (an empty one: make the bucket)
        monkeypatch.setenv("AWS_ENDPOINT_URL", down)
        S3(down, outage).client().create_bucket(Bucket=bucket)
        wait_for(lambda: not any(path.exists() for path in files.values()), what="the files shipped once S3 is back")
        sidecar.send_signal(signal.SIGTERM)
        _, err = sidecar.communicate(timeout=60)
    finally:
        stop(sidecar)
        if outage is not None:
            contents = S3(down, outage).keys(bucket)
            stop(outage)
    assert sidecar.returncode == 0
    assert "ship-logs: " in err
    assert any(path.name in err for path in files.values())  # what failed, named
    assert "connect" in err.lower()  # and why
    assert sorted(contents) == sorted(f"x/{destination(path.name)}" for path in files.values())


def test_a_file_in_the_log_folder_is_shipped_to_memory_storage_through_fsspec(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    files = some_logs(log_dir)
    url = f"memory://gitml-{tmp_path.name}/logs"
    assert ship_logs(tmp_path, "--log-dir", str(log_dir), "--to", url).startswith(f"ship-logs: 3 files sent to {url}")
    storage = open_storage(url)
    assert storage.fs.type_name == "py::fsspec+memory"
    for path in files.values():
        with storage.fs.open_input_stream(storage.path(destination(path.name) or "")) as handle:
            assert handle.read().endswith(b"\n")
    window = read_window(url, toy_schema())
    assert len(window.predictions) == 3
    assert len(window.feedback) == 1  # three labels of one prediction: the latest
    assert window.rejections[["field", "reason"]].values.tolist() == [["age", "less_than_equal"]]


def test_shipping_a_subprocess_exits_non_zero_on_a_failure(tmp_path: Path) -> None:
    log_dir, store = tmp_path / "log", tmp_path / "store"
    some_logs(log_dir)
    store.mkdir()
    (store / "predictions").write_text("in the way")
    done = shipper(tmp_path, ["--log-dir", str(log_dir), "--to", str(store)])
    out, err = done.communicate(timeout=120)
    assert done.returncode == 1
    assert "1 of 3 files were not shipped" in err
    assert out == ""
