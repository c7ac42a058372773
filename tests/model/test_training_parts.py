"""The data module's batching, the network's options, and the composed trainer configs."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from gitml.config import compose_params
from gitml.errors import GitmlError
from gitml.model.datamodule import TensorBatches
from gitml.model.network import MLP, build_network
from gitml.stages.train import TrainConfig
from tests.conftest import params_section


def table(n: int = 103) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n) % 2, torch.ones(n)


def epoch_rows(batches: TensorBatches) -> list[int]:
    return [int(v) for x, _, _ in batches for v in x[:, 0]]


def test_every_row_once_per_epoch_in_slices_of_batch_size() -> None:
    batches = TensorBatches(table(), batch_size=20, shuffle=True, seed=3)
    assert len(batches) == 6
    sizes = [len(x) for x, _, _ in batches]
    assert sizes == [20, 20, 20, 20, 20, 3]
    assert sorted(epoch_rows(batches)) == list(range(103))


def test_shuffle_is_seeded_and_changes_between_epochs() -> None:
    a = TensorBatches(table(), batch_size=16, shuffle=True, seed=7)
    b = TensorBatches(table(), batch_size=16, shuffle=True, seed=7)
    first, second = epoch_rows(a), epoch_rows(a)
    assert first != second  # a new order each epoch
    assert epoch_rows(b) == first
    assert epoch_rows(b) == second
    assert epoch_rows(TensorBatches(table(), batch_size=16, shuffle=True, seed=8)) != first
    assert epoch_rows(TensorBatches(table(), batch_size=16, shuffle=False)) == list(range(103))


def test_rows_stay_aligned_across_tensors() -> None:
    x, y, w = table()
    for xb, yb, _ in TensorBatches((x, y, w), batch_size=10, shuffle=True, seed=1):
        assert torch.equal(xb[:, 0].long() % 2, yb)


def test_ddp_processes_get_disjoint_equal_shards() -> None:
    shards = [epoch_rows(TensorBatches(table(), 8, shuffle=True, seed=5, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [34, 34, 34]  # equal, or the processes fall out of step
    assert len(set().union(*map(set, shards))) == 102
    assert len(TensorBatches(table(), 8, shuffle=True, rank=0, world_size=3)) == 5


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_network_options_build_and_give_one_logit_per_row(norm: str) -> None:
    net = MLP(10, hidden=[16, 8], dropout=0.2, norm=norm, activation="gelu")
    assert net(torch.randn(5, 10)).shape == (5,)
    kinds = {type(m).__name__ for m in net.modules()}
    assert ("BatchNorm1d" in kinds) == (norm == "batch")
    assert ("LayerNorm" in kinds) == (norm == "layer")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"hidden": []}, "model.hidden"), ({"dropout": 1.0}, "model.dropout"), ({"norm": "group"}, "model.norm")],
)
def test_network_refuses_bad_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MLP(10, **kwargs)  # type: ignore[arg-type]


def compose(repo: Path, tmp_path: Path, *overrides: str) -> dict[str, object]:
    out = tmp_path / "params.yaml"
    compose_params(repo / "conf", out, list(overrides))
    params: dict[str, object] = yaml.safe_load(out.read_text())
    return params


def test_model_configs_build_networks(repo: Path, tmp_path: Path) -> None:
    for group in ("mlp", "wide"):
        model = compose(repo, tmp_path, f"model={group}")["model"]
        assert isinstance(model, dict)
        net = build_network(model, in_features=12)
        assert isinstance(net, MLP)
        widths = [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]
        assert widths == [*model["hidden"], 1]
    override = compose(repo, tmp_path, "model.hidden=[256,128]")["model"]
    assert isinstance(override, dict)
    assert override["hidden"] == [256, 128]


@pytest.mark.parametrize("group", ["default", "gpu", "ddp"])
def test_trainer_configs_compose_into_valid_trainer_arguments(repo: Path, tmp_path: Path, group: str) -> None:
    trainer = compose(repo, tmp_path, f"trainer={group}")["trainer"]
    assert isinstance(trainer, dict)
    assert trainer.pop("_target_") == "lightning.Trainer"
    accepted = set(inspect.signature(L.Trainer.__init__).parameters)
    assert set(trainer) <= accepted, set(trainer) - accepted
    expected = {
        "default": {"accelerator": "auto", "precision": "32-true", "deterministic": True},
        "gpu": {"accelerator": "gpu", "precision": "bf16-mixed", "devices": 1},
        "ddp": {"accelerator": "gpu", "precision": "bf16-mixed", "strategy": "ddp", "devices": -1, "num_nodes": 1},
    }[group]
    assert expected.items() <= trainer.items()


def test_default_trainer_builds_on_this_machine(repo: Path, tmp_path: Path) -> None:
    from gitml.stages.train import build_trainer

    trainer_cfg = compose(repo, tmp_path)["trainer"]
    assert isinstance(trainer_cfg, dict)
    trainer = build_trainer(trainer_cfg, [], False, tmp_path)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert trainer.strategy.root_device.type == expected  # accelerator auto


def test_the_train_config_is_params_train() -> None:
    train = params_section("train")
    config = TrainConfig.from_config(train, "params.yaml")
    stopping, reweigh = train["early_stopping"], train["reweigh"]
    assert isinstance(stopping, dict)
    assert isinstance(reweigh, dict)
    assert (config.seed, config.batch_size, config.threads) == (train["seed"], train["batch_size"], train["threads"])
    assert config.class_weight == train["class_weight"]
    assert (config.monitor, config.patience, config.min_delta) == tuple(stopping.values())
    attributes = None if config.reweigh_attributes is None else list(config.reweigh_attributes)
    assert (config.reweigh, attributes) == (reweigh["enabled"], reweigh["attributes"])  # null: every protected one
    assert config.min_steps_per_epoch == train["min_steps_per_epoch"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"class_weight": "auto"}, r"train: class_weight: use balanced, none or a positive number, got 'auto'"),
        ({"threads": 0}, r"train: threads must be a whole number >= 1, got 0"),
        ({"batch_size": 0}, r"train: batch_size must be a whole number >= 1, got 0"),
        ({"early_stopping": None}, r"train.early_stopping: expected a mapping, got NoneType"),
        (
            {"early_stopping": {"monitor": "val/auroc", "patience": 4, "min_delta": None}},
            r"train.early_stopping: min_delta must be a number >= 0, got None",
        ),
        ({"reweigh": {"enabled": True}}, r"train.reweigh: 'attributes' is required"),
    ],
)
def test_train_config_mistakes_are_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(GitmlError, match=rf"params.yaml: {message}"):
        TrainConfig.from_config(params_section("train", **change), "params.yaml")


def test_threads_null_leaves_torch_its_default_and_a_number_sets_it() -> None:
    assert TrainConfig.from_config(params_section("train", threads=None), "params.yaml").threads is None
    assert TrainConfig.from_config(params_section("train", threads=2), "params.yaml").threads == 2
