"""train stage: fit the preprocessing on the train split, then train the network with Lightning.

Writes models/preprocess.json (the fitted preprocessing), models/model.ckpt (the best epoch on
the early-stopping metric), the DVCLive curves under dvclive/, and reports/train.json. A run
that was interrupted resumes from its last checkpointed epoch (gitml.model.resume).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.utilities import rank_zero_only

from gitml.checked_config import ConfigReader
from gitml.config import dataset_schema, section
from gitml.data.features import PreprocessConfig, PreprocessSpec, fit, frame_columns, matrices
from gitml.data.schema import DatasetSchema
from gitml.data.split import load_split
from gitml.errors import GitmlError
from gitml.io import write_json
from gitml.model.datamodule import TabularDataModule
from gitml.model.lightning import TabularClassifier
from gitml.model.network import numeric_positions
from gitml.model.resume import ResumeCheckpoint, checkpoint_every, checkpoint_root, finish, prepare, resume_key
from gitml.paths import Paths

# What is kept of a Lightning checkpoint: enough for `load_from_checkpoint`, and nothing that
# names this machine's paths, so the same training gives the same bytes in any clone.
CHECKPOINT_KEYS = ("state_dict", "hyper_parameters", "pytorch-lightning_version", "epoch", "global_step")


@dataclass(frozen=True)
class TrainConfig:
    seed: int
    batch_size: int
    min_steps_per_epoch: int
    threads: int | None
    class_weight: str | float
    monitor: str
    patience: int
    min_delta: float
    reweigh: bool
    reweigh_attributes: tuple[str, ...] | None  # None: every protected attribute of the schema

    @classmethod
    def from_config(cls, cfg: Any, source: str) -> TrainConfig:
        keys = {"seed", "batch_size", "min_steps_per_epoch", "threads", "class_weight", "early_stopping", "reweigh"}
        reader = ConfigReader(source, "train", cfg, keys)
        stopping = ConfigReader(
            source, "train.early_stopping", reader.required("early_stopping"), {"monitor", "patience", "min_delta"}
        )
        reweigh = ConfigReader(source, "train.reweigh", reader.required("reweigh"), {"enabled", "attributes"})
        class_weight = reader.required("class_weight")
        if isinstance(class_weight, bool) or not (
            class_weight in ("balanced", "none") or (isinstance(class_weight, int | float) and class_weight > 0)
        ):
            reader.fail(f"class_weight: use balanced, none or a positive number, got {class_weight!r}")
        # null leaves torch's default number of threads.
        threads = None if reader.required("threads") is None else reader.integer("threads", minimum=1)
        min_delta = stopping.bounded("min_delta", 0)
        return cls(
            seed=reader.integer("seed"),
            batch_size=reader.integer("batch_size", minimum=1),
            min_steps_per_epoch=reader.integer("min_steps_per_epoch", minimum=1),
            threads=threads,
            class_weight=class_weight,
            monitor=stopping.choice("monitor", ["val/auroc", "val/loss"]),
            patience=stopping.integer("patience", minimum=1),
            min_delta=min_delta,
            reweigh=reweigh.boolean("enabled"),
            reweigh_attributes=None if reweigh.required("attributes") is None else reweigh.strings("attributes"),
        )


# The smallest batch the scaling below goes down to: fewer rows make BatchNorm's statistics noise.
SMALLEST_BATCH = 16


def batch_size_for(config: TrainConfig, rows: int) -> int:
    """train.batch_size, lowered where the training split is small so that an epoch still takes
    train.min_steps_per_epoch optimiser steps (never below SMALLEST_BATCH rows): with a few hundred
    rows and a batch of 2,048, an epoch would be one step."""
    fitting = max(SMALLEST_BATCH, -(-rows // config.min_steps_per_epoch))
    return min(config.batch_size, fitting)


def reweigh_attributes(config: TrainConfig, schema: DatasetSchema, source: str) -> tuple[str, ...]:
    """The attributes train.reweigh.attributes names (null: every protected one), each checked to be protected."""
    if config.reweigh_attributes is None:
        return tuple(c.name for c in schema.protected_columns)
    return schema.protected_named(config.reweigh_attributes, "train.reweigh.attributes", source)


def reweighing(groups: pd.DataFrame, y: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Kamiran & Calders reweighing: w(g, y) = P(g) P(y) / P(g, y), so group and label look independent."""
    cell = groups.astype(str).agg("|".join, axis=1).to_numpy() if groups.shape[1] else np.zeros(len(y), dtype=str)
    frame = pd.DataFrame({"g": cell, "y": y})
    p_g = frame["g"].map(frame["g"].value_counts(normalize=True))
    p_y = frame["y"].map(frame["y"].value_counts(normalize=True))
    p_gy = frame.groupby(["g", "y"])["y"].transform("size") / len(frame)
    return (p_g * p_y / p_gy).to_numpy(dtype=np.float32)


