"""`gitml collect`: the labelled production records of a time window, as a new raw data file.

The prediction log (gitml.serve.predlog) holds every answered prediction, with its request's fields
as the model saw them, and the feedback labels given for some of them. `gitml collect --since T
--until T` joins the two by request id and record index (each prediction once, with the latest
label given for it), keeps the predictions made in the window that have a label, and writes them
as one CSV file named by the window, `data/raw/production/production-<since>-<until>.csv` (one
column per request field, then the label; schema order), with its provenance beside it in
`production-<since>-<until>.json`: the window, the log location, how many predictions there were
and how many got a label, the model versions that made them, the rows written and the CSV's hash.
Retraining (.github/workflows/retrain.yml) tracks the CSV with `dvc add`, so production records
never enter git history; the pull request carries its .dvc pointer and the provenance.

The file goes through ingest like any other raw file, with the same schema, PII policy and
quarantine: the dataset config lists `data/raw/production/*.csv` in raw.files with
`generalised: true`, because the log holds the records generalised (group names, top-coded numbers,
band labels) and lacks the columns the schema drops or pseudonymises (conf/data/adult.yaml).

Labels are read up to the moment of collection (`--labels-until`, default now), since feedback
often arrives after the prediction's window ends. Predictions whose time falls in the window of a
file collected before (another `production-*.json` beside the new one) are left out, so windows
that overlap never put one record in the training data twice. The standard library and pandas: the
pipeline's environment (make install) runs it.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitml.errors import GitmlError, UnusableInputError
from gitml.paths import Paths

if TYPE_CHECKING:
    import pandas as pd

    from gitml.data.schema import DatasetSchema, RawFile

Handler = Callable[[Paths, argparse.Namespace], str]

PREFIX = "production"  # collected files are production-<since>-<until>.csv, with a .json beside
OUT = Path("data/raw/production")
NAME_STAMP = "%Y%m%dT%H%M%SZ"  # the window in a file name
LOG_STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"  # the log's time format: compared as text, it sorts as time does
KEY = ["request_id", "index"]


@dataclass(frozen=True)
class Collected:
    """What one collection wrote: the CSV, its provenance file, and the provenance."""

    data: Path
    provenance_file: Path
    provenance: dict[str, Any]

    @property
    def rows(self) -> int:
        return int(self.provenance["rows"])


def file_stem(since: datetime, until: datetime) -> str:
    """production-20261130T000000Z-20261201T000000Z: the file name of a window, without its suffix."""
    return f"{PREFIX}-{since.astimezone(UTC).strftime(NAME_STAMP)}-{until.astimezone(UTC).strftime(NAME_STAMP)}"


def target_entry(schema: DatasetSchema, path: str) -> RawFile:
    """The raw.files entry with `generalised: true` whose pattern names `path` (relative to the root)."""
    for raw_file in schema.raw.files:
        if raw_file.generalised and fnmatch.fnmatchcase(path, raw_file.path):
            return raw_file
    listed = ", ".join(f.path + (" (generalised)" if f.generalised else "") for f in schema.raw.files)
    raise GitmlError(
        f"{path} is not a file the dataset config reads as production records: its raw.files ({listed}) have no "
        f"entry with `generalised: true` whose path matches it. Add "
        f"{{path: {Path(path).parent.as_posix()}/*.csv, header: true, generalised: true}} to raw.files in "
        f"conf/data/ ({schema.source}), run `gitml params`, or give --out the folder that entry names."
    )


def _second(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _earlier_windows(folder: Path, stem: str) -> dict[str, tuple[str, str]]:
    """The windows of the files collected before into `folder` (their provenance), as log-time text."""
    windows = {}
    for path in sorted(folder.glob(f"{PREFIX}-*.json")):
        if path.stem == stem:
            continue  # the same window collected again: it replaces its own file
        try:
            window = json.loads(path.read_text(encoding="utf-8"))["window"]
            since = datetime.fromisoformat(window["since"].replace("Z", "+00:00"))
            until = datetime.fromisoformat(window["until"].replace("Z", "+00:00"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise GitmlError(
                f"{path}: not the provenance of a collected file ({type(exc).__name__}: {exc}); "
                "collect reads each one's window so as not to collect a record twice."
            ) from exc
        windows[path.name] = (since.astimezone(UTC).strftime(LOG_STAMP), until.astimezone(UTC).strftime(LOG_STAMP))
    return windows


def labelled_rows(
    predictions: pd.DataFrame, feedback: pd.DataFrame, since: str, until: str, label: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The predictions made in [since, until) (log-time text) with their latest label, each once; counts."""
    in_window = predictions[(predictions["time"] >= since) & (predictions["time"] < until)]
    # A prediction is one (request_id, index); a line read twice (a file shipped twice) counts once.
    unique = in_window.sort_values(["time", *KEY], kind="stable").drop_duplicates(KEY, keep="first")
    labels = feedback.sort_values("time", kind="stable").drop_duplicates(KEY, keep="last")
    labels = labels[[*KEY, "label"]].rename(columns={"label": label})
    joined = unique.drop(columns=[label], errors="ignore").merge(labels, on=KEY, how="inner", validate="one_to_one")
    joined = joined[joined[label].notna()].reset_index(drop=True)
    counts = {"predictions": len(unique), "repeated": len(in_window) - len(unique), "labelled": len(joined)}
    return joined, counts


