"""train -> export -> evaluate on a small sample of Adult, with the real Hydra config (CPU, 3 epochs)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from gitml.bundle.runtime import onnx_scores
from gitml.cli import main
from gitml.config import compose_params, dataset_schema, load_params
from gitml.data.features import PreprocessSpec, matrices
from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError
from gitml.evaluate.threshold import choose_threshold
from gitml.model.lightning import TabularClassifier
from gitml.paths import Paths
from gitml.stages import export, train
from tests.conftest import (
    Trained,
    copy_repo,
    run_toy_pipeline,
    train_export_evaluate,
)

Fresh = Callable[..., Paths]


@pytest.fixture(scope="module")
def trained(trained_sample: Trained, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The suite's trained sample (tests/conftest.py), copied: tests here write into it."""
    return copy_repo(trained_sample[0], tmp_path_factory.mktemp("stages")), trained_sample[1]


def test_train_writes_the_spec_the_checkpoint_and_dvclive_curves(trained: Trained) -> None:
    paths, reports = trained
    report = reports["train"]
    assert report["rows"] == {name: len(pd.read_parquet(paths.split_file(name))) for name in ("train", "val")}
    assert report["epochs"] == 3
    assert 0 <= report["best_epoch"] < 3
    monitor = load_params(paths.params)["train"]["early_stopping"]["monitor"]
    assert list(report["best"]) == [monitor]  # the best epoch is chosen on the early-stopping metric
    spec = PreprocessSpec.load(paths.preprocess)
    schema = dataset_schema(load_params(paths.params), paths.params)
    assert report["features"] == {"columns": len(schema.feature_columns), "width": spec.width}
    module = TabularClassifier.load_from_checkpoint(str(paths.checkpoint), map_location="cpu")
    assert module.hparams["in_features"] == spec.width
    assert module.hparams["model"]["hidden"] == [128, 64]
    # DVCLive: curves named as paths, one row per epoch, and the last epoch's metrics.
    for curve in ("train/loss", "val/loss", "val/auroc"):
        rows = (paths.dvclive / "plots" / "metrics" / f"{curve}.tsv").read_text().splitlines()
        assert len(rows) == 1 + 3, curve
    live = json.loads((paths.dvclive / "metrics.json").read_text())
    assert set(live["val"]) == {"auroc", "loss"}
    assert live["val"]["auroc"] > 0.6  # a real signal, even from a small sample and 3 epochs
    assert not (paths.dvclive / "dvc.yaml").exists()  # dvc.yaml of the repository declares them
    assert json.loads(paths.train_report.read_text()) == report


def test_checkpoint_names_no_path_of_this_machine(trained: Trained) -> None:
    paths, _ = trained
    assert str(paths.root).encode() not in paths.checkpoint.read_bytes()
    assert str(paths.root).encode() not in paths.onnx.read_bytes()


def test_onnx_has_a_dynamic_batch_axis_and_matches_torch(trained: Trained) -> None:
    paths, reports = trained
    assert reports["export"]["passed"] is True
    assert reports["export"]["rows"] == len(pd.read_parquet(paths.split_file("test")))
    assert reports["export"]["max_abs_diff"] <= 1e-5
    model = onnx.load(str(paths.onnx))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param
    assert not batch.dim_value
    spec = PreprocessSpec.load(paths.preprocess)
    assert {p.key: p.value for p in model.metadata_props}["gitml.preprocess_sha256"] == spec.sha256
    x = np.random.default_rng(0).normal(size=(7, spec.width)).astype(np.float32)
    for rows in (1, 7):
        assert onnx_scores(paths.onnx, x[:rows]).shape == (rows,)


