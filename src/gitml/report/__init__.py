"""The pull-request report (reports/report.md), its PNG figures, and the model card.

`gitml report` runs after `dvc repro` and `gitml gate`. It is not a DVC stage: it compares the
working tree's outputs with main's committed ones, which DVC does not track. This module holds
what the report and the card both read: the pipeline's outputs, from the working tree or from a
commit, and the lineage of the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gitml.baseline import git_output, head_commit, parse_json
from gitml.io import sha256_file
from gitml.paths import Paths

# A file's text by its path relative to the repository root; None when it is absent.
ReadText = Callable[[str], str | None]

PLOTS = ("roc", "pr", "calibration")  # the evaluate stage's curves the figures draw


def working_tree(root: Path) -> ReadText:
    """Read files as they are on disk now."""

    def read(relative: str) -> str | None:
        path = root / relative
        return path.read_text(encoding="utf-8") if path.is_file() else None

    return read


def relative(paths: Paths, path: Path) -> str:
    return path.relative_to(paths.root).as_posix()


def _mapping(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _yaml(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        return _mapping(yaml.safe_load(text))
    except yaml.YAMLError:
        return None


def _tsv(text: str | None) -> list[tuple[float, float]] | None:
    """DVCLive's `step<TAB>value` rows."""
    if text is None:
        return None
    points = []
    for line in text.splitlines()[1:]:
        fields = line.split("\t")
        try:
            points.append((float(fields[0]), float(fields[-1])))
        except (ValueError, IndexError):
            continue
    return points


def curve_names(paths: Paths) -> tuple[str, ...]:
    """DVCLive's training curves in the working tree: train/loss, val/auroc, ... (not the epoch counter)."""
    directory = paths.dvclive / "plots" / "metrics"
    names = (p.relative_to(directory).with_suffix("").as_posix() for p in directory.rglob("*.tsv"))
    return tuple(sorted(n for n in names if n != "epoch"))


@dataclass(frozen=True)
class Outputs:
    """The pipeline's outputs the report reads, as the working tree or one commit holds them."""

    metrics: dict[str, Any] | None
    fairness: dict[str, Any] | None
    train: dict[str, Any] | None
    export: dict[str, Any] | None
    live: dict[str, Any] | None  # dvclive/metrics.json
    ingest: dict[str, Any] | None
    split: dict[str, Any] | None
    intervals: dict[str, Any] | None
    gate: dict[str, Any] | None
    params: dict[str, Any] | None
    params_text: str | None
    lock: dict[str, Any] | None
    plots: dict[str, list[dict[str, Any]]]  # roc, pr, calibration points, where present
    curves: dict[str, list[tuple[float, float]]]  # "train/loss": (step, value), where present

    @classmethod
    def read(cls, read: ReadText, paths: Paths, curves: tuple[str, ...]) -> Outputs:
        def load(path: Path) -> dict[str, Any] | None:
            return _mapping(parse_json(read(relative(paths, path))))

        plots = {name: parse_json(read(relative(paths, paths.plots / f"{name}.json"))) for name in PLOTS}
        live_dir = paths.dvclive / "plots" / "metrics"
        series = {name: _tsv(read(relative(paths, live_dir / f"{name}.tsv"))) for name in curves}
        params_text = read(relative(paths, paths.params))
        return cls(
            metrics=load(paths.metrics),
            fairness=load(paths.fairness),
            train=load(paths.train_report),
            export=load(paths.export_report),
            live=load(paths.dvclive / "metrics.json"),
            ingest=load(paths.ingest_report),
            split=load(paths.split_report),
            intervals=load(paths.intervals),
            gate=load(paths.gate),
            params=_yaml(params_text),
            params_text=params_text,
            lock=_yaml(read(relative(paths, paths.root / "dvc.lock"))),
            plots={k: v for k, v in plots.items() if isinstance(v, list) and v},
            curves={k: v for k, v in series.items() if v},
        )

    def protected_groups(self) -> dict[str, dict[str, dict[str, Any]]]:
        """reports/fairness.json without its threshold: attribute -> group -> metrics."""
        found = self.fairness or {}
        return {a: dict(groups) for a, groups in found.items() if isinstance(groups, Mapping)}


def lock_hashes(lock: Mapping[str, Any] | None) -> dict[str, tuple[str, int | None]]:
    """Every path dvc.lock records (deps and outs of every stage): its md5 and size."""
    found: dict[str, tuple[str, int | None]] = {}
    stages = (lock or {}).get("stages") or {}
    for stage in stages.values():
        for entry in [*(stage.get("deps") or []), *(stage.get("outs") or [])]:
            if isinstance(entry, Mapping) and "path" in entry and "md5" in entry:
                found[str(entry["path"])] = (str(entry["md5"]), entry.get("size"))
    return found


def _sha256(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


@dataclass(frozen=True)
class Lineage:
    """What the model was made from: commit, data hashes, params hash, model bytes."""

    commit: str | None  # HEAD; None outside a git repository
    changed_paths: int | None  # uncommitted changes (tracked or not ignored); None outside git
    data: dict[str, str | None]  # raw data, clean table and splits -> md5 in dvc.lock
    params_sha256: str | None
    model_bytes: int | None  # models/model.onnx as it is on disk; None where absent
    model_sha256: str | None
    model_md5: str | None  # as dvc.lock records it
    preprocess_sha256: str | None
    preprocess_md5: str | None

    @property
    def short(self) -> str:
        return self.commit[:7] if self.commit else "-"


def data_paths(paths: Paths) -> tuple[str, ...]:
    """The data files whose hashes say which data a model was trained and tested on."""
    files = (paths.root / "data" / "raw", paths.clean, *(paths.split_file(n) for n in ("train", "val", "test")))
    return tuple(relative(paths, f) for f in files)


def current_lineage(paths: Paths, outputs: Outputs) -> Lineage:
    """The working tree's lineage: HEAD, whether it has uncommitted changes, and the hashes."""
    hashes = lock_hashes(outputs.lock)
    head = head_commit(paths.root)
    status = git_output(paths.root, "status", "--porcelain") if head else None
    text = outputs.params_text
    return Lineage(
        commit=head,
        changed_paths=None if status is None else len(status.splitlines()),
        data={p: hashes[p][0] if p in hashes else None for p in data_paths(paths)},
        params_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None,
        model_bytes=paths.onnx.stat().st_size if paths.onnx.is_file() else None,
        model_sha256=_sha256(paths.onnx),
        model_md5=hashes.get(relative(paths, paths.onnx), (None, None))[0],
        preprocess_sha256=_sha256(paths.preprocess),
        preprocess_md5=hashes.get(relative(paths, paths.preprocess), (None, None))[0],
    )


def committed_lineage(paths: Paths, outputs: Outputs, commit: str | None) -> Lineage:
    """A commit's lineage, from its dvc.lock and params.yaml (model bytes live in DVC, not git)."""
    hashes = lock_hashes(outputs.lock)
    text = outputs.params_text
    model = hashes.get(relative(paths, paths.onnx))
    return Lineage(
        commit=commit,
        changed_paths=None,
        data={p: hashes[p][0] if p in hashes else None for p in data_paths(paths)},
        params_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None,
        model_bytes=model[1] if model else None,
        model_sha256=None,
        model_md5=model[0] if model else None,
        preprocess_sha256=None,
        preprocess_md5=hashes.get(relative(paths, paths.preprocess), (None, None))[0],
    )
