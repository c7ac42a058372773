"""Every step of the pipeline, in the order it runs: one module each, with the same shape.

A stage module has `run(cfg, paths)`, which reads params.yaml's sections (`cfg`) and the files
at `paths`, writes its outputs and returns what it did, and `message(result, paths)`, the one
line the `gitml` command prints about it. The `gitml` subcommands and the dvc.yaml dependency
test are built from STAGES. To add a stage: write `stages/<name>.py`, list it here, and give it
a stage in dvc.yaml (docs/extending.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Stage:
    """One step: its `gitml` subcommand (and module) name, what it does, and whether DVC runs it."""

    name: str
    help: str
    dvc: bool = True  # a stage of dvc.yaml; the others run after `dvc repro`, on every run

    @property
    def module(self) -> str:
        return f"{__name__}.{self.name}"

    def load(self) -> ModuleType:
        """The stage's module, imported only when it runs (the server's install has no torch)."""
        return importlib.import_module(self.module)


STAGES = (
    Stage("ingest", "validate, quarantine and anonymise the raw data"),
    Stage("split", "seeded stratified train/val/test split and drift reference"),
    Stage("train", "fit the preprocessing and train the network (Lightning, DVCLive)"),
    # After train for the preprocessing spec; it never reads the network, so a network change refits nothing.
    Stage("baselines", "logistic regression and gradient boosting on the same split and inputs, scored as the network"),
    Stage("export", "export the trained network to ONNX and check parity with torch"),
    Stage("evaluate", "test-split metrics, per-group fairness metrics and plot data; completes the model bundle"),
    Stage("deepchecks", "Deepchecks suites on the splits and the model's predictions"),
    # The champion comes from git (GTO's tags, main's commits), which DVC does not track.
    Stage("gate", "decide the gate (Deepchecks, fairness, champion) into reports/gate.json", dvc=False),
    Stage("report", "write reports/report.md for the pull request, its figures and the model card", dvc=False),
)
DVC_STAGES = tuple(s for s in STAGES if s.dvc)
