"""The model bundle: what training hands to everything that scores, gates, reports or serves.

A bundle is the folder `models/` with four files:

  model.onnx       the network (ONNX; features in, positive-class probability out)   export stage
  preprocess.json  the fitted preprocessing, applied with NumPy alone                train stage
  threshold.json   the decision threshold chosen on the validation split             evaluate stage
  manifest.json    format version, sha256 of the three files, the dataset schema,    evaluate stage
                   label and classes, data and params hashes, the test metrics, and
                   the probe: one record and the model's score for it

The evaluate stage completes the bundle and writes its manifest (`write_manifest`); every reader
opens it with `load`, which checks the format version, each file's sha256 against the manifest
and the preprocessing's sha256 against the one export wrote into the ONNX metadata. A bundle that
fails a check is refused with a message that names the file. NumPy and ONNX Runtime only: the
server (the `serve` extra, no torch, no git, no dvc.lock) loads the bundle through this module.

The probe (`Probe`; gitml.evaluate.probe builds it) is one record in the form the server's
/predict takes, made of the test split's typical values, and the exported model's score for it as
the evaluate stage computes it. Posted to a deployed server, it must come back with that score:
the server runs this bundle, preprocessing included.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gitml.data.features import PreprocessSpec
from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError
from gitml.io import sha256_file, write_json
from gitml.outputs import json_object, read_json
from gitml.paths import MANIFEST as MANIFEST
from gitml.paths import MODEL as MODEL
from gitml.paths import PREPROCESS as PREPROCESS
from gitml.paths import THRESHOLD as THRESHOLD

FORMAT_VERSION = 1
FILES = (MODEL, PREPROCESS, THRESHOLD)  # what the manifest vouches for
WRITTEN_BY = {PREPROCESS: "train", MODEL: "export", THRESHOLD: "evaluate", MANIFEST: "evaluate"}
# The ONNX metadata key under which export records the preprocessing it was trained behind.
SPEC_KEY = "gitml.preprocess_sha256"
REBUILD = "Re-run the pipeline (`make run`, or `dvc repro`) or fetch the committed bundle (`dvc pull`)"


def sha256_json(data: Any) -> str:
    """The sha256 of a value's canonical JSON (sorted keys, no spaces): the same for equal values."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Threshold:
    """threshold.json: predict the positive class when the score is at or above `value`."""

    value: float
    rule: str
    chosen_on: str
    positive_class: str

    def as_json(self) -> dict[str, Any]:
        return {
            "threshold": self.value,
            "rule": self.rule,
            "chosen_on": self.chosen_on,
            "positive_class": self.positive_class,
        }

    @classmethod
    def read(cls, path: Path) -> Threshold:
        data = _object(path, read_json(path, "evaluate", REBUILD))
        value = data.get("threshold")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise GitmlError(f"{path}: threshold {value!r} is not a probability; re-run the evaluate stage.")
        return cls(
            float(value), str(data.get("rule", "")), str(data.get("chosen_on", "")), str(data.get("positive_class", ""))
        )


@dataclass(frozen=True)
class Probe:
    """A /predict record and the exported model's score for it (a float32, as a Python float)."""

    record: dict[str, Any]  # field -> value, as the stored data has it (None for a missing value)
    score: float

    @classmethod
    def parse(cls, loaded: Any, path: Path | str) -> Probe:
        """The manifest's `probe`, checked: a record object and a probability."""
        if not isinstance(loaded, dict):
            raise GitmlError(f"{path}: `probe` is missing or not a dict; the file is damaged. {REBUILD}.")
        record, score = loaded.get("record"), loaded.get("score")
        if not isinstance(record, dict) or not record or not all(_scalar(v) for v in record.values()):
            raise GitmlError(
                f"{path}: `probe.record` is missing, empty or not field -> value; the file is damaged. {REBUILD}."
            )
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise GitmlError(f"{path}: `probe.score` {score!r} is not a probability; the file is damaged. {REBUILD}.")
        return cls(record=dict(record), score=float(score))


@dataclass(frozen=True)
class Manifest:
    """manifest.json: what the bundle holds and where it came from."""

    format_version: int
    files: dict[str, str]  # file name -> sha256
    dataset: str
    label: str
    positive_class: str
    negative_class: str
    schema: dict[str, Any]  # the `data` section of params.yaml the model was built with
    data: dict[str, str]  # split (train, val, test) -> sha256 of the Parquet file
    params_sha256: str  # of the params.yaml sections that shaped the bundle (PARAMS)
    metrics: dict[str, float]  # the headline test metrics, and the threshold
    probe: Probe  # a record and the model's score for it: what a smoke test of a deployment posts

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls.parse(read_json(path, "evaluate", REBUILD), path)

    @classmethod
    def parse(cls, loaded: Any, path: Path | str) -> Manifest:
        """A manifest from its parsed JSON (a file here, or one commit's, from git)."""
        data = _object(path, loaded)
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise GitmlError(
                f"{path}: bundle format version {version!r}, but this gitml reads version {FORMAT_VERSION}. "
                f"The bundle was made by another version of gitml: {REBUILD}."
            )
        fields = {
            "files": dict, "dataset": str, "label": str, "positive_class": str, "negative_class": str,
            "schema": dict, "data": dict, "params_sha256": str, "metrics": dict,
        }  # fmt: skip
        for key, kind in fields.items():
            if not isinstance(data.get(key), kind):
                raise GitmlError(
                    f"{path}: `{key}` is missing or not a {kind.__name__}; the file is damaged. {REBUILD}."
                )
        missing = [name for name in FILES if not isinstance(data["files"].get(name), str)]
        if missing:
            raise GitmlError(f"{path}: records no sha256 for {', '.join(missing)}; the file is damaged. {REBUILD}.")
        probe = Probe.parse(data.get("probe"), path)
        return cls(**{key: data[key] for key in ("format_version", *fields)}, probe=probe)


