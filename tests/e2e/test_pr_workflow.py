"""pr.yml, run by act on this machine: a pull request reproduced, gated and reported, offline.

GitHub is the outer boundary these tests cannot reach; tests/e2e/act.py runs the workflow with
act against stand-ins for it (its git server, four remote actions, the CML command line) and
runs everything else for real. The repository starts as a team's would after `make run`, a
commit and `dvc push`: main holds the template with the reproduced dvc.lock, and the DVC remote
holds the outputs (tests/e2e/conftest.py reproduces the pipeline once for all the end-to-end tests).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.act import BIN, JOB, GitHub, Run, open_pull_request, run_pr_workflow

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflows")]


def assert_job_ran(run: Run) -> None:
    assert f"{JOB}] ⭐ Run Set up job" in run.log, f"the pipeline job did not run:\n{run.log[-3000:]}"


def step_ran(run: Run, name: str) -> bool:
    return f"{JOB}] ⭐ Run Main {name}" in run.log


NO_DRIVER = "install the NVIDIA driver on the runner"


def stopped_by_the_driver_check(start: Callable[[], Run]) -> Run:
    """A run that the driver check stops, with its error in the log.

    act runs a host step on a pseudo-terminal and can drop the output of a step that exits within
    milliseconds of printing, as this one does; such a run is started again, at most twice. Every
    run must have stopped at the driver check, and one must show its error."""
    for _ in range(3):
        run = start()
        assert f"{JOB}]   ❌  Failure - Main NVIDIA driver" in run.log, run.log[-3000:]
        if NO_DRIVER in run.log:
            return run
    raise AssertionError(f"the driver check's error never reached the log:\n{run.log[-3000:]}")


def origin_head(gh: GitHub, ref: str) -> str:
    return gh.git(gh.origin, "rev-parse", ref)


def regenerate_params(repo: Path) -> None:
    """What an author does after editing conf/: compose params.yaml (the pipeline checks it is in sync)."""
    done = subprocess.run([str(BIN / "gitml"), "params"], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def change_export_tolerance(repo: Path) -> None:
    """A params change that re-runs a stage (export), committed without its reproduction."""
    config = repo / "conf" / "config.yaml"
    text = config.read_text()
    current = yaml.safe_load(text)["export"]["parity_tolerance"]
    changed = re.sub(r"(?m)^(  parity_tolerance:).*$", rf"\g<1> {current * 10:g}", text)
    assert changed != text
    config.write_text(changed)
    regenerate_params(repo)


def lock_of(gh: GitHub, ref: str) -> dict[str, Any]:
    lock: dict[str, Any] = yaml.safe_load(gh.git(gh.origin, "show", f"{ref}:dvc.lock"))
    return lock


def test_a_passing_pull_request_is_reported_and_green(github: GitHub) -> None:
    def edit_docs(repo: Path) -> None:
        (repo / "README.md").write_text((repo / "README.md").read_text() + "\nA line of documentation.\n")

    pr = open_pull_request(github, 1, edit_docs, "docs: one more line")
    run = run_pr_workflow(github, pr)
    assert_job_ran(run)
    assert run.returncode == 0, run.log[-5000:]
    assert "Job succeeded" in run.log
    # Checked out at the head, with every branch and tag, and no token left behind.
    checkout = (run.record / "checkout.txt").read_text()
    assert f"head={pr.sha}" in checkout
    assert "fetch-depth=0" in checkout
    assert "persist-credentials=false" in checkout
    assert "cache=pip" in (run.record / "setup-python.txt").read_text()
    # The outputs of main's lock came from the DVC remote: nothing was trained again.
    assert "Data and pipelines are up to date" in run.log
    assert "Running stage" not in run.log
    # One comment, the report, verdict first; the same report kept as the run's artifact.
    (comment,) = run.comments()
    assert comment.splitlines()[0].startswith("### ✅ Gate passed")
    assert "comment update --target=pr" in (run.record / "cml.log").read_text()
    artifact = run.record / "artifacts" / "gitml-report" / "reports"
    assert (artifact / "report.md").read_text() == comment
    assert (artifact / "model_card.md").is_file()
    assert json.loads((artifact / "gate.json").read_text())["verdict"] == "pass"
    assert list((artifact / "deepchecks").glob("*.html"))
    assert list((artifact / "figures").glob("*.png"))
    # Nothing was pushed to the branch, and the NVIDIA check is only for GPU runners.
    assert origin_head(github, f"refs/heads/{pr.branch}") == pr.sha
    assert not step_ran(run, "NVIDIA driver")


def test_a_failing_gate_posts_the_report_then_fails_the_check(github: GitHub) -> None:
    def tighten(limits: dict[str, Any]) -> None:
        limits["decide_on"] = "estimate"
        for limit in limits.values():
            if isinstance(limit, dict) and "max" in limit:
                limit["max"] = 0.0

    def tighten_every_fairness_limit(repo: Path) -> None:
        # The generic default (every protected attribute not named) and the selected dataset's own.
        gates = repo / "conf" / "gates" / "default.yaml"
        config = yaml.safe_load(gates.read_text())
        tighten(config["fairness"]["default"])
        gates.write_text(yaml.safe_dump(config, sort_keys=False))
        name = yaml.safe_load((repo / "params.yaml").read_text())["data"]["name"]
        own = repo / "conf" / "dataset" / f"{name}.yaml"
        if own.is_file():
            text = own.read_text()
            overlay = yaml.safe_load(text)
            for limits in ((overlay.get("gates") or {}).get("fairness") or {}).get("attributes", {}).values():
                if limits:
                    tighten(limits)
            own.write_text(text.split("\n", 1)[0] + "\n" + yaml.safe_dump(overlay, sort_keys=False))  # keeps @package
        regenerate_params(repo)

    pr = open_pull_request(github, 2, tighten_every_fairness_limit, "gates: no fairness gap at all")
    run = run_pr_workflow(github, pr)
    assert_job_ran(run)
    assert run.returncode != 0
    assert "Job failed" in run.log
    # The limits are no stage's params: nothing re-ran, and the report was posted before the check failed.
    assert "Running stage" not in run.log
    (comment,) = run.comments()
    assert comment.splitlines()[0].startswith("### ❌ Gate failed")
    assert "fairness/" in comment
    assert step_ran(run, "The gate's verdict")
    assert re.search(r"gate: FAIL", run.log)
    assert (run.record / "artifacts" / "gitml-report" / "reports" / "report.md").is_file()


def test_a_stale_lock_is_reproduced_and_committed_back(github: GitHub) -> None:
    pr = open_pull_request(github, 3, change_export_tolerance, "export: a looser parity tolerance, lock not updated")
    before = lock_of(github, pr.sha)
    run = run_pr_workflow(github, pr, secrets={"GITML_BOT_TOKEN": "a-bot-token"})
    assert_job_ran(run)
    assert run.returncode == 0, run.log[-5000:]
    assert "Running stage 'export'" in run.log
    assert step_ran(run, "Push what the pipeline produced")
    # The reproduction is a new commit on the pull request's branch, on top of its head.
    head = origin_head(github, f"refs/heads/{pr.branch}")
    assert head != pr.sha
    assert github.git(github.origin, "rev-parse", f"{head}^") == pr.sha
    assert github.git(github.origin, "log", "-1", "--format=%an", head) == "gitml-bot"
    changed = github.git(github.origin, "diff", "--name-only", pr.sha, head).splitlines()
    assert "dvc.lock" in changed
    after = lock_of(github, head)
    params = yaml.safe_load(github.git(github.origin, "show", f"{head}:params.yaml"))
    assert after["stages"]["export"]["params"]["params.yaml"]["export"] == params["export"]
    assert after["stages"]["export"]["params"] != before["stages"]["export"]["params"]
    (comment,) = run.comments()
    assert "dvc.lock was stale" in comment.splitlines()[0]
    assert "Gate passed" in comment


def test_a_fork_never_gets_the_self_hosted_runner_or_a_secret(github: GitHub) -> None:
    """A fork's stale pull request, with a GPU runner configured and the bot secret set."""
    pr = open_pull_request(github, 4, change_export_tolerance, "a fork's change", head_repository="someone/gitml")
    refs_before = github.git(github.origin, "for-each-ref", "--format=%(refname) %(objectname)")
    run = run_pr_workflow(
        github, pr, variables={"TRAINING_RUNNER": '["self-hosted","gpu"]', "TRAINER": "gpu"},
        secrets={"GITML_BOT_TOKEN": "a-bot-token"},
    )  # fmt: skip
    # Only the hosted label is mapped here: had the job asked for the GPU runner, act would have skipped it.
    assert_job_ran(run)
    assert not step_ran(run, "NVIDIA driver")
    assert not step_ran(run, "Commit the reproduction back")
    assert not step_ran(run, "Push what the pipeline produced")  # no credentials for the team's remote
    assert github.git(github.origin, "for-each-ref", "--format=%(refname) %(objectname)") == refs_before
    # Without a write token the stale lock cannot be fixed here: the author is told what to run.
    assert run.returncode != 0
    assert "dvc.lock is stale" in run.log
    assert "make run" in run.log
    assert "dvc push" in run.log
    # A fork's GITHUB_TOKEN cannot comment: the report goes to the run's summary and artifact instead.
    assert run.comments() == []
    assert (run.record / "artifacts" / "gitml-report" / "reports" / "report.md").is_file()


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_a_gpu_trainer_on_a_runner_without_a_driver_stops_first(github: GitHub) -> None:
    """The driver check is the job's first step wherever a GPU is asked for: nothing else runs."""

    def edit_docs(repo: Path) -> None:
        (repo / "README.md").write_text((repo / "README.md").read_text() + "\nAnother line.\n")

    pr = open_pull_request(github, 5, edit_docs, "docs: another line")
    run = stopped_by_the_driver_check(lambda: run_pr_workflow(github, pr, variables={"TRAINER": "gpu"}))
    assert_job_ran(run)
    assert step_ran(run, "NVIDIA driver")
    assert run.returncode != 0
    assert not step_ran(run, "Check out the pull request's head")
    assert run.comments() == []


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_the_cloud_gpu_label_launches_a_runner_for_this_run_and_trains_there(github: GitHub) -> None:
    """cml-runner.yml: `cml runner launch` (recorded: the cloud is the boundary) registers a runner
    labelled with the run's id, and the pipeline job runs on that label and nowhere else."""

    def edit_docs(repo: Path) -> None:
        (repo / "README.md").write_text((repo / "README.md").read_text() + "\nTrain me on a GPU.\n")

    pr = open_pull_request(github, 6, edit_docs, "docs: a line, trained on a cloud GPU")
    # act's run id is 1: the label `cml runner launch` registers is the only one mapped besides the hosted one.
    run = stopped_by_the_driver_check(
        lambda: run_pr_workflow(
            github, pr, workflow="cml-runner.yml", action="labeled", label="cloud-gpu",
            secrets={"CML_RUNNER_TOKEN": "a-runner-token"}, runners=("ubuntu-latest", "cml-gpu-1"),
        )
    )  # fmt: skip
    launched = (run.record / "cml.log").read_text().splitlines()
    assert len(launched) == 1
    assert launched[0].startswith("runner launch --cloud=aws --cloud-region=us-west --cloud-type=g5.xlarge")
    assert "--labels=cml-gpu-1 --single" in launched[0]
    # The pipeline job ran on the launched runner; it is a GPU runner, so the driver check comes
    # first, and this machine has no driver.
    assert_job_ran(run)
    assert step_ran(run, "NVIDIA driver")
    assert run.returncode != 0
