"""Splitting the clean table: the split config, the seeded stratified cut, and reading a split back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from gitml.checked_config import ConfigReader
from gitml.errors import GitmlError
from gitml.paths import Paths

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of each split, the seed, the columns to stratify on, the drift reference size."""

    fractions: dict[str, float]
    seed: int
    stratify: tuple[str, ...]
    reference_rows: int

    @classmethod
    def from_config(cls, cfg: Any, label: str, source: str) -> SplitConfig:
        reader = ConfigReader(source, "split", cfg, {"seed", "fractions", "stratify", "reference_rows"})
        shares = ConfigReader(source, "split.fractions", reader.required("fractions"), set(SPLITS))
        fractions = {name: shares.number(name, None) for name in SPLITS}
        if any(f is None or f <= 0 for f in fractions.values()):
            shares.fail(f"give each of {', '.join(SPLITS)} a positive share, got {dict(shares.mapping)}")
        if abs(sum(f for f in fractions.values() if f) - 1) > 1e-9:
            shares.fail(f"the shares must add up to 1, got {dict(shares.mapping)}")
        named = reader.required("stratify")
        if named is None:  # null: the label alone
            named = [label]
        one = [named] if isinstance(named, str) else named  # one column's name alone is a list of one
        stratify = ConfigReader(source, "split", {"stratify": one}, {"stratify"}).strings("stratify")
        if not stratify:
            reader.fail(f"stratify must name at least one column, e.g. the label: [{label}]")
        return cls(
            fractions={name: float(f or 0) for name, f in fractions.items()},
            seed=reader.integer("seed"),
            stratify=stratify,
            reference_rows=reader.integer("reference_rows", minimum=1),
        )


def stratified_split(
    strata: pd.Series[Any], fractions: Mapping[str, float], seed: int
) -> dict[str, npt.NDArray[np.int64]]:
    """Row positions of each split: every stratum is shuffled with the seed and cut by the fractions."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[npt.NDArray[np.int64]]] = {name: [] for name in fractions}
    codes = pd.factorize(strata, sort=True)[0]
    for code in np.unique(codes):
        members = rng.permutation(np.flatnonzero(codes == code))
        cuts = np.round(np.cumsum(list(fractions.values()))[:-1] * len(members)).astype(int)
        for name, chunk in zip(fractions, np.split(members, cuts), strict=True):
            parts[name].append(chunk)
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def load_split(paths: Paths, name: str) -> pd.DataFrame:
    """One split written by this stage: train, val, test or reference."""
    path = paths.split_file(name)
    if not path.is_file():
        raise GitmlError(f"{path}: not found; run the split stage first (dvc repro split).")
    frame = pd.read_parquet(path)
    if frame.empty:
        raise GitmlError(f"{path}: has no rows; see reports/split.json.")
    return frame
