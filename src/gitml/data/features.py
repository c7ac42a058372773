"""Preprocessing: raw feature columns -> the model's float32 matrix, fitted on the train split.

The fitted spec is plain JSON (numbers and category lists) that this module applies with NumPy
alone, so the pipeline, the export parity check and the torch-free server turn a record into
exactly the same row. Which columns are numbers, categories or inputs at all comes from the
dataset schema; nothing here names a column.

Layout of the matrix, column by column of the schema's feature list:
  number       standardised value (log1p first for heavily skewed non-negative columns),
               plus a missing indicator when the schema allows it to be missing
  category     one-hot over the categories seen often enough in training, one "other" bucket
               (rare and never-seen categories), and a "missing" bucket when nullable
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError

FORMAT = "gitml-preprocess/1"
OTHER = "__other__"
MISSING = "__missing__"


@dataclass(frozen=True)
class NumericFeature:
    name: str
    log1p: bool
    center: float
    scale: float
    missing_indicator: bool

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.name, f"{self.name}{MISSING}") if self.missing_indicator else (self.name,)


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    categories: tuple[str, ...]
    missing_bucket: bool

    @property
    def outputs(self) -> tuple[str, ...]:
        extra = (OTHER, MISSING) if self.missing_bucket else (OTHER,)
        return tuple(f"{self.name}={c}" for c in (*self.categories, *extra))


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class PreprocessConfig:
    """params.yaml's `preprocess` (conf/config.yaml): every value from there, none here."""

    log1p_skew_above: float | None
    min_category_count: int

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], source: str) -> PreprocessConfig:
        from gitml.checked_config import ConfigReader

        reader = ConfigReader(source, "preprocess", cfg, {"log1p_skew_above", "min_category_count"})
        return cls(
            log1p_skew_above=reader.number("log1p_skew_above"),
            min_category_count=reader.integer("min_category_count", minimum=1),
        )


def _as_float(values: Any) -> npt.NDArray[np.float64]:
    """Numbers as float64 with NaN for missing (None, NaN, pandas NA)."""
    array = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if array.dtype.kind in "fiub":
        return array.astype(np.float64)
    return np.array([np.nan if v is None or v != v else float(v) for v in array], dtype=np.float64)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class PreprocessSpec:
    """A fitted preprocessing: apply it with `transform`, store it with `save`."""

    dataset: str
    features: tuple[Feature, ...]

    @property
    def input_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(name for f in self.features for name in f.outputs)

    @property
    def width(self) -> int:
        return len(self.output_names)

    def transform(self, columns: Mapping[str, Any]) -> npt.NDArray[np.float32]:
        """The model matrix of a table given as {column: values}; extra columns are ignored."""
        absent = [name for name in self.input_columns if name not in columns]
        if absent:
            raise GitmlError(f"preprocessing needs the columns {', '.join(absent)}, which the input does not have.")
        lengths = {len(columns[name]) for name in self.input_columns}
        if len(lengths) > 1:
            raise GitmlError(f"input columns have different lengths: {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        out = np.zeros((n, self.width), dtype=np.float32)
        position = 0
        rows = np.arange(n)
        for feature in self.features:
            values = columns[feature.name]
            if isinstance(feature, NumericFeature):
                numbers = _as_float(values)
                missing = np.isnan(numbers)
                if feature.log1p:
                    numbers = np.log1p(np.maximum(numbers, 0.0))
                scaled = (numbers - feature.center) / feature.scale
                out[:, position] = np.where(missing, 0.0, scaled)
                if feature.missing_indicator:
                    out[:, position + 1] = missing
            else:
                index = {c: i for i, c in enumerate(feature.categories)}
                other = len(feature.categories)
                missing_at = other + 1 if feature.missing_bucket else other
                codes = np.fromiter(
                    (missing_at if _is_missing(v) else index.get(str(v), other) for v in values),
                    dtype=np.int64,
                    count=n,
                )
                out[rows, position + codes] = 1.0
            position += len(feature.outputs)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "dataset": self.dataset,
            "features": [
                {"kind": "numeric" if isinstance(f, NumericFeature) else "categorical", **asdict(f)}
                for f in self.features
            ],
            "outputs": list(self.output_names),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "preprocessing spec") -> PreprocessSpec:
        if data.get("format") != FORMAT:
            raise GitmlError(
                f"{source}: format {data.get('format')!r}, expected {FORMAT!r}; re-run the train stage to refit it."
            )
        features: list[Feature] = []
        try:
            for entry in data["features"]:
                fields = {k: v for k, v in entry.items() if k != "kind"}
                if entry["kind"] == "numeric":
                    features.append(NumericFeature(**fields))
                else:
                    fields["categories"] = tuple(fields["categories"])
                    features.append(CategoricalFeature(**fields))
        except (KeyError, TypeError) as exc:
            raise GitmlError(f"{source}: malformed feature entry ({exc}); re-run the train stage to refit it.") from exc
        spec = cls(dataset=str(data.get("dataset", "")), features=tuple(features))
        if list(spec.output_names) != list(data.get("outputs", [])):
            raise GitmlError(f"{source}: its `outputs` do not match its features; the file was edited or truncated.")
        return spec

    @classmethod
    def load(cls, path: Path) -> PreprocessSpec:
        if not path.is_file():
            raise GitmlError(f"{path}: not found; the train stage writes it (dvc repro train).")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise GitmlError(f"{path}: not valid JSON ({exc}); re-run the train stage.") from exc
        return cls.from_dict(data, str(path))