def test_evaluate_reports_metrics_groups_and_plot_data(trained: Trained) -> None:
    paths, reports = trained
    metrics = json.loads(paths.metrics.read_text())
    assert metrics == reports["evaluate"]
    assert set(metrics["test"]) >= {
        "accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc", "average_precision", "brier", "ece",
    }  # fmt: skip
    schema = dataset_schema(load_params(paths.params), paths.params)
    test_rows = len(pd.read_parquet(paths.split_file("test")))
    assert metrics["test"]["rows"] == test_rows
    protected = [c.name for c in schema.protected_columns]
    assert set(metrics["fairness"]) == set(protected)
    for gaps in metrics["fairness"].values():
        assert set(gaps) >= {
            "demographic_parity_difference", "demographic_parity_ratio", "equal_opportunity_difference",
            "equalized_odds_difference",
        }  # fmt: skip
    groups = json.loads(paths.fairness.read_text())
    for column in schema.protected_columns:
        if column.band_labels is not None:  # a banded number's groups are its bands
            assert set(groups[column.name]) <= set(column.band_labels)
        assert sum(g["size"] for g in groups[column.name].values()) == test_rows
    for name in ("roc.json", "pr.json", "calibration.json", "groups.json"):
        assert json.loads((paths.plots / name).read_text()), name
    confusion = (paths.plots / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted"
    assert len(confusion) == test_rows + 1


def test_threshold_is_chosen_on_validation_and_saved_for_the_server(trained: Trained) -> None:
    paths, reports = trained
    params = load_params(paths.params)
    schema = DatasetSchema.from_config(params["data"])
    spec = PreprocessSpec.load(paths.preprocess)
    x_val, y_val = matrices(spec, schema, pd.read_parquet(paths.split_file("val")))
    rule = params["evaluate"]["threshold"]
    expected = round(choose_threshold(onnx_scores(paths.onnx, x_val), y_val, rule["rule"], rule["value"]), 6)
    saved = json.loads(paths.threshold.read_text())
    assert saved["threshold"] == expected == reports["evaluate"]["threshold"]["value"]
    scores = pd.read_parquet(paths.test_scores)
    x_test, _ = matrices(spec, schema, pd.read_parquet(paths.split_file("test")))
    np.testing.assert_array_equal(scores["score"].to_numpy(), onnx_scores(paths.onnx, x_test))
    assert (scores["decision"] == (scores["score"] >= expected)).all()


def test_same_seed_gives_identical_metrics_and_model(trained: Trained, fresh_copy: Fresh) -> None:
    first, _ = trained
    second = fresh_copy()
    train_export_evaluate(second)
    assert second.metrics.read_bytes() == first.metrics.read_bytes()
    assert second.onnx.read_bytes() == first.onnx.read_bytes()
    assert second.checkpoint.read_bytes() == first.checkpoint.read_bytes()


def test_parity_check_fails_the_stage_when_the_graph_is_wrong(
    trained: Trained, fresh_copy: Fresh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graph that does not compute what torch does (here: one bias shifted) must stop the stage."""
    paths = fresh_copy()
    for name in ("preprocess.json", "model.ckpt"):
        (paths.models / name).parent.mkdir(parents=True, exist_ok=True)
        (paths.models / name).write_bytes((trained[0].models / name).read_bytes())
    real_export = export.export_onnx

    def wrong_export(model: torch.nn.Module, width: int, path: Path, opset: int, metadata: dict[str, str]) -> None:
        real_export(model, width, path, opset, metadata)
        proto = onnx.load(str(path))
        bias = next(t for t in proto.graph.initializer if len(t.dims) == 1 and t.dims[0] == 1)  # the output bias
        values = onnx.numpy_helper.to_array(bias) + 0.05
        bias.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), bias.name))
        onnx.save(proto, str(path))

    monkeypatch.setattr(export, "export_onnx", wrong_export)
    with pytest.raises(GitmlError, match=r"ONNX parity check failed: .* differ by"):
        export.run(load_params(paths.params), paths)
    report = json.loads(paths.export_report.read_text())
    assert report["passed"] is False
    assert report["max_abs_diff"] > 1e-3


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            "truncated",
            r"model.ckpt: not readable as a checkpoint the train stage writes \(\w+\)\. Re-run `dvc repro train`",
        ),
        ("no weights", r"model.ckpt: holds no 'state_dict'; not a checkpoint the train stage writes"),
        ("other network", r"model.ckpt: not readable as a checkpoint the train stage writes \(RuntimeError\)"),
    ],
)
def test_a_damaged_checkpoint_is_named_with_the_stage_to_rerun(
    trained: Trained, fresh_copy: Fresh, damage: str, message: str
) -> None:
    paths = fresh_copy()
    paths.models.mkdir(parents=True, exist_ok=True)
    (paths.models / "preprocess.json").write_bytes((trained[0].models / "preprocess.json").read_bytes())
    good = trained[0].checkpoint.read_bytes()
    if damage == "truncated":
        paths.checkpoint.write_bytes(good[: len(good) // 2])
    else:
        checkpoint = torch.load(trained[0].checkpoint, map_location="cpu", weights_only=True)
        if damage == "no weights":
            del checkpoint["state_dict"]
        else:  # weights of a network with other layer widths than its config says
            checkpoint["hyper_parameters"]["model"]["hidden"] = [7]
        torch.save(checkpoint, paths.checkpoint)
    with pytest.raises(GitmlError, match=message):
        export.run(load_params(paths.params), paths)
    assert not paths.onnx.exists()


def test_reweighing_and_class_weight_change_training(fresh_copy: Fresh) -> None:
    paths = fresh_copy("train.reweigh.enabled=true", "train.class_weight=balanced", "trainer.max_epochs=1")
    params = load_params(paths.params)
    report = train.run(params, paths)
    schema = dataset_schema(params, paths.params)
    named = params["train"]["reweigh"]["attributes"]  # null: every protected attribute
    assert report["reweigh"] == (named if named is not None else [c.name for c in schema.protected_columns])
    labels = pd.read_parquet(paths.split_file("train"))[schema.label.name].astype(str)
    positives = (labels == schema.positive_class).sum()
    negatives = len(labels) - positives
    assert report["pos_weight"] == pytest.approx(negatives / positives, abs=1e-5)


def test_reweighing_makes_group_and_label_independent() -> None:
    rng = np.random.default_rng(0)
    sex = rng.choice(["F", "M"], size=5000, p=[0.33, 0.67])
    y = (rng.random(5000) < np.where(sex == "F", 0.11, 0.31)).astype(np.float32)
    weights = train.reweighing(pd.DataFrame({"sex": sex}), y)
    rates = {g: np.average(y[sex == g], weights=weights[sex == g]) for g in ("F", "M")}
    assert rates["F"] == pytest.approx(rates["M"], abs=1e-6)
    assert rates["F"] == pytest.approx(y.mean(), abs=1e-6)
    assert weights.mean() == pytest.approx(1, abs=1e-6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.class_weight=heavy", "class_weight: use balanced, none or a positive number"),
        ("train.reweigh.enabled=true train.reweigh.attributes=[{label}]", "does not mark protected"),
        ("model.activation=swish", "model.activation: 'swish' is not one of"),
        ("model._target_=gitml.model.network.Transformer", r"model \(from conf/model/\)"),
        ("model.optimizer.lr=-1", r"model \(from conf/model/\): Invalid learning rate"),
        ("model.optimizer._target_=torch.optim.Adamw", r"model \(from conf/model/\).*Adamw"),
        ("+model.scheduler.mode=maximum", r"model \(from conf/model/\).*maximum"),
        ("trainer.accelerator=tpu", r"trainer \(from conf/trainer/\)"),
        ("+trainer.max_epoch=3", r"trainer \(from conf/trainer/\)"),
        ("train.early_stopping.monitor=val/acc", "monitor"),
    ],
)
def test_config_mistakes_stop_train_with_a_message(
    fresh_copy: Fresh, data_sample: Paths, override: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    label = dataset_schema(load_params(data_sample.params), data_sample.params).label.name
    paths = fresh_copy(*override.format(label=label).split())
    assert main(["--root", str(paths.root), "train"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gitml train: error: ")
    assert "Traceback" not in err
    assert re.search(message, err), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_trainer_without_a_gpu_says_what_to_use(fresh_copy: Fresh, capsys: pytest.CaptureFixture[str]) -> None:
    paths = fresh_copy()
    compose_params(paths.conf, paths.params, ["trainer=gpu"])  # the shipped GPU config, as it is
    assert main(["--root", str(paths.root), "train"]) == 1
    assert "torch sees no CUDA GPU here. Use trainer=default" in capsys.readouterr().err


def test_export_says_which_stage_to_run_first(fresh_copy: Fresh, capsys: pytest.CaptureFixture[str]) -> None:
    paths = fresh_copy()
    assert main(["--root", str(paths.root), "export"]) == 1
    assert "preprocess.json: not found; the train stage writes it (dvc repro train)" in capsys.readouterr().err
    paths.preprocess.parent.mkdir()
    paths.preprocess.write_text("{}")
    assert main(["--root", str(paths.root), "export"]) == 1
    assert "format None, expected 'gitml-preprocess/1'; re-run the train stage" in capsys.readouterr().err


@pytest.mark.usefixtures("toy_key")
def test_another_dataset_runs_end_to_end(repo: Path, tmp_path: Path) -> None:
    """Nothing in training or evaluation names an Adult column: the toy schema runs through the same stages."""
    paths = run_toy_pipeline(repo, tmp_path, 900)
    spec = PreprocessSpec.load(paths.preprocess)
    assert spec.input_columns == ("age", "city", "balance", "segment")  # the identifier never is an input
    groups = json.loads(paths.fairness.read_text())
    assert set(groups) - {"threshold", "min_group_size", "min_group_cases"} == {
        "age"
    }  # the toy schema's one protected attribute
    assert set(groups["age"]) <= {"<30", "30-49", "50+"}
    assert json.loads(paths.metrics.read_text())["test"]["rows"] == len(pd.read_parquet(paths.split_file("test")))
