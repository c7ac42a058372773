"""`gitml simulate`: replay held-back real rows through a running server, with or without drift.

The rows are the test split's by default (data/processed/test.parquet: rows the model never
trained on), drawn under a scenario (gitml.monitor.scenarios: none, a shifted field, a new
category, a label or score shift, biased feedback), posted to /predict in batches over keep-alive
connections, and a share of the answered predictions gets its label posted to /feedback, after a
delay if asked. The server logs it all as it logs real traffic, so `gitml drift` can be tried on
drift of a known kind and size. Requests carry the server's request fields only; a rejected
request (a 422 for a new category) is counted, not fatal. The standard library's http.client:
no HTTP dependency beyond what the pipeline has.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitml.errors import GitmlError
from gitml.paths import Paths

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

    from gitml.bundle import Bundle
    from gitml.data.schema import Column, DatasetSchema

Handler = Callable[[Paths, argparse.Namespace], str]

URL = "http://127.0.0.1:8000"
TIMEOUT = 30.0  # seconds one request may take
HEADERS = {"content-type": "application/json", "accept": "application/json"}
SCENARIOS = (
    "none (the default), shift:COLUMN=SD, new-category:COLUMN=SHARE, label:CHANGE, score:SD, bias:ATTRIBUTE=GROUP:SHARE"
)


# --- the rows ------------------------------------------------------------------------------------


def read_rows(path: Path, schema: DatasetSchema, default: bool) -> pd.DataFrame:
    """A CSV or Parquet table of records with the label; GitmlError naming what is missing."""
    import pandas as pd

    if not path.is_file():
        where = "the split stage writes it (`make run`, or `dvc pull`); or pass --from FILE" if default else ""
        raise GitmlError(f"{path}: not found; {where or 'pass a CSV or Parquet file of records with their label'}.")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            text = {c.name: str for c in schema.columns if c.output_dtype in ("categorical", "string")}
            missing = ["", "NA", *schema.raw.missing_values]
            frame = pd.read_csv(path, dtype=text, na_values=missing, keep_default_na=False)  # type: ignore[arg-type]
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise GitmlError(f"{path}: not readable as a CSV or Parquet table ({exc}).") from exc
    from gitml.serve.requests import request_columns

    needed = [c.name for c in request_columns(schema)] + [schema.label.name]
    absent = [name for name in needed if name not in frame.columns]
    if absent:
        raise GitmlError(
            f"{path}: lacks the columns {', '.join(absent)}; a row needs the request fields and the label "
            f"({', '.join(needed)}; dataset '{schema.name}'). "
            f"Its columns: {', '.join(map(str, frame.columns)) or 'none'}."
        )
    if frame.empty:
        raise GitmlError(f"{path}: has no rows to replay.")
    return frame


def _plain(value: Any) -> Any:
    """A value as JSON takes it: None for missing, Python numbers and strings."""
    if value is None or value != value:  # None, NaN, NaT
        return None
    if hasattr(value, "item"):  # a NumPy scalar
        value = value.item()
    return value


def field_values(frame: pd.DataFrame, columns: Sequence[Column]) -> dict[str, list[Any]]:
    """The request fields of the rows, column by column, as JSON values: missing is None, an integer an int."""
    import numpy as np
    from pandas.api.types import is_numeric_dtype

    out: dict[str, list[Any]] = {}
    for column in columns:
        series = frame[column.name]
        if column.output_dtype in ("integer", "float") and is_numeric_dtype(series):
            numbers: list[float] = series.to_numpy(dtype=np.float64, na_value=np.nan).tolist()
            whole = column.output_dtype == "integer"
            out[column.name] = [None if math.isnan(v) else int(v) if whole and v.is_integer() else v for v in numbers]
        else:
            values = [_plain(v) for v in series.to_numpy(dtype=object)]
            if column.output_dtype in ("categorical", "string"):
                values = [v if v is None else str(v) for v in values]
            out[column.name] = values
    return out


def records(values: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*values.values(), strict=True)]


def score_rows(bundle: Bundle, frame: pd.DataFrame, source: Path) -> npt.NDArray[np.float64]:
    """The bundle's scores of the rows, as the server computes them (its generalisation, then ONNX Runtime)."""
    import numpy as np

    from gitml.bundle import runtime
    from gitml.serve.requests import Anonymizer, request_columns

    columns = field_values(frame, request_columns(bundle.schema))
    try:
        Anonymizer(bundle.schema)(columns)
    except KeyError as exc:
        raise GitmlError(
            f"{source}: the value {exc} is not a category the dataset schema declares; the score scenario scores "
            "every row, so each must be one the server takes."
        ) from None
    scores = runtime.run(bundle.session, bundle.spec.transform(columns))
    return scores.astype(np.float64)


# --- HTTP ----------------------------------------------------------------------------------------