def pos_weight_for(class_weight: str | float, y: npt.NDArray[np.float32]) -> float:
    positives = float(y.sum())
    if positives == 0 or positives == len(y):
        raise GitmlError(
            f"the train split has {'no' if positives == 0 else 'only'} positive labels; "
            "a classifier needs both classes. Check the label's `positive` class in the dataset schema."
        )
    if class_weight == "balanced":
        return (len(y) - positives) / positives
    return 1.0 if class_weight == "none" else float(class_weight)


class EpochLine(L.Callback):
    """One line per epoch on stdout, in place of a progress bar (readable in CI logs)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        shown = " ".join(
            f"{k} {float(v):.4f}"
            for k, v in sorted(trainer.callback_metrics.items())
            if k.startswith(("train/", "val/"))
        )
        print(f"  epoch {trainer.current_epoch:>3}  {shown}", flush=True)


class SyncLive(L.Callback):
    """Writes DVCLive's summary (metrics.json) for the epoch before, at the start of each epoch after the first."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0 and trainer.is_global_zero:
            self.logger.experiment.sync()


def build_trainer(trainer_cfg: Mapping[str, Any], callbacks: list[L.Callback], logger: Any, root: Path) -> L.Trainer:
    from hydra.utils import instantiate

    if str(trainer_cfg.get("accelerator")) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise GitmlError(
            "params.yaml: trainer.accelerator is gpu (conf/trainer/), but torch sees no CUDA GPU here. "
            "Use trainer=default, whose accelerator: auto takes a GPU when there is one."
        )
    try:
        trainer: L.Trainer = instantiate(
            dict(trainer_cfg), callbacks=callbacks, logger=logger, default_root_dir=str(root), _convert_="all"
        )
    except InstantiationException as exc:
        raise GitmlError(f"params.yaml: trainer (from conf/trainer/): {exc}") from exc
    return trainer


def training_callbacks(
    config: TrainConfig, resume_dir: Path, live_dir: Path, resuming: bool = False
) -> tuple[Any, list[L.Callback], Any]:
    """The best-epoch checkpoint, early stopping, the epoch line, the resume checkpoint (all in
    `resume_dir`), and the DVCLive logger (continuing its files when `resuming`)."""
    from dvclive.fabric import DVCLiveLogger as FabricLogger
    from dvclive.lightning import DVCLiveLogger
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    mode = "max" if config.monitor.endswith("auroc") else "min"
    checkpoint = ModelCheckpoint(
        dirpath=resume_dir,
        filename="best",
        monitor=config.monitor,
        mode=mode,
        save_top_k=1,
        save_last=False,
        save_weights_only=True,  # what save_checkpoint keeps: weights and hyperparameters
        enable_version_counter=False,  # always best.ckpt, also after a resume
    )
    stopping = EarlyStopping(monitor=config.monitor, mode=mode, patience=config.patience, min_delta=config.min_delta)

    class EpochSyncedLogger(DVCLiveLogger):
        """DVCLive's Lightning logger, summarising once an epoch.

        DVCLive's own rewrites metrics.json and queues an update for DVC Studio on each of an
        epoch's two logging calls (validation, then training), and finds out which call it is by
        walking the Python stack: 10 ms an epoch by cProfile, 4% of an epoch on Adult; 1.5 ms
        this way. The values still reach the plot files as they are logged; SyncLive summarises
        at the next epoch's start and DVCLive itself when training ends.
        """

        def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, sync: bool | None = False) -> None:
            FabricLogger.log_metrics(self, metrics, step, sync=bool(sync))

    # dvc.yaml declares DVCLive's files as this stage's outputs: DVCLive must not write its own
    # dvc.yaml, and `dvc exp run` records the experiment, not DVCLive.
    logger = EpochSyncedLogger(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, run_name=None, resume=resuming)
    resume = ResumeCheckpoint(resume_dir, live_dir, checkpoint, checkpoint_every())
    # SyncLive before ResumeCheckpoint: the resume snapshot holds the summary of the epoch before.
    return checkpoint, [checkpoint, stopping, EpochLine(), SyncLive(logger), resume], logger


