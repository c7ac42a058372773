"""gitml collect: a window's labelled predictions from the server's log become a raw file that ingest reads.

On the toy dataset of tests/conftest.py (not the bundled one): a pseudonymised identifier, a banded
protected attribute, a categorical generalised into groups and a top-coded number, so the log holds
group names and capped numbers and lacks the identifier. The log is written by the server's own
writer (gitml.serve.predlog.PredictionLog) with records generalised by the server's own Anonymizer,
as `POST /predict` and `POST /feedback` write it; then `gitml collect`, then the real ingest stage.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import yaml

from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError, UnusableInputError
from gitml.monitor import collect
from gitml.paths import Paths
from gitml.serve.config import ServeConfig
from gitml.serve.predlog import FEEDBACK, PREDICTIONS, Clock, PredictionLog
from gitml.serve.requests import Anonymizer, request_columns
from gitml.stages import ingest
from tests.conftest import REPO, TOY_COLUMNS, TOY_KEY, params_section, toy_config, toy_rows, write_csv

PRODUCTION = {"path": "raw/production/*.csv", "header": True, "delimiter": ",", "generalised": True}


# --- Writing a prediction log as the server does ----------------------------------------------------


def write_log(directory: Path, predictions: Sequence[dict[str, Any]], feedback: Sequence[dict[str, Any]] = ()) -> None:
    """Lines appended and written by the server's own writer (flushed once, at close, as at shutdown)."""
    config = ServeConfig.from_config(params_section("serve"), "params.yaml", REPO).log
    log = PredictionLog(dataclasses.replace(config, directory=directory, flush_seconds=3600.0))
    log.start()
    for line in predictions:
        log.append(PREDICTIONS, orjson.dumps(line))
    for line in feedback:
        log.append(FEEDBACK, orjson.dumps(line))
    log.close()


def _plain(value: Any) -> Any:
    """A JSON value as a request carries it: None for missing, Python numbers and strings."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def prediction_lines(
    schema: DatasetSchema,
    records: pd.DataFrame,
    scores: Sequence[float],
    threshold: float,
    times: Sequence[str],
    version: str = "v0.1.0",
    batch: int = 20,
) -> tuple[list[dict[str, Any]], list[tuple[str, int]]]:
    """/predict's log lines for `records` (one request per `batch` rows, at `times`, one per request):
    the fields generalised by the server's Anonymizer, as the model sees them. The (request_id, index) of each row."""
    names = [c.name for c in request_columns(schema)]
    anonymize = Anonymizer(schema)
    lines, keys = [], []
    for number, start in enumerate(range(0, len(records), batch)):
        part = records.iloc[start : start + batch]
        inputs = {name: [_plain(v) for v in part[name].tolist()] for name in names}
        anonymize(inputs)
        request_id = uuid.uuid4().hex
        chunk = [float(s) for s in scores[start : start + batch]]
        lines.append(
            {
                "time": times[number],
                "request_id": request_id,
                "model_version": version,
                "inputs": inputs,
                "scores": chunk,
                "decisions": [s >= threshold for s in chunk],
            }
        )
        keys += [(request_id, i) for i in range(len(part))]
    return lines, keys


def feedback_lines(keys: Sequence[tuple[str, int]], labels: Sequence[Any], time: str) -> list[dict[str, Any]]:
    """/feedback's log lines: one label per (request_id, index)."""
    return [
        {"time": time, "request_id": r, "index": i, "label": str(label)}
        for (r, i), label in zip(keys, labels, strict=True)
    ]


# --- The toy repository ---------------------------------------------------------------------------------


def toy_production_config(**columns: dict[str, Any]) -> dict[str, Any]:
    """The toy dataset config with collected production files among its raw files (and `columns` replaced)."""
    cfg = toy_config()
    cfg["raw"]["files"] = [*cfg["raw"]["files"], dict(PRODUCTION)]
    cfg["columns"] = {**cfg["columns"], **copy.deepcopy(columns)}
    return cfg


def toy_repo(root: Path, cfg: dict[str, Any]) -> Paths:
    """raw/toy.csv (200 rows) and params.yaml with the config; what collect and ingest read."""
    write_csv(root / "raw" / "toy.csv", toy_rows())
    (root / "params.yaml").write_text(yaml.safe_dump({"data": cfg, "drift": {"window": "24h"}}, sort_keys=False))
    return Paths(root)


