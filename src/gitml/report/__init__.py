"""The pull-request report (reports/report.md), its PNG figures, and the model card.

`gitml report` runs after `dvc repro` and `gitml gate`. It is not a DVC stage: it compares the
working tree's outputs with main's committed ones, which DVC does not track. This module holds
what the report and the card both read: the pipeline's outputs, from the working tree or from a
commit, and the lineage of the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gitml.baseline import git_output, head_commit, parse_json
from gitml.bundle import Manifest
from gitml.bundle import load as load_bundle
from gitml.errors import GitmlError
from gitml.outputs import (
    BASELINES,
    FAIRNESS,
    GATE,
    INTERVALS,
    METRICS,
    BaselinesFile,
    FairnessFile,
    GateFile,
    IntervalsFile,
    MetricsFile,
    Output,
)
from gitml.paths import Paths

# A file's text by its path relative to the repository root; None when it is absent.
ReadText = Callable[[str], str | None]

T = TypeVar("T")
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

    metrics: MetricsFile | None
    fairness: FairnessFile | None
    train: dict[str, Any] | None
    export: dict[str, Any] | None
    live: dict[str, Any] | None  # dvclive/metrics.json
    ingest: dict[str, Any] | None
    split: dict[str, Any] | None
    intervals: IntervalsFile | None
    baselines: BaselinesFile | None
    gate: GateFile | None
    params: dict[str, Any] | None
    params_text: str | None
    manifest: Manifest | None
    plots: dict[str, list[dict[str, Any]]]  # roc, pr, calibration points, where present
    curves: dict[str, list[tuple[float, float]]]  # "train/loss": (step, value), where present

    @classmethod
    def read(cls, read: ReadText, paths: Paths, curves: tuple[str, ...]) -> Outputs:
        def load(path: Path) -> dict[str, Any] | None:
            return _mapping(parse_json(read(relative(paths, path))))

        def typed(output: Output[T]) -> T | None:
            """A typed output (gitml.outputs), checked as its readers check it; None if absent or not its shape
            (main may predate it)."""
            path = output.where(paths)
            text = read(relative(paths, path))
            try:
                return None if text is None else output.check(parse_json(text), path)
            except GitmlError:
                return None

        plots = {name: parse_json(read(relative(paths, paths.plots / f"{name}.json"))) for name in PLOTS}
        live_dir = paths.dvclive / "plots" / "metrics"
        series = {name: _tsv(read(relative(paths, live_dir / f"{name}.tsv"))) for name in curves}
        params_text = read(relative(paths, paths.params))
        return cls(
            metrics=typed(METRICS),
            fairness=typed(FAIRNESS),
            train=load(paths.train_report),
            export=load(paths.export_report),
            live=load(paths.dvclive / "metrics.json"),
            ingest=load(paths.ingest_report),
            split=load(paths.split_report),
            intervals=typed(INTERVALS),
            baselines=typed(BASELINES),
            gate=typed(GATE),
            params=_yaml(params_text),
            params_text=params_text,
            manifest=read_manifest(read, paths),
            plots={k: v for k, v in plots.items() if isinstance(v, list) and v},
            curves={k: v for k, v in series.items() if v},
        )

    def protected_groups(self) -> dict[str, dict[str, dict[str, Any]]]:
        """reports/fairness.json without its threshold: attribute -> group -> metrics."""
        found = self.fairness or {}
        return {a: dict(groups) for a, groups in found.items() if isinstance(groups, Mapping)}


def read_manifest(read: ReadText, paths: Paths) -> Manifest | None:
    """The bundle's manifest as the working tree or a commit holds it; None where absent or unreadable."""
    text = read(relative(paths, paths.manifest))
    if text is None:
        return None
    try:
        return Manifest.parse(parse_json(text), paths.manifest)
    except GitmlError:
        return None


@dataclass(frozen=True)
class Lineage:
    """What a model was made from, as its bundle's manifest records it, and the commit that holds it."""

    commit: str | None  # None outside a git repository
    changed_paths: int | None  # uncommitted changes (tracked or not ignored); None outside git or for a commit
    manifest: Manifest | None  # None where the bundle was never completed (or predates the manifest)
    model_bytes: int | None  # models/model.onnx as it is on disk; None where absent
    verified: str | None  # the working tree's bundle: None when it verifies, else why not

    @property
    def short(self) -> str:
        return self.commit[:7] if self.commit else "-"

    @property
    def data(self) -> dict[str, str]:
        """The splits the model was trained, tuned and tested on -> sha256."""
        return dict(self.manifest.data) if self.manifest else {}


def current_lineage(paths: Paths, outputs: Outputs) -> Lineage:
    """The working tree's lineage: HEAD, whether it has uncommitted changes, and the bundle, verified."""
    head = head_commit(paths.root)
    status = git_output(paths.root, "status", "--porcelain") if head else None
    try:
        load_bundle(paths.models)
        problem = None
    except GitmlError as exc:  # named relative to the root: a copy of the repository reports the same
        problem = str(exc).replace(f"{paths.root}/", "")
    return Lineage(
        commit=head,
        changed_paths=None if status is None else len(status.splitlines()),
        manifest=outputs.manifest,
        model_bytes=paths.onnx.stat().st_size if paths.onnx.is_file() else None,
        verified=problem,
    )


def committed_lineage(outputs: Outputs, commit: str | None) -> Lineage:
    """A commit's lineage, from its manifest (the model files themselves live in DVC, not git)."""
    return Lineage(commit=commit, changed_paths=None, manifest=outputs.manifest, model_bytes=None, verified=None)
