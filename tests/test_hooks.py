"""pre-commit runs the project's pinned tools, offline: every hook is local and its program exists."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def hooks(repo: Path) -> list[dict[str, Any]]:
    config = yaml.safe_load((repo / ".pre-commit-config.yaml").read_text())
    assert {r["repo"] for r in config["repos"]} == {"local"}, "hook repositories cannot be cloned offline"
    return [hook for r in config["repos"] for hook in r["hooks"]]


def test_every_hook_runs_a_program_from_the_virtualenv(repo: Path) -> None:
    venv_bin = Path(sys.executable).parent
    for hook in hooks(repo):
        program = Path(shlex.split(hook["entry"])[0])
        assert program.parts[:2] == (".venv", "bin"), hook["id"]
        assert (venv_bin / program.name).is_file(), f"{hook['id']}: {program.name} is not installed"


def test_the_checks_make_lint_promises_are_there(repo: Path) -> None:
    ids = {hook["id"] for hook in hooks(repo)}
    assert {
        "ruff-check",
        "ruff-format",
        "mypy",
        "check-yaml",
        "end-of-file-fixer",
        "trailing-whitespace",
        "check-added-large-files",
        "actionlint",
        "zizmor",
        "check-github-workflows",
        "params-in-sync",
        "dvc-pre-commit",
        "dvc-pre-push",
        "dvc-post-checkout",
    } <= ids


def test_config_is_valid(repo: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "pre-commit"), "validate-config", ".pre-commit-config.yaml"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
