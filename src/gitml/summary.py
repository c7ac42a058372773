"""The short summary `make run` prints after the pipeline: what each stage produced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gitml.errors import GitmlError
from gitml.paths import Paths


def _load(path: Path, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise GitmlError(f"{path}: not found; the {stage} stage has not run. Run `dvc repro` (or `make run`).")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def pipeline_summary(paths: Paths) -> str:
    """A few lines a person reads at the end of `make run`."""
    ingest = _load(paths.ingest_report, "ingest")
    split = _load(paths.split_report, "split")
    reasons = ingest["quarantined_by_reason"]
    why = ", ".join(f"{code}: {n:,}" for code, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:4])
    lines = [
        "gitml pipeline summary",
        f"  ingest  {ingest['rows_read']:>7,} rows read   {ingest['rows_clean']:>7,} clean   "
        f"{ingest['rows_quarantined']:>5,} quarantined ({ingest['quarantined_fraction']:.2%}"
        f"{'; ' + why if why else ''})",
    ]
    for name in ("train", "val", "test", "reference"):
        part = split[name]
        lines.append(f"  {name:<9} {part['rows']:>7,} rows   positive rate {part['label_rate']:.1%}")
    lines.append(f"  quarantined rows and reasons: {paths.quarantine.relative_to(paths.root)}")
    return "\n".join(lines)
