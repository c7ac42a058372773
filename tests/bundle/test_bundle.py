"""The model bundle: the evaluate stage's manifest, and `load`'s checks on every file of it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from gitml import bundle
from gitml.config import dataset_schema, load_params
from gitml.data.split import SPLITS
from gitml.errors import GitmlError
from gitml.paths import Paths
from tests.conftest import Trained, copy_repo


@pytest.fixture
def sample(trained_sample: Trained, tmp_path: Path) -> Paths:
    """A private copy of the suite's trained sample: these tests damage its bundle."""
    return copy_repo(trained_sample[0], tmp_path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_manifest_records_each_file_the_data_the_params_and_the_metrics(trained_sample: Trained) -> None:
    paths, reports = trained_sample
    manifest = json.loads(paths.manifest.read_text())
    assert manifest["format_version"] == bundle.FORMAT_VERSION
    assert manifest["files"] == {name: sha256(paths.models / name) for name in bundle.FILES}
    assert manifest["data"] == {name: sha256(paths.split_file(name)) for name in SPLITS}
    params = load_params(paths.params)
    assert manifest["params_sha256"] == bundle.params_sha256(params)
    assert manifest["schema"] == params["data"]
    schema = dataset_schema(params, paths.params)
    assert (manifest["dataset"], manifest["label"]) == (schema.name, schema.label.name)
    assert (manifest["negative_class"], manifest["positive_class"]) == bundle.classes(schema)
    metrics = reports["evaluate"]
    assert manifest["metrics"]["threshold"] == metrics["threshold"]["value"]
    assert manifest["metrics"]["auroc"] == metrics["test"]["auroc"]
    assert "model.ckpt" not in manifest["files"]  # torch's checkpoint is not served
    assert set(manifest["probe"]) == {"record", "score"}  # what it holds: tests/stages/test_evaluate.py


def test_load_gives_the_verified_parts(trained_sample: Trained) -> None:
    paths, _ = trained_sample
    loaded = bundle.load(paths.models)
    assert loaded.spec.sha256 == sha256(paths.preprocess)
    assert loaded.threshold.value == json.loads(paths.threshold.read_text())["threshold"]
    assert loaded.schema.name == loaded.spec.dataset
    schema = dataset_schema(load_params(paths.params), paths.params)
    label = schema.label
    assert label.categories is not None
    negative = next(c for c in label.categories if c != schema.positive_class)
    assert loaded.classes == (negative, schema.positive_class)
    assert bundle.model_metadata(loaded.session)[bundle.SPEC_KEY] == loaded.spec.sha256


def test_params_hash_changes_with_a_param_of_the_model_only() -> None:
    params = {"data": {"name": "x"}, "train": {"seed": 1}, "serve": {"port": 8000}}
    same = bundle.params_sha256(params)
    assert bundle.params_sha256({**params, "serve": {"port": 9000}}) == same  # the server's own settings
    assert bundle.params_sha256({**params, "train": {"seed": 2}}) != same
    assert bundle.params_sha256(dict(reversed(list(params.items())))) == same  # key order is not content


@pytest.mark.parametrize("name", bundle.FILES)
def test_a_changed_file_is_refused_by_name(sample: Paths, name: str) -> None:
    path = sample.models / name
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(GitmlError, match=rf"{name}: its sha256 .* is not the .* that .*manifest.json records"):
        bundle.load(sample.models)


@pytest.mark.parametrize(("name", "stage"), [(bundle.MODEL, "export"), (bundle.PREPROCESS, "train")])
def test_a_missing_file_names_the_stage_that_writes_it(sample: Paths, name: str, stage: str) -> None:
    (sample.models / name).unlink()
    with pytest.raises(GitmlError, match=rf"{name}: not found; the {stage} stage writes it"):
        bundle.load(sample.models)


def test_a_missing_manifest_says_which_stage_writes_it(sample: Paths) -> None:
    sample.manifest.unlink()
    with pytest.raises(GitmlError, match=r"manifest.json: not found; the evaluate stage writes it"):
        bundle.load(sample.models)


def test_another_format_version_is_refused(sample: Paths) -> None:
    manifest = json.loads(sample.manifest.read_text())
    sample.manifest.write_text(json.dumps({**manifest, "format_version": bundle.FORMAT_VERSION + 1}))
    with pytest.raises(GitmlError, match=rf"bundle format version {bundle.FORMAT_VERSION + 1}, but this gitml reads"):
        bundle.load(sample.models)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{", "not valid JSON"), ("[]", "expected a JSON object"), ('{"format_version": 1}', "`files` is missing")],
)
def test_a_damaged_manifest_is_refused(sample: Paths, text: str, problem: str) -> None:
    sample.manifest.write_text(text)
    with pytest.raises(GitmlError, match=problem):
        bundle.load(sample.models)


@pytest.mark.parametrize(
    ("probe", "problem"),
    [
        (None, "`probe` is missing or not a dict"),
        ([], "`probe` is missing or not a dict"),
        ({"score": 0.5}, "`probe.record` is missing, empty or not field -> value"),
        ({"record": {}, "score": 0.5}, "`probe.record` is missing, empty or not field -> value"),
        ({"record": {"age": [37]}, "score": 0.5}, "`probe.record` is missing, empty or not field -> value"),
        ({"record": {"age": 37}}, "`probe.score` None is not a probability"),
        ({"record": {"age": 37}, "score": 1.5}, "`probe.score` 1.5 is not a probability"),
        ({"record": {"age": 37}, "score": True}, "`probe.score` True is not a probability"),
    ],
)
def test_a_manifest_without_a_whole_probe_is_refused_by_name(sample: Paths, probe: object, problem: str) -> None:
    manifest = json.loads(sample.manifest.read_text())
    assert bundle.Probe.parse(manifest["probe"], sample.manifest) == bundle.Manifest.read(sample.manifest).probe
    if probe is None:
        del manifest["probe"]
    else:
        manifest["probe"] = probe
    sample.manifest.write_text(json.dumps(manifest))
    with pytest.raises(GitmlError, match=rf"manifest.json: {re.escape(problem)}; the file is damaged"):
        bundle.load(sample.models)


def test_the_manifest_records_the_probe_it_is_given(sample: Paths) -> None:
    params = load_params(sample.params)
    schema = dataset_schema(params, sample.params)
    given = bundle.Probe({"age": 40}, 0.25)
    assert bundle.write_manifest(sample.models, params["data"], schema, {}, params, {}, given).probe == given
    assert bundle.Manifest.read(sample.manifest).probe == given


def test_a_model_exported_for_another_preprocessing_is_refused(sample: Paths) -> None:
    """Every hash in the manifest matches, but the spec is not the one the model was exported behind."""
    spec = json.loads(sample.preprocess.read_text())
    # A spec fitted on other data: a numeric feature's centre moved (its first one, whatever its place).
    numeric = next(f for f in spec["features"] if "center" in f)
    numeric["center"] += 1
    sample.preprocess.write_text(json.dumps(spec))
    manifest = json.loads(sample.manifest.read_text())
    manifest["files"][bundle.PREPROCESS] = sha256(sample.preprocess)
    sample.manifest.write_text(json.dumps(manifest))
    with pytest.raises(
        GitmlError, match=r"model.onnx: was exported for the preprocessing with sha256 .* different runs"
    ):
        bundle.load(sample.models)


def test_a_bundle_loads_from_its_folder_alone(sample: Paths, tmp_path: Path) -> None:
    """No params.yaml, no dvc.lock, no git, no data: the four files are the whole contract."""
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in (*bundle.FILES, bundle.MANIFEST):
        shutil.copy(sample.models / name, alone / name)
    loaded = bundle.load(alone)
    assert loaded.schema.label.name == dataset_schema(load_params(sample.params), sample.params).label.name
    assert loaded.onnx == alone / bundle.MODEL
