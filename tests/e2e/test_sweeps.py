"""A sweep: experiments queued with `dvc exp run --queue -S` and run by `dvc queue start`, on a small
sample of the dataset conf/ selects, in a scratch git + DVC repository."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitml.data.schema import DatasetSchema
from gitml.scratch import make_scratch_repo
from tests.e2e.conftest import run

pytestmark = pytest.mark.slow

# The first rows of each raw file, and few epochs: each experiment trains for a second or two.
RAW_ROWS = 2500
EPOCHS = 3
SEEDS = (1, 2)


def edit_yaml(path: Path, change: dict[str, Any]) -> None:
    """Set top-level keys of a YAML file, or update the mapping under one."""
    config = yaml.safe_load(path.read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture
def sample(repo: Path, tmp_path: Path) -> Path:
    """The pipeline on a few thousand rows of Adult, committed."""
    work = tmp_path / "repo"
    work.mkdir()
    make_scratch_repo(repo, work)
    raw = DatasetSchema.from_config(yaml.safe_load((work / "params.yaml").read_text())["data"]).raw
    for entry in raw.files:  # whatever files the dataset config names, compressed or not
        keep = entry.skip_rows + int(raw.header_of(entry)) + RAW_ROWS
        for path in sorted(work.glob(entry.path)):
            zipped = path.read_bytes()[:2] == b"\x1f\x8b"
            text = gzip.decompress(path.read_bytes()) if zipped else path.read_bytes()
            head = b"".join(text.splitlines(keepends=True)[:keep])
            path.write_bytes(gzip.compress(head, mtime=0) if zipped else head)
    edit_yaml(work / "conf" / "config.yaml", {"split": {"reference_rows": 500}})
    edit_yaml(work / "conf" / "trainer" / "default.yaml", {"accelerator": "cpu", "max_epochs": EPOCHS})
    run(work, "git", "commit", "-qam", "a small sample")
    return work


def wait_for_queue(work: Path, timeout: float = 300) -> str:
    """`dvc queue status` once no experiment is queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        status = run(work, "dvc", "queue", "status")
        if not any(word in status for word in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, f"the queue did not finish:\n{status}"
        time.sleep(2)


def test_queued_experiments_run_with_their_params(sample: Path) -> None:
    seeds = ",".join(map(str, SEEDS))
    out = run(sample, "dvc", "exp", "run", "--queue", "-S", f"train.seed={seeds}", "train")  # one per seed
    assert out.count("Queued experiment") == len(SEEDS), out
    try:
        run(sample, "dvc", "queue", "start", "-j", "1")
        status = wait_for_queue(sample)
    finally:
        run(sample, "dvc", "queue", "stop", "--kill")
    rows = status.split("\n\n")[0].splitlines()[1:]  # the table under its header: task, name, created, status
    outcomes = {row.split()[1]: row.split()[-1] for row in rows}
    if set(outcomes.values()) != {"Success"} or len(outcomes) != len(SEEDS):
        logs = "\n".join(run(sample, "dvc", "queue", "logs", name) for name in outcomes)
        pytest.fail(f"{status}\n{logs}")

    shown = json.loads(run(sample, "dvc", "exp", "show", "--json"))
    baseline = next(row for row in shown if row["rev"] != "workspace")
    results = {}
    for experiment in baseline["experiments"]:
        data = experiment["revs"][0]["data"]
        seed = data["params"]["params.yaml"]["data"]["train"]["seed"]
        metrics = data["metrics"]["dvclive/metrics.json"]["data"]
        results[seed] = metrics
        assert metrics["epoch"] == EPOCHS - 1, seed  # every epoch ran
    assert sorted(results) == list(SEEDS)
    aurocs = {seed: metrics["val"]["auroc"] for seed, metrics in results.items()}
    assert len(set(aurocs.values())) == len(SEEDS), aurocs  # the seed changed the model
    # The workspace is as it was: queued experiments run in their own copies of the repository.
    assert run(sample, "git", "status", "--porcelain").strip() == ""
