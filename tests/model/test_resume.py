"""A train stage killed part-way resumes from its last finished epoch and ends with the bytes of an
uninterrupted run (CPU, a small sample of Adult, `gitml train` in a subprocess)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gitml.config import compose_params, load_params
from gitml.model.resume import ENV, EVERY_ENV, LAST, checkpoint_root, resume_key
from gitml.paths import Paths
from gitml.stages import train as train_stage
from tests.conftest import TINY, copy_repo

# Four runs of `gitml train`, each mostly importing torch. One worker runs the module, so that its
# module-scoped runs happen once (pytest-xdist's loadgroup spreads ungrouped tests one by one).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("resume")]

# Small batches make each epoch long enough (a fraction of a second) to be killed part-way; the
# patience lets every epoch run; the dropout and the plateau scheduler are the defaults.
EPOCHS = 10
LONG = [*TINY, "train.batch_size=64", f"trainer.max_epochs={EPOCHS}", f"train.early_stopping.patience={EPOCHS}"]
# What the stage writes; DVC tracks every one of them.
OUTPUTS = ("models/model.ckpt", "models/preprocess.json", "reports/train.json", "dvclive")
KILL_AFTER = 3  # epoch lines, so the last checkpoint is of epoch 2 or later


def long_copy(source: Paths, parent: Path, *overrides: str) -> Paths:
    """A copy of `source` under `parent` that trains for EPOCHS epochs, with more overrides."""
    paths = copy_repo(source, parent)
    compose_params(paths.conf, paths.params, [*LONG, *overrides])
    return paths


def train_command(paths: Paths) -> list[str]:
    return [sys.executable, "-m", "gitml.cli", "--root", str(paths.root), "train"]


def train_env(checkpoints: Path | None) -> dict[str, str]:
    # Every epoch saved: the sample's epochs take well under the default 30 s between saves.
    env = {**{k: v for k, v in os.environ.items() if k != ENV}, EVERY_ENV: "0"}
    return env if checkpoints is None else {**env, ENV: str(checkpoints)}


def train(paths: Paths, checkpoints: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(train_command(paths), capture_output=True, text=True, check=False, env=train_env(checkpoints))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done


def outputs(paths: Paths) -> dict[str, bytes]:
    found = {}
    for name in OUTPUTS:
        path = paths.root / name
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            if file.is_file():
                found[str(file.relative_to(paths.root))] = file.read_bytes()
    return found


@pytest.fixture(scope="module")
def uninterrupted(data_sample: Paths, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """A run start to end, with the default checkpoint folder."""
    paths = long_copy(data_sample, tmp_path_factory.mktemp("uninterrupted"))
    train(paths)
    return paths


@pytest.fixture(scope="module")
def interrupted(data_sample: Paths, tmp_path_factory: pytest.TempPathFactory) -> tuple[Paths, Path]:
    """A run killed (SIGKILL) after KILL_AFTER epochs, and its checkpoint folder ($GITML_CHECKPOINT_DIR)."""
    work = tmp_path_factory.mktemp("interrupted")
    paths = long_copy(data_sample, work)
    checkpoints = work / "checkpoints"
    process = subprocess.Popen(
        train_command(paths), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=train_env(checkpoints)
    )
    assert process.stdout is not None
    epochs = 0
    for line in process.stdout:
        epochs += line.startswith("  epoch")
        if epochs == KILL_AFTER:
            break
    process.kill()
    process.wait()
    assert epochs == KILL_AFTER, "the run ended before it could be killed"
    return paths, checkpoints


def copy_interrupted(interrupted: tuple[Paths, Path], work: Path, *overrides: str) -> tuple[Paths, Path]:
    """A private copy of the killed run's repository and checkpoint folder.

    The checkpoint folder is somewhere else now, as on another mount of $GITML_CHECKPOINT_DIR.
    """
    paths, checkpoints = interrupted
    private = long_copy(paths, work, *overrides)
    shutil.copytree(checkpoints, work / "checkpoints")
    return private, work / "checkpoints"


def test_a_finished_run_leaves_no_checkpoint(uninterrupted: Paths) -> None:
    folder = uninterrupted.root / ".gitml" / "checkpoints"
    assert folder.is_dir()
    assert list(folder.iterdir()) == []


def test_a_killed_run_resumes_and_ends_with_the_bytes_of_an_uninterrupted_one(
    uninterrupted: Paths, interrupted: tuple[Paths, Path], tmp_path: Path
) -> None:
    paths, checkpoints = copy_interrupted(interrupted, tmp_path)
    [folder] = checkpoints.iterdir()
    assert (folder / LAST).is_file()
    done = train(paths, checkpoints)
    out = done.stdout
    resumed = re.search(r"^train: resuming from epoch (\d+) of (.+)$", out, re.MULTILINE)
    assert resumed, out
    assert int(resumed[1]) >= KILL_AFTER - 1
    assert Path(resumed[2]) == folder
    assert f"  epoch {int(resumed[1]) - 1:>3} " not in out  # finished epochs are not trained again
    # Lightning has nothing to say: not that the folder moved, nor that an epoch was cut short.
    assert done.stderr == ""
    ours, theirs = outputs(paths), outputs(uninterrupted)
    assert sorted(ours) == sorted(theirs)
    for name, data in theirs.items():
        assert ours[name] == data, name
    assert list(checkpoints.iterdir()) == []


def test_other_params_start_afresh_and_leave_the_old_checkpoint(
    interrupted: tuple[Paths, Path], tmp_path: Path
) -> None:
    paths, checkpoints = copy_interrupted(interrupted, tmp_path, "model.dropout=0.2")
    before = {p.name: (p / LAST).read_bytes() for p in checkpoints.iterdir()}
    out = train(paths, checkpoints).stdout
    assert "resuming" not in out
    assert out.count("  epoch") == EPOCHS
    # The old checkpoint is another run's (the key differs): not used, not removed.
    assert {p.name: (p / LAST).read_bytes() for p in checkpoints.iterdir()} == before


def test_an_unreadable_checkpoint_is_ignored(fresh_copy: Callable[..., Paths]) -> None:
    paths = fresh_copy("trainer.max_epochs=1")
    params = load_params(paths.params)
    folder = checkpoint_root(paths.root) / resume_key(params, [paths.split_file("train"), paths.split_file("val")])
    folder.mkdir(parents=True)
    (folder / LAST).write_bytes(b"a checkpoint cut short")
    with pytest.warns(UserWarning, match="cannot be read .* training starts afresh"):
        train_stage.run(params, paths)
    assert paths.checkpoint.is_file()
    assert not folder.exists()
