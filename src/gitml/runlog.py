"""The run log: how long each stage took, on which host and when, kept out of git and DVC.

Wall-clock seconds, dates and host names differ on every run. Written into a DVC-tracked output
they would change dvc.lock on every reproduction, and "did this reproduction match the commit?"
could never be answered (the pull-request pipeline asks it). So the `gitml` command appends them
here, one JSON line per stage run, to a file git ignores; the summary and the report read it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gitml.paths import Paths


def record(paths: Paths, stage: str, seconds: float, status: str, parts: Mapping[str, float] | None = None) -> None:
    """Append one stage run, with the seconds of its parts where it timed them (the baselines'
    fits); a log that cannot be written never fails the stage it times."""
    line: dict[str, Any] = {
        "stage": stage,
        "status": status,
        "seconds": round(seconds, 2),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
    }
    if parts:
        line["parts"] = {name: round(value, 2) for name, value in parts.items()}
    try:
        paths.run_log.parent.mkdir(parents=True, exist_ok=True)
        with paths.run_log.open("a", encoding="utf-8") as log:
            log.write(json.dumps(line, sort_keys=True) + "\n")
    except OSError:
        pass


def _entries(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    entries = []
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:  # a line cut short by a killed process
            continue
        if isinstance(entry, dict) and isinstance(entry.get("stage"), str):
            entries.append(entry)
    return entries


def latest_seconds(paths: Paths) -> dict[str, float]:
    """Each stage's time in its latest successful run, in the order the stages last ran."""
    latest: dict[str, float] = {}
    for entry in _entries(paths.run_log):
        seconds = entry.get("seconds")
        if entry.get("status") == "ok" and isinstance(seconds, int | float):
            latest.pop(entry["stage"], None)
            latest[entry["stage"]] = float(seconds)
    return latest


def latest_parts(paths: Paths, stage: str) -> dict[str, float]:
    """The seconds of each part of a stage in its latest successful run; empty where it timed none."""
    parts: dict[str, float] = {}
    for entry in _entries(paths.run_log):
        if entry["stage"] == stage and entry.get("status") == "ok":
            found = entry.get("parts")
            items = found.items() if isinstance(found, dict) else ()
            parts = {str(k): float(v) for k, v in items if isinstance(v, int | float)}
    return parts
