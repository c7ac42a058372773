"""Request columns (lists of validated values) -> the model's float32 matrix.

The same arithmetic as `PreprocessSpec.transform`, which the pipeline applies to whole splits,
shaped for the server's two cases: a record or a few go through plain Python, where a NumPy
call per column would cost more than the model; a batch goes column by column through list
comprehensions and NumPy. A test holds both to `transform` on every test row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gitml.data.features import CategoricalFeature, NumericFeature, PreprocessSpec

# Up to this many records, the per-record path is faster than one NumPy pass per column.
SMALL_BATCH = 4
Columns = Mapping[str, Sequence[Any]]


@dataclass(frozen=True)
class _Numeric:
    name: str
    position: int
    center: float
    scale: float
    log1p: bool
    missing_indicator: bool


@dataclass(frozen=True)
class _Categorical:
    name: str
    lookup: dict[object, int]  # value (None for missing) -> column of the matrix
    other: int


class RecordEncoder:
    """Encodes validated request columns with a fitted preprocessing spec."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.width = spec.width
        self.numeric: list[_Numeric] = []
        self.categorical: list[_Categorical] = []
        position = 0
        for feature in spec.features:
            if isinstance(feature, NumericFeature):
                self.numeric.append(
                    _Numeric(
                        feature.name, position, feature.center, feature.scale, feature.log1p, feature.missing_indicator
                    )
                )
            else:
                assert isinstance(feature, CategoricalFeature)
                lookup: dict[object, int] = {c: position + i for i, c in enumerate(feature.categories)}
                other = position + len(feature.categories)
                lookup[None] = other + 1 if feature.missing_bucket else other
                self.categorical.append(_Categorical(feature.name, lookup, other))
            position += len(feature.outputs)
        # The batch path handles all numeric columns as one (columns x records) array.
        self._positions = np.array([f.position for f in self.numeric], dtype=np.int64)
        self._centers = np.array([[f.center] for f in self.numeric], dtype=np.float64)
        self._scales = np.array([[f.scale] for f in self.numeric], dtype=np.float64)
        self._log1p = np.array([f.log1p for f in self.numeric], dtype=bool)
        self._indicated = np.array([f.missing_indicator for f in self.numeric], dtype=bool)

    def __call__(self, columns: Columns, n: int) -> npt.NDArray[np.float32]:
        """The matrix of `n` records given as {column: values}."""
        if n <= SMALL_BATCH:
            return np.array([self._row(columns, i) for i in range(n)], dtype=np.float32).reshape(n, self.width)
        out = np.zeros((n, self.width), dtype=np.float32)
        self._columns(columns, out)
        return out

    def _row(self, columns: Columns, i: int) -> list[float]:
        """Record `i` as Python floats (float64 arithmetic, as in `transform`; float32 at the end)."""
        row = [0.0] * self.width
        for num in self.numeric:
            value = columns[num.name][i]
            if value is None:
                if num.missing_indicator:
                    row[num.position + 1] = 1.0
                continue
            number = float(value)
            if num.log1p:
                number = float(np.log1p(max(number, 0.0)))
            row[num.position] = (number - num.center) / num.scale
        for cat in self.categorical:
            row[cat.lookup.get(columns[cat.name][i], cat.other)] = 1.0
        return row

    def _columns(self, columns: Columns, out: npt.NDArray[np.float32]) -> None:
        n = out.shape[0]
        if self.numeric:
            values = [columns[num.name] for num in self.numeric]
            try:
                numbers = np.array(values, dtype=np.float64)
            except TypeError:  # a missing value (None) among them
                numbers = np.array([[math.nan if v is None else v for v in column] for column in values], np.float64)
            missing = np.isnan(numbers)
            if self._log1p.any():
                numbers[self._log1p] = np.log1p(np.maximum(numbers[self._log1p], 0.0))
            scaled = (numbers - self._centers) / self._scales
            scaled[missing] = 0.0
            out[:, self._positions] = scaled.T
            if self._indicated.any():
                out[:, self._positions[self._indicated] + 1] = missing[self._indicated].T
        if self.categorical:
            codes = [cat.lookup.get(v, cat.other) for cat in self.categorical for v in columns[cat.name]]
            starts = np.tile(np.arange(n, dtype=np.int64) * self.width, len(self.categorical))
            out.reshape(-1)[starts + np.array(codes, dtype=np.int64)] = 1.0
