"""Writing outputs byte-for-byte reproducibly, so that DVC sees no change when nothing changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the server writes JSON without pandas installed
    import pandas as pd


def write_json(path: Path, data: Any) -> None:
    """Indented, key-sorted JSON with a final newline: stable bytes and readable diffs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """Parquet without the index; pyarrow writes no timestamps, so equal frames give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False, engine="pyarrow", compression="zstd")


def sha256_file(path: Path) -> str:
    """The file's sha256, read in blocks (a data file can be larger than memory should hold)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
