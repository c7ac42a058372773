"""The deploy and promote jobs install the `release` extra alone (gitml's core and GTO): the
release subcommands must run without the pipeline's or the server's packages.

A subprocess refuses to import any of them (a meta-path finder raises ImportError), then runs the
subcommands the deploy job runs, on this repository.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO

# Installed by the pipeline or serve extras, never by the release one.
ABSENT = (
    "torch", "lightning", "pandas", "pyarrow", "sklearn", "deepchecks", "matplotlib", "dvc",
    "onnx", "onnxruntime", "fastapi", "uvicorn", "prometheus_client", "orjson", "hydra",
)  # fmt: skip

RUNNER = """
import importlib.abc, sys
ABSENT = set(sys.argv[1].split(","))

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ImportError(f"{name} is not in the release extra")
        return None

sys.meta_path.insert(0, Refuse())
from gitml.cli import main
sys.exit(main(sys.argv[2:]))
"""


def gitml_without_the_other_extras(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", RUNNER, ",".join(ABSENT), *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)


def test_the_release_extra_is_gto_alone() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["release"] == ["gto>=1.7"]
    assert all(not d.startswith(("torch", "pandas", "fastapi")) for d in project["dependencies"])


@pytest.mark.parametrize(
    "args",
    [
        ("overlay", "staging"),
        ("overlay", "prod", "--image"),
        ("render", "--help"),
        ("smoke", "--help"),
        ("assign", "--help"),
        ("lineage", "--help"),
        ("promotion", "--help"),
    ],
)
def test_the_deploy_jobs_subcommands_run_without_the_pipeline_or_the_server(args: tuple[str, ...]) -> None:
    done = gitml_without_the_other_extras(*args)
    assert done.returncode == 0, done.stderr
    assert "is not in the release extra" not in done.stderr


def test_the_refusal_is_real() -> None:
    """The same runner, asked for a pipeline stage, fails on the refused import: the check bites."""
    done = gitml_without_the_other_extras("evaluate")
    assert done.returncode != 0
    assert "is not in the release extra" in done.stderr
