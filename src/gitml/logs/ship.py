"""`gitml ship-logs`: copy the server's closed prediction log files to storage.

Every closed file (`<stream>-<start>-<host>-<pid>.jsonl`; never a `.jsonl.open` one, which the
server is still writing) of the log folder goes to `<storage>/<stream>/date=YYYY-MM-DD/<file>`,
the date of the file's start (UTC), oldest first. A copy is verified before the local file is
deleted (`--keep` keeps it): the file in storage must have the local file's size. A file already
in storage with that size is not sent again, so a shipper killed at any point and started again
loses no file and sends none twice:
  an object store (S3, GCS)  the file is uploaded in place: an object appears whole, when its
                             upload completes, or not at all
  any other storage          the file is written as `<file>.part`, then moved to its name
Names carry the start time to the microsecond, the host and the process, so two files never
share one, and a closed file never changes: same name and same size is the same file.

`--watch SECONDS` is the sidecar: a round every SECONDS. A storage error (the network, the
credentials, a full bucket) is printed to stderr and the file is tried again the next round;
it never stops the loop. SIGTERM (the pod stopping, after the server: the sidecar is a native
one) lets the current file finish, ships every file closed by then (the server closes its files
when it stops), and exits 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from gitml.errors import GitmlError
from gitml.logs.storage import Storage, open_storage
from gitml.paths import Paths
from gitml.serve.config import LogConfig, ServeConfig
from gitml.serve.predlog import STREAMS

Handler = Callable[[Paths, argparse.Namespace], str]

CLOSED_FILE = re.compile(r"^(?P<stream>[a-z]+)-(?P<stamp>(?P<date>\d{8})T\d{12}Z)-(?P<tag>[A-Za-z0-9._-]+)\.jsonl$")
STORAGE_ENV = "GITML_LOG_STORAGE"  # the storage URL in the pod; over serve.prediction_log.storage
PART = ".part"  # a copy under way, in storage that is not an object store
CHUNK = 8 * 2**20
GIVE_UP = 3  # failures in a row that end a round
FINAL_TRIES = 3  # rounds after SIGTERM while a file still fails
FINAL_PAUSE = 1.0  # seconds between them


def destination(name: str) -> str | None:
    """`<stream>/date=YYYY-MM-DD/<name>` for a closed log file's name; None for any other name."""
    match = CLOSED_FILE.match(name)
    if match is None or match["stream"] not in STREAMS:
        return None
    day = match["date"]
    return f"{match['stream']}/date={day[:4]}-{day[4:6]}-{day[6:]}/{name}"


def closed_files(log_dir: Path) -> list[Path]:
    """The log folder's closed files of the three streams, oldest first."""
    files = [p for p in log_dir.iterdir() if destination(p.name) is not None]
    return sorted(files, key=lambda p: (p.name.split("-")[1], p.name))


@dataclass
class Round:
    """What one pass over the log folder did."""

    sent: list[str] = field(default_factory=list)  # files copied to storage (their paths there)
    present: list[str] = field(default_factory=list)  # already in storage with the same size: not sent again
    failed: list[str] = field(default_factory=list)  # "<file>: <error>", tried again the next round
    deleted: int = 0  # local files removed after a verified copy
    waiting: int = 0  # files not tried: the round ended after GIVE_UP failures in a row

    def line(self, url: str) -> str:
        text = f"ship-logs: {len(self.sent)} files sent to {url}"
        if self.present:
            text += f", {len(self.present)} already there"
        if self.deleted:
            text += f", {self.deleted} local files removed"
        if self.failed:
            text += f"; {len(self.failed)} failed (tried again next round)"
        if self.waiting:
            text += f"; {self.waiting} not tried after {GIVE_UP} failures in a row"
        return text


def _size(storage: Storage, path: str) -> int | None:
    """The size of a file in storage; None when there is none."""
    import pyarrow.fs as pafs

    info = storage.fs.get_file_info(path)
    return info.size if info.type == pafs.FileType.File else None


def _copy(source: Path, storage: Storage, target: str) -> None:
    with source.open("rb") as local, storage.fs.open_output_stream(target) as remote:
        shutil.copyfileobj(local, remote, CHUNK)


def ship_file(path: Path, storage: Storage, *, keep: bool = False) -> tuple[str, bool]:
    """Copy one closed file to its place in storage unless it is there already; delete it unless `keep`.

    Returns its path in storage and whether it was sent (False: it was there, with the same size).
    Raises whatever the storage raises; the local file stays until its copy is verified.
    """
    relative = destination(path.name)
    if relative is None:
        raise GitmlError(f"{path}: not a closed prediction log file (<stream>-<start>-<host>-<pid>.jsonl).")
    target = storage.path(relative)
    size = path.stat().st_size
    sent = _size(storage, target) != size
    if sent:
        if storage.atomic_writes:
            _copy(path, storage, target)
        else:
            storage.fs.create_dir(target.rpartition("/")[0], recursive=True)
            _copy(path, storage, target + PART)
            storage.fs.move(target + PART, target)
        landed = _size(storage, target)
        if landed != size:
            raise OSError(f"copied {size} bytes, but storage holds {landed} at {target}")
    if not keep:
        path.unlink()
    return target, sent


