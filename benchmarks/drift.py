"""How long `gitml drift` takes on logged predictions, against a bare Deepchecks drift suite on the same rows.

Rows are drawn (with replacement) from the validation and test splits, scored by the bundle in
models/, and written as the server writes its prediction log (gitml.serve.predlog's format: one
JSON line per request of 100 records, columnar inputs), with feedback labels for half of them, in
files of 1,000 requests. Then, each measured in the same run:

  gitml drift      the drift command in this process (`gitml drift --logs DIR --since ... --until
                   ...`, its libraries already imported, as Deepchecks' are below): reading the
                   log files, every test, drift.json, drift.md and Deepchecks' HTML on
                   drift.deepchecks_rows rows of each side
  from the shell   the same as a new process, start-up (Python, pandas, torch) included
  deepchecks       Deepchecks' drift checks alone (Feature, Multivariate, Prediction and Label
                   Drift, their defaults) on the same rows, already in memory as a DataFrame, and
                   the reference: the suite's run, nothing read or written

Goals: at 48,842 rows (the size of Adult), gitml drift / deepchecks <= 1.5; at 1,000,000 rows,
gitml drift <= 60 s.

    .venv/bin/python benchmarks/drift.py [--rows 48842,1000000] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd

from gitml.monitor import drift, scenarios
from gitml.paths import Paths

START = datetime(2026, 11, 30, tzinfo=UTC)
PER_REQUEST = 100
PER_FILE = 1000


def write_logs(
    directory: Path, rows: pd.DataFrame, scores: npt.NDArray[np.float64], threshold: float, label: str
) -> None:
    """The rows as a server's prediction and feedback logs, one request of PER_REQUEST records a line."""
    directory.mkdir(parents=True, exist_ok=True)
    names = [c for c in rows.columns if c not in (label, scenarios.FEEDBACK)]
    columns = {name: rows[name].astype(object).where(rows[name].notna(), None).tolist() for name in names}
    feedback_label = rows[scenarios.FEEDBACK].tolist()
    requests = (len(rows) + PER_REQUEST - 1) // PER_REQUEST
    step = timedelta(hours=23) / max(requests, 1)
    predictions: IO[bytes] | None = None
    feedback: IO[bytes] | None = None
    for r in range(requests):
        if r % PER_FILE == 0:
            for handle in (predictions, feedback):
                if handle is not None:
                    handle.close()
            stamp = (START + step * r).strftime("%Y%m%dT%H%M%S%fZ")
            predictions = (directory / f"predictions-{stamp}-bench-1.jsonl").open("wb")
            feedback = (directory / f"feedback-{stamp}-bench-1.jsonl").open("wb")
        assert predictions is not None
        assert feedback is not None
        a, b = r * PER_REQUEST, min((r + 1) * PER_REQUEST, len(rows))
        moment = (START + step * r).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        request_id = f"{r:032x}"
        line = {
            "time": moment,
            "request_id": request_id,
            "model_version": "v0.1.0",
            "inputs": {name: values[a:b] for name, values in columns.items()},
            "scores": scores[a:b].tolist(),
            "decisions": (scores[a:b] >= threshold).tolist(),
        }
        predictions.write(orjson.dumps(line) + b"\n")
        for index in range(0, b - a, 2):
            record = {"time": moment, "request_id": request_id, "index": index, "label": feedback_label[a + index]}
            feedback.write(orjson.dumps(record) + b"\n")
    for handle in (predictions, feedback):
        if handle is not None:
            handle.close()


