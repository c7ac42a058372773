"""The typed stage outputs: one reader for each, one error for a missing or damaged file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gitml.errors import GitmlError
from gitml.outputs import CHECKS, FAIRNESS, GATE, INTERVALS, METRICS, Output
from gitml.paths import Paths

# The committed outputs of the repository (git holds them); reports/gate.json is not committed.
COMMITTED: dict[str, Output[Any]] = {
    "metrics": METRICS,
    "intervals": INTERVALS,
    "fairness": FAIRNESS,
    "deepchecks": CHECKS,
}


@pytest.fixture
def reports(repo: Path, tmp_path: Path) -> Paths:
    paths = Paths(tmp_path)
    for output in COMMITTED.values():
        target = output.where(paths)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(output.where(Paths(repo)), target)
    return paths


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_the_committed_outputs_read_back_as_written(reports: Paths, name: str) -> None:
    output: Output[Any] = COMMITTED[name]
    data = output.read(reports)
    assert data == json.loads(output.where(reports).read_text())
    output.write(reports, data)  # the writer gives the same bytes back
    assert output.where(reports).read_text() == json.dumps(data, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_a_missing_file_names_the_stage_to_run(reports: Paths, name: str) -> None:
    output: Output[Any] = COMMITTED[name]
    output.where(reports).unlink()
    with pytest.raises(GitmlError, match=rf"{output.where(reports).name}: not found; the {output.stage} stage has not"):
        output.read(reports)


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_each_required_key_is_checked(reports: Paths, name: str) -> None:
    output: Output[Any] = COMMITTED[name]
    path = output.where(reports)
    whole = json.loads(path.read_text())
    for key in output.required:
        path.write_text(json.dumps({k: v for k, v in whole.items() if k != key}))
        with pytest.raises(GitmlError, match=rf"{path.name}: `{key}` is missing or not what the {output.stage}"):
            output.read(reports)


@pytest.mark.parametrize(("text", "problem"), [("{", "not valid JSON"), ("[1]", "expected a JSON object")])
def test_a_damaged_file_is_one_clear_error(reports: Paths, text: str, problem: str) -> None:
    METRICS.where(reports).write_text(text)
    with pytest.raises(GitmlError, match=rf"metrics.json: {problem}"):
        METRICS.read(reports)


def test_the_gate_report_asks_for_the_gate(tmp_path: Path) -> None:
    with pytest.raises(GitmlError, match=r"gate.json: not found; the gate stage has not run. Run `gitml gate`"):
        GATE.read(Paths(tmp_path))