def toy_records(n: int, seed: int) -> pd.DataFrame:
    """n raw toy records (typed as a client sends them) with their label."""
    frame = pd.DataFrame(toy_rows(n, seed), columns=TOY_COLUMNS)
    frame["age"] = frame["age"].astype(int)
    frame["balance"] = frame["balance"].astype(float)
    frame["city"] = frame["city"].where(frame["city"] != "?", None)
    return frame


def run_collect(paths: Paths, *argv: str) -> str:
    """`gitml collect ARGV` through the command's own arguments and handler."""
    handler, _, add_arguments = collect.COMMANDS["collect"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return handler(paths, parser.parse_args(list(argv)))


def run_ingest(paths: Paths, cfg: dict[str, Any]) -> ingest.IngestResult:
    return ingest.run({"data": cfg}, paths, TOY_KEY)


@dataclasses.dataclass
class Window:
    since: datetime
    until: datetime

    def args(self) -> list[str]:
        return ["--since", self.since.isoformat(), "--until", self.until.isoformat()]

    def at(self, minutes: float) -> str:
        """A log time `minutes` after the window starts (negative: before it)."""
        return Clock()((self.since + timedelta(minutes=minutes)).timestamp())


@pytest.fixture
def window() -> Window:
    """A half-hour window that ended ten minutes ago (the log's files are started now: see gitml.logs.read)."""
    until = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    return Window(until - timedelta(minutes=30), until)


@dataclasses.dataclass
class Logged:
    """A log written for the toy schema, and what collect should make of it."""

    directory: Path
    expected: pd.DataFrame  # the labelled predictions of the window, generalised, with their label
    bad_age: int  # the age of the one record no current schema accepts
    relabelled: dict[str, Any]  # a prediction whose feedback came twice, with the label given last


@pytest.fixture
def logged(tmp_path: Path, window: Window) -> Logged:
    """Three requests in the window, from two model versions, and one on either side of it. Two thirds
    of the window's predictions get feedback, one twice with another label; one request's line was
    written twice (a file shipped twice); one record is from a server whose schema took an age the
    current one refuses."""
    schema = DatasetSchema.from_config(toy_production_config())
    records = toy_records(100, seed=7)
    records.loc[25, "age"] = 150  # above the toy schema's max of 100; in the window's first request, labelled
    scores = np.linspace(0.05, 0.95, len(records)).tolist()
    times = [window.at(-5), window.at(5), window.at(12), window.at(20), window.at(35)]
    lines, keys = prediction_lines(schema, records, scores, 0.5, times)
    lines[2]["model_version"] = "v0.2.0"
    lines.append(dict(lines[1]))  # the same line again
    labels = records["churned"].tolist()
    labelled = [k for i, k in enumerate(keys) if i % 3 != 2]
    feedback = feedback_lines(labelled, [labels[keys.index(k)] for k in labelled], window.at(25))
    relabelled = keys[21]  # in the second request; labelled, then labelled again with the other class
    other = "yes" if labels[21] == "no" else "no"
    feedback += feedback_lines([relabelled], [other], window.at(39))
    directory = tmp_path / "logs"
    write_log(directory, lines, feedback)

    rows = []
    for line in lines[1:4]:
        for index in range(len(line["scores"])):
            key = (line["request_id"], index)
            if key not in labelled:
                continue
            row = {name: values[index] for name, values in line["inputs"].items()}
            row["churned"] = other if key == relabelled else labels[keys.index(key)]
            row["model_version"] = line["model_version"]
            row["key"] = key
            rows.append(row)
    (last,) = [row for row in rows if row["key"] == relabelled]
    expected = pd.DataFrame(rows).drop(columns=["key"])
    return Logged(directory, expected, 150, last)


# --- collect ------------------------------------------------------------------------------------------


def as_text(frame: pd.DataFrame) -> list[list[str]]:
    """The rows as sorted lists of text, missing values empty: to compare tables of different dtypes."""
    return sorted([["" if pd.isna(v) else str(v) for v in row] for row in frame.itertuples(index=False)])


def read_collected(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_collect_writes_the_windows_labelled_predictions_once_with_their_provenance(
    tmp_path: Path, window: Window, logged: Logged
) -> None:
    paths = toy_repo(tmp_path / "repo", toy_production_config())
    outputs, body = tmp_path / "github-output", tmp_path / "body.md"
    message = run_collect(
        paths, "--logs", str(logged.directory), *window.args(), "--out", "raw/production",
        "--github-output", str(outputs), "--markdown", str(body),
    )  # fmt: skip
    stem = collect.file_stem(window.since, window.until)
    data = paths.root / "raw" / "production" / f"{stem}.csv"
    assert f"-> raw/production/{stem}.csv" in message
    assert stem == f"production-{window.since:%Y%m%dT%H%M%SZ}-{window.until:%Y%m%dT%H%M%SZ}"

    written = read_collected(data)
    # The request fields (no identifier: the server never takes it), then the label, in schema order.
    assert list(written.columns) == ["age", "city", "balance", "segment", "churned"]
    expected = logged.expected
    assert len(written) == len(expected) == 40  # two thirds of the window's 60 predictions are labelled
    # Each prediction once, with its generalised values and its latest label.
    assert sorted(written["age"].astype(int)) == sorted(expected["age"])
    assert set(written["city"]) <= {"Germany", "France", ""}
    assert written["balance"].astype(float).max() <= 5000
    assert sorted(written["balance"].astype(float)) == sorted(expected["balance"])
    assert sorted(written["churned"]) == sorted(expected["churned"])

    provenance = json.loads((data.with_suffix(".json")).read_text())
    assert provenance["window"] == {
        "since": window.since.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "until": window.until.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert provenance["source"] == str(logged.directory)
    assert provenance["rows"] == len(written)
    assert provenance["predictions"] == 60  # three requests of 20 in the window; the repeated line once
    assert provenance["repeated_predictions_dropped"] == 20
    assert provenance["labelled"] == len(written)
    assert provenance["model_versions"] == expected["model_version"].value_counts().to_dict()
    assert set(provenance["model_versions"]) == {"v0.1.0", "v0.2.0"}
    assert provenance["file"] == data.name
    assert provenance["sha256"] == __import__("hashlib").sha256(data.read_bytes()).hexdigest()
    assert provenance["raw_files_entry"] == PRODUCTION["path"]
    # What the retraining workflow reads: the paths and counts for its steps, and its pull request's body.
    assert outputs.read_text().splitlines() == [
        f"file=raw/production/{stem}.csv",
        f"provenance=raw/production/{stem}.json",
        f"rows={len(written)}",
        f"stem={stem}",
    ]
    text = body.read_text()
    assert f"**{len(written)} labelled production rows**" in text
    assert "| predictions in the window | 60 (20 logged twice, counted once) |" in text
    assert "`v0.1.0`" in text
    assert "`v0.2.0`" in text


def test_the_collected_file_goes_through_ingest_with_its_generalised_values(
    tmp_path: Path, window: Window, logged: Logged
) -> None:
    cfg = toy_production_config()
    paths = toy_repo(tmp_path / "repo", cfg)
    run_collect(paths, "--logs", str(logged.directory), *window.args(), "--out", "raw/production")
    (data,) = (paths.root / "raw" / "production").glob("*.csv")
    collected = len(read_collected(data))

    result = run_ingest(paths, cfg)
    assert result.rows_read == 200 + collected
    # The one record whose age the schema refuses is quarantined with its reason and its place...
    quarantine = pd.read_csv(paths.quarantine, dtype=str, keep_default_na=False)
    (bad,) = quarantine[quarantine["source_file"] == data.relative_to(paths.root).as_posix()].to_dict("records")
    assert bad["reason"] == f"age: {logged.bad_age} is above the maximum 100"
    assert bad["customer_id"] == ""  # absent from the log, and no fault there
    # ...and every other collected row is kept, with the values the log held: group names stay group
    # names, capped numbers stay capped, the missing identifier stays missing.
    clean = pd.read_parquet(paths.clean)
    production = clean[clean["customer_id"].isna()]
    assert len(production) == collected - 1
    assert result.quarantined_by_reason == {"out_of_range:age": 1}
    expected = logged.expected[logged.expected["age"] != logged.bad_age]
    fields = ["age", "city", "balance", "segment", "churned"]
    assert as_text(production[fields]) == as_text(expected[fields])
    assert set(production["city"].dropna()) <= {"Germany", "France"}
    # The raw file's rows are anonymised as before: ids pseudonymised, cities grouped, balances capped.
    raw = clean[clean["customer_id"].notna()]
    assert len(raw) == 200
    assert raw["customer_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    report = json.loads(paths.ingest_report.read_text())
    assert report["files"][data.relative_to(paths.root).as_posix()]["generalised"] is True
    assert "generalised" not in report["files"]["raw/toy.csv"]


def test_repeated_feedback_gives_one_row_with_the_latest_label(tmp_path: Path, window: Window, logged: Logged) -> None:
    paths = toy_repo(tmp_path / "repo", toy_production_config())
    run_collect(paths, "--logs", str(logged.directory), *window.args(), "--out", "raw/production")
    (data,) = (paths.root / "raw" / "production").glob("*.csv")
    written = read_collected(data)
    relabelled = logged.relabelled
    same = written[
        (written["age"] == str(relabelled["age"])) & (written["balance"].astype(float) == relabelled["balance"])
    ]
    assert same["churned"].tolist() == [relabelled["churned"]]


def test_band_labels_in_the_log_are_kept_as_generalised(tmp_path: Path, window: Window) -> None:
    """A numeric column generalised into bins: the log holds band labels, which ingest keeps as bands."""
    banded = {"balance": {**toy_config()["columns"]["balance"], "generalize": {"bins": [1000, 3000]}}}
    cfg = toy_production_config(**banded)
    schema = DatasetSchema.from_config(cfg)
    records = toy_records(40, seed=3)
    lines, keys = prediction_lines(schema, records, [0.5] * 40, 0.5, [window.at(3), window.at(6)])
    assert set(lines[0]["inputs"]["balance"]) <= {"<1000", "[1000, 3000)", "3000+"}
    write_log(tmp_path / "logs", lines, feedback_lines(keys, records["churned"].tolist(), window.at(9)))
    paths = toy_repo(tmp_path / "repo", cfg)
    run_collect(paths, "--logs", str(tmp_path / "logs"), *window.args(), "--out", "raw/production")

    result = run_ingest(paths, cfg)
    assert result.rows_quarantined == 0
    clean = pd.read_parquet(paths.clean)
    production = clean[clean["customer_id"].isna()]
    assert len(production) == 40
    expected = sorted(v for line in lines for v in line["inputs"]["balance"])
    assert sorted(production["balance"].astype(str)) == expected
    assert list(clean["balance"].cat.categories) == ["<1000", "[1000, 3000)", "3000+"]
    assert clean["balance"].notna().all()  # the raw file's numbers were banded as before


def test_a_raw_file_not_marked_generalised_still_refuses_group_names(tmp_path: Path) -> None:
    """Group names are accepted only from generalised files: in any other file they are unknown categories."""
    rows = toy_rows(50)
    rows[3][TOY_COLUMNS.index("city")] = "Germany"
    write_csv(tmp_path / "raw" / "toy.csv", rows)
    result = run_ingest(Paths(tmp_path), toy_production_config())
    assert result.quarantined_by_reason == {"unknown_category:city": 1}


def test_windows_collected_before_are_left_out(tmp_path: Path, window: Window, logged: Logged) -> None:
    paths = toy_repo(tmp_path / "repo", toy_production_config())
    first = Window(window.since, window.since + timedelta(minutes=10))
    run_collect(paths, "--logs", str(logged.directory), *first.args(), "--out", "raw/production")
    # The whole window again, overlapping the first: the first file's predictions are not collected twice.
    message = run_collect(paths, "--logs", str(logged.directory), *window.args(), "--out", "raw/production")
    assert "collected before" in message
    folder = paths.root / "raw" / "production"
    files = sorted(folder.glob("*.csv"))
    assert len(files) == 2
    total = sum(len(read_collected(f)) for f in files)
    assert total == len(logged.expected)
    second = json.loads((folder / f"{collect.file_stem(window.since, window.until)}.json").read_text())
    assert second["collected_before"] == {f"{collect.file_stem(first.since, first.until)}.json": total - second["rows"]}
    # Collecting the same window again replaces its own file, and leaves out nothing more.
    run_collect(paths, "--logs", str(logged.directory), *window.args(), "--out", "raw/production")
    assert (
        json.loads((folder / f"{collect.file_stem(window.since, window.until)}.json").read_text())["rows"]
        == second["rows"]
    )


def test_a_window_without_labelled_predictions_is_unusable_input(
    tmp_path: Path, window: Window, logged: Logged
) -> None:
    paths = toy_repo(tmp_path / "repo", toy_production_config())
    empty = Window(window.until + timedelta(minutes=1), window.until + timedelta(minutes=2))
    with pytest.raises(UnusableInputError, match=r"no labelled predictions in .*nothing to collect") as raised:
        run_collect(paths, "--logs", str(logged.directory), *empty.args(), "--out", "raw/production")
    assert raised.value.status == 2
    assert not (paths.root / "raw" / "production").exists()


def test_collect_needs_a_generalised_raw_files_entry_for_its_folder(
    tmp_path: Path, window: Window, logged: Logged
) -> None:
    paths = toy_repo(tmp_path / "repo", toy_config())
    with pytest.raises(GitmlError, match=r"no entry with `generalised: true`.*raw/production/\*\.csv"):
        run_collect(paths, "--logs", str(logged.directory), *window.args(), "--out", "raw/production")
    with pytest.raises(GitmlError, match=r"not before"):
        run_collect(
            paths, "--logs", str(logged.directory), "--since", "2026-12-01T00:00:00Z", "--until", "2026-11-30T00:00:00Z"
        )


def test_collect_is_a_gitml_subcommand() -> None:
    import gitml.cli

    assert "collect" in gitml.cli.COMMANDS, "wire gitml.monitor.collect.COMMANDS into gitml.cli"
    args = gitml.cli.build_parser().parse_args(["collect", "--since", "24h", "--logs", "s3://bucket/logs"])
    assert args.out == Path("data/raw/production")


def test_a_generalised_file_may_lack_dropped_columns_and_is_matched_by_header(tmp_path: Path) -> None:
    """Columns in any order, a dropped column absent, a pseudonymised one empty: the header says which is which."""
    cfg = toy_production_config(
        extra={"dtype": "integer", "min": 1, "role": "feature", "pii": "drop"},
    )
    rows = toy_rows(30)
    write_csv(tmp_path / "raw" / "toy.csv", [[*r, "7"] for r in rows], header=[*TOY_COLUMNS, "extra"])
    production = tmp_path / "raw" / "production" / "production-a.csv"
    production.parent.mkdir(parents=True)
    with production.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["churned", "segment", "balance", "city", "age", "customer_id"])
        writer.writerow(["yes", "retail", "5000", "France", "40", ""])
        writer.writerow(["no", "business", "12.5", "", "70", ""])
    result = run_ingest(Paths(tmp_path), cfg)
    assert result.rows_quarantined == 0
    clean = pd.read_parquet(Paths(tmp_path).clean)
    assert "extra" not in clean.columns
    tail = clean[clean["customer_id"].isna()].astype(str).values.tolist()
    assert tail == [
        ["None", "40", "France", "5000.0", "retail", "yes"],
        ["None", "70", "nan", "12.5", "business", "no"],
    ]
    # A generalised entry whose glob matches nothing is no error: the raw file alone is read.
    production.unlink()
    assert run_ingest(Paths(tmp_path), cfg).rows_read == 30


def test_a_generalised_entry_needs_a_header_and_its_options_are_checked() -> None:
    cfg = toy_production_config()
    cfg["raw"]["files"][1] = {**PRODUCTION, "header": False}
    with pytest.raises(GitmlError, match=r"raw.files\[1\]: a generalised file's columns are matched by their names"):
        DatasetSchema.from_config(cfg)
    cfg["raw"]["files"][1] = {**PRODUCTION, "generalized": True}
    with pytest.raises(GitmlError, match=r"unknown key 'generalized' \(did you mean 'generalised'\?\)"):
        DatasetSchema.from_config(cfg)
    cfg["raw"]["files"][1] = {**PRODUCTION, "delimiter": ";;"}
    with pytest.raises(GitmlError, match=r"raw.files\[1\]: delimiter must be one character"):
        DatasetSchema.from_config(cfg)
