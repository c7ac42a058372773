"""Resuming an interrupted train stage from its last checkpointed epoch.

DVC deletes a stage's outputs before it runs the stage, so the resume checkpoint lives outside them,
in `$GITML_CHECKPOINT_DIR` (default `.gitml/checkpoints`, ignored by git), in a folder named by a
key of everything that decides the model: the train and val splits, the params sections the stage
declares, the code and the library versions. A run resumes only from a checkpoint with its own key;
a finished run removes its folder.

The folder's `last.ckpt` is a full Lightning checkpoint (weights, optimizer, scheduler, loops,
early stopping and best-checkpoint state) saved atomically at the start of an epoch once
`$GITML_CHECKPOINT_SECONDS` (default 30) have passed since the last one, plus what
Lightning does not save: the random number generators, the DVCLive files written so far and the
best epoch's weights, so the resumed run ends with the bytes of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import random
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import numpy.typing as npt
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

# Where checkpoints go cannot change the model, so it is not a param: a DVC param would re-run the
# stage when it moves. A self-hosted runner points it at a disk that outlives the job's workspace.
ENV = "GITML_CHECKPOINT_DIR"
DEFAULT_DIR = Path(".gitml") / "checkpoints"
# Seconds of training a kill may cost at most (plus the epoch under way): a checkpoint at the
# start of every epoch costs 10 ms, 4% of an epoch of the default network on Adult, where the
# whole fit takes 10 s. An epoch of minutes (a large table on a GPU) is saved every epoch.
# 0 saves every epoch. Not a param either: how often it saves cannot change the model.
EVERY_ENV = "GITML_CHECKPOINT_SECONDS"
DEFAULT_EVERY = 30.0
# The params.yaml sections the train stage declares in dvc.yaml.
KEY_SECTIONS = ("data", "preprocess", "train", "model", "trainer")
LAST = "last.ckpt"
STATE_KEY = "gitml-resume"


def checkpoint_every() -> float:
    """`$GITML_CHECKPOINT_SECONDS`, or 30; a value that is not a number of seconds >= 0 is refused."""
    from gitml.errors import GitmlError

    raw = os.environ.get(EVERY_ENV, "").strip()
    if not raw:
        return DEFAULT_EVERY
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise GitmlError(f"{EVERY_ENV}={raw!r}: give the seconds between resume checkpoints, 0 or more (default 30).")
    return seconds


def checkpoint_root(root: Path) -> Path:
    """`$GITML_CHECKPOINT_DIR` (relative to the repository root unless absolute) or .gitml/checkpoints."""
    return root / (os.environ.get(ENV) or DEFAULT_DIR)


def _code_files(model_cfg: Mapping[str, Any]) -> list[Path]:
    """This package's sources, and the network's module when the model config names one outside it."""
    package = Path(__file__).resolve().parents[1]
    files = sorted(package.rglob("*.py"))
    module = str(model_cfg.get("_target_", "")).rpartition(".")[0]
    try:
        spec = importlib.util.find_spec(module) if module else None
    except ImportError:
        spec = None
    if spec is not None and spec.origin and Path(spec.origin).is_file():
        origin = Path(spec.origin).resolve()
        if package not in origin.parents:
            files.append(origin)
    return files


def resume_key(cfg: Mapping[str, Any], inputs: Sequence[Path]) -> str:
    """A digest of the input files, the stage's params sections, the code and the library versions."""
    digest = hashlib.sha256()
    for path in inputs:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    sections = {name: cfg.get(name) for name in KEY_SECTIONS}
    digest.update(json.dumps(sections, sort_keys=True, default=str).encode())
    for path in _code_files(cfg.get("model") or {}):
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for package in ("torch", "lightning", "dvclive"):
        digest.update(f"{package}=={importlib.metadata.version(package)}".encode())
    return digest.hexdigest()[:16]


def _rng_state() -> dict[str, Any]:
    """Every generator training draws from (dropout: torch), in types torch.load(weights_only=True) takes."""
    name, keys, *rest = cast(tuple[str, npt.NDArray[np.uint32], int, int, float], np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        # Only when CUDA is in use: asking would start it on a machine that trains on the CPU.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],  # type: ignore[no-untyped-call]
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), *rest],
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _snapshot(live_dir: Path) -> dict[str, str]:
    """DVCLive's files so far: what DVC would delete before re-running the stage."""
    files = sorted(p for p in live_dir.rglob("*") if p.is_file())
    return {p.relative_to(live_dir).as_posix(): p.read_bytes().decode() for p in files}