def _skewness(values: npt.NDArray[np.float64]) -> float:
    std = values.std()
    return 0.0 if std == 0 else float(np.mean(((values - values.mean()) / std) ** 3))


def fit(schema: DatasetSchema, columns: Mapping[str, Any], config: PreprocessConfig) -> PreprocessSpec:
    """Fit the preprocessing of every feature column of the schema on the training table."""
    features: list[Feature] = []
    for column in schema.feature_columns:
        if column.name not in columns:
            raise GitmlError(f"the training table has no column {column.name!r}, which the dataset schema lists.")
        values = columns[column.name]
        if column.output_dtype in ("integer", "float"):
            numbers = _as_float(values)
            present = numbers[~np.isnan(numbers)]
            if present.size == 0:
                raise GitmlError(f"column {column.name!r} has no values in the train split; it cannot be scaled.")
            log1p = bool(
                config.log1p_skew_above is not None
                and present.min() >= 0
                and _skewness(present) > config.log1p_skew_above
            )
            if log1p:
                present = np.log1p(present)
            scale = float(present.std())
            features.append(
                NumericFeature(
                    name=column.name,
                    log1p=log1p,
                    center=float(present.mean()),
                    scale=scale if scale > 0 else 1.0,
                    missing_indicator=column.nullable,
                )
            )
        elif column.output_dtype == "categorical":
            seen: dict[str, int] = {}
            for value in values:
                if not _is_missing(value):
                    seen[str(value)] = seen.get(str(value), 0) + 1
            declared = column.output_categories or ()
            order = [*declared, *sorted(set(seen) - set(declared))]
            kept = tuple(c for c in order if seen.get(c, 0) >= config.min_category_count)
            features.append(CategoricalFeature(name=column.name, categories=kept, missing_bucket=column.nullable))
        else:
            raise GitmlError(
                f"column {column.name!r} is a {column.output_dtype} feature; the model takes numbers and categories. "
                "Give it role: identifier (or pii: drop) in the dataset schema, or change its dtype."
            )
    if not features:
        raise GitmlError("the dataset schema has no feature columns; mark the model's inputs with role: feature.")
    return PreprocessSpec(dataset=schema.name, features=tuple(features))


def frame_columns(frame: Any, names: Sequence[str]) -> dict[str, npt.NDArray[Any]]:
    """Columns of a pandas DataFrame as NumPy arrays, missing values as None / NaN."""
    out: dict[str, npt.NDArray[Any]] = {}
    for name in names:
        series = frame[name]
        if str(series.dtype) in ("category", "object", "string"):
            out[name] = series.astype(object).where(series.notna(), None).to_numpy()
        else:
            out[name] = series.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def matrices(
    spec: PreprocessSpec, schema: DatasetSchema, frame: Any
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The model matrix and the 0/1 labels of a split (a pandas DataFrame)."""
    x = spec.transform(frame_columns(frame, spec.input_columns))
    return x, labels(schema, frame[schema.label.name].to_numpy())


def labels(schema: DatasetSchema, values: Any) -> npt.NDArray[np.float32]:
    """1.0 where the label is the positive class, else 0.0."""
    positive: npt.NDArray[np.bool_] = np.asarray(values, dtype=object) == schema.positive_class
    return positive.astype(np.float32)
