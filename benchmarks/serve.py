"""Requests/s and latency of `gitml serve` under load, against three baselines measured in the same run.

wrk, pinned to one core, loads each server, pinned to another core with one worker, over
loopback: POST /predict with one record and with 100 records (the first rows of the processed
test split), at 1, 8 and 32 connections, after a warm-up. The servers:

  gitml        `gitml serve`: validation, anonymisation, encoding, ONNX Runtime, prediction log, metrics
  constant     the same stack (FastAPI + uvicorn, gitml serve's options) answering a fixed JSON body
               from a FastAPI route: the floor a FastAPI endpoint starts from (the goal's baseline)
  starlette    the same, from a plain Starlette route in the FastAPI app, the kind of route gitml
               serve's POST endpoints answer from (FastAPI documents them): the floor gitml itself
               starts from, reported for comparison
  bentoml      BentoML 1.4 serving the same models/model.onnx with the same preprocessing
               (benchmarks/bento_service.py), with BentoML's defaults

and, without HTTP, in this process pinned to the servers' core, per-call timings of:

  onnxruntime  the model alone: `runtime.run` on a pre-encoded 1-row and 100-row matrix
  in-process   gitml's work per request: parse the body bytes, columns, anonymise, `predict`

Goals, at 8 connections: gitml / constant single-record req/s >= 0.5; gitml / bentoml
single-record req/s >= 5; gitml single-record p99 <= 5 ms; gitml 100-record requests >= 100,000
records/s. A row whose requests were not all answered 2xx, or that saw socket errors, is marked
FAIL: its figures do not count.

    .venv/bin/python benchmarks/serve.py [--duration 5] [--quick] [--json PATH]
                                         [--servers gitml,constant,bentoml,inprocess]

It is a measurement, not a test: it exits 0 whatever the figures, 1 when something kept it from
measuring (wrk or the model missing, a server that did not start, a FAIL row, differing scores).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import uvicorn

# At the top, not in constant_server: FastAPI resolves the handler's (string) annotations in this
# module's globals, and a `request` it cannot resolve becomes a required query parameter (422).
from fastapi import FastAPI, Request
from fastapi.responses import Response
from machine import busy_cpu_seconds  # benchmarks/machine.py, beside this script
from starlette.routing import Route

from gitml.bundle import runtime
from gitml.config import dataset_schema, load_params
from gitml.paths import Paths
from gitml.serve.model import ServedModel
from gitml.serve.requests import Anonymizer, Validator, columns, parse, record_type, request_columns

ROOT = Path(__file__).resolve().parent.parent
HTTP_SERVERS = ("gitml", "constant", "starlette", "bentoml")
CONSTANT_SERVERS = ("constant", "starlette")
SERVERS = (*HTTP_SERVERS, "inprocess")
SIZES = (1, 100)  # records per request
CONCURRENCY = (1, 8, 32)
GOAL_CONCURRENCY = 8
WARMUP_SECONDS = 1  # per body size, at GOAL_CONCURRENCY connections
READY_SECONDS = 120.0
# wrk's default of 2 s would count a slow answer as a socket error; a slow server should show as slow.
WRK_TIMEOUT = "10s"
SAME_SCORES = 1e-6
CONSTANT_ANSWER = (
    b'{"request_id":"00000000000000000000000000000000","model_version":"constant",'
    b'"score":0.5,"decision":false,"class":"<=50K"}'
)


@dataclass(frozen=True)
class Goal:
    key: str
    text: str
    value: float
    at_most: bool  # the figure must be <= value (else >= value)
    unit: str = ""


GOALS = (
    Goal("gitml_over_constant", "gitml / constant req/s, single record", 0.5, at_most=False),
    Goal("gitml_over_bentoml", "gitml / bentoml req/s, single record", 5.0, at_most=False),
    Goal("gitml_p99_ms", "gitml p99, single record", 5.0, at_most=True, unit=" ms"),
    Goal("gitml_records_per_s", "gitml records/s, 100-record requests", 100_000, at_most=False),
)


@dataclass(frozen=True)
class WrkResult:
    """What wrk printed: completed requests, their rate and latency, and what went wrong."""

    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def failure(self) -> str | None:
        """Why the run does not count, or None."""
        problems = []
        if self.requests == 0:
            problems.append("no request answered")
        if self.non_2xx:
            problems.append(f"{self.non_2xx:,} non-2xx responses of {self.requests:,}")
        if any(self.socket_errors.values()):
            problems.append("socket errors: " + ", ".join(f"{k} {v}" for k, v in self.socket_errors.items()))
        return "; ".join(problems) or None


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def latency_ms(text: str) -> float:
    """wrk's latency notation (`241.00us`, `1.23ms`, `2.00s`) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """The figures of `wrk --latency` output; ValueError if it has no Requests/sec line."""
    rate = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.MULTILINE)
    if rate is None or total is None:
        raise ValueError("wrk printed no Requests/sec line:\n" + text)
    percentiles = {
        m.group(1): latency_ms(m.group(2))
        for m in re.finditer(r"^\s*(50|99)(?:\.0+)?%\s+(\S+)\s*$", text, re.MULTILINE)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, sockets.groups()), strict=True)) if sockets else {}
    )
    return WrkResult(
        requests=int(total.group(1)),
        seconds=latency_ms(total.group(2) + total.group(3)) / 1e3,
        requests_per_s=float(rate.group(1)),
        p50_ms=percentiles.get("50"),
        p99_ms=percentiles.get("99"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=errors,
    )


def lua_string(data: bytes) -> str:
    """A Lua string literal of `data`: printable ASCII as is, every other byte (and `"`, `\\`) as `\\ddd`."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in data) + '"'


def wrk_script(body: bytes) -> str:
    """A wrk Lua script sending `body` as a JSON POST."""
    return f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = {lua_string(body)}\n'


@dataclass
class Cell:
    """One row of the table: a server, a body size and a concurrency (None: in-process, no HTTP)."""

    server: str
    records: int
    concurrency: int | None
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int = 0
    failure: str | None = None

    @property
    def records_per_s(self) -> float:
        return self.requests_per_s * self.records


def find_cell(cells: Sequence[Cell], server: str, records: int, concurrency: int | None) -> Cell | None:
    """The measured (not failed) cell, or None."""
    return next(
        (
            c
            for c in cells
            if (c.server, c.records, c.concurrency) == (server, records, concurrency) and c.failure is None
        ),
        None,
    )


def goal_figures(cells: Sequence[Cell], concurrency: int = GOAL_CONCURRENCY) -> dict[str, float | None]:
    """The figure of each goal; None where a cell it needs was not measured or failed."""
    gitml = find_cell(cells, "gitml", 1, concurrency)
    constant = find_cell(cells, "constant", 1, concurrency)
    bentoml = find_cell(cells, "bentoml", 1, concurrency)
    batch = find_cell(cells, "gitml", 100, concurrency)
    return {
        "gitml_over_constant": gitml.requests_per_s / constant.requests_per_s if gitml and constant else None,
        "gitml_over_bentoml": gitml.requests_per_s / bentoml.requests_per_s if gitml and bentoml else None,
        "gitml_p99_ms": gitml.p99_ms if gitml else None,
        "gitml_records_per_s": batch.records_per_s if batch else None,
    }


def goal_met(goal: Goal, figure: float | None) -> bool | None:
    if figure is None:
        return None
    return figure <= goal.value if goal.at_most else figure >= goal.value


def number(value: float) -> str:
    """A figure with as many digits as it deserves: 123,456 / 12.3 / 0.123."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value < 1 else f"{value:.2f}"


def goal_line(goal: Goal, figure: float | None) -> str:
    met = goal_met(goal, figure)
    shown = "not measured" if figure is None else number(figure) + goal.unit
    verdict = "" if met is None else (": met" if met else ": NOT met")
    sign = "<=" if goal.at_most else ">="
    return f"  {goal.text:<40} {shown:>14}  (goal {sign} {goal.value:,g}{goal.unit}{verdict})"


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of `values`."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def timed_calls(call: Callable[[], object], seconds: float) -> list[float]:
    """Seconds of each call of `call`, made back to back for about `seconds`."""
    times: list[float] = []
    end = time.perf_counter() + seconds
    while True:
        started = time.perf_counter()
        call()
        stopped = time.perf_counter()
        times.append(stopped - started)
        if stopped >= end:
            return times


def in_process_cell(server: str, records: int, times: Sequence[float]) -> Cell:
    return Cell(
        server=server,
        records=records,
        concurrency=None,
        requests_per_s=len(times) / sum(times),
        p50_ms=percentile(times, 50) * 1e3,
        p99_ms=percentile(times, 99) * 1e3,
        requests=len(times),
    )


def table(cells: Sequence[Cell], records: int) -> list[str]:
    """The rows of one body size: server, concurrency, req/s, records/s, p50, p99 (and FAIL)."""
    lines = [f"  {'server':<12} {'conc':>4} {'req/s':>10} {'records/s':>11} {'p50 ms':>8} {'p99 ms':>8}"]
    for cell in cells:
        if cell.records != records:
            continue
        conc = "-" if cell.concurrency is None else str(cell.concurrency)
        p50 = "-" if cell.p50_ms is None else f"{cell.p50_ms:.3f}"
        p99 = "-" if cell.p99_ms is None else f"{cell.p99_ms:.3f}"
        line = (
            f"  {cell.server:<12} {conc:>4} {cell.requests_per_s:>10,.0f} {cell.records_per_s:>11,.0f} "
            f"{p50:>8} {p99:>8}"
        )
        if cell.failure:
            line += f"  FAIL: {cell.failure}"
        lines.append(line)
    return lines


# --- what the measurement runs --------------------------------------------------------------------


def constant_server(port: int, route: str) -> None:
    """The HTTP floor: gitml serve's stack and uvicorn options, answering a constant.

    route "fastapi": a FastAPI route (@app.post); "starlette": a plain Starlette Route in the same
    FastAPI app, as gitml serve's POST endpoints are routed.
    """
    app = FastAPI()

    async def predict(request: Request) -> Response:
        await request.body()
        return Response(CONSTANT_ANSWER, media_type="application/json")

    if route == "starlette":
        app.router.routes.insert(0, Route("/predict", predict, methods=["POST"]))
    else:
        app.post("/predict")(predict)

    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="auto", http="auto", access_log=False, server_header=False,
        log_level="warning",
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request_records(root: Path, n: int) -> list[dict[str, Any]]:
    """The first `n` rows of the processed test split as request records (missing values as None)."""
    paths = Paths(root)
    schema = dataset_schema(load_params(paths.params), paths.params)
    names = [c.name for c in request_columns(schema)]
    frame = pd.read_parquet(paths.split_file("test"), columns=names).head(n).astype(object)
    records: list[dict[str, Any]] = frame.where(frame.notna(), None).to_dict("records")  # type: ignore[assignment]
    return [{k: v.item() if isinstance(v, np.generic) else v for k, v in r.items()} for r in records]


def bodies(server: str, records: list[dict[str, Any]]) -> dict[int, bytes]:
    """The request body per body size: gitml's record or array; BentoML's {"records": [...]}."""
    out = {}
    for size in SIZES:
        chosen = (records * size)[:size]
        value: Any = chosen[0] if size == 1 else chosen
        if server == "bentoml":
            value = {"records": chosen}
        out[size] = json.dumps(value, separators=(",", ":")).encode()
    return out


def post(port: int, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def answer_scores(answer: bytes) -> list[float]:
    data = json.loads(answer)
    return [p["score"] for p in data["predictions"]] if "predictions" in data else [data["score"]]


def exit_status(returncode: int | None) -> str:
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def pinned(command: list[str], core: int | None) -> list[str]:
    return command if core is None else ["taskset", "-c", str(core), *command]


@dataclass
class Process:
    """A server started in its own process group, and how it ended."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    returncode: int | None = None

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in text[-lines:])


@contextlib.contextmanager
def started(name: str, command: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[Process]:
    """The server's process until the block ends, however it ends: then SIGTERM to its group, SIGKILL if needed."""
    with log.open("wb") as out:
        popen = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    process = Process(name, popen, log)
    try:
        yield process
    finally:
        process.returncode = stop(popen)


def stop(popen: subprocess.Popen[bytes]) -> int:
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):  # children the leader left behind
        os.killpg(popen.pid, signal.SIGKILL)
    return popen.returncode


def wait_ready(process: Process, port: int, body: bytes) -> str | None:
    """None once the server answers `body` with 200; else why not."""
    deadline = time.monotonic() + READY_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            return f"exited with status {process.popen.returncode} before answering"
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, answer = post(port, body, timeout=5)
            if status == 200:
                return None
            last = f"{status} {answer[:300].decode(errors='replace')}"
            if 400 <= status < 500:  # the request is wrong, not the server slow to start
                return f"answered {last}"
        time.sleep(0.2)
    return f"not answering 200 after {READY_SECONDS:.0f} s (last: {last})"


def run_wrk(script: Path, port: int, connections: int, seconds: int, core: int | None) -> WrkResult:
    command = pinned(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", WRK_TIMEOUT, "-s", str(script),
         f"http://127.0.0.1:{port}/predict"],
        core,
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise ValueError(f"wrk exited with status {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


@dataclass
class Settings:
    root: Path
    seconds: int
    warmup: int
    concurrency: tuple[int, ...]
    wrk_core: int | None
    server_core: int | None
    scratch: Path


@dataclass
class ServerRun:
    """A server's cells, its check against gitml's scores, and (gitml) its prediction log."""

    cells: list[Cell] = field(default_factory=list)
    check: dict[str, Any] = field(default_factory=dict)
    answered: int = 0  # requests answered 2xx that this script counted (checks, warm-up, cells)
    in_flight: int = 0  # requests wrk may have left unanswered when it stopped: one per connection per run
    log_lines: int | None = None
    returncode: int | None = None
    failure: str | None = None


def server_command(name: str, port: int, settings: Settings) -> list[str]:
    if name == "gitml":
        log_dir = settings.scratch / "predictions"
        return [str(Path(sys.executable).parent / "gitml"), "serve", "--port", str(port), "--log-dir", str(log_dir)]
    if name in CONSTANT_SERVERS:
        route = "starlette" if name == "starlette" else "fastapi"
        return [sys.executable, str(Path(__file__).resolve()), "--constant-server", str(port), "--route", route]
    return [sys.executable, "-m", "bentoml", "serve", "bento_service:GitmlBaseline", "--working-dir",
            str(Path(__file__).resolve().parent), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


def check(
    name: str, port: int, sent: dict[int, bytes], reference: dict[int, npt.NDArray[np.float64]], result: ServerRun
) -> None:
    """Each body once: the status, and how far the scores are from gitml's (not for the constant server)."""
    for size, body in sent.items():
        status, answer = post(port, body)
        result.check[f"status_{size}"] = status
        if status == 200:
            result.answered += 1
        if status == 200 and name not in CONSTANT_SERVERS:
            scores = np.asarray(answer_scores(answer), dtype=np.float64)
            diff = float(np.max(np.abs(scores - reference[size]))) if len(scores) == size else math.inf
            result.check[f"max_abs_diff_{size}"] = diff


def measure_server(
    name: str, records: list[dict[str, Any]], reference: dict[int, npt.NDArray[np.float64]], settings: Settings
) -> ServerRun:
    """Start the server, check its answers, warm it up, run every cell, stop it."""
    result = ServerRun()
    port = free_port()
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "GITML_BENCH_ROOT": str(settings.root)}
    sent = bodies(name, records)
    scripts = {}
    for size, body in sent.items():
        scripts[size] = settings.scratch / f"{name}-{size}.lua"
        scripts[size].write_text(wrk_script(body), encoding="ascii")
    command = pinned(server_command(name, port, settings), settings.server_core)
    print(f"{name}: starting on port {port} ...", flush=True)
    with started(name, command, settings.root, env, settings.scratch / f"{name}.log") as process:
        why = wait_ready(process, port, sent[1])
        if why is not None:
            result.failure = f"did not start: {why}"
            print(f"{name}: {result.failure}; the end of its output:\n{process.tail()}", file=sys.stderr)
            return result
        result.answered += 1
        try:
            check(name, port, sent, reference, result)
            for size in SIZES:
                warm = run_wrk(scripts[size], port, GOAL_CONCURRENCY, settings.warmup, settings.wrk_core)
                result.answered += warm.requests - warm.non_2xx
                result.in_flight += GOAL_CONCURRENCY
        except (OSError, http.client.HTTPException, ValueError, subprocess.TimeoutExpired) as exc:
            result.failure = f"failed before timing: {exc}"
            print(f"{name}: {result.failure}; the end of its output:\n{process.tail()}", file=sys.stderr)
            return result
        for size in SIZES:
            for connections in settings.concurrency:
                if process.popen.poll() is not None:
                    result.failure = f"exited with status {process.popen.returncode} during the run"
                    break
                try:
                    got = run_wrk(scripts[size], port, connections, settings.seconds, settings.wrk_core)
                except (ValueError, subprocess.TimeoutExpired) as exc:
                    why = " ".join(str(exc).split())[:300]  # one line in the table
                    result.cells.append(Cell(name, size, connections, 0.0, None, None, failure=why))
                    continue
                result.answered += got.requests - got.non_2xx
                result.in_flight += connections
                result.cells.append(
                    Cell(name, size, connections, got.requests_per_s, got.p50_ms, got.p99_ms, got.requests, got.failure)
                )
    result.returncode = process.returncode
    if name == "gitml":
        files = sorted((settings.scratch / "predictions").glob("predictions-*.jsonl"))
        result.log_lines = sum(path.read_bytes().count(b"\n") for path in files)
    return result


class GitmlInProcess:
    """gitml serve's per-request work on a body, without HTTP: the server's own objects."""

    def __init__(self, root: Path) -> None:
        paths = Paths(root)
        params = load_params(paths.params)
        self.model = ServedModel(paths.models, os.environ)
        self.names = [c.name for c in request_columns(self.model.schema)]
        max_batch = int((params.get("serve") or {}).get("max_batch", 1000))
        self.validator = Validator(record_type(self.model.schema), max_batch, tuple(self.names))
        self.anonymize = Anonymizer(self.model.schema)

    def inputs(self, body: bytes) -> tuple[dict[str, list[Any]], int]:
        """Parse the bytes, columns, anonymise: what the model's encoder gets."""
        items, _ = parse(self.validator, body, "a record")
        inputs = columns(items, self.names)
        self.anonymize(inputs)
        return inputs, len(items)

    def predict(self, body: bytes) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        return self.model.predict(*self.inputs(body))


def reference_scores(gitml: GitmlInProcess, records: list[dict[str, Any]]) -> dict[int, npt.NDArray[np.float64]]:
    """gitml's scores of each body, computed in this process by the server's own code."""
    return {size: gitml.predict(body)[0].astype(np.float64) for size, body in bodies("gitml", records).items()}


def measure_in_process(
    gitml: GitmlInProcess, records: list[dict[str, Any]], seconds: float, core: int | None
) -> list[Cell]:
    """Per-call timings of the model alone and of gitml's per-request path, on the servers' core."""
    sent = bodies("gitml", records)
    affinity = os.sched_getaffinity(0)
    cells = []
    try:
        if core is not None:
            os.sched_setaffinity(0, {core})
        for size in SIZES:
            x = gitml.model.encoder(*gitml.inputs(sent[size]))
            for server, call in (
                ("onnxruntime", lambda x=x: runtime.run(gitml.model.session, x)),
                ("in-process", lambda body=sent[size]: gitml.predict(body)),
            ):
                timed_calls(call, min(1.0, seconds / 4))  # warm-up
                cells.append(in_process_cell(server, size, timed_calls(call, seconds)))
    finally:
        os.sched_setaffinity(0, affinity)
    return cells


def machine(wrk: str | None) -> dict[str, Any]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str | None] = {}
    for package in ("fastapi", "uvicorn", "onnxruntime", "bentoml"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    wrk_version = None
    if wrk:
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (done.stdout or done.stderr).split(" [")[0].removeprefix("wrk ").strip() or None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        **versions,
        "uvloop": importlib.util.find_spec("uvloop") is not None,
        "httptools": importlib.util.find_spec("httptools") is not None,
        "wrk": wrk_version,
    }


def machine_line(info: dict[str, Any]) -> str:
    yes = {True: "yes", False: "no"}
    return (
        f"machine: {info['cores']} cores ({info['cpu']}), python {info['python']}; fastapi {info['fastapi']}, "
        f"uvicorn {info['uvicorn']} (uvloop {yes[info['uvloop']]}, httptools {yes[info['httptools']]}), "
        f"onnxruntime {info['onnxruntime']}, bentoml {info['bentoml'] or 'not installed'}; wrk {info['wrk']}"
    )


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of the children it waited for: wrk and the servers, once stopped."""
    usages = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(u.ru_utime + u.ru_stime for u in usages)


def cores() -> tuple[int | None, int | None]:
    """The core for wrk and the core for the server: the first two this process may use."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2 or shutil.which("taskset") is None:
        return None, None
    return allowed[0], allowed[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per cell (default 5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 s per cell, 8 connections only")
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help=f"comma-separated, of {', '.join(SERVERS)} (default: all)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    parser.add_argument("--constant-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--route", choices=("fastapi", "starlette"), default="fastapi", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.constant_server is not None:
        constant_server(args.constant_server, args.route)
        return 0
    chosen = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SERVERS]
    if unknown or not chosen:
        parser.error(f"--servers: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(SERVERS)}")
    if args.duration < 1:
        parser.error("--duration must be at least 1 second")

    root: Path = args.root.resolve()
    paths = Paths(root)
    missing = [p for p in (paths.onnx, paths.preprocess, paths.threshold, paths.split_file("test")) if not p.is_file()]
    if missing:
        print(f"{missing[0]} not found: run `make run` first.", file=sys.stderr)
        return 1
    wrk = shutil.which("wrk")
    http_servers = [s for s in HTTP_SERVERS if s in chosen]
    if http_servers and wrk is None:
        print("wrk not found: install it (Debian/Ubuntu: `sudo apt-get install wrk`, macOS: `brew install wrk`).",
              file=sys.stderr)  # fmt: skip
        return 1
    if "bentoml" in http_servers and importlib.util.find_spec("bentoml") is None:
        print("bentoml is not installed: `pip install -e '.[bench]'`, or leave it out with --servers.", file=sys.stderr)
        return 1
    # SIGTERM ends the run as Ctrl-C does, through the `finally` that stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    seconds = 1 if args.quick else args.duration
    concurrency = (GOAL_CONCURRENCY,) if args.quick else CONCURRENCY
    wrk_core, server_core = cores()
    info = machine(wrk)
    print(machine_line(info))
    where = (
        f"wrk -t1 on core {wrk_core}, each server on core {server_core}"
        if wrk_core is not None
        else "NOT pinned (fewer than 2 cores or no taskset)"
    )
    print(
        f"load: {where}, one worker each, loopback; {seconds} s per cell at {', '.join(map(str, concurrency))} "
        f"connections after {WARMUP_SECONDS} s of warm-up per body size; in-process timings on core {server_core}",
        flush=True,
    )
    records = request_records(root, max(SIZES))
    gitml = GitmlInProcess(root)
    reference = reference_scores(gitml, records)
    cells: list[Cell] = []
    runs: dict[str, ServerRun] = {}
    problems: list[str] = []
    started_at, busy_before, own_before = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="gitml-bench-serve-") as tmp:
        settings = Settings(root, seconds, WARMUP_SECONDS, concurrency, wrk_core, server_core, Path(tmp))
        for name in http_servers:
            run = runs[name] = measure_server(name, records, reference, settings)
            cells += run.cells
            if run.failure:
                problems.append(f"{name} {run.failure}")
            statuses = [run.check.get(f"status_{size}") for size in SIZES]
            if run.failure is None and any(status != 200 for status in statuses):
                problems.append(f"{name} answered the check with {statuses}")
            diffs = [run.check[f"max_abs_diff_{size}"] for size in SIZES if f"max_abs_diff_{size}" in run.check]
            if diffs and max(diffs) > SAME_SCORES:
                problems.append(f"{name}'s scores differ from gitml's (max |diff| {max(diffs):.2e})")
    if "inprocess" in chosen:
        cells += measure_in_process(gitml, records, seconds, server_core)
    elapsed, busy_after = time.perf_counter() - started_at, busy_cpu_seconds()
    # The share of the machine's CPU that other processes (or the hypervisor) took meanwhile.
    others = None
    if busy_before is not None and busy_after is not None:
        own = own_cpu_seconds() - own_before
        others = max(0.0, (busy_after - busy_before - own) / (elapsed * (os.cpu_count() or 1)))

    checks = []
    for name, run in runs.items():
        answered = "/".join(str(run.check.get(f"status_{size}", "-")) for size in SIZES)
        diffs = [run.check[f"max_abs_diff_{size}"] for size in SIZES if f"max_abs_diff_{size}" in run.check]
        checks.append(f"{name} {answered}" + (f" (max |score diff| {max(diffs):.1e})" if diffs else ""))
    if checks:
        print("check, 1 and 100 records, scores against gitml's in-process: " + "; ".join(checks))
    for size in SIZES:
        print(f"{'single-record' if size == 1 else f'{size}-record'} requests:")
        print("\n".join(table(cells, size)))
    for run_name, run in runs.items():
        if run.failure:
            print(f"  {run_name:<12} FAIL: {run.failure}")
    figures = goal_figures(cells)
    print(f"goals, at {GOAL_CONCURRENCY} connections:")
    for goal in GOALS:
        print(goal_line(goal, figures[goal.key]))
    gitml_run = runs.get("gitml")
    if gitml_run is not None and gitml_run.log_lines is not None:
        low, high = gitml_run.answered, gitml_run.answered + gitml_run.in_flight
        agree = "as expected" if low <= gitml_run.log_lines <= high else "MISMATCH"
        # uvicorn re-raises the SIGTERM it caught once it has shut down, so a clean stop can read as -15.
        clean = gitml_run.returncode in (0, -signal.SIGTERM)
        hint = " (uvicorn re-raises it once shut down)" if gitml_run.returncode == -signal.SIGTERM else ""
        print(
            f"prediction log: {gitml_run.log_lines:,} lines for {low:,} requests answered 2xx "
            f"(up to {high:,} with those in flight when wrk stopped): {agree}; gitml's end on SIGTERM: "
            f"{exit_status(gitml_run.returncode)}{hint}"
        )
        if agree == "MISMATCH" or not clean:
            problems.append("gitml's prediction log or exit status is not as expected")
    failed_cells = [c for c in cells if c.failure]
    problems += [f"{c.server} {c.records}-record at {c.concurrency}: {c.failure}" for c in failed_cells]
    if others is not None and others > 0.05:
        print(f"note: other processes took {others:.0%} of the CPU meanwhile: these figures are noisier than usual")
    print(f"took {elapsed:.0f} s")
    if problems:
        print("FAILED: " + " | ".join(problems))

    if args.json:
        out = {
            "machine": info,
            "pinning": {"wrk_core": wrk_core, "server_core": server_core},
            "seconds_per_cell": seconds,
            "concurrency": list(concurrency),
            "cells": [{**asdict(c), "records_per_s": round(c.records_per_s, 1)} for c in cells],
            "goals": {
                g.key: {
                    "figure": figures[g.key],
                    "goal": g.value,
                    "at_most": g.at_most,
                    "met": goal_met(g, figures[g.key]),
                }
                for g in GOALS
            },
            "checks": {name: run.check for name, run in runs.items()},
            "prediction_log": None
            if gitml_run is None
            else {"lines": gitml_run.log_lines, "answered": gitml_run.answered, "in_flight": gitml_run.in_flight},
            "cpu_share_of_other_processes": None if others is None else round(others, 3),
            "problems": problems,
            "seconds": round(elapsed, 1),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; the servers it started are stopped", file=sys.stderr)
        sys.exit(130)
