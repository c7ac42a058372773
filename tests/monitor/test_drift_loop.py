"""The monitoring loop for real: a server's traffic (gitml simulate), its logs shipped to S3 (moto's
server on loopback, standing in for the bucket), and `gitml drift` reading the window back from S3.

Everything runs as a user runs it; the bucket is the only stand-in (moto serves S3's API).
Which field is shifted and which gets a new category comes from the schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gitml.bundle import load
from gitml.cli import main
from gitml.paths import Paths
from tests.conftest import unshifted_source
from tests.logs.conftest import S3, ship_logs

pytestmark = pytest.mark.slow


def fields(paths: Paths) -> tuple[str, str]:
    """A numeric and a categorical feature of the served model's schema."""
    schema = load(paths.models).schema
    numeric = next(c.name for c in schema.feature_columns if c.output_dtype in ("integer", "float"))
    categorical = next(c.name for c in schema.feature_columns if c.output_dtype == "categorical")
    return numeric, categorical


def traffic(paths: Paths, url: str, *argv: str) -> None:
    assert main(["--root", str(paths.root), "simulate", "--url", url, "--seed", "3", *argv]) == 0


def drift(paths: Paths, source: str, out: Path) -> tuple[int, dict[str, Any]]:
    status = main(
        ["--root", str(paths.root), "drift", "--logs", source, "--since", "1h", "--out", str(out), "--no-html"]
    )
    return status, json.loads((out / "drift.json").read_text())


def shipped(paths: Paths, server: Any, bucket: str, tmp_path: Path) -> str:
    stopped, output = server.stop()
    assert stopped != 0 or "Traceback" not in output
    url = f"s3://{bucket}/gitml-logs"
    assert "files sent to" in ship_logs(tmp_path, "--log-dir", str(server.log_dir), "--to", url)
    return url


def test_shifted_traffic_shipped_to_s3_is_drift_named_by_field(
    served: Paths, start_server: Any, moto: S3, bucket: str, tmp_path: Path
) -> None:
    numeric, categorical = fields(served)
    server = start_server(served.root, log_dir=tmp_path / "log")
    traffic(served, server.url, "--rows", "3000", "--scenario", f"shift:{numeric}=0.6", "--feedback-share", "0.1")
    # An upstream change: a category the schema does not know, in a few percent of single-record requests.
    traffic(served, server.url, "--rows", "600", "--batch", "1", "--scenario", f"new-category:{categorical}=0.05")
    url = shipped(served, server, bucket, tmp_path)
    assert moto.names(bucket)  # the window is read from S3, not from the (now empty) log folder
    assert list(server.log_dir.iterdir()) == []

    status, report = drift(served, url, tmp_path / "out")
    assert status == 1
    assert 3000 + 600 * 0.9 < report["rows"] < 3600  # the rejected records are not predictions
    # The two changes are the two most severe findings: 5 % rejections for one field, 0.6 sd for the other.
    assert set(report["top_features"][:2]) == {numeric, categorical}
    rejected = next(f for f in report["findings"] if f["kind"] == "rejections" and f["name"] == categorical)
    assert rejected["drifted"]
    assert 0.01 < rejected["effect"] < 0.1  # about 5 % of the single-record requests
    assert "literal_error" in rejected["detail"]["reasons"]
    markdown = (tmp_path / "out" / "drift.md").read_text()
    assert f"{categorical}-new" not in markdown  # a rejected value is never echoed
    assert markdown.splitlines()[1].startswith("## Drift found: data")


def test_unshifted_traffic_from_s3_is_no_drift(
    served: Paths, start_server: Any, moto: S3, bucket: str, tmp_path: Path
) -> None:
    server = start_server(served.root, log_dir=tmp_path / "log")
    traffic(served, server.url, "--rows", "3000", "--feedback-share", "0.1", "--from", str(unshifted_source(served)))
    url = shipped(served, server, bucket, tmp_path)
    status, report = drift(served, url, tmp_path / "out")
    assert status == 0, [f for f in report["findings"] if f["drifted"]]
    assert report["rows"] == 3000
    assert report["labels"]["labelled"] == 300
    assert report["requests"] == 150  # 3,000 rows in batches of 20
