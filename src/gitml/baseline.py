"""What a candidate model is compared with: the production model (GTO) or main's committed files.

The gate compares with the champion: the version of the `model` artifact that GTO has in the
`prod` stage (the git tags `model#prod#N`), and where no version is in production yet, main's
committed metrics. The pull-request report compares with main. Both read committed files with
`git show <commit>:<path>`, which works in a shallow CI checkout once main has been fetched
(`git fetch --depth=1 origin main:main`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ARTIFACT = "model"
PARAMS = "params.yaml"
PROD_STAGE = "prod"
MAIN = "main"


def git_output(root: Path, *args: str) -> str | None:
    """stdout of a git command, or None when it fails (not a repository, unknown ref, no git)."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    return done.stdout if done.returncode == 0 else None


def parse_json(text: str | None) -> Any:
    """The JSON in `text`; None when there is no text or it is not JSON (a file absent or half-written)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


@dataclass(frozen=True)
class Baseline:
    """A committed state to compare with; `commit` None when there is none."""

    root: Path
    source: str  # "gto" (a version in a stage), "branch" (main's tip) or "none"
    ref: str | None  # the tag or branch that named it
    commit: str | None
    version: str | None  # the GTO version (v1.2.0) when source is "gto"
    description: str  # one line for people

    @property
    def exists(self) -> bool:
        return self.commit is not None

    @property
    def short(self) -> str:
        return self.commit[:7] if self.commit else "-"

    def read_text(self, path: str) -> str | None:
        """A file as committed there (path relative to the repository root), None if absent."""
        if self.commit is None:
            return None
        return git_output(self.root, "show", f"{self.commit}:{path}")

    def read_json(self, path: str) -> Any:
        return parse_json(self.read_text(path))

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ref": self.ref,
            "commit": self.commit,
            "version": self.version,
            "description": self.description,
        }


def head_commit(root: Path) -> str | None:
    out = git_output(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    return out.strip() if out else None


def branch_baseline(root: Path, branch: str = MAIN) -> Baseline:
    """The tip of `branch`, locally or as fetched from origin; source "none" when neither exists."""
    for ref in (branch, f"origin/{branch}", f"refs/remotes/origin/{branch}"):
        out = git_output(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if out:
            commit = out.strip()
            return Baseline(root, "branch", ref, commit, None, f"{ref} (commit {commit[:7]})")
    if head_commit(root) is None and git_output(root, "rev-parse", "--git-dir") is None:
        why = "this is not a git repository"
    else:
        why = f"no branch {branch} here or at origin (in a CI checkout: `git fetch --depth=1 origin {branch}:{branch}`)"
    return Baseline(root, "none", None, None, None, f"nothing to compare with: {why}")


def stage_baseline(root: Path, artifact: str = ARTIFACT, stage: str = PROD_STAGE) -> Baseline | None:
    """The version of `artifact` GTO has in `stage`, or None when none is assigned."""
    if git_output(root, "rev-parse", "--git-dir") is None:
        return None
    from gto.api import find_versions_in_stage
    from gto.exceptions import GTOException

    try:
        found = find_versions_in_stage(str(root), artifact, stage)
    except GTOException:  # no such artifact yet: nothing registered
        return None
    if not found:
        return None
    latest = found[0] if isinstance(found, list) else found
    tag = latest.assignments[-1].tag if getattr(latest, "assignments", None) else None
    return Baseline(
        root,
        "gto",
        tag,
        latest.commit_hexsha,
        latest.version,
        f"{artifact}@{latest.version}, in stage {stage} (tag {tag}, commit {latest.commit_hexsha[:7]})",
    )


def champion(root: Path, artifact: str = ARTIFACT, stage: str = PROD_STAGE, branch: str = MAIN) -> Baseline:
    """The production model if GTO has one in `stage`, else the tip of `branch`, else none."""
    return stage_baseline(root, artifact, stage) or branch_baseline(root, branch)


def problem(params: Mapping[str, Any]) -> tuple[str, str, str]:
    """What a model predicts: (dataset name, label column, positive class), from params.yaml's `data`."""
    data = params.get("data")
    data = data if isinstance(data, Mapping) else {}
    columns = data.get("columns")
    columns = columns if isinstance(columns, Mapping) else {}
    label = next((str(n) for n, c in columns.items() if isinstance(c, Mapping) and c.get("role") == "label"), "?")
    spec = columns.get(label)
    positive = str(spec.get("positive", "?")) if isinstance(spec, Mapping) else "?"
    return str(data.get("name", "?")), label, positive


def describe(found: tuple[str, str, str]) -> str:
    name, label, positive = found
    return f"dataset '{name}' ({label} = {positive})"


def incomparable(params: Mapping[str, Any], baseline: Baseline) -> str | None:
    """Why `baseline`'s model cannot be compared with one trained on `params`, or None when it can.

    A model of another dataset, label or positive class answers another question: its metrics
    say nothing about this one (a far lower AUROC on another problem is no regression). Where the
    baseline's params.yaml cannot be read, nothing says it differs, so it compares.
    """
    if not baseline.exists:
        return None
    try:
        theirs = yaml.safe_load(baseline.read_text(PARAMS) or "")
    except yaml.YAMLError:
        return None
    if not isinstance(theirs, Mapping):
        return None
    ours, before = problem(params), problem(theirs)
    if ours == before:
        return None
    return f"{baseline.description} was trained on {describe(before)}, this model on {describe(ours)}"
