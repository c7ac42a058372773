"""What the server serves: the model bundle, verified, and where it came from (its manifest, no git)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gitml.bundle import Bundle, load, runtime
from gitml.data.features import NumericFeature
from gitml.data.schema import DatasetSchema
from gitml.paths import MODEL
from gitml.serve.encode import Columns, RecordEncoder
from gitml.serve.requests import Record, request_columns

VERSION_ENV, GIT_SHA_ENV = "GITML_MODEL_VERSION", "GITML_GIT_SHA"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Lineage:
    """Which model this is: its version and commit (set by the image), the data and model it was built from."""

    model_version: str
    git_sha: str
    data_hash: str
    model_sha256: str
    params_sha256: str

    @classmethod
    def of(cls, bundle: Bundle, env: Mapping[str, str]) -> Lineage:
        """The bundle's manifest, with the version and commit the serving image was built for."""
        manifest = bundle.manifest
        digest = manifest.files[MODEL]
        return cls(
            model_version=env.get(VERSION_ENV) or f"unversioned+{digest[:12]}",
            git_sha=env.get(GIT_SHA_ENV) or UNKNOWN,
            data_hash=manifest.data.get("train", UNKNOWN),
            model_sha256=digest,
            params_sha256=manifest.params_sha256,
        )


class ServedModel:
    """The model bundle (gitml.bundle), verified on load, scoring validated records."""

    def __init__(self, models: Path, env: Mapping[str, str]) -> None:
        self.bundle = load(models)
        self.schema: DatasetSchema = self.bundle.schema
        self.spec = self.bundle.spec
        self.threshold = self.bundle.threshold.value
        self.classes = self.bundle.classes
        self._cutoff = np.float32(self.threshold)  # the evaluate stage compares float32 scores with it
        self.session = self.bundle.session
        self.encoder = RecordEncoder(self.spec)
        self.lineage = Lineage.of(self.bundle, env)

    def predict(self, columns: Columns, n: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Scores (the positive class's probability) and decisions (score >= threshold) of `n` records."""
        scores = runtime.run(self.session, self.encoder(columns, n))
        return scores, scores >= self._cutoff

    def example(self) -> Record:
        """A valid record: each input's training centre or first category (warm-up and API docs)."""
        centers = {f.name: f.center for f in self.spec.features if isinstance(f, NumericFeature)}
        record: Record = {}
        for column in request_columns(self.schema):
            if column.categories:
                record[column.name] = column.categories[0]
            elif column.numeric:
                value = centers.get(column.name, column.minimum or 0.0)
                low = column.minimum if column.minimum is not None else value
                high = column.maximum if column.maximum is not None else value
                value = min(max(value, low), high)
                record[column.name] = round(value) if column.dtype == "integer" else value
            else:
                record[column.name] = None if column.nullable else "example"
        return record
