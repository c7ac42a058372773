"""The pipeline reproduced once on the bundled data, shared by the end-to-end tests.

`tests/e2e/test_pipeline.py` examines and changes a copy of it; the workflow tests
(`test_pr_workflow.py`, `test_release_workflow.py`, `test_drift_workflow.py`) start from its
git-tracked outputs and a copy of the DVC remote it was pushed to, as a team's main branch would be
after `make run`, commit and `dvc push`.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gitml.scratch import make_scratch_repo, scratch_env
from tests.conftest import once_per_run
from tests.e2e.act import GitHub, make_github, seed_venv


def run(cwd: Path, *args: str) -> str:
    """Run a command in a scratch repository with its tools on PATH; its output, or a failed test."""
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, env=scratch_env())
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@dataclass(frozen=True)
class Reproduction:
    """The files git tracks after `dvc repro` (dvc.lock, metrics, curves) and the remote holding the rest."""

    tracked: Path  # a copy of dvc.lock and of every `cache: false` output, at their repository paths
    remote: Path  # a DVC remote (a folder) holding every cached output


def tracked_outputs(repo: Path) -> list[str]:
    """dvc.lock and the outputs dvc.yaml keeps in git (`cache: false`), as paths in the repository."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    paths = ["dvc.lock"]
    for stage in stages.values():
        for out in [*stage.get("outs", []), *stage.get("metrics", [])]:
            if isinstance(out, dict):
                (path, options), *_ = out.items()
                if options.get("cache") is False:
                    paths.append(path)
    return paths


def reproduce(repo: Path, root: Path) -> tuple[Path, Reproduction]:
    """The pipeline reproduced in root/pipeline and pushed to root/remote; its git-tracked outputs in root/tracked."""
    work, remote, tracked = root / "pipeline", root / "remote", root / "tracked"
    work.mkdir(parents=True)
    make_scratch_repo(repo, work)
    # The remote a fresh clone would use is a folder beside it; point this copy at its own.
    run(work, "dvc", "remote", "modify", "--local", "local", "url", str(remote))
    run(work, "dvc", "repro")
    run(work, "dvc", "push")
    for path in tracked_outputs(work):
        source, target = work / path, tracked / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return work, Reproduction(tracked, remote)


@pytest.fixture(scope="session")
def reproduced(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Reproduction]:
    """A git + DVC repository holding the pipeline's files, reproduced once per test run and pushed
    (shared by the pytest-xdist workers); read, never changed."""
    root = once_per_run(tmp_path_factory, "reproduced", lambda root: reproduce(repo, root))
    return root / "pipeline", Reproduction(root / "tracked", root / "remote")


# The bundled example, whose own promises (its row counts, the default model's targets on it)
# some tests check whatever dataset conf/ selects.
BUNDLED = "adult"


def reproduce_bundled(repo: Path, root: Path) -> None:
    """The pipeline on the bundled example in root/pipeline: params.yaml composed with data=adult."""
    work = root / "pipeline"
    work.mkdir(parents=True)
    make_scratch_repo(repo, work)
    run(work, "gitml", "params", f"data={BUNDLED}")
    run(work, "dvc", "repro")


@pytest.fixture(scope="session")
def bundled(repo: Path, reproduced: tuple[Path, Reproduction], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline reproduced on the bundled example whatever conf/ selects: the shared
    reproduction itself where the bundled example is selected (as shipped), else one of its own
    (once per run); read, never changed."""
    work, _ = reproduced
    if yaml.safe_load((work / "params.yaml").read_text(encoding="utf-8"))["data"]["name"] == BUNDLED:
        return work
    return once_per_run(tmp_path_factory, "bundled", lambda root: reproduce_bundled(repo, root)) / "pipeline"


@pytest.fixture(scope="session")
def pipeline(reproduced: tuple[Path, Reproduction], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the reproduction, with a copy of its remote, for tests that change them."""
    work, reproduction = reproduced
    root = tmp_path_factory.mktemp("pipeline")
    copy, remote = root / "pipeline", root / "remote"
    shutil.copytree(work, copy, symlinks=True, ignore=shutil.ignore_patterns("tmp"))  # .dvc/tmp: DVC's locks, state
    shutil.copytree(reproduction.remote, remote)
    run(copy, "dvc", "remote", "modify", "--local", "local", "url", str(remote))
    return copy


def new_github(repo: Path, reproduction: Reproduction, root: Path) -> GitHub:
    """A stand-in GitHub in `root`: main as a team has it after `make run`, commit and `dvc push`,
    and one self-hosted runner's kept virtualenv (GITML_VENV) for every run, holding the pipeline's
    packages (see seed_venv) but not gitml, which the first run's `make install` adds."""
    remote = root / "remote"  # a copy: the runs push to it
    shutil.copytree(reproduction.remote, remote)
    seed_venv(root / "venv", ["pipeline"])
    gh = make_github(repo, root, remote, tracked=reproduction.tracked, venv=root / "venv")
    # Byte-compiling the 2 GB environment is most of a warm-cache install; Python compiles what it imports.
    gh.env["PIP_NO_COMPILE"] = "1"
    return gh


@pytest.fixture(scope="session")
def github(repo: Path, reproduced: tuple[Path, Reproduction], tmp_path_factory: pytest.TempPathFactory) -> GitHub:
    """The stand-in GitHub the pull-request and release stories share (one per worker)."""
    return new_github(repo, reproduced[1], tmp_path_factory.mktemp("github"))