def save_checkpoint(source: str, target: Path) -> int:
    """Keep CHECKPOINT_KEYS of Lightning's checkpoint at `source`; returns its epoch."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: checkpoint[k] for k in CHECKPOINT_KEYS if k in checkpoint}, target)
    return int(checkpoint["epoch"])


@dataclass(frozen=True)
class TrainingData:
    """What training consumes, from params.yaml and the train and val splits."""

    config: TrainConfig
    model_cfg: Mapping[str, Any]
    trainer_cfg: Mapping[str, Any]
    spec: PreprocessSpec
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.float32]
    weights: npt.NDArray[np.float32]
    x_val: npt.NDArray[np.float32]
    y_val: npt.NDArray[np.float32]
    pos_weight: float
    reweigh: tuple[str, ...]  # the attributes reweighed; none when train.reweigh is off


def training_data(cfg: Mapping[str, Any], paths: Paths) -> TrainingData:
    """Check the config, fit the preprocessing on train, and build the matrices, labels and weights."""
    source = paths.params.name
    schema = dataset_schema(cfg, paths.params)
    pre_config = PreprocessConfig.from_config(section(cfg, "preprocess", paths.params), source)
    config = TrainConfig.from_config(section(cfg, "train", paths.params), source)
    model_cfg = section(cfg, "model", paths.params)
    trainer_cfg = section(cfg, "trainer", paths.params)
    for key in ("_target_", "optimizer"):
        if key not in model_cfg:
            raise GitmlError(f"{source}: model (from conf/model/) has no `{key}`; see conf/model/mlp.yaml.")
    attributes = reweigh_attributes(config, schema, source) if config.reweigh else ()
    train_frame, val_frame = load_split(paths, "train"), load_split(paths, "val")
    spec = fit(schema, frame_columns(train_frame, [c.name for c in schema.feature_columns]), pre_config)
    x_train, y_train = matrices(spec, schema, train_frame)
    x_val, y_val = matrices(spec, schema, val_frame)
    if config.reweigh:
        bands = {a: schema.protected_groups(a, train_frame[a].to_numpy()) for a in attributes}
        weights = reweighing(pd.DataFrame(bands), y_train)
    else:
        weights = np.ones(len(y_train), dtype=np.float32)
    return TrainingData(
        config, model_cfg, trainer_cfg, spec, x_train, y_train, weights, x_val, y_val,
        pos_weight_for(config.class_weight, y_train), attributes,
    )  # fmt: skip


def run(cfg: Mapping[str, Any], paths: Paths) -> dict[str, Any]:
    """Train; returns the training report (also written to reports/train.json)."""
    d = training_data(cfg, paths)
    config = d.config
    batch_size = batch_size_for(config, len(d.y_train))
    d.spec.save(paths.preprocess)

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # Lightning's own use of a torch API it has not caught up with; nothing the user can act on.
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    # Metrics are logged per epoch (the epoch line, DVCLive): a small split's epoch of fewer steps
    # than trainer.log_every_n_steps loses nothing.
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    L.seed_everything(config.seed, workers=True, verbose=False)
    try:
        module = TabularClassifier(
            d.model_cfg,
            in_features=d.spec.width,
            pos_weight=d.pos_weight,
            monitor=config.monitor,
            numeric_columns=numeric_positions(d.spec),
            training_rows=len(d.y_train),
        )
        # Built once here so that a mistake in model.optimizer or model.scheduler is reported now,
        # not as a traceback from inside trainer.fit.
        module.configure_optimizers()
    except (InstantiationException, ValueError, TypeError) as exc:
        raise GitmlError(f"{paths.params.name}: model (from conf/model/): {exc}") from exc
    data = TabularDataModule(
        train=(torch.from_numpy(d.x_train), torch.from_numpy(d.y_train), torch.from_numpy(d.weights)),
        val=(torch.from_numpy(d.x_val), torch.from_numpy(d.y_val), torch.ones(len(d.y_val))),
        batch_size=batch_size,
        seed=config.seed,
    )
    paths.dvclive.mkdir(parents=True, exist_ok=True)
    resume_dir = checkpoint_root(paths.root) / resume_key(cfg, [paths.split_file("train"), paths.split_file("val")])
    writer = getattr(rank_zero_only, "rank", 0) == 0  # known from the environment before the trainer starts
    resumed = prepare(resume_dir, paths.dvclive, writer)
    if resumed and writer:
        print(f"train: resuming from epoch {resumed[1]} of {resume_dir}", flush=True)
    # The folder holds this run's own checkpoints (best.ckpt, last.ckpt) when it resumes.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    checkpoint, callbacks, logger = training_callbacks(config, resume_dir, paths.dvclive, resuming=bool(resumed))
    trainer = build_trainer(d.trainer_cfg, callbacks, logger, resume_dir)
    trainer.fit(module, datamodule=data, ckpt_path=resumed[0] if resumed else None, weights_only=True)
    if not checkpoint.best_model_path:
        raise GitmlError("training ended without a checkpoint; check trainer.max_epochs in conf/trainer/.")
    if trainer.global_rank != 0:
        return {}
    best_epoch = save_checkpoint(checkpoint.best_model_path, paths.checkpoint)

    report: dict[str, Any] = {
        "rows": {"train": len(d.y_train), "val": len(d.y_val)},
        "features": {"columns": len(d.spec.input_columns), "width": d.spec.width},
        "parameters": sum(p.numel() for p in module.network.parameters()),
        "batch_size": batch_size,
        "pos_weight": round(d.pos_weight, 6),
        "reweigh": list(d.reweigh),
        "epochs": trainer.current_epoch,
        "best_epoch": best_epoch,
        "best": {config.monitor: round(float(checkpoint.best_model_score or float("nan")), 6)},
        "device": trainer.strategy.root_device.type,
    }
    write_json(paths.train_report, report)
    finish(resume_dir)
    return report


def message(report: dict[str, Any], paths: Paths) -> str:
    if not report:  # a DDP process other than rank 0
        return "train: done on this process"
    best = ", ".join(f"{k} {v:.4f}" for k, v in report["best"].items())
    return (
        f"train: {report['epochs']} epochs on {report['device']}, "
        f"best epoch {report['best_epoch']} ({best}) -> {paths.checkpoint.relative_to(paths.root)}"
    )