class Client:
    """One keep-alive connection to the server; opened again when the server closed an idle one."""

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return kind(self.host, self.port, timeout=self.timeout)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST a JSON body: the status and the answer. OSError when no answer comes."""
        while True:
            fresh = self.connection is None
            connection = self.connection = self.connection or self._connect()
            try:
                connection.request("POST", self.prefix + path, body=body, headers=HEADERS)
                response = connection.getresponse()
                data = response.read()
            except (ConnectionResetError, BrokenPipeError, http.client.BadStatusLine):
                self.close()
                if fresh:
                    raise
                continue  # the server closed the idle connection: once more on a new one
            if response.will_close:
                self.close()
            return response.status, data

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@dataclass
class Batch:
    records: list[dict[str, Any]]
    labels: list[str]  # the feedback label of each record
    feedback: list[int]  # the indices whose label is sent


@dataclass
class Tally:
    """What one sender saw."""

    requests: int = 0
    answered: int = 0  # rows
    rejected: int = 0  # rows in rejected requests
    statuses: Counter[int] = field(default_factory=Counter)  # rejected requests by status
    feedback: int = 0  # labels the server accepted
    feedback_refused: int = 0
    feedback_statuses: Counter[int] = field(default_factory=Counter)
    failure: str | None = None  # the first answer that was not a prediction or a 422

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.answered += other.answered
        self.rejected += other.rejected
        self.statuses.update(other.statuses)
        self.feedback += other.feedback
        self.feedback_refused += other.feedback_refused
        self.feedback_statuses.update(other.feedback_statuses)
        self.failure = self.failure or other.failure


def _brief(status: int, data: bytes) -> str:
    text = " ".join(data.decode("utf-8", "replace").split())
    return f"HTTP {status}: {text[:300] or '(empty body)'}"


def _no_answer(url: str, exc: Exception, sent: int) -> GitmlError:
    reason = str(exc) or type(exc).__name__
    if sent == 0:
        return GitmlError(
            f"no server at {url} ({reason}); start one with `make serve`, or pass its address with --url."
        )
    return GitmlError(f"{url} stopped answering after {sent} requests ({reason}); is the server still running?")


def send(url: str, batches: Sequence[Batch], delay: float, timeout: float = TIMEOUT) -> Tally:
    """Post the batches in order on one connection, and their feedback `delay` seconds after each answer."""
    client, tally = Client(url, timeout), Tally()
    pending: deque[tuple[float, bytes, int]] = deque()  # (due, body, labels): answered in order, due in order

    def post(path: str, body: bytes) -> tuple[int, bytes]:
        try:
            return client.post(path, body)
        except (OSError, http.client.HTTPException) as exc:
            raise _no_answer(url, exc, tally.requests) from exc

    def give_feedback(until: float) -> None:
        while pending and pending[0][0] <= until:
            _, body, count = pending.popleft()
            status, data = post("/feedback", body)
            if status == 202:
                tally.feedback += count
            else:
                tally.feedback_refused += count
                tally.feedback_statuses[status] += 1
                tally.failure = tally.failure or f"/feedback: {_brief(status, data)}"

    try:
        for batch in batches:
            give_feedback(time.monotonic())
            status, data = post("/predict", json.dumps(batch.records, allow_nan=False).encode())
            tally.requests += 1
            if status != 200:
                tally.rejected += len(batch.records)
                tally.statuses[status] += 1
                if status != 422:
                    tally.failure = tally.failure or f"/predict: {_brief(status, data)}"
                continue
            try:
                request_id = json.loads(data)["request_id"]
            except (ValueError, KeyError, TypeError):
                raise GitmlError(
                    f"{url}/predict answered 200 without a request id ({_brief(status, data)}); is it a gitml server?"
                ) from None
            tally.answered += len(batch.records)
            if batch.feedback:
                items = [{"request_id": request_id, "index": i, "label": batch.labels[i]} for i in batch.feedback]
                pending.append((time.monotonic() + delay, json.dumps(items).encode(), len(items)))
        while pending:
            time.sleep(max(0.0, pending[0][0] - time.monotonic()))
            give_feedback(time.monotonic())
    finally:
        client.close()
    return tally


def replay(url: str, batches: Sequence[Batch], delay: float, concurrency: int, timeout: float = TIMEOUT) -> Tally:
    """Send the batches over `concurrency` connections (every concurrency-th batch on each); the tally."""
    if concurrency == 1:
        return send(url, batches, delay, timeout)
    total = Tally()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        shares = [batches[k::concurrency] for k in range(concurrency)]
        for tally in pool.map(lambda share: send(url, share, delay, timeout), shares):
            total.add(tally)
    return total


# --- the command ---------------------------------------------------------------------------------


def _statuses(counts: Counter[int]) -> str:
    return ", ".join(f"HTTP {status} x{n:,}" for status, n in sorted(counts.items()))


def simulate(
    url: str,
    rows: pd.DataFrame,
    n: int,
    scenario_text: str,
    bundle: Bundle,
    *,
    batch: int = 20,
    feedback_share: float = 0.5,
    feedback_delay: float = 0.0,
    seed: int = 0,
    concurrency: int = 1,
    source: Path = Path("rows"),
) -> tuple[Tally, str]:
    """Draw n rows under the scenario and replay them; the tally and the scenario's text form."""
    import numpy as np

    from gitml.monitor import scenarios
    from gitml.serve.requests import request_columns

    schema = bundle.schema
    scenario = scenarios.parse(scenario_text, schema)
    scores = score_rows(bundle, rows, source) if scenario.kind in ("score", "bias") else None
    rng = np.random.default_rng(seed)
    sample = scenarios.draw(rows, n, scenario, schema, rng, scores)
    sent = records(field_values(sample, request_columns(schema)))
    labels = [str(v) for v in sample[scenarios.FEEDBACK].tolist()]
    chosen = np.zeros(n, dtype=bool)
    chosen[rng.choice(n, size=round(feedback_share * n), replace=False)] = True
    batches = [
        Batch(
            sent[start : start + batch],
            labels[start : start + batch],
            np.flatnonzero(chosen[start : start + batch]).tolist(),
        )
        for start in range(0, n, batch)
    ]
    tally = replay(url, batches, feedback_delay, concurrency)
    if tally.answered == 0 and tally.failure is not None:
        raise GitmlError(f"{url} answered no prediction; the first failure: {tally.failure}")
    return tally, str(scenario)


