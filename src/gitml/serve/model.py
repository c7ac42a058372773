"""What the server serves: the ONNX model, its preprocessing and threshold, and where they came from."""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from gitml.config import dataset_schema
from gitml.data.features import NumericFeature, PreprocessSpec
from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError
from gitml.evaluate.threshold import read_threshold
from gitml.model import runtime
from gitml.paths import Paths
from gitml.serve.encode import Columns, RecordEncoder
from gitml.serve.requests import Record, request_columns

VERSION_ENV, GIT_SHA_ENV = "GITML_MODEL_VERSION", "GITML_GIT_SHA"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Lineage:
    """Which model this is: its GTO version, the commit and the training data it came from."""

    model_version: str
    git_sha: str
    data_hash: str
    model_sha256: str

    @classmethod
    def find(cls, paths: Paths, params: Mapping[str, Any], env: Mapping[str, str]) -> Lineage:
        """From the environment (the image sets them), else from git and dvc.lock in a checkout."""
        digest = hashlib.sha256(paths.onnx.read_bytes()).hexdigest()
        sha = env.get(GIT_SHA_ENV) or _git(paths.root, "rev-parse", "HEAD") or UNKNOWN
        version = env.get(VERSION_ENV) or _gto_version(paths.root, _artifact(params)) or f"unversioned+{digest[:12]}"
        return cls(model_version=version, git_sha=sha, data_hash=_train_data_md5(paths), model_sha256=digest)


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _artifact(params: Mapping[str, Any]) -> str:
    champion = (params.get("gates") or {}).get("champion") or {}
    return str(champion.get("artifact", "model")) if isinstance(champion, Mapping) else "model"


def _gto_version(root: Path, artifact: str) -> str | None:
    """The version GTO registered at HEAD: its tag is `<artifact>@v1.2.3`."""
    tags = _git(root, "tag", "--points-at", "HEAD") or ""
    pattern = re.compile(rf"^{re.escape(artifact)}@(v\d+\.\d+\.\d+\S*)$")
    versions = [m.group(1) for tag in tags.splitlines() if (m := pattern.match(tag))]
    return sorted(versions)[-1] if versions else None


def _train_data_md5(paths: Paths) -> str:
    """The md5 DVC recorded for the train split the model learned from (dvc.lock)."""
    lock = paths.root / "dvc.lock"
    try:
        stages = yaml.safe_load(lock.read_text(encoding="utf-8"))["stages"]
        train = paths.split_file("train").relative_to(paths.root).as_posix()
        return next(str(dep["md5"]) for dep in stages["train"]["deps"] if dep["path"] == train)
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration):
        return UNKNOWN


class ServedModel:
    """The exported model with its preprocessing and threshold, scoring validated records."""

    def __init__(self, paths: Paths, params: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.schema: DatasetSchema = dataset_schema(params, paths.params)
        for path, stage in ((paths.onnx, "export"), (paths.preprocess, "train"), (paths.threshold, "evaluate")):
            if not path.is_file():
                raise GitmlError(
                    f"{path}: not found; the {stage} stage writes it. Run `make run` (or `dvc pull` to fetch "
                    "the committed model) before `gitml serve`."
                )
        self.spec = PreprocessSpec.load(paths.preprocess)
        needed = {c.name for c in request_columns(self.schema)}
        missing = [name for name in self.spec.input_columns if name not in needed]
        if self.spec.dataset != self.schema.name or missing:
            raise GitmlError(
                f"{paths.preprocess} was fitted on dataset '{self.spec.dataset}' with inputs {', '.join(missing)} that "
                f"the dataset schema '{self.schema.name}' in {paths.params} does not list. The model and params.yaml "
                "come from different commits: re-run the pipeline (`make run`) or check out matching files."
            )
        self.threshold = read_threshold(paths)
        self.classes = _classes(self.schema)
        self._cutoff = np.float32(self.threshold)  # the evaluate stage compares float32 scores with it
        try:
            self.session = runtime.session(paths.onnx)
        except Exception as exc:  # ONNX Runtime raises its own exception types for a damaged file
            raise GitmlError(f"{paths.onnx}: ONNX Runtime cannot load it ({exc}); re-run the export stage.") from exc
        self.encoder = RecordEncoder(self.spec)
        self.lineage = Lineage.find(paths, params, env)

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


def _classes(schema: DatasetSchema) -> tuple[str, str]:
    """(negative class, positive class): what a decision of False and of True mean."""
    positive = schema.positive_class
    negative = next((c for c in schema.label.categories or () if c != positive), f"not {positive}")
    return negative, positive
