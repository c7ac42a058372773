"""A time window of the prediction log, column-wise: what the drift check and retraining read.

`read_window(source, schema, since, until)` reads the three streams (gitml.serve.predlog) from
a server's log folder (flat: `predictions-*.jsonl`, and the `.jsonl.open` files it is writing)
or from storage that `gitml ship-logs` fills (`<stream>/date=YYYY-MM-DD/<file>`; any URL
gitml.logs.storage opens), and returns one DataFrame per stream:

  predictions  one row per prediction: every request field in schema order (numbers as float64,
               NaN where missing; categories and strings as str, None where missing), then "time"
               (ISO 8601 UTC, str), "request_id", "index" (the record's place in its request),
               "model_version", "score" (float64), "decision" (bool). A request field named like
               one of these six is left out: the log's own value wins.
  feedback     "request_id", "index", "label", "time": the latest label given in the window for
               each prediction (request_id, index)
  rejections   one row per rejected request and distinct error: "time", "endpoint", "status",
               "field", "reason", "request" (the request's number within the window, from 0)

Every stream is filtered on its lines' time, since <= time < until (naive datetimes are UTC).
Files are parsed by pyarrow's JSON reader against a schema built from the dataset schema, and the
columnar `inputs`, `scores` and `decisions` of a request are exploded into rows with Arrow
compute kernels (list_flatten, list_parent_indices), never a Python loop per row: a million
predictions in batches of 100 read in about a second (docs/serving.md).

Files that cannot hold a line of the window are not read: one started more than LATE after
`until`, or one last modified more than LATE before `since` (its last line is older still; a
file in storage was last modified when it was shipped, later than its last line). LATE covers
a line's time running ahead of its file's start (a line waits up to a flush interval, longer
while the disk fails) and clocks that disagree. A last line cut short (a killed writer) is
dropped; a damaged line anywhere else is a GitmlError that names the file.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.json as pj

from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError
from gitml.logs.storage import Storage, open_storage
from gitml.serve.predlog import FEEDBACK, PREDICTIONS, REJECTIONS, STREAMS
from gitml.serve.requests import request_columns

LATE = timedelta(hours=1)
FILE_NAME = re.compile(
    r"^(?P<stream>[a-z]+)-(?P<stamp>\d{8}T\d{12}Z)-(?P<tag>[A-Za-z0-9._-]+)\.jsonl(?P<open>\.open)?$"
)
ROW_FIELDS = ("time", "request_id", "index", "model_version", "score", "decision")
BLOCK_BYTES = 16 * 2**20  # pyarrow's JSON reader parses blocks of this size in parallel; a line must fit one
READERS = 8  # files fetched and parsed at once (storage latency, not the CPU, sets this)
STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"  # the log's time format (gitml.serve.predlog.Clock): it sorts as it reads
REQUIRED = {  # the fields every line of a stream has
    PREDICTIONS: ("time", "request_id", "model_version", "inputs", "scores", "decisions"),
    FEEDBACK: ("time", "request_id", "index", "label"),
    REJECTIONS: ("time", "endpoint", "status", "errors"),
}


@dataclass
class LogWindow:
    """The three streams of the prediction log in a time window, and what was read."""

    predictions: pd.DataFrame  # one row per prediction: the request fields (schema order), then ROW_FIELDS
    feedback: pd.DataFrame  # "request_id", "index", "label", "time": the latest label per (request_id, index)
    # one row per (rejected request, error): "time", "endpoint", "status", "field", "reason", "request"
    rejections: pd.DataFrame
    requests: int  # /predict requests answered in the window (distinct request_id)
    files: list[str]  # the files read


@dataclass(frozen=True)
class _File:
    path: str
    stream: str
    start: datetime
    open: bool
    modified: datetime | None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _list(storage: Storage) -> list[_File]:
    """The log files under the location (both layouts), one per name (a closed file over its .open
    copy), in the order they were started."""
    try:
        infos = storage.fs.get_file_info(pafs.FileSelector(storage.base, recursive=True))
    except FileNotFoundError as exc:
        raise GitmlError(f"{storage.url}: no such log folder or storage location (nothing shipped yet?).") from exc
    except (OSError, pa.ArrowException) as exc:
        raise GitmlError(f"{storage.url}: cannot be listed ({exc}).") from exc
    found: dict[str, _File] = {}
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        match = FILE_NAME.match(info.base_name)
        if match is None or match["stream"] not in STREAMS:
            continue
        closed = info.base_name.removesuffix(".open")
        if closed in found and not found[closed].open:
            continue
        start = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
        found[closed] = _File(info.path, match["stream"], start, bool(match["open"]), _utc(info.mtime))
    return sorted(found.values(), key=lambda f: (f.start, f.path))


def _wanted(file: _File, since: datetime | None, until: datetime | None) -> bool:
    if until is not None and file.start >= until + LATE:
        return False
    return not (since is not None and file.modified is not None and file.modified < since - LATE)


def _json_schemas(schema: DatasetSchema) -> dict[str, pa.Schema]:
    """The explicit schema of each stream's lines; request columns as float64 or string."""
    inputs = pa.struct(
        [
            pa.field(c.name, pa.list_(pa.float64() if c.output_dtype in ("integer", "float") else pa.string()))
            for c in request_columns(schema)
        ]
    )
    text = pa.string()
    predictions = [("time", text), ("request_id", text), ("model_version", text), ("inputs", inputs)]
    predictions += [("scores", pa.list_(pa.float64())), ("decisions", pa.list_(pa.bool_()))]
    rejections = [("time", text), ("endpoint", text), ("status", pa.int64())]
    rejections += [("errors", pa.list_(pa.struct([("field", text), ("reason", text)])))]
    return {
        PREDICTIONS: pa.schema(predictions),
        FEEDBACK: pa.schema([("time", text), ("request_id", text), ("index", pa.int64()), ("label", text)]),
        REJECTIONS: pa.schema(rejections),
    }


