"""dvc.yaml and src/gitml/paths.py name the same files, and every stage calls a real subcommand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gitml.cli import COMMANDS
from gitml.paths import Paths


@pytest.fixture(scope="module")
def stages(repo: Path) -> dict[str, Any]:
    stages: dict[str, Any] = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return stages


def _outs(stage: dict[str, Any]) -> set[str]:
    listed = stage.get("outs", []) + stage.get("metrics", [])
    return {next(iter(o)) if isinstance(o, dict) else o for o in listed}


def test_stage_outputs_are_the_paths_the_code_writes(stages: dict[str, Any]) -> None:
    paths = Paths(Path())
    assert _outs(stages["ingest"]) == {str(paths.clean), str(paths.quarantine), str(paths.ingest_report)}
    assert _outs(stages["split"]) == {
        *(str(paths.split_file(n)) for n in ("train", "val", "test", "reference")),
        str(paths.split_report),
    }
    assert str(paths.clean) in stages["split"]["deps"]


def test_every_stage_calls_a_gitml_subcommand(stages: dict[str, Any]) -> None:
    for name, stage in stages.items():
        program, command = stage["cmd"].split()[:2]
        assert program == "gitml", name
        assert command in COMMANDS, name


def test_every_source_dependency_exists(repo: Path, stages: dict[str, Any]) -> None:
    for name, stage in stages.items():
        for dep in stage["deps"]:
            if dep.startswith("src/"):
                assert (repo / dep).is_file(), f"{name} depends on missing {dep}"


def test_ingest_depends_on_every_module_it_imports(repo: Path, stages: dict[str, Any]) -> None:
    """A code change that can alter the clean table must re-run ingest."""
    deps = set(stages["ingest"]["deps"])
    for module in ("ingest", "raw", "validate", "anonymize", "pii", "schema"):
        assert f"src/gitml/data/{module}.py" in deps
    assert "src/gitml/io.py" in deps  # how outputs are written is part of their bytes
    assert "src/gitml/checked_config.py" in deps