def ship_once(log_dir: Path, storage: Storage, *, keep: bool = False) -> Round:
    """One pass: ship every closed file of the log folder (oldest first); a file that fails is noted, not raised.

    After GIVE_UP failures in a row the pass ends: storage is down or refuses us, and each try
    costs the client's retries; the files left wait for the next pass.
    """
    done = Round()
    files = closed_files(log_dir)
    in_a_row = 0
    for number, path in enumerate(files):
        try:
            target, sent = ship_file(path, storage, keep=keep)
        except Exception as exc:  # any storage backend's error (network, credentials, quota): retried next round
            if isinstance(exc, FileNotFoundError) and not path.exists():
                continue  # shipped and removed by another shipper meanwhile
            done.failed.append(f"{path.name}: {type(exc).__name__}: {exc}")
            in_a_row += 1
            if in_a_row >= GIVE_UP and number + 1 < len(files):
                done.waiting = len(files) - number - 1
                break
        else:
            in_a_row = 0
            (done.sent if sent else done.present).append(target)
            done.deleted += not keep
    return done


def watch(
    log_dir: Path,
    storage: Storage,
    seconds: float,
    stop: threading.Event,
    *,
    keep: bool = False,
    say: Callable[[str], None] = print,
    complain: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True),
) -> int:
    """Ship a round every `seconds` until `stop` is set; then ship what is closed and return the files sent.

    No error leaves the loop: each failed file is reported through `complain` and tried again.
    """
    total = 0

    def one_round() -> Round:
        nonlocal total
        try:
            done = ship_once(log_dir, storage, keep=keep)
        except OSError as exc:  # the log folder itself cannot be listed (a volume not mounted yet)
            done = Round(failed=[f"{log_dir}: {type(exc).__name__}: {exc}"])
        total += len(done.sent)
        if done.sent or done.present:
            say(done.line(storage.url))
        for failure in done.failed:
            complain(f"ship-logs: {failure}")
        if done.waiting:
            complain(f"ship-logs: {done.waiting} more files wait for the next round after {GIVE_UP} failures in a row")
        return done

    while not stop.is_set():
        one_round()
        stop.wait(seconds)
    for attempt in range(FINAL_TRIES):  # stopping: what the server closed on its way out
        if not one_round().failed:
            break
        if attempt + 1 < FINAL_TRIES:
            time.sleep(FINAL_PAUSE)
    return total


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop` (in the main thread; elsewhere signals stay as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _serve_log(paths: Paths) -> LogConfig:
    """serve.prediction_log from params.yaml."""
    from gitml.config import load_params, section

    params = section(load_params(paths.params), "serve", paths.params)
    return ServeConfig.from_config(params, paths.params.name, paths.root).log


def cmd_ship_logs(paths: Paths, args: argparse.Namespace) -> str:
    log_dir: Path | None = args.log_dir
    url: str | None = args.to or os.environ.get(STORAGE_ENV) or None
    if log_dir is None or url is None:
        config = _serve_log(paths)
        log_dir = config.directory if log_dir is None else log_dir
        url = config.storage if url is None else url
    assert log_dir is not None
    assert url is not None
    if not log_dir.is_dir():
        raise GitmlError(f"{log_dir}: no such log folder; pass the server's --log-dir (serve.prediction_log.dir).")
    storage = open_storage(url, paths.root)
    if args.watch is not None:
        if args.watch <= 0:
            raise GitmlError(f"--watch {args.watch}: give the seconds between two rounds, above 0.")
        stop = threading.Event()
        print(f"ship-logs: shipping {log_dir} to {url} every {args.watch:g} s", flush=True)
        with _stop_on_signals(stop):
            sent = watch(log_dir, storage, args.watch, stop, keep=args.keep, say=lambda t: print(t, flush=True))
        return f"ship-logs: stopped; {sent} files sent to {url}"
    done = ship_once(log_dir, storage, keep=args.keep)
    if done.failed:
        left = len(done.failed) + done.waiting
        raise GitmlError(
            f"{left} of {left + len(done.sent) + len(done.present)} files were not shipped to {url}, and stay in "
            f"{log_dir}:\n  "
            + "\n  ".join(done.failed)
            + (f"\n  ({done.waiting} not tried after {GIVE_UP} failures in a row)" if done.waiting else "")
        )
    return done.line(url)


def _arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--log-dir", type=Path, help="the server's prediction log folder (default: serve.prediction_log.dir)"
    )
    command.add_argument(
        "--to",
        help=f"storage: a folder or a URL such as s3://bucket/prefix (default: ${STORAGE_ENV}, "
        "else serve.prediction_log.storage)",
    )
    command.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="ship every SECONDS until SIGTERM, then ship what is closed and exit (the pod's sidecar)",
    )
    command.add_argument("--keep", action="store_true", help="keep the local files after a verified copy")


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "ship-logs": (
        cmd_ship_logs,
        "copy the server's closed prediction log files to storage (a folder, s3://, gs://, ...)",
        _arguments,
    ),
}
