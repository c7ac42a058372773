"""The run log: stage times stay out of every tracked output, and the summary and report read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitml.cli import main
from gitml.paths import Paths
from gitml.runlog import latest_parts, latest_seconds, record
from tests.conftest import toy_rows, write_csv, write_toy_params


def test_latest_successful_run_of_each_stage_in_the_order_they_ran(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    record(paths, "train", 5.0, "ok")
    record(paths, "ingest", 1.25, "ok")
    record(paths, "train", 7.0, "failed")
    record(paths, "train", 3.5, "ok")
    assert latest_seconds(paths) == {"ingest": 1.25, "train": 3.5}
    lines = [json.loads(line) for line in paths.run_log.read_text().splitlines()]
    assert {"stage", "status", "seconds", "finished", "host"} <= set(lines[0])


def test_a_stage_may_time_its_parts(tmp_path: Path) -> None:
    """The baselines stage records each fit with its own time; the latest successful run's parts count."""
    paths = Paths(tmp_path)
    record(paths, "baselines", 4.0, "ok", {"logistic_regression": 0.5, "gradient_boosting": 2.25})
    record(paths, "baselines", 9.0, "failed", {"logistic_regression": 9.0})
    record(paths, "train", 3.0, "ok")
    assert latest_parts(paths, "baselines") == {"logistic_regression": 0.5, "gradient_boosting": 2.25}
    assert latest_parts(paths, "train") == {}
    assert latest_seconds(paths) == {"baselines": 4.0, "train": 3.0}


def test_a_cut_or_foreign_line_is_skipped(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    record(paths, "split", 2.0, "ok")
    with paths.run_log.open("a") as log:
        log.write('{"stage": "train", "sec')  # a process killed mid-line
        log.write("\n[1, 2]\n")
    assert latest_seconds(paths) == {"split": 2.0}
    assert latest_seconds(Paths(tmp_path / "elsewhere")) == {}


def test_an_unwritable_log_never_fails_the_stage(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("a file where the log folder should be")
    record(Paths(tmp_path), "ingest", 1.0, "ok")  # no exception
    assert latest_seconds(Paths(tmp_path)) == {}


@pytest.mark.usefixtures("toy_key")
def test_stage_commands_log_their_time_and_write_none_into_their_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows())
    write_toy_params(tmp_path)
    assert main(["--root", str(tmp_path), "ingest"]) == 0
    assert main(["--root", str(tmp_path), "split"]) == 0
    (tmp_path / "params.yaml").write_text("data: {}\n")
    assert main(["--root", str(tmp_path), "ingest"]) == 1  # a config mistake: logged as failed
    capsys.readouterr()
    entries = [json.loads(line) for line in Paths(tmp_path).run_log.read_text().splitlines()]
    assert [(e["stage"], e["status"]) for e in entries] == [("ingest", "ok"), ("split", "ok"), ("ingest", "failed")]
    for report in ("ingest.json", "split.json"):
        text = (tmp_path / "reports" / report).read_text()
        assert "seconds" not in text
        assert entries[0]["host"] not in text
    # Commands that are not stages (the summary, the gate) leave the log alone.
    main(["--root", str(tmp_path), "summary"])
    assert len(Paths(tmp_path).run_log.read_text().splitlines()) == 3


def test_the_summary_ends_with_each_stages_time(repo: Path, tmp_path: Path) -> None:
    import shutil

    from gitml.summary import pipeline_summary

    shutil.copytree(repo / "reports", tmp_path / "reports")
    paths = Paths(tmp_path)
    without = pipeline_summary(paths)
    assert "took" not in without
    record(paths, "ingest", 3.21, "ok")
    record(paths, "train", 7.94, "ok")
    summary = pipeline_summary(paths)
    assert summary.startswith(without)
    assert summary.splitlines()[-1] == "  took        ingest 3.2 s | train 7.9 s (logs/stages.jsonl)"
