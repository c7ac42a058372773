"""benchmarks/train_epoch.py keeps running against the code it measures (no timing is asserted)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from gitml.paths import Paths
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("train_epoch")


@pytest.fixture(autouse=True)
def torch_state() -> Iterator[None]:
    """The benchmark sets torch's threads and determinism for the whole process; a later training in
    this test process must start from what it had (a model trained on other threads differs in its
    last bits from one trained before)."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_training_benchmark_compares_like_with_like(bench: ModuleType, data_sample: Paths, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    assert bench.main(["--root", str(data_sample.root), "--epochs", "2", "--rounds", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["same_training"] is True  # both sides did the same arithmetic on the same batches
    assert set(figures["ratio"]) == {"bare", "project"}
    assert all(len(runs[0]) == 2 for runs in figures["epoch_seconds"].values())


def test_training_benchmark_needs_the_splits(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--root", str(tmp_path)]) == 1
    assert "run `make run` first" in capsys.readouterr().err


def test_model_quality_benchmark_runs_the_stages_on_the_same_splits(tmp_path: Path) -> None:
    """benchmarks/model_quality.py on 600 rows of the selected dataset, two splits: every model
    scored on each split's test rows, the differences computed from the same runs."""
    from tests.conftest import REPO

    quality = load_benchmark("model_quality")
    out = tmp_path / "quality.json"
    assert quality.main(["--rows", "600", "--repeats", "2", "--json", str(out), "--root", str(REPO)]) == 0
    data = quality.selected_data(REPO)
    result = json.loads(out.read_text())[data]["600"]
    runs, summary = result["runs"], result["summary"]
    assert [r["seed"] for r in runs] == [0, 1]
    for run in runs:
        assert set(run["auroc"]) == {"network", "logistic_regression", "gradient_boosting"}
        assert all(0.5 < v <= 1 for v in run["auroc"].values()), run
        assert run["rows"]["train"] + run["rows"]["test"] < 600
    to_lr = [r["auroc"]["network"] - r["auroc"]["logistic_regression"] for r in runs]
    assert summary["network_minus_logistic"] == {"mean": sum(to_lr) / 2, "worst": min(to_lr)}
    assert runs[0]["auroc"] != runs[1]["auroc"]  # two different splits
