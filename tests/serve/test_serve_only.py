"""The server installed alone (`pip install '.[serve]'`), in a virtualenv where torch cannot be imported."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gitml.paths import Paths
from tests.conftest import REPO
from tests.logs.conftest import served_label
from tests.serve.conftest import Server, request_records

pytestmark = pytest.mark.slow
# What the serving image may weigh, in site-packages: torch alone is about 900 MB.
SIZE_GOAL_MB = 250
PIPELINE_ONLY = ("torch", "lightning", "pandas", "deepchecks", "sklearn", "hydra", "dvc", "pyarrow", "matplotlib")


def _size_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with gitml[serve] from the lock file, built from a copy of the source."""
    base = tmp_path_factory.mktemp("serve-only")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(REPO / "requirements" / "lock.txt"),
            f"{source}[serve]",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def test_the_serve_extra_installs_no_pipeline_package_and_stays_small(serve_venv: Path) -> None:
    python = str(serve_venv / "bin" / "python")
    probe = "import importlib.util, sys; print(','.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    found = subprocess.run([python, "-c", probe, *PIPELINE_ONLY], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == ""
    site = next((serve_venv / "lib").glob("python3.*/site-packages"))
    size = _size_mb(site)
    print(f"serve-only site-packages: {size:.0f} MB")  # docs/benchmarks.md quotes it
    assert size < SIZE_GOAL_MB


def test_the_server_runs_from_the_serve_only_install(serve_venv: Path, served: Paths, start_server: Any) -> None:
    server: Server = start_server(served.root, argv=[str(serve_venv / "bin" / "gitml")])
    records = request_records(served)
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/predict", json=records[0]).status_code == 200
        batch = client.post("/predict", json=records[:20]).json()
        assert len(batch["predictions"]) == 20
        feedback = {"request_id": batch["request_id"], "label": served_label(served)}
        assert client.post("/feedback", json=feedback).status_code == 202
        assert client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200
    _, output = server.stop()
    assert "Traceback" not in output
    assert "Application shutdown complete" in output
