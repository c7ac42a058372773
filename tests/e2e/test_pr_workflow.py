"""pr.yml, run by act on this machine: a pull request reproduced, gated and reported, offline.

GitHub is the outer boundary these tests cannot reach, so it has stand-ins (tests/e2e/github/):
its git server is a local bare repository that `https://github.com/gitml-test/gitml.git` is
mapped to (git's url.insteadOf, in the test's HOME); checkout, setup-python, setup-cml and
upload-artifact are local actions put in place of the pinned ones (`act --local-repository`);
and `cml` is a recorder of the comment it would post. Everything else runs for real, as on a
runner: act (host mode) reads the workflow files unchanged, `make install` installs from the
lock, DVC pulls from and pushes to a folder remote, the pipeline, `gitml gate`, `gitml report`.

The repository starts as a team's would after `make run`, a commit and `dvc push`: main holds
the template with the reproduced dvc.lock, and the remote holds the outputs
(tests/e2e/conftest.py reproduces the pipeline once for all the end-to-end tests).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Reproduction

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
STAND_INS = HERE / "github"
REPOSITORY = "gitml-test/gitml"
ORIGIN_URL = f"https://github.com/{REPOSITORY}.git"
# The job's name ends its lines' prefix in act's log ("[<caller job>/<workflow>/<job name>]").
JOB = "reproduce, gate, report"
# Each remote action the workflows pin, and the stand-in that replaces it.
REPLACED = {
    "actions/checkout": "checkout",
    "actions/setup-python": "setup-python",
    "iterative/setup-cml": "setup-cml",
    "actions/upload-artifact": "upload-artifact",
}
GIT_IDENTITY = ("-c", "user.name=A. Author", "-c", "user.email=author@gitml.invalid", "-c", "commit.gpgsign=false")


def pinned_actions(repo: Path) -> set[tuple[str, str]]:
    """(owner/name, sha) of every remote action the workflows use."""
    found = set()
    for workflow in (repo / ".github" / "workflows").glob("*.yml"):
        found |= set(re.findall(r"uses:\s*([\w.-]+/[\w.-]+)@([0-9a-f]{40})", workflow.read_text()))
    return found


@dataclass
class GitHub:
    """The stand-in world: a home with the git URL mapping, the bare origin, a seed clone to author in."""

    root: Path
    home: Path
    origin: Path
    seed: Path
    venv: Path
    env: dict[str, str]
    local_repositories: list[str]
    runs: int = 0

    def git(self, cwd: Path, *args: str) -> str:
        done = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=cwd, env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, f"git {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout.strip()


@dataclass(frozen=True)
class PullRequest:
    number: int
    branch: str
    sha: str
    head_repository: str


@dataclass(frozen=True)
class Run:
    returncode: int
    log: str
    record: Path

    def comments(self) -> list[str]:
        return [p.read_text() for p in sorted(self.record.glob("comment-*.md"))]


def project_files(repo: Path) -> list[str]:
    """What a fork of the template holds: tracked files and new ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    return [p for p in listed.split("\0") if p and (repo / p).is_file()]


