"""Where each stage reads and writes, relative to the repository root.

dvc.yaml lists the same paths as deps and outs; a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The model bundle's files in models/ (gitml.bundle reads and verifies them together).
MODEL, PREPROCESS, THRESHOLD, MANIFEST = "model.onnx", "preprocess.json", "threshold.json", "manifest.json"


@dataclass(frozen=True)
class Paths:
    """The repository layout of the pipeline's files."""

    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def clean(self) -> Path:
        return self.root / "data" / "interim" / "clean.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "data" / "interim" / "quarantine.csv"

    @property
    def ingest_report(self) -> Path:
        return self.root / "reports" / "ingest.json"

    @property
    def processed(self) -> Path:
        return self.root / "data" / "processed"

    def split_file(self, name: str) -> Path:
        """train, val, test or reference."""
        return self.processed / f"{name}.parquet"

    @property
    def split_report(self) -> Path:
        return self.root / "reports" / "split.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def preprocess(self) -> Path:
        """The fitted preprocessing spec (JSON, applied with NumPy alone)."""
        return self.models / PREPROCESS

    @property
    def checkpoint(self) -> Path:
        """The best epoch's Lightning checkpoint."""
        return self.models / "model.ckpt"

    @property
    def onnx(self) -> Path:
        return self.models / MODEL

    @property
    def threshold(self) -> Path:
        """The decision threshold chosen on the validation split, with its rule."""
        return self.models / THRESHOLD

    @property
    def manifest(self) -> Path:
        """The model bundle's manifest (gitml.bundle): its files' sha256, schema, lineage and metrics."""
        return self.models / MANIFEST

    @property
    def dvclive(self) -> Path:
        """DVCLive's training curves (plots/metrics/) and last-epoch metrics (metrics.json)."""
        return self.root / "dvclive"

    @property
    def train_report(self) -> Path:
        return self.root / "reports" / "train.json"

    @property
    def export_report(self) -> Path:
        return self.root / "reports" / "export.json"

    @property
    def metrics(self) -> Path:
        """Headline test metrics and the fairness summaries."""
        return self.root / "reports" / "metrics.json"

    @property
    def fairness(self) -> Path:
        """Per-group metrics of every protected attribute."""
        return self.root / "reports" / "fairness.json"

    @property
    def baselines(self) -> Path:
        """The classical baselines' test metrics and fairness summaries, beside the network's."""
        return self.root / "reports" / "baselines.json"

    @property
    def plots(self) -> Path:
        return self.root / "reports" / "plots"

    @property
    def test_scores(self) -> Path:
        """The exported model's score for every test row, in test split order."""
        return self.root / "data" / "predictions" / "test.parquet"

    @property
    def intervals(self) -> Path:
        """Bootstrap confidence intervals of the test metrics and fairness gaps."""
        return self.root / "reports" / "intervals.json"

    @property
    def deepchecks(self) -> Path:
        """The Deepchecks suites' HTML reports."""
        return self.root / "reports" / "deepchecks"

    @property
    def deepchecks_results(self) -> Path:
        """Every Deepchecks condition's outcome, read by the gate."""
        return self.root / "reports" / "deepchecks.json"

    @property
    def gate(self) -> Path:
        """The gate's verdict and every check behind it."""
        return self.root / "reports" / "gate.json"

    @property
    def report(self) -> Path:
        """The pull-request report (GitHub Markdown, for `cml comment update`)."""
        return self.root / "reports" / "report.md"

    @property
    def figures(self) -> Path:
        """PNG figures the report links to by relative path."""
        return self.root / "reports" / "figures"

    @property
    def run_log(self) -> Path:
        """How long each stage run took (`gitml.runlog`); ignored by git, never a DVC output."""
        return self.root / "logs" / "stages.jsonl"

    @property
    def model_card(self) -> Path:
        return self.root / "reports" / "model_card.md"