def deepchecks_suite(replay: Any, rows: pd.DataFrame, scores: npt.NDArray[np.float64]) -> float:
    """Seconds of a bare Deepchecks drift suite (its checks' defaults) on the rows against the reference."""
    from deepchecks.tabular import Dataset, Suite  # type: ignore[import-untyped]
    from deepchecks.tabular.checks import (  # type: ignore[import-untyped]
        FeatureDrift,
        LabelDrift,
        MultivariateDrift,
        PredictionDrift,
    )

    from gitml.stages.deepchecks import class_names, quiet

    schema = replay["bundle"].schema
    names = replay["names"]
    categorical = [c for c in names if schema.column(c).output_dtype not in ("integer", "float")]
    negative, positive = class_names(schema)
    label = schema.label.name
    reference = replay["reference"]

    def dataset(frame: pd.DataFrame, labels: Any) -> Any:
        data = frame[names].assign(
            **{label: np.where(np.asarray(labels, dtype=object) == schema.positive_class, positive, negative)}
        )
        return Dataset(data, label=label, cat_features=categorical, label_type="binary")

    with quiet():
        ref = dataset(reference.frame, reference.labels)
        prod = dataset(rows, rows[scenarios.FEEDBACK].to_numpy(dtype=object))
        suite = Suite("drift", FeatureDrift(), MultivariateDrift(), PredictionDrift(), LabelDrift())
        started = time.perf_counter()
        suite.run(
            ref, prod, model_classes=[negative, positive],
            y_proba_train=np.column_stack([1 - reference.scores, reference.scores]),
            y_proba_test=np.column_stack([1 - scores, scores]),
        )  # fmt: skip
        return time.perf_counter() - started


def gitml_drift(root: Path, logs: Path, out: Path) -> tuple[float, float, dict[str, Any]]:
    """Seconds of the drift command in this process and as a new process, and its drift.json."""
    import argparse

    from gitml.errors import ExitStatus
    from gitml.monitor import command

    since, until = START.strftime("%Y-%m-%dT%H:%M:%SZ"), (START + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    args = argparse.Namespace(logs=str(logs), data=None, since=since, until=until, out=out, no_html=False)
    paths = Paths(root)
    with contextlib.suppress(ExitStatus):  # once to import what it imports; drift (exit 1) is an outcome
        command.cmd_drift(paths, args)
    started = time.perf_counter()
    with contextlib.suppress(ExitStatus):
        command.cmd_drift(paths, args)
    inside = time.perf_counter() - started
    gitml = Path(sys.executable).with_name("gitml")
    argv = [str(gitml), "--root", str(root), "drift", "--logs", str(logs), "--since", since, "--until", until]
    started = time.perf_counter()
    done = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, check=False)
    shell = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(f"gitml drift failed ({done.returncode}): {done.stderr}")
    return inside, shell, json.loads((out / "drift.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path())
    parser.add_argument("--rows", default="48842,1000000")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    paths = Paths(args.root.resolve())
    bundle = drift.load_bundle(paths)
    schema = bundle.schema
    pool = pd.concat([pd.read_parquet(paths.split_file(s)) for s in ("val", "test")], ignore_index=True)
    names = drift.request_names(schema)
    replay = {"bundle": bundle, "names": names, "reference": drift.reference(paths, bundle)}
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    for n in (int(x) for x in args.rows.split(",")):
        rows = scenarios.draw(pool, n, scenarios.parse("none", schema), schema, np.random.default_rng(0))
        scores = drift.score(bundle, rows[names])
        with tempfile.TemporaryDirectory() as tmp:
            logs = Path(tmp) / "logs"
            write_logs(
                logs,
                rows[[*names, schema.label.name, scenarios.FEEDBACK]],
                scores,
                bundle.threshold.value,
                schema.label.name,
            )
            size = sum(p.stat().st_size for p in logs.iterdir())
            ours, shell, report = gitml_drift(paths.root, logs, Path(tmp) / "out")
        row: dict[str, Any] = {
            "log_mb": round(size / 1e6, 1),
            "gitml_drift_s": round(ours, 2),
            "from_the_shell_s": round(shell, 1),
            "verdict": report["verdict"],
            "drifted": report["drifted"],
        }
        if n <= 100_000:
            bare = deepchecks_suite(replay, rows, scores)
            row |= {"deepchecks_s": round(bare, 2), "ratio": round(ours / bare, 2), "goal": "<= 1.5"}
        else:
            row |= {"goal": "<= 60 s"}
        results[str(n)] = row
        print(f"{n:>9,} rows: {json.dumps(row)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