def step_env(home: Path, record_root: Path) -> dict[str, str]:
    """The runner's environment: this machine's, with the test's HOME and no active virtualenv.

    pip reads its settings from the user's config and PIP_FIND_LINKS (where the CPU build of torch
    lies); under another HOME they are passed on explicitly, with the pip cache of the real one.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "VIRTUAL_ENV", "PYTEST", "COV_"))}
    real_home = Path(os.environ.get("HOME", "/root"))
    pip_conf = real_home / ".config" / "pip" / "pip.conf"
    if pip_conf.is_file() and "PIP_CONFIG_FILE" not in env:
        env["PIP_CONFIG_FILE"] = str(pip_conf)
    env.setdefault("PIP_CACHE_DIR", str(real_home / ".cache" / "pip"))
    # Byte-compiling the 2 GB environment is most of a warm-cache install; Python compiles what it imports.
    env.setdefault("PIP_NO_COMPILE", "1")
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != BIN]
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join([str(STAND_INS / "bin"), *path]),
        GITML_TEST_RECORD=str(record_root),
    )
    return env


@pytest.fixture(scope="module")
def github(repo: Path, reproduced: tuple[Path, Reproduction], tmp_path_factory: pytest.TempPathFactory) -> GitHub:
    _, reproduction = reproduced
    root = tmp_path_factory.mktemp("github")
    home, origin, seed = root / "home", root / "origin.git", root / "seed"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[url "{origin}"]\n\tinsteadOf = {ORIGIN_URL}\n[init]\n\tdefaultBranch = main\n')
    env = step_env(home, root / "records")
    for path in project_files(repo):
        (seed / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / path, seed / path)
    # main as a team has it after `make run`, commit and `dvc push`: the reproduced lock and metrics.
    shutil.copytree(reproduction.tracked, seed, dirs_exist_ok=True)
    gh = GitHub(root, home, origin, seed, root / "venv", env, [])
    gh.git(seed, "init", "-q", "-b", "main")
    # The team's DVC remote; the reproduction's outputs were pushed to it.
    remote = subprocess.run(
        [str(BIN / "dvc"), "remote", "modify", "local", "url", str(reproduction.remote)],
        cwd=seed, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    gh.git(seed, "add", "-A")
    gh.git(seed, "commit", "-qm", "gitml, reproduced")
    gh.git(root, "clone", "-q", "--bare", str(seed), str(origin))
    gh.git(seed, "remote", "add", "origin", ORIGIN_URL)
    gh.git(seed, "fetch", "-q", "origin")
    for action, sha in sorted(pinned_actions(repo)):
        if action in REPLACED:
            gh.local_repositories += ["--local-repository", f"{action}@{sha}={STAND_INS / REPLACED[action]}"]
    assert len(gh.local_repositories) == 2 * len(REPLACED), "a replaced action is no longer used, or moved"
    return gh


def open_pull_request(
    gh: GitHub, number: int, change: Callable[[Path], None], title: str, head_repository: str = REPOSITORY
) -> PullRequest:
    """Branch from main, change, commit, and push where GitHub keeps it (a fork's: refs/pull/N/head)."""
    branch = f"change-{number}"
    gh.git(gh.seed, "checkout", "-q", "-B", branch, "origin/main")
    change(gh.seed)
    gh.git(gh.seed, "add", "-A")
    gh.git(gh.seed, "commit", "-qm", title)
    sha = gh.git(gh.seed, "rev-parse", "HEAD")
    target = f"refs/heads/{branch}" if head_repository == REPOSITORY else f"refs/pull/{number}/head"
    gh.git(gh.seed, "push", "-q", "origin", f"HEAD:{target}")
    return PullRequest(number, branch, sha, head_repository)


def run_pr_workflow(
    gh: GitHub, pr: PullRequest, variables: dict[str, str] | None = None, secrets: dict[str, str] | None = None
) -> Run:
    """act runs pr.yml for `pr`, from a clone at its head, on the hosted-runner label only."""
    gh.runs += 1
    record = gh.root / "records" / f"run-{gh.runs}"
    record.mkdir(parents=True)
    clone = gh.root / f"runner-{gh.runs}"
    gh.git(gh.root, "clone", "-q", ORIGIN_URL, str(clone))
    gh.git(clone, "fetch", "-q", "origin", pr.sha)
    gh.git(clone, "checkout", "-q", "--detach", pr.sha)
    event = {
        "number": pr.number,
        "pull_request": {
            "number": pr.number,
            "head": {"ref": pr.branch, "sha": pr.sha, "repo": {"full_name": pr.head_repository}},
            "base": {"ref": "main", "repo": {"full_name": REPOSITORY}},
        },
        "repository": {"full_name": REPOSITORY},
    }
    (gh.root / f"event-{gh.runs}.json").write_text(json.dumps(event))
    variables = {"GITML_VENV": str(gh.venv), **(variables or {})}
    event_file = gh.root / f"event-{gh.runs}.json"
    command = [
        str(BIN / "act"), "pull_request", "-W", ".github/workflows/pr.yml", "-e", str(event_file),
        # The hosted label maps to this machine; any other runs-on (a self-hosted label) maps to
        # nothing, and act skips such a job silently: each test asserts that the job ran.
        "-P", "ubuntu-latest=-self-hosted", "--no-cache-server", "--no-skip-checkout", *gh.local_repositories,
        *[a for k, v in variables.items() for a in ("--var", f"{k}={v}")],
        # GitHub gives every run a GITHUB_TOKEN (read-only for a fork's pull request).
        *[a for k, v in {"GITHUB_TOKEN": "a-workflow-token", **(secrets or {})}.items() for a in ("-s", f"{k}={v}")],
    ]  # fmt: skip
    env = {**gh.env, "GITML_TEST_RECORD": str(record)}
    done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=1200)
    (record / "act.log").write_text(done.stdout + done.stderr)
    shutil.rmtree(clone)
    return Run(done.returncode, done.stdout + done.stderr, record)


def assert_job_ran(run: Run) -> None:
    assert f"{JOB}] ⭐ Run Set up job" in run.log, f"the pipeline job did not run:\n{run.log[-3000:]}"


def step_ran(run: Run, name: str) -> bool:
    return f"{JOB}] ⭐ Run Main {name}" in run.log


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
    def tighten_every_fairness_limit(repo: Path) -> None:
        gates = repo / "conf" / "gates" / "default.yaml"
        config = yaml.safe_load(gates.read_text())
        attributes = config["fairness"]["attributes"]
        assert attributes, "the gate config names no protected attribute to tighten"
        for limits in attributes.values():
            limits["decide_on"] = "estimate"
            for limit in limits.values():
                if isinstance(limit, dict) and "max" in limit:
                    limit["max"] = 0.0
        gates.write_text(yaml.safe_dump(config, sort_keys=False))
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
    assert github.git(github.origin, "for-each-ref", "--format=%(refname) %(objectname)") == refs_before
    # Without a write token the stale lock cannot be fixed here: the author is told what to run.
    assert run.returncode != 0
    assert "dvc.lock is stale" in run.log
    assert "make run" in run.log
    assert "dvc push" in run.log
    # A fork's GITHUB_TOKEN cannot comment: the report goes to the run's summary and artifact instead.
    assert run.comments() == []
    assert (run.record / "artifacts" / "gitml-report" / "reports" / "report.md").is_file()
