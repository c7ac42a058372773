"""The real pipeline on the bundled Adult data, run by DVC in a scratch copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

# What a stage can read: everything else of the repository is left behind.
PIPELINE_FILES = ("dvc.yaml", "params.yaml", "conf", "data/raw", "src", ".dvc/config", ".dvcignore", ".gitignore")


# A CI runner may have no git identity, and a developer may sign commits: neither is under test.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "gitml tests",
    "GIT_AUTHOR_EMAIL": "tests@gitml.invalid",
    "GIT_COMMITTER_NAME": "gitml tests",
    "GIT_COMMITTER_EMAIL": "tests@gitml.invalid",
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "commit.gpgsign",
    "GIT_CONFIG_VALUE_0": "false",
}


def run(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def outs_of(lock: dict[str, Any]) -> dict[str, str]:
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


@pytest.fixture(scope="module")
def pipeline(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository holding the pipeline's files, reproduced once."""
    work = tmp_path_factory.mktemp("pipeline")
    for name in PIPELINE_FILES:
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)
    (work / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    run(work, "git", "init", "-q", "-b", "main")
    run(work, "git", "add", "-A")
    run(work, "git", "commit", "-qm", "pipeline")
    # The remote a fresh clone would use is a folder beside it; point this copy at its own.
    run(work, "dvc", "remote", "modify", "--local", "local", "url", str(work.parent / "remote"))
    run(work, "dvc", "repro")
    return work


def test_ingest_accounts_for_every_row(pipeline: Path) -> None:
    report = json.loads((pipeline / "reports" / "ingest.json").read_text())
    assert report["rows_read"] == 48_842
    assert report["files"]["data/raw/adult.data.gz"]["rows"] == 32_561
    assert report["files"]["data/raw/adult.test.gz"]["rows"] == 16_281
    assert report["rows_clean"] + report["rows_quarantined"] == 48_842
    assert report["quarantined_by_reason"] == {"duplicate_row": report["rows_quarantined"]}
    quarantined = (pipeline / "data" / "interim" / "quarantine.csv").read_text().splitlines()
    assert len(quarantined) - 1 == report["rows_quarantined"]
    split = json.loads((pipeline / "reports" / "split.json").read_text())
    assert sum(split[n]["rows"] for n in ("train", "val", "test")) == report["rows_clean"]


def test_second_repro_does_nothing_and_status_is_clean(pipeline: Path) -> None:
    assert "Data and pipelines are up to date" in run(pipeline, "dvc", "repro")
    assert "Data and pipelines are up to date" in run(pipeline, "dvc", "status")


def test_committed_lock_and_metrics_match_the_reproduction(repo: Path, pipeline: Path) -> None:
    """dvc.lock and the metrics in git are what this code makes from this data, byte for byte."""
    committed = yaml.safe_load((repo / "dvc.lock").read_text())
    reproduced = yaml.safe_load((pipeline / "dvc.lock").read_text())
    assert outs_of(reproduced) == outs_of(committed), "outputs differ: run `make run`, commit dvc.lock and reports/"
    assert reproduced == committed, "dvc.lock is stale (code, params or data changed): run `make run` and commit it"
    for metrics in ("reports/ingest.json", "reports/split.json"):
        assert (pipeline / metrics).read_bytes() == (repo / metrics).read_bytes(), metrics


def test_forced_rerun_gives_identical_outputs(pipeline: Path) -> None:
    before = (pipeline / "dvc.lock").read_text()
    run(pipeline, "dvc", "repro", "--force")
    assert (pipeline / "dvc.lock").read_text() == before


def test_push_and_pull_round_trip(pipeline: Path) -> None:
    run(pipeline, "dvc", "push")
    stages = yaml.safe_load((pipeline / "dvc.yaml").read_text())["stages"]
    expected = [out for stage in stages.values() for out in stage["outs"]]  # cached; metrics live in git
    originals = {path: (pipeline / path).read_bytes() for path in expected}
    shutil.rmtree(pipeline / ".dvc" / "cache")
    for path in expected:
        (pipeline / path).unlink()
    run(pipeline, "dvc", "pull")
    for path, data in originals.items():
        assert (pipeline / path).read_bytes() == data, path
    assert "Data and pipelines are up to date" in run(pipeline, "dvc", "status")


def test_a_split_param_reruns_split_only(pipeline: Path) -> None:
    """`dvc exp run -S` composes conf/ with the override (DVC's Hydra integration)."""
    out = run(pipeline, "dvc", "exp", "run", "-S", "split.seed=7")
    assert "Running stage 'split'" in out
    assert "Running stage 'ingest'" not in out
    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    assert params["split"]["seed"] == 7
    shown = json.loads(run(pipeline, "dvc", "exp", "show", "--json"))
    baseline = next(row for row in shown if row["rev"] != "workspace")
    seeds = [
        rev["data"]["params"]["params.yaml"]["data"]["split"]["seed"]
        for exp in baseline["experiments"]
        for rev in exp["revs"]
    ]
    assert baseline["data"]["params"]["params.yaml"]["data"]["split"]["seed"] == 42
    assert seeds == [7]
