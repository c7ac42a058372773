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