def _cell(value: Any, numeric: bool, integer: bool) -> str:
    """A CSV field: empty for a missing value, whole numbers without a decimal point."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if numeric:
        number = float(value)
        return str(int(number)) if integer and number.is_integer() else repr(number)
    return str(value)


def write_rows(path: Path, rows: pd.DataFrame, schema: DatasetSchema, entry: RawFile) -> list[str]:
    """The rows as the raw file `entry` describes (header line, its delimiter); the columns written."""
    from gitml.serve.requests import request_columns

    fields = {c.name for c in request_columns(schema)}
    columns = [c for c in schema.columns if c.name in fields or c.role == "label"]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="", encoding=schema.raw.encoding) as handle:
        writer = csv.writer(handle, delimiter=schema.raw.delimiter_of(entry), lineterminator="\n")
        writer.writerow([c.name for c in columns])
        numeric = [c.output_dtype in ("integer", "float") for c in columns]
        integer = [c.output_dtype == "integer" for c in columns]
        values = [rows[c.name].tolist() for c in columns]
        for row in zip(*values, strict=True):
            writer.writerow([_cell(v, n, i) for v, n, i in zip(row, numeric, integer, strict=True)])
    temporary.replace(path)
    return [c.name for c in columns]


def collect(
    paths: Paths,
    schema: DatasetSchema,
    source: str,
    since: datetime,
    until: datetime,
    out: Path = OUT,
    labels_until: datetime | None = None,
) -> Collected:
    """Collect the window's labelled predictions from the log at `source` into `out` (under the root)."""
    from gitml.io import sha256_file
    from gitml.logs.read import read_window

    since, until = _second(since), _second(until)  # windows are whole seconds, as their file names say
    if since >= until:
        raise GitmlError(f"--since {_stamp(since)} is not before --until {_stamp(until)}")
    now = datetime.now(UTC)
    labels_until = labels_until or max(now, until)
    folder = out if out.is_absolute() else paths.root / out
    stem = file_stem(since, until)
    data = folder / f"{stem}.csv"
    try:
        relative = data.relative_to(paths.root).as_posix()
    except ValueError:
        raise GitmlError(f"--out {out}: not inside the repository ({paths.root}); raw data lives under it.") from None
    entry = target_entry(schema, relative)
    label = schema.label.name

    # Feedback for a prediction of the window may come after the window ends: read it up to labels_until.
    window = read_window(source, schema, since, labels_until)
    low, high = since.astimezone(UTC).strftime(LOG_STAMP), until.astimezone(UTC).strftime(LOG_STAMP)
    rows, counts = labelled_rows(window.predictions, window.feedback, low, high, label)
    excluded: dict[str, int] = {}
    for name, (start, end) in _earlier_windows(folder, stem).items():
        inside = (rows["time"] >= start) & (rows["time"] < end)
        if inside.any():
            excluded[name] = int(inside.sum())
            rows = rows[~inside]
    if rows.empty:
        where = f"{source} between {_stamp(since)} and {_stamp(until)}"
        already = f"; {sum(excluded.values())} were collected before ({', '.join(excluded)})" if excluded else ""
        raise UnusableInputError(
            f"no labelled predictions in {where} ({counts['predictions']} predictions, {counts['labelled']} with "
            f"feedback given by {_stamp(labels_until)}{already}): nothing to collect. Widen the window, or wait "
            "for feedback (POST /feedback)."
        )
    written = write_rows(data, rows, schema, entry)
    versions = rows["model_version"].value_counts()
    provenance = {
        "dataset": schema.name,
        "file": data.name,
        "sha256": sha256_file(data),
        "rows": len(rows),
        "columns": written,
        "window": {"since": _stamp(since), "until": _stamp(until)},
        "labels_until": _stamp(labels_until),
        "source": source,
        "log_files": len(window.files),
        "predictions": counts["predictions"],
        "labelled": counts["labelled"],
        "repeated_predictions_dropped": counts["repeated"],
        "collected_before": excluded,
        "model_versions": {str(k): int(v) for k, v in sorted(versions.items())},
        "label_counts": {str(k): int(v) for k, v in sorted(rows[label].value_counts().items())},
        "collected_at": _stamp(now),
        "raw_files_entry": entry.path,
    }
    provenance_file = folder / f"{stem}.json"
    provenance_file.write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return Collected(data, provenance_file, provenance)


