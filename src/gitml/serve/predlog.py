"""The prediction log: every answered prediction, appended to rotating JSONL files off the request path.

A request handler serialises its line and queues it (`append`: a deque append); one writer
thread appends the queued lines to the current file of their stream every `flush_seconds`, so
no request waits on the disk. (Serialising on the writer thread instead would make it compete
for the GIL with the event loop, which hands the GIL over whenever ONNX Runtime runs; tail
latency tripled when it did.) Files rotate by size and age and are named so that replicas and
restarts never share one: `predictions-20261125T231500123456Z-<host>-<pid>.jsonl`. `close` (the
server's shutdown, which SIGTERM starts) writes everything still queued and fsyncs, so a
prediction that was answered is a prediction that was logged.

A file is written as `<name>.jsonl.open` and renamed to `<name>.jsonl` once it is closed (rotated,
idle past `rotate_seconds`, or at shutdown), after its fsync: a log shipper (gitml.logs.ship) copies
`*.jsonl` only, so it never copies a file that is still growing. A server that was killed leaves
its `.open` files behind; the next server started on the directory with the same host name closes
them (their writer is gone), so they are shipped too.

One line per request:
  predictions  {"time", "request_id", "model_version", "inputs": {column: [...]}, "scores": [...], "decisions": [...]}
               inputs are the request's records column by column, as the model saw them (after the
               dataset's anonymisation); columnar because a 100-record request is written twice as fast
  feedback     {"time", "request_id", "index", "label"}
  rejections   {"time", "endpoint", "status", "errors": [{"field", "reason"}, ...], "records"?}
               a request the server refused (400, 404, 413, 422): each distinct (field, reason) once.
               field is a field of the request schema or a kind (unknown_field, label_field, invalid_json,
               batch_size, body_size, body); reason is pydantic's error type (literal_error,
               less_than_equal, missing, extra_forbidden, ...) or the kind. Never a value: a rejected
               value, and the name of an unknown field, are the sender's input, so they stay out of
               the log. records: how many records the body held, where known without parsing it again.

`predictions` and `labelled` read a directory back, one row per prediction, joined with its
feedback by request id and index; gitml.logs.read reads a time window of the three streams,
column-wise, from a directory or from the storage the shipper copies them to.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gitml.errors import GitmlError
from gitml.serve.config import LogConfig

PREDICTIONS, FEEDBACK, REJECTIONS = "predictions", "feedback", "rejections"
STREAMS = (PREDICTIONS, FEEDBACK, REJECTIONS)
CLOSED, OPEN = ".jsonl", ".jsonl.open"  # a file's suffix once it is closed, and while it is written


class Clock:
    """ISO 8601 UTC timestamps with microseconds, the date part formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        # Rounded half to even, as datetime.fromtimestamp does; .9999996 is the next second.
        fraction, whole = math.modf(now)
        micro = round(fraction * 1e6)
        second = int(whole) + micro // 1_000_000
        micro %= 1_000_000
        if second != self._second:
            self._second, self._prefix = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{micro:06d}Z"


# The .open files this process writes now (two logs of one process may share a directory).
_WRITING: set[Path] = set()