# The params.yaml sections whose values shaped the bundle; their hash goes into the manifest.
PARAMS = ("data", "split", "preprocess", "train", "model", "trainer", "export", "evaluate")


def params_sha256(params: Mapping[str, Any]) -> str:
    return sha256_json({name: params.get(name) for name in PARAMS})


def write_manifest(
    directory: Path,
    schema_config: Mapping[str, Any],
    schema: DatasetSchema,
    data: Mapping[str, Path],
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    probe: Probe,
) -> Manifest:
    """Record the finished bundle in `directory`: called once, by the stage that completes it
    (evaluate), with the probe it scored (gitml.evaluate.probe)."""
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        raise GitmlError(f"{directory}: {', '.join(missing)} not found; the bundle is incomplete. {REBUILD}.")
    files = {name: sha256_file(directory / name) for name in FILES}
    negative, positive = classes(schema)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        files=files,
        dataset=schema.name,
        label=schema.label.name,
        positive_class=positive,
        negative_class=negative,
        schema=json.loads(json.dumps(dict(schema_config))),
        data={name: sha256_file(path) for name, path in sorted(data.items())},
        params_sha256=params_sha256(params),
        metrics={
            k: v if isinstance(v, int) else float(v)
            for k, v in sorted(metrics.items())
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        },
        probe=probe,
    )
    write_json(directory / MANIFEST, manifest.as_json())
    return manifest


def classes(schema: DatasetSchema) -> tuple[str, str]:
    """(negative class, positive class): what a decision of False and of True mean."""
    positive = schema.positive_class
    negative = next((c for c in schema.label.categories or () if c != positive), f"not {positive}")
    return negative, positive


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its files match its manifest, and the model matches its preprocessing."""

    directory: Path
    manifest: Manifest
    spec: PreprocessSpec
    threshold: Threshold
    schema: DatasetSchema
    session: Any  # the ONNX Runtime session load opened to check the model, kept for scoring (bundle.runtime)

    @property
    def onnx(self) -> Path:
        return self.directory / MODEL

    @property
    def classes(self) -> tuple[str, str]:
        return self.manifest.negative_class, self.manifest.positive_class


def load(directory: Path) -> Bundle:
    """Open and verify the bundle in `directory`; a GitmlError names the first file that fails."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        present = [name for name in FILES if (directory / name).is_file()]
        raise GitmlError(
            f"{manifest_path}: not found; the evaluate stage writes it when it completes the bundle "
            f"({', '.join(present) or 'no model file'} present). {REBUILD}."
        )
    manifest = Manifest.read(manifest_path)
    for name in FILES:
        path = directory / name
        if not path.is_file():
            raise GitmlError(f"{path}: not found; the {WRITTEN_BY[name]} stage writes it. {REBUILD}.")
        actual = sha256_file(path)
        if actual != manifest.files[name]:
            raise GitmlError(
                f"{path}: its sha256 {actual[:12]}... is not the {manifest.files[name][:12]}... that {manifest_path} "
                f"records: the bundle's files come from different runs, or one was changed. {REBUILD}."
            )
    spec = PreprocessSpec.load(directory / PREPROCESS)
    session = open_model(directory / MODEL)
    check_model_spec(session, directory / MODEL, spec.sha256)
    threshold = Threshold.read(directory / THRESHOLD)
    schema = DatasetSchema.from_config(manifest.schema, source=f"{manifest_path}: schema")
    if spec.dataset != schema.name or threshold.positive_class != schema.positive_class:
        raise GitmlError(f"{manifest_path}: its schema does not describe {PREPROCESS} and {THRESHOLD}. {REBUILD}.")
    return Bundle(directory, manifest, spec, threshold, schema, session)


def open_model(path: Path) -> Any:
    """An ONNX Runtime session on the model file (bundle.runtime.session); GitmlError for a damaged file."""
    from gitml.bundle import runtime

    try:
        return runtime.session(path)
    except Exception as exc:  # ONNX Runtime raises its own exception types for a damaged file
        raise GitmlError(f"{path}: ONNX Runtime cannot load it ({exc}). {REBUILD}.") from exc


def model_metadata(session: Any) -> dict[str, str]:
    """The ONNX model's metadata (key -> value), as ONNX Runtime reads it."""
    return dict(session.get_modelmeta().custom_metadata_map)


def check_model_spec(session: Any, model: Path, spec_sha256: str) -> None:
    """Refuse a model exported behind another preprocessing than the spec beside it."""
    recorded = model_metadata(session).get(SPEC_KEY)
    if recorded != spec_sha256:
        raise GitmlError(
            f"{model}: was exported for the preprocessing with sha256 {str(recorded)[:12]}..., but "
            f"{model.parent / PREPROCESS} has {spec_sha256[:12]}...: they come from different runs. {REBUILD}."
        )


def _scalar(value: Any) -> bool:
    """A JSON string, number or null: what a record's field holds."""
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _object(path: Path | str, data: Any) -> dict[str, Any]:
    return json_object(data, path, REBUILD)
