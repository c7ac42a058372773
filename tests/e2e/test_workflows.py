"""The GitHub workflows pass the linters CI runs on them, and those linters do catch mistakes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    # Each pinned SHA says which release it is, for the reader and for update tools.
    for line in workflow.read_text().splitlines():
        if re.search(r"uses:\s*[\w-][\w.-]*/", line):
            assert re.search(r"@[0-9a-f]{40}\s+#\s*v\d+(\.\d+)*\s*$", line), line


def test_the_linters_catch_a_bad_workflow(tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BAD_WORKFLOW)
    found = zizmor(bad)
    assert found.returncode != 0
    for audit in ("unpinned-uses", "dangerous-triggers", "template-injection"):
        assert audit in found.stdout, found.stdout
    assert actionlint(bad).returncode != 0


def load(name: str) -> dict[str, Any]:
    path = WORKFLOWS[0].parent / name
    raw: dict[Any, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    spec: dict[str, Any] = {("on" if key is True else str(key)): value for key, value in raw.items()}
    return spec


def test_called_workflows_are_this_repositorys_own() -> None:
    """A job that calls a workflow calls one in this repository, at the same commit."""
    for workflow in WORKFLOWS:
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            if "uses" in job:
                assert job["uses"].startswith("./.github/workflows/"), (workflow.name, job["uses"])
                assert (workflow.parent.parent.parent / job["uses"]).is_file(), job["uses"]


def test_no_workflow_runs_fork_code_with_a_write_token() -> None:
    """No pull_request_target anywhere; a workflow a pull request starts passes no secret wholesale.
    The release workflows pass theirs on (deploy.yml reads its environment's KUBECONFIG) and run
    only for main or by hand, never for a pull request's code."""
    for workflow in WORKFLOWS:
        text = workflow.read_text()
        assert "pull_request_target" not in text, workflow.name
        if "secrets: inherit" in text:
            triggers = load(workflow.name)["on"]
            assert set(triggers) <= {"push", "workflow_dispatch", "workflow_call"}, workflow.name
            assert triggers.get("push") in (None, {"branches": ["main"]}), workflow.name


def test_the_release_workflows_run_for_main_or_by_hand() -> None:
    """A merge to main releases; deploy.yml is called by release.yml or run by hand; promote.yml by hand."""
    assert load("release.yml")["on"] == {"push": {"branches": ["main"]}}
    assert set(load("deploy.yml")["on"]) == {"workflow_call", "workflow_dispatch"}
    assert set(load("promote.yml")["on"]) == {"workflow_dispatch"}
    for name in ("release.yml", "deploy.yml", "promote.yml"):
        spec = load(name)
        assert spec["permissions"] == {}, name
        assert spec["concurrency"]["cancel-in-progress"] is False, name  # never stop a rollout halfway
    # The deploy job runs in the environment it deploys to: that environment's secrets and rules.
    (job,) = load("deploy.yml")["jobs"].values()
    assert job["environment"]["name"] == "${{ inputs.environment }}"
    # Both environments are deployed by calling deploy.yml, not by a tag (a tag pushed with
    # GITHUB_TOKEN starts no workflow).
    calls = {job["with"]["environment"]: job for job in load("release.yml")["jobs"].values() if "uses" in job}
    assert set(calls) == {"staging", "prod"}
    assert {job["uses"] for job in calls.values()} == {"./.github/workflows/deploy.yml"}


def test_the_pull_request_pipeline_keeps_forks_off_runners_and_secrets() -> None:
    """Every runner choice, secret and write right pr.yml passes depends on the branch being this repository's."""
    spec = load("pr.yml")
    assert spec["on"] == {"pull_request": None}
    assert spec["permissions"] == {}
    assert spec["concurrency"]["cancel-in-progress"] is True
    assert "pull_request.number" in spec["concurrency"]["group"]
    job = spec["jobs"]["pipeline"]
    same = "github.event.pull_request.head.repo.full_name == github.repository"
    for key in ("runs-on", "trainer", "timeout-minutes", "same-repository"):
        assert same in job["with"][key], key
    assert job["with"]["runs-on"].endswith("""|| '"ubuntu-latest"' }}""")
    for name, value in job["secrets"].items():
        assert value.startswith("${{ " + same + " && secrets."), name
        assert value.endswith("|| '' }}"), name


def test_the_pipeline_job_runs_its_steps_in_the_order_the_gate_needs() -> None:
    """Reproduce and push before the gate; the report is posted before the verdict can fail the job."""
    job = load("pipeline.yml")["jobs"]["pipeline"]
    names = [step.get("name", step.get("uses", "")) for step in job["steps"]]
    runs = [step.get("run", "") for step in job["steps"]]

    def index(fragment: str) -> int:
        return next(i for i, run in enumerate(runs) if fragment in run)

    order = ["make install", "dvc repro", "dvc push", "gitml gate", "gitml report", "cml comment update"]
    positions = [runs.index(f) if f == "gitml gate" else index(f) for f in order]
    assert positions == sorted(positions), dict(zip(order, positions, strict=True))
    assert runs.index("gitml gate --check") > positions[-1]
    upload = next(i for i, step in enumerate(job["steps"]) if "upload-artifact" in step.get("uses", ""))
    assert positions[-1] < upload < runs.index("gitml gate --check")
    assert job["steps"][upload]["if"] == "always()"
    checkout = next(step for step in job["steps"] if "actions/checkout" in step.get("uses", ""))
    assert checkout["with"]["fetch-depth"] == 0
    assert checkout["with"]["persist-credentials"] is False
    assert names[0] == "NVIDIA driver"
    assert job["permissions"] == {"contents": "read", "pull-requests": "write"}


def test_the_trainer_check_passes_the_selected_trainer_and_stops_another(repo: Path) -> None:
    """pipeline.yml's TRAINER step runs `gitml params --check trainer=<TRAINER>`: it holds only
    for the trainer conf/config.yaml selects (the committed params are the ones that train)."""
    job = load("pipeline.yml")["jobs"]["pipeline"]
    step = next(s for s in job["steps"] if s.get("if") == "env.TRAINER != ''")
    assert 'gitml params --check "trainer=$TRAINER"' in step["run"]
    selected = yaml.safe_load((repo / "params.yaml").read_text())["trainer"]
    others = [p.stem for p in (repo / "conf" / "trainer").glob("*.yaml")]
    for name in others:
        composed = yaml.safe_load((repo / "conf" / "trainer" / f"{name}.yaml").read_text())
        done = lint(BIN / "gitml", "--root", repo, "params", "--check", f"trainer={name}")
        same = composed == selected
        assert (done.returncode == 0) == same, (name, done.stderr)
    assert any(lint(BIN / "gitml", "--root", repo, "params", "--check", f"trainer={n}").returncode for n in others)
