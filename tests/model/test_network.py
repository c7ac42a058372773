"""The default network's numeric embeddings, how a network gets the matrix's layout, and the
scheduler's direction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import onnxruntime as ort
import pytest
import torch

from gitml.data.features import CategoricalFeature, NumericFeature, PreprocessSpec
from gitml.model.lightning import TabularClassifier, scheduler_settings
from gitml.model.network import (
    MLP,
    PeriodicEmbedding,
    Probability,
    build_network,
    frequency_scale,
    numeric_positions,
)

EMBEDDING = {"frequencies": 8, "dim": 4, "scale": 1.0}


def mlp_config(**changes: Any) -> dict[str, Any]:
    return {"_target_": "gitml.model.network.MLP", "hidden": [16], "dropout": 0.0, **changes}


def test_numeric_positions_are_the_standardised_value_columns_of_the_spec() -> None:
    spec = PreprocessSpec(
        dataset="t",
        features=(
            NumericFeature("a", log1p=False, center=0.0, scale=1.0, missing_indicator=True),  # columns 0, 1
            CategoricalFeature("c", categories=("x", "y"), missing_bucket=False),  # 2, 3 and other 4
            NumericFeature("b", log1p=False, center=0.0, scale=1.0, missing_indicator=False),  # 5
        ),
    )
    assert spec.width == 6
    assert numeric_positions(spec) == [0, 5]


def test_embedded_columns_change_the_logit_through_the_embedding_the_rest_as_they_are() -> None:
    torch.manual_seed(0)
    net = MLP(6, hidden=[16], dropout=0.0, numeric_embedding=EMBEDDING, numeric_columns=[0, 5]).eval()
    assert net.embedding is not None
    assert net.embedding.width == 2 * 4
    first = net.layers[0]
    assert isinstance(first, torch.nn.Linear)
    assert first.in_features == 2 * 4 + 4  # two embedded numbers and four other columns
    x = torch.randn(32, 6)
    moved = x.clone()
    moved[:, 5] += 0.5
    with torch.no_grad():
        assert not torch.allclose(net(x), net(moved))
    # A network without numeric columns to embed is the plain MLP over the whole matrix.
    plain = MLP(6, hidden=[16], numeric_embedding=EMBEDDING, numeric_columns=[])
    assert plain.embedding is None


def test_periodic_embedding_is_relu_of_a_per_feature_map_of_cos_and_sin() -> None:
    torch.manual_seed(1)
    embedding = PeriodicEmbedding(features=2, frequencies=3, dim=2, scale=0.5)
    x = torch.tensor([[0.3, -1.2]])
    out = embedding(x)
    assert out.shape == (1, 4)
    for f in range(2):
        angles = 2 * np.pi * embedding.frequencies[f].detach() * x[0, f]
        periodic = torch.cat([torch.cos(angles), torch.sin(angles)])
        expected = torch.relu(periodic @ embedding.weight[f].detach() + embedding.bias[f].detach())
        assert torch.allclose(out[0, 2 * f : 2 * f + 2], expected, atol=1e-6)


@pytest.mark.parametrize(
    ("rows", "expected"), [(700, 0.3), (1_400, 0.3), (8_400, 0.84), (34_152, 3.0), (1_000_000, 3.0), (None, 1.0)]
)
def test_auto_scale_grows_with_the_training_rows_within_bounds(rows: int | None, expected: float) -> None:
    assert frequency_scale("auto", rows) == pytest.approx(expected)


def test_embedding_settings_are_checked() -> None:
    assert frequency_scale(2, 10) == 2.0
    with pytest.raises(ValueError, match="scale: use auto or a positive number"):
        frequency_scale(0, 10)
    with pytest.raises(ValueError, match=r"unknown key.*sigma.*the keys are dim, frequencies, scale"):
        MLP(4, numeric_embedding={"sigma": 1}, numeric_columns=[0])
    with pytest.raises(ValueError, match="frequencies and dim must be positive"):
        MLP(4, numeric_embedding={"dim": 0}, numeric_columns=[0])
    with pytest.raises(ValueError, match="numeric_columns"):
        MLP(4, numeric_embedding=EMBEDDING, numeric_columns=[4])


class OwnNetwork(torch.nn.Module):
    """A user's network that knows nothing of the matrix's layout."""

    def __init__(self, in_features: int, width: int = 3) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x).squeeze(-1)
        return out


def test_the_layout_reaches_only_networks_that_name_it() -> None:
    net = build_network(mlp_config(numeric_embedding=EMBEDDING), 6, numeric_columns=[1, 2], training_rows=500)
    assert isinstance(net, MLP)
    assert net.numeric.tolist() == [1, 2]
    own = build_network({"_target_": f"{__name__}.OwnNetwork"}, 6, numeric_columns=[1, 2], training_rows=500)
    assert isinstance(own, OwnNetwork)


def test_the_embedded_network_exports_to_onnx_with_the_same_scores() -> None:
    torch.manual_seed(2)
    module = TabularClassifier(
        mlp_config(numeric_embedding=EMBEDDING), in_features=6, numeric_columns=[0, 3], training_rows=100
    )
    model = Probability(module.network).eval()
    x = torch.randn(50, 6)
    program = torch.onnx.export(
        model, (x[:2],), input_names=["features"], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False
    )
    assert program is not None
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    onnx_scores = session.run(None, {"features": x.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(onnx_scores, model(x).numpy(), atol=1e-5)


def test_the_checkpoint_rebuilds_the_same_network(tmp_path: Path) -> None:
    torch.manual_seed(3)
    module = TabularClassifier(
        mlp_config(numeric_embedding=EMBEDDING), in_features=6, numeric_columns=[0, 3], training_rows=100
    )
    trainer = L.Trainer(max_epochs=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = TabularClassifier.load_from_checkpoint(str(path), map_location="cpu").eval()
    x = torch.randn(8, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), module.eval()(x))
    assert loaded.hparams["numeric_columns"] == [0, 3]


@pytest.mark.parametrize(("monitor", "mode"), [("val/loss", "min"), ("val/auroc", "max")])
def test_plateau_scheduler_follows_the_early_stopping_metric(monitor: str, mode: str) -> None:
    plateau = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "_partial_": True, "factor": 0.5}
    assert scheduler_settings(plateau, monitor)["mode"] == mode
    assert scheduler_settings({**plateau, "mode": "max"}, "val/loss")["mode"] == "max"  # an explicit mode stays
    step = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 2}
    assert "mode" not in scheduler_settings(step, monitor)


def fit_with_resume_checkpoint(tmp_path: Path, every: float, epochs: int = 3) -> list[int]:
    """The epochs at whose start ResumeCheckpoint wrote last.ckpt, training a tiny network."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from gitml.model.datamodule import TabularDataModule
    from gitml.model.resume import LAST, ResumeCheckpoint

    torch.manual_seed(0)
    x, y = torch.randn(64, 4), (torch.rand(64) > 0.5).float()
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.01}
    module = TabularClassifier(mlp_config(optimizer=optimizer), in_features=4, monitor="val/loss")
    data = TabularDataModule(train=(x, y, torch.ones(64)), val=(x, y, torch.ones(64)), batch_size=32, seed=0)
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", save_top_k=1, save_weights_only=True)
    resume = ResumeCheckpoint(tmp_path, tmp_path / "live", best, every=every)
    saved: list[int] = []

    class Watch(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if (tmp_path / LAST).exists():
                saved.append(trainer.current_epoch)
                (tmp_path / LAST).unlink()

    trainer = L.Trainer(
        max_epochs=epochs, logger=False, callbacks=[best, resume, Watch()], enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    return saved


def test_resume_checkpoints_are_written_once_their_interval_has_passed(tmp_path: Path) -> None:
    assert fit_with_resume_checkpoint(tmp_path / "every", every=0) == [1, 2]  # each epoch after the first
    assert fit_with_resume_checkpoint(tmp_path / "hour", every=3600) == []  # a short fit: none


@pytest.mark.parametrize(("value", "expected"), [(None, 30.0), ("0", 0.0), ("2.5", 2.5), ("", 30.0)])
def test_the_interval_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: float
) -> None:
    from gitml.model.resume import EVERY_ENV, checkpoint_every

    if value is None:
        monkeypatch.delenv(EVERY_ENV, raising=False)
    else:
        monkeypatch.setenv(EVERY_ENV, value)
    assert checkpoint_every() == expected


@pytest.mark.parametrize("value", ["-1", "soon", "nan"])
def test_an_interval_that_is_not_seconds_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from gitml.errors import GitmlError
    from gitml.model.resume import EVERY_ENV, checkpoint_every

    monkeypatch.setenv(EVERY_ENV, value)
    with pytest.raises(GitmlError, match=r"GITML_CHECKPOINT_SECONDS=.*seconds between resume checkpoints"):
        checkpoint_every()
