"""Running the workflows with act on this machine, against stand-ins for GitHub.

GitHub is the outer boundary the workflow tests cannot reach, so it has stand-ins (tests/e2e/github/):
its git server is a local bare repository that `https://github.com/gitml-test/gitml.git` is
mapped to (git's url.insteadOf, in the runner's HOME); checkout, setup-python, setup-cml and
upload-artifact are local actions put in place of the pinned ones (`act --local-repository`);
`cml` is a recorder of the comment it would post (and of the pull request `cml pr create` opens,
after CML's own git steps); `gh`, `docker` and `kubectl` stand in for GitHub's API, an image
registry and a cluster. Everything else runs for real, as on a runner:
act (host mode) reads the workflow files unchanged, `make install` installs from the lock, DVC
pulls from and pushes to a folder remote, the pipeline, `gitml gate`, `gitml report`, GTO.
Used by tests/e2e/test_pr_workflow.py, tests/e2e/test_release_workflow.py,
tests/e2e/test_drift_workflow.py and benchmarks/pr_workflow.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tests.test_packaging import closure

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
    """The stand-in world: a home with the git URL mapping, the bare origin, a seed clone to author in,
    and the DVC remote main's .dvc/config names."""

    root: Path
    home: Path
    origin: Path
    seed: Path
    remote: Path
    venv: Path | None
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
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != BIN]
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join([str(STAND_INS / "bin"), *path]),
        GITML_TEST_RECORD=str(record_root),
        # What the stand-ins of GitHub's API, the registry and the cluster run with and keep.
        GITML_TEST_PYTHON=sys.executable,
        GITML_TEST_KUBECTL=str(BIN / "kubectl"),
        GITML_TEST_WORLD=str(home.parent / "world"),
    )
    return env


def seed_venv(target: Path, extras: Iterable[str]) -> None:
    """A virtualenv holding what `pip install -e '.[<extras>]'` installs from the lock, and pip: what
    a self-hosted runner's kept GITML_VENV holds once a job installed it.

    The packages are hard links to this environment's (installed by make from the same lock), not
    unpacked again: about two minutes of a loaded test machine that would test pip, not the
    workflows. gitml itself is left out: the workflow's `make install` installs it from its checkout,
    finding every other requirement there. Scripts in bin/ are copied with their first line naming
    the new venv's python.
    """
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(target)], check=True)  # type: ignore[attr-defined]
    prefix = Path(sys.prefix)
    names = closure([f"gitml[{','.join(extras)}]"]) - {"gitml"} | {"pip"}
    for dist in map(metadata.distribution, sorted(names)):
        for file in dist.files or []:
            source = Path(os.path.normpath(str(dist.locate_file(file))))
            if not source.is_file() or not source.is_relative_to(prefix):
                continue  # a byte-compiled file never written, or a file outside the environment
            copy = target / source.relative_to(prefix)
            copy.parent.mkdir(parents=True, exist_ok=True)
            if copy.exists():
                continue
            if copy.parent == target / "bin":
                first, newline, rest = source.read_bytes().partition(b"\n")
                if first.startswith(b"#!" + bytes(prefix / "bin")):
                    first = first.replace(bytes(prefix), bytes(target), 1)
                copy.write_bytes(first + newline + rest)
                copy.chmod(source.stat().st_mode)
            else:
                try:
                    os.link(source, copy)
                except OSError:  # another file system
                    shutil.copy2(source, copy)


