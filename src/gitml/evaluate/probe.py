"""The bundle's probe: one synthetic record and the exported model's score for it.

The record has one field per field of the server's /predict records (the model's inputs, then
the protected attributes that are not inputs), each built from that column of the test split as
the stored data has it (generalised groups and bands included, which the server also takes):
  numeric column     the median of its values (rounded to a whole number for an integer column)
  any other column   its most frequent value; a tie goes to the first in sorted order
  no values at all   null (a nullable column; any other is an error)
Its score is the exported model's for that record, computed as the evaluate stage scores the test
split: the same preprocessing matrix and the same ONNX Runtime session. The deploy smoke test
posts the record to a running server and expects exactly that score back.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from gitml.bundle import Probe, runtime
from gitml.data.features import PreprocessSpec, frame_columns
from gitml.data.schema import Column, DatasetSchema
from gitml.errors import GitmlError


def request_fields(schema: DatasetSchema) -> tuple[Column, ...]:
    """The fields of a /predict record: the model's inputs, then protected attributes that are not inputs.

    The same list as gitml.serve.requests.request_columns (a test holds them equal): the pipeline
    does not import the server.
    """
    inputs = schema.feature_columns
    return (*inputs, *(c for c in schema.protected_columns if c not in inputs))


def typical_value(column: Column, values: pd.Series[Any]) -> Any:
    """The probe's value of one column: median, most frequent value, or None (see the module docstring)."""
    present = values.dropna()
    if present.empty:
        if not column.nullable:
            raise GitmlError(
                f"column {column.name!r} has no values in the test split, and the schema does not allow it to be "
                "missing; see reports/ingest.json and reports/split.json."
            )
        return None
    if column.output_dtype in ("integer", "float"):
        median = float(np.median(present.to_numpy(dtype=np.float64)))
        return round(median) if column.output_dtype == "integer" else median
    counts = Counter(str(v) for v in present.astype(object))
    return min(counts, key=lambda value: (-counts[value], value))


def probe_record(schema: DatasetSchema, test: pd.DataFrame) -> dict[str, Any]:
    """The synthetic record of the test split, one value per /predict field."""
    fields = request_fields(schema)
    absent = [c.name for c in fields if c.name not in test.columns]
    if absent:
        raise GitmlError(f"the test split has no column {', '.join(absent)}; re-run the split stage (dvc repro split).")
    return {column.name: typical_value(column, test[column.name]) for column in fields}


def probe(schema: DatasetSchema, spec: PreprocessSpec, session: Any, test: pd.DataFrame) -> Probe:
    """The probe record of the test split and the model's score for it (a float32, as a Python float)."""
    record = probe_record(schema, test)
    x = spec.transform(frame_columns(pd.DataFrame([record]), spec.input_columns))
    return Probe(record=record, score=float(runtime.run(session, x)[0]))