def _fetch(storage: Storage, file: _File) -> tuple[str, pa.Buffer | None]:
    """A file's bytes, up to its last whole line; None when it is gone (an .open file is then read
    under its closed name, which it got when the server closed it; a closed one was shipped)."""
    candidates = [file.path, file.path.removesuffix(".open")] if file.open else [file.path]
    for path in candidates:
        try:
            with storage.fs.open_input_stream(path) as handle:
                data: pa.Buffer = handle.read_buffer()
        except FileNotFoundError:
            continue
        if data.size and data[data.size - 1] != ord("\n"):  # the writer was killed mid-line: drop that line
            data = data.slice(0, data.to_pybytes().rfind(b"\n") + 1)
        return path, data
    return file.path, None


def _parse(path: str, data: pa.Buffer, schema: pa.Schema, url: str) -> pa.Table:
    block = BLOCK_BYTES
    while True:
        try:
            table = pj.read_json(
                pa.BufferReader(data),
                read_options=pj.ReadOptions(block_size=block),
                parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
            )
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc) and block < data.size:  # a line longer than a block: take bigger blocks
                block = min(data.size + 1, 2**31 - 1)
                continue
            raise GitmlError(f"{_name(path, url)}: a line is not the log's JSON ({exc}); the file is damaged.") from exc
        except UnicodeDecodeError as exc:  # pyarrow's message on bytes that are not UTF-8
            raise GitmlError(f"{_name(path, url)}: a line is not UTF-8; the log file is damaged.") from exc
        return table  # its strings are not checked for UTF-8 yet: _frames does, when converting them fails


def _name(path: str, url: str) -> str:
    """A file as the user can find it: a local path, or scheme://bucket/key."""
    scheme = url.partition("://")[0] if "://" in url else ""
    return path if scheme in ("", "file", "dvc") else f"{scheme}://{path.lstrip('/')}"


def _check(table: pa.Table, stream: str, where: str) -> None:
    """Every line has its stream's fields, and a prediction line as many values of each input as
    scores and decisions: a line that breaks this is damaged."""
    for name in REQUIRED[stream]:
        if table[name].null_count:
            raise GitmlError(f"{where}: a line has no {name!r}; the log file is damaged.")
    if stream != PREDICTIONS:
        return
    count = pc.list_value_length(table["scores"])
    lists = {"decisions": table["decisions"]}
    lists.update({f.name: pc.struct_field(table["inputs"], f.name) for f in table.schema.field("inputs").type})
    for name, values in lists.items():
        if not pc.all(pc.or_kleene(pc.is_null(values), pc.equal(pc.list_value_length(values), count))).as_py():
            raise GitmlError(f"{where}: a line's {name!r} and 'scores' differ in length; the log file is damaged.")


def _in_window(table: pa.Table, since: str | None, until: str | None) -> pa.Table:
    mask = None
    if since is not None:
        mask = pc.greater_equal(table["time"], since)
    if until is not None:
        upper = pc.less(table["time"], until)
        mask = upper if mask is None else pc.and_(mask, upper)
    return table if mask is None else table.filter(mask)


def _explode(values: pa.ListArray, parent: npt.NDArray[np.int64], position: npt.NDArray[np.int64]) -> pa.Array:
    """One value per prediction from a request field's lists (as long as the scores: `_check`);
    nulls where a line has no list for the field (a model with other inputs logged it)."""
    if values.null_count == 0:
        return values.flatten()
    present = values.is_valid().to_numpy(zero_copy_only=False)[parent]
    if not len(values.values):
        return pa.nulls(len(parent), values.type.value_type)
    return values.values.take(pa.array(values.offsets.to_numpy()[parent] + position, mask=~present))


def _predictions(lines: pa.Table, schema: DatasetSchema) -> pd.DataFrame:
    names = [c.name for c in request_columns(schema) if c.name not in ROW_FIELDS]
    scores = lines["scores"].combine_chunks()
    decisions = lines["decisions"].combine_chunks()
    parent = pc.list_parent_indices(scores).to_numpy()
    position = np.arange(len(parent), dtype=np.int64) - scores.offsets.to_numpy()[parent]
    inputs = lines["inputs"].combine_chunks()
    by_name = dict(zip([f.name for f in inputs.type], inputs.flatten(), strict=True))
    columns: dict[str, Any] = {name: _explode(by_name[name], parent, position) for name in names}
    take = pa.array(parent)
    table = pa.table(
        {
            **columns,
            "time": lines["time"].take(take),
            "request_id": lines["request_id"].take(take),
            "index": pa.array(position),
            "model_version": lines["model_version"].take(take),
            "score": scores.flatten(),
            "decision": decisions.flatten(),
        }
    )
    return cast(pd.DataFrame, table.to_pandas())