def _check(args: argparse.Namespace) -> str:
    """The URL without its trailing slash; GitmlError for an argument out of range."""
    url = str(args.url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise GitmlError(f"{args.url!r} is not an http(s) URL; pass the server's base URL, like {URL}.")
    for name, value in (("--rows", args.rows), ("--batch", args.batch), ("--concurrency", args.concurrency)):
        if value < 1:
            raise GitmlError(f"{name} must be at least 1, not {value}.")
    if not 0 <= args.feedback_share <= 1:
        raise GitmlError(f"--feedback-share is a share of the predictions, from 0 to 1, not {args.feedback_share:g}.")
    if not (math.isfinite(args.feedback_delay) and args.feedback_delay >= 0):
        raise GitmlError(f"--feedback-delay is seconds, 0 or more, not {args.feedback_delay:g}.")
    return url


def cmd_simulate(paths: Paths, args: argparse.Namespace) -> str:
    from gitml.bundle import load

    url = _check(args)
    started = time.monotonic()
    bundle = load(paths.models)
    source = args.source if args.source is not None else paths.split_file("test")
    rows = read_rows(source, bundle.schema, default=args.source is None)
    tally, scenario = simulate(
        url,
        rows,
        args.rows,
        args.scenario,
        bundle,
        batch=args.batch,
        feedback_share=args.feedback_share,
        feedback_delay=args.feedback_delay,
        seed=args.seed,
        concurrency=args.concurrency,
        source=source,
    )
    rejected = f" ({tally.statuses.total():,} requests: {_statuses(tally.statuses)})" if tally.rejected else ""
    refused = (
        f", {tally.feedback_refused:,} refused ({_statuses(tally.feedback_statuses)})" if tally.feedback_refused else ""
    )
    delay = f" after {args.feedback_delay:g} s" if args.feedback_delay else ""
    return (
        f"simulate: {args.rows:,} rows of {source.name}, scenario {scenario}, in {tally.requests:,} requests to {url}: "
        f"{tally.answered:,} answered, {tally.rejected:,} rejected{rejected}; "
        f"{tally.feedback:,} labels sent as feedback{delay}{refused}; {time.monotonic() - started:.1f} s"
    )


def _arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--url", default=URL, help=f"the server's base URL (default: {URL}, `make serve`)")
    command.add_argument("--rows", type=int, default=2000, help="rows to send (default: 2000; drawn with replacement)")
    command.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=None,
        help="a CSV or Parquet file of records with their label (default: data/processed/test.parquet, the test split)",
    )
    command.add_argument("--scenario", default="none", help=f"how production differs: {SCENARIOS}")
    command.add_argument("--batch", type=int, default=20, help="records per /predict request (default: 20)")
    command.add_argument(
        "--feedback-share",
        type=float,
        default=0.5,
        help="the share of predictions whose label is sent to /feedback (default: 0.5)",
    )
    command.add_argument(
        "--feedback-delay", type=float, default=0.0, help="seconds from a prediction to its label (default: 0)"
    )
    command.add_argument("--seed", type=int, default=0, help="the seed of the draw and of the feedback (default: 0)")
    command.add_argument("--concurrency", type=int, default=1, help="connections sending at once (default: 1)")


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "simulate": (
        cmd_simulate,
        "replay held-back rows through a running server, drifted by a scenario, with feedback labels",
        _arguments,
    ),
}