def markdown(provenance: Mapping[str, Any], data: str, provenance_file: str) -> str:
    """What was collected, for people: the retraining pull request's body opens with it."""
    p = provenance
    window = p["window"]
    versions = ", ".join(f"`{v}` {n:,}" for v, n in p["model_versions"].items())
    labels = ", ".join(f"`{v}` {n:,}" for v, n in p["label_counts"].items())
    before = p["collected_before"]
    rows = [
        ("window", f"{window['since']} to {window['until']}"),
        ("prediction log", f"`{p['source']}` ({p['log_files']:,} files read)"),
        (
            "predictions in the window",
            f"{p['predictions']:,}"
            + (
                f" ({p['repeated_predictions_dropped']:,} logged twice, counted once)"
                if p["repeated_predictions_dropped"]
                else ""
            ),
        ),
        (
            "with a feedback label",
            f"{p['labelled']:,} (feedback given by {p['labels_until']}; the latest label of each)",
        ),
        *(
            [("collected before", ", ".join(f"{n:,} in `{f}`" for f, n in before.items()) + " (left out)")]
            if before
            else []
        ),
        ("rows", f"{p['rows']:,}"),
        ("made by model versions", versions),
        ("labels", labels),
        ("file", f"`{data}` (sha256 `{p['sha256'][:16]}...`)"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        f"## Retraining on production data\n\n"
        f"**{p['rows']:,} labelled production rows** from the prediction log, {window['since']} to {window['until']}, "
        f"added as `{data}`: tracked with DVC, so the rows are in the DVC remote and never in git; this pull "
        f"request carries the pointer (`{data}.dvc`) and the provenance (`{provenance_file}`). Ingest reads the "
        f"file like any raw file (raw.files: `{p['raw_files_entry']}`, generalised), with the same schema, PII "
        "policy and quarantine.\n\n"
        f"| | |\n|---|---|\n{table}\n"
    )


def _window(params: Mapping[str, Any], args: argparse.Namespace) -> tuple[datetime, datetime]:
    from gitml.monitor.command import duration, parse_time

    until = parse_time(args.until, "--until") if args.until else datetime.now(UTC)
    if args.since:
        return parse_time(args.since, "--since"), until
    drift = params.get("drift")
    window = drift.get("window") if isinstance(drift, Mapping) else None
    if window is None:
        raise GitmlError("give --since (no drift.window in params.yaml to take the window from)")
    return until - duration(str(window), "drift.window"), until


def cmd_collect(paths: Paths, args: argparse.Namespace) -> str:
    from gitml.config import dataset_schema, load_params
    from gitml.monitor.command import default_logs, parse_time
    from gitml.release.render import write_github_output

    params = load_params(paths.params)
    schema = dataset_schema(params, paths.params)
    since, until = _window(params, args)
    labels_until = parse_time(args.labels_until, "--labels-until") if args.labels_until else None
    source = args.logs or default_logs(params, paths)
    done = collect(paths, schema, source, since, until, args.out, labels_until)
    data = done.data.relative_to(paths.root).as_posix()
    provenance = done.provenance_file.relative_to(paths.root).as_posix()
    if args.github_output is not None:
        outputs = {"file": data, "provenance": provenance, "rows": str(done.rows), "stem": done.data.stem}
        write_github_output(args.github_output, outputs)
    if args.markdown is not None:
        args.markdown.write_text(markdown(done.provenance, data, provenance), encoding="utf-8")
    p = done.provenance
    versions = ", ".join(f"{v} {n:,}" for v, n in p["model_versions"].items())
    before = sum(p["collected_before"].values())
    skipped = f", {before:,} collected before" if before else ""
    return (
        f"collect: {done.rows:,} labelled production rows of {p['predictions']:,} predictions "
        f"({p['window']['since']} to {p['window']['until']}{skipped}; model {versions}) -> {data}, "
        f"provenance {provenance}. Track it with `dvc add {data}`."
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--logs", help="a log directory or storage URL (s3://bucket/prefix); default serve.prediction_log.storage"
    )
    parser.add_argument(
        "--since", help="start of the window: ISO 8601 time, or a duration before now (default: drift.window)"
    )
    parser.add_argument("--until", help="end of the window: ISO 8601 time, or a duration before now (default: now)")
    parser.add_argument(
        "--labels-until", help="count feedback given up to this time (default: now, or --until if later)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=OUT,
        help="folder of the new file; a raw.files entry with generalised: true must match it (default: %(default)s)",
    )
    parser.add_argument(
        "--github-output", type=Path, help="append file, provenance, rows and stem here ($GITHUB_OUTPUT)"
    )
    parser.add_argument(
        "--markdown", type=Path, help="write what was collected here, as markdown (a pull request body)"
    )


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None]]] = {
    "collect": (
        cmd_collect,
        "write a window's labelled production records from the prediction log as a new raw data file",
        _arguments,
    ),
}
