"""A scratch repository with the real Hydra config and a small sample of the real Adult splits."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from gitml.config import compose_params, load_params
from gitml.data import ingest, split
from gitml.paths import Paths

# CPU, a few epochs: enough to learn something, quick enough for the suite.
TINY = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=1",
    "train.early_stopping.patience=2",
]
SAMPLE = {"train": 3000, "val": 1000, "test": 1000}


def make_repo(repo: Path, root: Path, overrides: list[str]) -> Paths:
    """conf/ and data/raw from the repository; params.yaml composed with `overrides`; small splits."""
    shutil.copytree(repo / "conf", root / "conf")
    (root / "data").mkdir(parents=True)
    (root / "data" / "raw").symlink_to(repo / "data" / "raw")
    paths = Paths(root)
    compose_params(paths.conf, paths.params, overrides)
    params = load_params(paths.params)
    ingest.run(params, paths)
    split.run(params, paths)
    for name, rows in SAMPLE.items():
        frame = pd.read_parquet(paths.split_file(name))
        frame.sample(n=rows, random_state=0).sort_index().to_parquet(paths.split_file(name), index=False)
    return paths


@pytest.fixture(scope="session")
def adult_sample(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """Ingest and split run once; each test copies the result with `fresh_copy`."""
    return make_repo(repo, tmp_path_factory.mktemp("adult-sample"), TINY)


@pytest.fixture
def fresh_copy(adult_sample: Paths, tmp_path: Path) -> Callable[..., Paths]:
    """A private copy of the sample repository, optionally re-composed with more overrides."""

    def copy(*overrides: str) -> Paths:
        root = tmp_path / f"repo{len(list(tmp_path.iterdir()))}"
        shutil.copytree(adult_sample.root, root, symlinks=True)
        paths = Paths(root)
        if overrides:
            compose_params(paths.conf, paths.params, [*TINY, *overrides])
        return paths

    return copy