def _empty_predictions(schema: DatasetSchema) -> pd.DataFrame:
    columns = {
        c.name: pd.Series(dtype=np.float64 if c.output_dtype in ("integer", "float") else object)
        for c in request_columns(schema)
        if c.name not in ROW_FIELDS
    }
    return pd.DataFrame(
        {
            **columns,
            "time": pd.Series(dtype=object),
            "request_id": pd.Series(dtype=object),
            "index": pd.Series(dtype=np.int64),
            "model_version": pd.Series(dtype=object),
            "score": pd.Series(dtype=np.float64),
            "decision": pd.Series(dtype=bool),
        }
    )


def _feedback(lines: pa.Table | None) -> pd.DataFrame:
    if lines is None or lines.num_rows == 0:
        return pd.DataFrame(
            {
                "request_id": pd.Series(dtype=object),
                "index": pd.Series(dtype=np.int64),
                "label": pd.Series(dtype=object),
                "time": pd.Series(dtype=object),
            }
        )
    frame = cast(pd.DataFrame, lines.select(["request_id", "index", "label", "time"]).to_pandas())
    frame = frame.sort_values("time", kind="stable").drop_duplicates(["request_id", "index"], keep="last")
    return frame.reset_index(drop=True)


def _rejections(lines: pa.Table | None) -> pd.DataFrame:
    if lines is None or lines.num_rows == 0:
        return pd.DataFrame(
            {
                "time": pd.Series(dtype=object),
                "endpoint": pd.Series(dtype=object),
                "status": pd.Series(dtype=np.int64),
                "field": pd.Series(dtype=object),
                "reason": pd.Series(dtype=object),
                "request": pd.Series(dtype=np.int64),
            }
        )
    errors = lines["errors"].combine_chunks()
    parent = pc.list_parent_indices(errors)
    flat = errors.flatten()
    table = pa.table(
        {
            "time": lines["time"].take(parent),
            "endpoint": lines["endpoint"].take(parent),
            "status": lines["status"].take(parent),
            "field": flat.field("field"),
            "reason": flat.field("reason"),
            "request": parent.cast(pa.int64()),
        }
    )
    return cast(pd.DataFrame, table.to_pandas())


def read_window(
    source: str | Path,
    schema: DatasetSchema,
    since: datetime | None = None,
    until: datetime | None = None,
) -> LogWindow:
    """The log's three streams with time in [since, until) (either open), from a log folder or storage."""
    since, until = _utc(since), _utc(until)
    storage = open_storage(source)
    wanted = [f for f in _list(storage) if _wanted(f, since, until)]
    schemas = _json_schemas(schema)
    low = since.strftime(STAMP) if since is not None else None
    high = until.strftime(STAMP) if until is not None else None

    def read(file: _File) -> tuple[str, str, pa.Table | None]:
        path, data = _fetch(storage, file)
        if data is None or data.size == 0:
            return file.stream, path, None
        where = _name(path, storage.url)
        table = _parse(path, data, schemas[file.stream], storage.url)
        _check(table, file.stream, where)
        return file.stream, path, _in_window(table, low, high)

    with ThreadPoolExecutor(max_workers=READERS) as pool:
        results = list(pool.map(read, wanted))
    files = [_name(path, storage.url) for _, path, _ in results]
    parsed = [(stream, _name(path, storage.url), table) for stream, path, table in results if table is not None]
    try:
        return _frames(parsed, schema, files)
    except (pa.ArrowException, UnicodeDecodeError):
        for _, where, table in parsed:  # strings that are not UTF-8 (pyarrow's JSON parser lets them through)
            try:
                table.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise GitmlError(f"{where}: a line is not UTF-8 ({exc}); the log file is damaged.") from exc
        raise


def _frames(parsed: list[tuple[str, str, pa.Table]], schema: DatasetSchema, files: list[str]) -> LogWindow:
    """The window of the lines read from each file (stream, file, lines)."""
    tables: dict[str, list[pa.Table]] = {stream: [] for stream in STREAMS}
    for stream, _, table in parsed:
        if table.num_rows:
            tables[stream].append(table)
    joined = {s: pa.concat_tables(t) if t else None for s, t in tables.items()}
    lines = joined[PREDICTIONS]
    if lines is None or lines.num_rows == 0:
        predictions, requests = _empty_predictions(schema), 0
    else:
        predictions = _predictions(lines, schema)
        requests = pc.count_distinct(lines["request_id"]).as_py()
    return LogWindow(predictions, _feedback(joined[FEEDBACK]), _rejections(joined[REJECTIONS]), requests, files)
