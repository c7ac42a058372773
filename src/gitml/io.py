"""Writing outputs byte-for-byte reproducibly, so that DVC sees no change when nothing changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd


def write_json(path: Path, data: Any) -> None:
    """Indented, key-sorted JSON with a final newline: stable bytes and readable diffs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """Parquet without the index; pyarrow writes no timestamps, so equal frames give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False, engine="pyarrow", compression="zstd")
