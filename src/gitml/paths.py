"""Where each stage reads and writes, relative to the repository root.

dvc.yaml lists the same paths as deps and outs; a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