def _moved(value: Any, old: str, new: str) -> Any:
    """`value` with every path in or under `old` (strings, dict keys) put under `new`."""
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old) :]
    if isinstance(value, dict):
        return {_moved(k, old, new): _moved(v, old, new) for k, v in value.items()}
    return value


class ResumeCheckpoint(L.Callback):
    """Saves `last.ckpt` in `directory`, atomically, at the start of an epoch after the first once
    `every` seconds have passed since the last save (or since training started)."""

    def __init__(self, directory: Path, live_dir: Path, best: ModelCheckpoint, every: float = DEFAULT_EVERY) -> None:
        self.directory = directory
        self.live_dir = live_dir
        self.best = best
        self.every = every
        self._last_saved: float | None = None
        self._saving = False
        self._rng_to_restore: Mapping[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return STATE_KEY

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_saved = time.monotonic()  # a resumed run counts from where it starts

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rng_to_restore is not None:  # the epoch this run resumed at: nothing new to save
            _set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
            return
        if trainer.current_epoch == 0:
            return
        due = self._last_saved is not None and time.monotonic() - self._last_saved >= self.every
        # Every process takes part in a save: they follow rank 0's clock.
        if not trainer.strategy.broadcast(due, src=0):
            return
        partial = self.directory / f"{LAST}.partial"
        self._saving = True
        try:
            trainer.save_checkpoint(partial)  # every process takes part; only rank 0 writes
        finally:
            self._saving = False
        if trainer.is_global_zero:
            with partial.open("rb+") as written:
                os.fsync(written.fileno())
            partial.replace(self.directory / LAST)
        self._last_saved = time.monotonic()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if not self._saving:
            return
        # Lightning has already counted the new epoch as begun ("ready"); taking that back makes
        # this the checkpoint of a finished epoch, which Lightning resumes like a run that stopped
        # there: the epoch's scheduler step kept, and no partly run epoch to replay.
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
        for counts in (progress["total"], progress["current"]):
            counts["ready"] = counts["started"]

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # The folder may have moved since (another clone, another mount of $GITML_CHECKPOINT_DIR).
        # The best checkpoint's state names it, and ModelCheckpoint forgets its best score when
        # the path differs; this runs before it loads that state.
        states = checkpoint["callbacks"]
        old, key = states[STATE_KEY]["directory"], self.best.state_key
        states[key] = _moved(states[key], old, str(self.best.dirpath))

    def state_dict(self) -> dict[str, Any]:
        best = Path(self.best.best_model_path) if self.best.best_model_path else None
        return {
            "directory": str(self.best.dirpath),
            "rng": _rng_state(),
            "dvclive": _snapshot(self.live_dir) if self.live_dir.is_dir() else {},
            "best_name": best.name if best else None,
            "best": torch.frombuffer(bytearray(best.read_bytes()), dtype=torch.uint8) if best else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Applied when the resumed epoch starts: setting up the run draws random numbers first.
        self._rng_to_restore = state_dict["rng"]


def _load(last: Path) -> dict[str, Any] | None:
    """The checkpoint at `last`; None where there is none, or none that can be read."""
    if not last.is_file():
        return None
    try:
        checkpoint: dict[str, Any] = torch.load(last, map_location="cpu", weights_only=True)
        checkpoint["callbacks"][STATE_KEY]
    except Exception as exc:  # a damaged file makes torch.load raise almost anything (IndexError, too)
        warnings.warn(f"{last} cannot be read ({exc}); training starts afresh", stacklevel=3)
        return None
    return checkpoint


def prepare(directory: Path, live_dir: Path, writer: bool) -> tuple[Path, int] | None:
    """The checkpoint to resume from and its epoch, or None (the folder is then emptied).

    The process that writes (`writer`: rank 0) puts back the DVCLive files and the best weights
    the checkpoint holds, in place of whatever the interrupted run wrote after it.
    """
    last = directory / LAST
    checkpoint = _load(last)
    if checkpoint is None:
        if writer:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True, exist_ok=True)
        return None
    if writer:
        state = checkpoint["callbacks"][STATE_KEY]
        shutil.rmtree(live_dir / "plots", ignore_errors=True)
        (live_dir / "metrics.json").unlink(missing_ok=True)
        for name, text in state["dvclive"].items():
            (live_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (live_dir / name).write_bytes(text.encode())
        if state["best_name"]:
            (directory / state["best_name"]).write_bytes(state["best"].numpy().tobytes())
    return last, int(checkpoint["epoch"])


def finish(directory: Path) -> None:
    """A finished run needs no resume checkpoint."""
    shutil.rmtree(directory, ignore_errors=True)