def make_github(repo: Path, root: Path, remote: Path, tracked: Path | None = None, venv: Path | None = None) -> GitHub:
    """A bare origin whose main holds the template (with `tracked` laid over it: a reproduced
    dvc.lock and metrics), the DVC remote `remote`, and a seed clone to author pull requests in.
    `venv` is the GITML_VENV the runs share; None installs into each run's workspace, as a hosted runner does."""
    home, origin, seed = root / "home", root / "origin.git", root / "seed"
    home.mkdir(parents=True)
    (home / ".gitconfig").write_text(f'[url "{origin}"]\n\tinsteadOf = {ORIGIN_URL}\n[init]\n\tdefaultBranch = main\n')
    env = step_env(home, root / "records")
    for path in project_files(repo):
        (seed / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / path, seed / path)
    if tracked is not None:
        shutil.copytree(tracked, seed, dirs_exist_ok=True)
    gh = GitHub(root, home, origin, seed, remote, venv, env, [])
    gh.git(seed, "init", "-q", "-b", "main")
    # The team's DVC remote, committed in .dvc/config as `dvc remote add -d` would.
    dvc = [str(BIN / "dvc"), "remote", "modify", "local", "url", str(remote)]
    done = subprocess.run(dvc, cwd=seed, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    gh.git(seed, "add", "-A")
    gh.git(seed, "commit", "-qm", "gitml")
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
    gh: GitHub,
    pr: PullRequest,
    variables: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    workflow: str = "pr.yml",
    action: str = "opened",
    label: str | None = None,
    runners: tuple[str, ...] = ("ubuntu-latest",),
) -> Run:
    """act runs `workflow` for a `pull_request` event of `pr` (`action`, with `label` for "labeled"),
    from a clone at its head; the `runners` labels map to this machine, and no other."""
    event: dict[str, object] = {
        "action": action,
        "number": pr.number,
        "pull_request": {
            "number": pr.number,
            "head": {"ref": pr.branch, "sha": pr.sha, "repo": {"full_name": pr.head_repository}},
            "base": {"ref": "main", "repo": {"full_name": REPOSITORY}},
        },
        "repository": {"full_name": REPOSITORY},
        **({"label": {"name": label}} if label else {}),
    }
    return run_workflow(gh, "pull_request", workflow, event, pr.sha, variables, secrets, runners)


def run_workflow(
    gh: GitHub,
    event_name: str,
    workflow: str,
    event: Mapping[str, object],
    sha: str,
    variables: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    runners: tuple[str, ...] = ("ubuntu-latest",),
    env: dict[str, str] | None = None,
) -> Run:
    """act runs `workflow` for `event_name` with the payload `event`, from a clone of origin at
    `sha`; the `runners` labels map to this machine, and no other. `env` adds to the runner's."""
    gh.runs += 1
    record = gh.root / "records" / f"run-{gh.runs}"
    record.mkdir(parents=True)
    # One workspace path for every run, as a self-hosted runner has (_work/<repo>/<repo>): its kept
    # virtualenv already points gitml there, and `make install` changes nothing.
    clone = gh.root / "runner"
    shutil.rmtree(clone, ignore_errors=True)
    gh.git(gh.root, "clone", "-q", ORIGIN_URL, str(clone))
    gh.git(clone, "fetch", "-q", "origin", sha)
    gh.git(clone, "checkout", "-q", "--detach", sha)
    event_file = gh.root / f"event-{gh.runs}.json"
    event_file.write_text(json.dumps(event))
    # TRAINING_RUNNER set, as a team sets it, to the label this machine stands in for: a project
    # generated with other training runner labels (copier.yml's runner_labels) has them as the
    # workflows' default, which no -P here maps, and act would skip its training job.
    variables = {
        "TRAINING_RUNNER": json.dumps(runners[0]),
        **({"GITML_VENV": str(gh.venv)} if gh.venv else {}),
        **(variables or {}),
    }
    command = [
        str(BIN / "act"), event_name, "-W", f".github/workflows/{workflow}", "-e", str(event_file),
        # The labels given map to this machine; any other runs-on (a self-hosted label) maps to
        # nothing, and act skips such a job silently: each test asserts that the job ran.
        *[a for runner in runners for a in ("-P", f"{runner}=-self-hosted")],
        # One job at a time: the jobs share one virtualenv (GITML_VENV), as they would on one
        # self-hosted runner; on GitHub, parallel jobs get a runner each.
        "--no-cache-server", "--no-skip-checkout", "--concurrent-jobs", "1", *gh.local_repositories,
        *[a for k, v in variables.items() for a in ("--var", f"{k}={v}")],
        # GitHub gives every run a GITHUB_TOKEN (read-only for a fork's pull request).
        *[a for k, v in {"GITHUB_TOKEN": "a-workflow-token", **(secrets or {})}.items() for a in ("-s", f"{k}={v}")],
    ]  # fmt: skip
    run_env = {**gh.env, "GITML_TEST_RECORD": str(record), **(env or {})}
    done = subprocess.run(command, cwd=clone, env=run_env, capture_output=True, text=True, timeout=1200)
    (record / "act.log").write_text(done.stdout + done.stderr)
    shutil.rmtree(clone)
    return Run(done.returncode, done.stdout + done.stderr, record)