class _RotatingFile:
    """The open file of one stream; a new one past `rotate_bytes` or `rotate_seconds`.

    Written as `<name>.jsonl.open`; `close` fsyncs it and renames it `<name>.jsonl`.
    """

    def __init__(self, directory: Path, stream: str, config: LogConfig) -> None:
        self.directory = directory
        self.stream = stream
        self.config = config
        self.file: IO[bytes] | None = None
        self.path = directory
        self.opened = 0.0
        self.size = 0
        self.tag = f"{_safe(socket.gethostname())}-{os.getpid()}"

    def write(self, data: bytes, now: float) -> None:
        if self.file is not None and os.fstat(self.file.fileno()).st_nlink == 0:
            self.abandon()  # the file was deleted under us (its directory removed): start another
        if self.file is not None and (self.size >= self.config.rotate_bytes or self.expired(now)):
            self.close()
        if self.file is None:
            stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S%fZ")
            self.path = self.directory / f"{self.stream}-{stamp}-{self.tag}{OPEN}"
            self.file = self.path.open("ab")
            _WRITING.add(self.path)
            self.opened, self.size = now, 0
        self.file.write(data)
        self.file.flush()
        self.size += len(data)

    def expired(self, now: float) -> bool:
        return self.file is not None and now - self.opened >= self.config.rotate_seconds

    def abandon(self) -> None:
        """Drop a file a write failed on; the next write starts a new one.

        The file is cut back to the lines written before the failed write (those are kept and
        written again to the next file, so none is lost or logged twice) and closed visibly, so that
        the lines it holds are shipped; one that holds nothing is removed.
        """
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
            with contextlib.suppress(OSError):  # the file or its directory may be gone
                if self.size:
                    os.truncate(self.path, self.size)
                    _publish(self.path)
                else:
                    self.path.unlink()
            _WRITING.discard(self.path)

    def close(self) -> None:
        """Write out, fsync and close the file, then rename it to its closed name."""
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self.file = None
            _WRITING.discard(self.path)
            with contextlib.suppress(FileNotFoundError):  # deleted under us: nothing left to close visibly
                _publish(self.path)


