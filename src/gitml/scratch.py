"""A scratch copy of the pipeline in a new git repository, for running the real DVC on it.

The end-to-end tests and the pipeline benchmark both work in one, so that nothing they do touches
the checkout they start from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# What a stage can read: everything else of the repository is left behind.
PIPELINE_FILES = ("dvc.yaml", "params.yaml", "conf", "data/raw", "src", ".dvc/config", ".dvcignore", ".gitignore")

# A CI runner may have no git identity, and a developer may sign commits: neither matters here.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "gitml scratch",
    "GIT_AUTHOR_EMAIL": "scratch@gitml.invalid",
    "GIT_COMMITTER_NAME": "gitml scratch",
    "GIT_COMMITTER_EMAIL": "scratch@gitml.invalid",
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "commit.gpgsign",
    "GIT_CONFIG_VALUE_0": "false",
}


def scratch_env() -> dict[str, str]:
    """The environment to run git, dvc and gitml in: this interpreter's tools first on PATH."""
    return {**os.environ, **GIT_ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def make_scratch_repo(source: Path, work: Path) -> None:
    """Copy the pipeline's files from `source` into `work` and commit them to a new git repository."""
    for name in PIPELINE_FILES:
        origin = source / name
        if origin.is_dir():
            shutil.copytree(origin, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, work / name)
    (work / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "pipeline"]):
        subprocess.run(command, cwd=work, env=scratch_env(), check=True, capture_output=True)
