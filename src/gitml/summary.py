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
    reasons = sorted(ingest["quarantined_by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))
    why = ", ".join(f"{code} {n:,}" for code, n in reasons[:4]) + (", ..." if len(reasons) > 4 else "")
    parts = ("train", "val", "test")
    return "\n".join(
        [
            "gitml pipeline summary",
            f"  ingest      {ingest['rows_read']:,} rows read -> {ingest['rows_clean']:,} clean, "
            f"{ingest['rows_quarantined']:,} quarantined ({ingest['quarantined_fraction']:.2%}"
            + (f": {why})" if why else ")"),
            "  split       "
            + " | ".join(f"{p} {split[p]['rows']:,}" for p in parts)
            + f" | drift reference {split['reference']['rows']:,}",
            f"  label rate  {split['label']} = {split['positive_class']}: "
            + " | ".join(f"{p} {split[p]['label_rate']:.1%}" for p in parts),
            f"  quarantine  {paths.quarantine.relative_to(paths.root)} (each rejected row with its reason)",
        ]
    )
