"""The GitHub workflows pass the linters CI runs on them, and those linters do catch mistakes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent
WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / ".github" / "workflows").glob("*.y*ml"))

# A workflow with the mistakes the linters exist for: an action on a movable tag, a trigger that
# runs fork code with secrets, and an attacker-controlled title expanded into a shell script.
BAD_WORKFLOW = """\
name: bad
on: pull_request_target
permissions: write-all
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
"""


def lint(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    return lint(BIN / "actionlint", f"-shellcheck={BIN / 'shellcheck'}", path)


def zizmor(path: Path) -> subprocess.CompletedProcess[str]:
    return lint(BIN / "zizmor", "--offline", path)


def test_there_are_workflows() -> None:
    assert [p.name for p in WORKFLOWS] == sorted(p.name for p in WORKFLOWS)
    assert "test.yml" in [p.name for p in WORKFLOWS]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_is_silent(workflow: Path) -> None:
    result = actionlint(workflow)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_zizmor_finds_nothing(workflow: Path) -> None:
    result = zizmor(workflow)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_matches_githubs_schema(workflow: Path) -> None:
    result = lint(BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", workflow)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_and_pinned_actions(workflow: Path) -> None:
    spec = yaml.safe_load(workflow.read_text())
    assert isinstance(spec.get("permissions"), dict), "set top-level permissions explicitly"
    assert "write-all" not in workflow.read_text()
    for job in spec["jobs"].values():
        for step in job.get("steps", []):
            if "uses" in step and not step["uses"].startswith("./"):
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), step["uses"]


def test_the_linters_catch_a_bad_workflow(tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BAD_WORKFLOW)
    found = zizmor(bad)
    assert found.returncode != 0
    for audit in ("unpinned-uses", "dangerous-triggers", "template-injection"):
        assert audit in found.stdout, found.stdout
    assert actionlint(bad).returncode != 0