def _publish(path: Path) -> None:
    """Rename a written `.jsonl.open` file to its closed name, durably (the directory is fsynced)."""
    path.rename(closed_name(path))
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened and fsynced
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def closed_name(path: Path) -> Path:
    """`x.jsonl` for `x.jsonl.open`; a closed file's own path."""
    return path.with_name(path.name.removesuffix(".open"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def close_abandoned(directory: Path) -> list[Path]:
    """Close visibly the `.open` files that a server on this host left when it was killed; the closed paths.

    A file is abandoned when its name carries this host and a process that is gone, or this process
    but no log of this process writes it (a restarted container runs as the same PID, often 1).
    Files of other hosts (replicas sharing a volume) are left to their own servers. A last line cut
    short stays; every reader skips it.
    """
    host, pid = _safe(socket.gethostname()), os.getpid()
    closed = []
    for path in sorted(directory.glob(f"*{OPEN}")):
        stem = path.name.removesuffix(OPEN)
        writer_host, _, writer_pid = stem.partition("-")[2].partition("-")[2].rpartition("-")
        if writer_host != host or not writer_pid.isdigit() or path in _WRITING:
            continue
        if int(writer_pid) != pid and _alive(int(writer_pid)):
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to rename: best effort
            _publish(path)
            closed.append(closed_name(path))
    return closed


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "host"


class PredictionLog:
    """Queued, batched, rotating JSONL appends by one background thread."""

    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self._queue: deque[tuple[str, bytes]] = deque()
        self._unwritten: dict[str, list[bytes]] = {stream: [] for stream in STREAMS}
        self._files = {stream: _RotatingFile(config.directory, stream, config) for stream in STREAMS}
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="gitml-prediction-log", daemon=True)
        self.lines_written = 0
        self.write_errors = 0
        self.last_error: str | None = None

    def prepare(self) -> None:
        """Create the directory and check that it takes files: a clear error before the server starts."""
        directory = self.config.directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".write-test-{os.getpid()}"
            probe.write_text("", encoding="utf-8")
            probe.unlink()
        except OSError as exc:
            raise GitmlError(
                f"the prediction log directory {directory} is not writable ({exc.strerror}). Point "
                "serve.prediction_log.dir (or --log-dir) at a writable directory; in Kubernetes, mount a volume there."
            ) from exc

    def start(self) -> None:
        """Close visibly the files a killed server of this host left open, and start the writer thread."""
        self.prepare()
        close_abandoned(self.config.directory)
        self._thread.start()

    def append(self, stream: str, line: bytes) -> None:
        """Queue one line of JSON, UTF-8, without its newline."""
        self._queue.append((stream, line))

    @property
    def pending(self) -> int:
        return len(self._queue) + sum(len(lines) for lines in self._unwritten.values())

    @property
    def healthy(self) -> bool:
        """Writing, keeping up, and the last write worked."""
        return (
            self._thread.is_alive() and not self._stop and self.last_error is None
            and self.pending < self.config.max_pending
        )  # fmt: skip

    def close(self) -> None:
        """Stop the writer, write everything still queued, fsync and close the files."""
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self._drain(time.time())
        for file in self._files.values():
            file.close()
        if self.pending:
            print(
                f"gitml serve: {self.pending} prediction log lines could not be written to {self.config.directory}: "
                f"{self.last_error}",
                file=sys.stderr,
            )

    def _run(self) -> None:
        while True:
            self._wake.wait(self.config.flush_seconds)
            if self._stop:
                return  # close() drains on its own thread after joining this one
            self._drain(time.time())

    def _drain(self, now: float) -> None:
        while self._queue:
            stream, line = self._queue.popleft()
            self._unwritten[stream].append(line)
        for stream, lines in self._unwritten.items():
            file = self._files[stream]
            if not lines:
                if file.expired(now):
                    try:
                        file.close()  # an idle stream's file is closed on time, so it can be shipped
                    except OSError as exc:
                        self.write_errors += 1
                        self.last_error = f"{type(exc).__name__}: {exc}"
                        file.abandon()
                continue
            try:
                file.write(b"\n".join(lines) + b"\n", now)
            except OSError as exc:  # a full or vanished disk: keep the lines and try again next round
                self.write_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                file.abandon()
                continue
            self.lines_written += len(lines)
            lines.clear()
            self.last_error = None


def log_files(directory: Path, stream: str) -> list[Path]:
    """The stream's files, closed (`.jsonl`) and still written (`.jsonl.open`), in the order they were
    started (a closed file before an open one started at the same time)."""
    files = [*directory.glob(f"{stream}-*{CLOSED}"), *directory.glob(f"{stream}-*{OPEN}")]
    return sorted(files, key=lambda p: (p.name.split("-")[1], p.name.endswith(OPEN)))


def _open(path: Path) -> IO[bytes] | None:
    """The file for reading; an .open file closed since it was listed is read under its closed name;
    None for a file gone since (a shipper moved it to storage)."""
    for candidate in (path, closed_name(path)) if path.name.endswith(OPEN) else (path,):
        with contextlib.suppress(FileNotFoundError):
            return candidate.open("rb")
    return None


def read_lines(directory: Path, stream: str) -> Iterator[dict[str, Any]]:
    """Every line of a stream; a last line cut short by a killed process is skipped."""
    for path in log_files(directory, stream):
        handle = _open(path)
        if handle is None:
            continue
        with handle:  # bytes: a killed writer may have cut a character in two
            for number, text in enumerate(handle, 1):
                if not text.endswith(b"\n"):
                    break  # the writer was killed mid-line; every whole line before it counts
                try:
                    yield json.loads(text)
                except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                    raise GitmlError(f"{path}:{number}: not a JSON line ({exc}); the log file is damaged.") from exc


def predictions(directory: Path) -> Iterator[dict[str, Any]]:
    """One row per logged prediction: time, request_id, index, model_version, score, decision, inputs."""
    for line in read_lines(directory, PREDICTIONS):
        inputs = line["inputs"]
        for index, (score, decision) in enumerate(zip(line["scores"], line["decisions"], strict=True)):
            yield {  # the inputs first: a column named like a field of the log must not replace it
                **{name: values[index] for name, values in inputs.items()},
                "time": line["time"],
                "request_id": line["request_id"],
                "index": index,
                "model_version": line["model_version"],
                "score": score,
                "decision": decision,
            }


def labelled(directory: Path) -> list[dict[str, Any]]:
    """The predictions that got feedback, each with its `label` (the latest feedback wins)."""
    labels: dict[tuple[str, int], str] = {}
    for line in read_lines(directory, FEEDBACK):
        labels[(line["request_id"], line["index"])] = line["label"]
    return [
        {**row, "label": labels[(row["request_id"], row["index"])]}
        for row in predictions(directory)
        if (row["request_id"], row["index"]) in labels
    ]
