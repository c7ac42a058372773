"""Epoch time of the project's Lightning training against a minimal hand-written PyTorch loop.

Both sides train the same network (params.yaml `model`, built by the project's own code) on the
same data (the real train and val splits, preprocessed with the project's fit / matrices), with
the same batch size, optimizer, LR scheduler, gradient clipping, seed and thread count, on the
CPU. One epoch is one pass over the train split plus one validation pass computing AUROC.

Three setups run in the same process, interleaved round by round so that machine noise falls on
all of them alike:

  plain loop                a hand-written loop: permute, slice, forward, loss, backward, clip, step
  lightning (bare)          TabularDataModule + TabularClassifier + a Trainer built from params.yaml's
                            `trainer` section, without callbacks, checkpointing or logger
  lightning (project setup) the same Trainer with the train stage's callbacks (ModelCheckpoint,
                            EarlyStopping with patience above the epoch count, EpochLine) and the
                            DVCLive logger, writing to a temporary folder

Each run's first epoch is a warm-up and is discarded; the figure of a setup is the median of its
remaining epochs over all rounds. The headline is the ratio lightning (project setup) / plain
loop. Goal: ratio <= 1.15. Each epoch's loss and AUROC must agree across the setups (they do the
same arithmetic on the same batches); the script prints whether they did. On a shared machine the
per-round ratios and the ratio of the fastest epochs, also printed, show how much noise there was.
Lightning's epochs are timed by a callback, which costs it well under 1%.

With --pipeline it also times a full `dvc repro` of the pipeline from a clean state, in a
scratch git + DVC repository holding a copy of the pipeline's files.

    .venv/bin/python benchmarks/train_epoch.py [--epochs 6] [--rounds 5] [--threads N]
                                               [--json PATH] [--pipeline]

It is a measurement, not a test: it exits 0 whatever the ratio (1 when the processed splits are
missing or the pipeline fails).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import inspect
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from machine import busy_cpu_seconds  # benchmarks/machine.py, beside this script
from torchmetrics.classification import BinaryAUROC

from gitml.config import load_params
from gitml.model.datamodule import TabularDataModule
from gitml.model.lightning import TabularClassifier, scheduler_settings
from gitml.model.network import build_network, numeric_positions
from gitml.paths import Paths
from gitml.scratch import make_scratch_repo, scratch_env
from gitml.stages.train import TrainConfig, build_trainer, training_callbacks, training_data

GOAL = 1.15
LIGHTNING = ("bare", "project")
ROOT = Path(__file__).resolve().parent.parent

# Trainer settings that would make the Lightning side do different work from the plain loop, or
# run on another device or in several processes: the benchmark sets or drops them.
TRAINER_DROPPED = ("strategy", "num_nodes", "sync_batchnorm", "max_steps", "max_time", "min_epochs", "min_steps")


@dataclass(frozen=True)
class Setup:
    """Everything both sides share: data, config, seed, threads."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    w_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    model_cfg: Mapping[str, Any]
    trainer_cfg: Mapping[str, Any]
    train: TrainConfig
    pos_weight: float
    threads: int
    numeric_columns: tuple[int, ...]  # the matrix columns the network embeds as numbers

    @property
    def in_features(self) -> int:
        return int(self.x_train.shape[1])


@dataclass
class Run:
    """One setup trained for a fixed number of epochs: seconds and end-of-epoch metrics per epoch."""

    seconds: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_auroc: list[float] = field(default_factory=list)
    fit_seconds: float = 0.0


def load_setup(root: Path, threads: int | None) -> Setup:
    """The train stage's inputs, prepared by the train stage's own code."""
    paths = Paths(root)
    data = training_data(load_params(paths.params), paths)
    return Setup(
        x_train=torch.from_numpy(data.x_train),
        y_train=torch.from_numpy(data.y_train),
        w_train=torch.from_numpy(data.weights),
        x_val=torch.from_numpy(data.x_val),
        y_val=torch.from_numpy(data.y_val),
        model_cfg=data.model_cfg,
        trainer_cfg=data.trainer_cfg,
        train=data.config,
        pos_weight=data.pos_weight,
        threads=threads or data.config.threads or min(2, os.cpu_count() or 1),
        numeric_columns=tuple(numeric_positions(data.spec)),
    )


def clip_settings(trainer_cfg: Mapping[str, Any]) -> tuple[float | None, str]:
    value = trainer_cfg.get("gradient_clip_val")
    return (float(value) if value else None), str(trainer_cfg.get("gradient_clip_algorithm") or "norm")


def prepare(setup: Setup) -> None:
    """The process-wide state both sides start from: threads, determinism, seed, no garbage left."""
    gc.collect()
    torch.set_num_threads(setup.threads)
    torch.use_deterministic_algorithms(bool(setup.trainer_cfg.get("deterministic", False)))
    L.seed_everything(setup.train.seed, workers=True, verbose=False)


def plain_loop(setup: Setup, epochs: int) -> Run:
    """A minimal hand-written loop doing the Lightning side's work per epoch."""
    prepare(setup)
    started = time.perf_counter()
    network = build_network(setup.model_cfg, setup.in_features, setup.numeric_columns, len(setup.y_train))
    optimizer = instantiate(setup.model_cfg["optimizer"])(network.parameters())
    scheduler_cfg = setup.model_cfg.get("scheduler")
    monitor = setup.train.monitor
    scheduler = instantiate(scheduler_settings(scheduler_cfg, monitor))(optimizer) if scheduler_cfg else None
    pos_weight = torch.tensor(setup.pos_weight)
    clip, algorithm = clip_settings(setup.trainer_cfg)
    auroc = BinaryAUROC()
    # Validation batches as large as the project's datamodule makes them.
    eval_batch_size: int = inspect.signature(TabularDataModule).parameters["eval_batch_size"].default
    batch_size = setup.train.batch_size
    x, y, w = setup.x_train, setup.y_train, setup.w_train
    n = len(y)
    run = Run()
    for epoch in range(epochs):
        epoch_started = time.perf_counter()
        network.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(setup.train.seed + epoch))
        xs, ys, ws = x[order], y[order], w[order]
        total = torch.zeros(())
        for start in range(0, n, batch_size):
            xb, yb, wb = xs[start : start + batch_size], ys[start : start + batch_size], ws[start : start + batch_size]
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(network(xb), yb, weight=wb, pos_weight=pos_weight)
            torch.autograd.backward(loss)
            if clip is not None and algorithm == "value":
                torch.nn.utils.clip_grad_value_(network.parameters(), clip)
            elif clip is not None:
                torch.nn.utils.clip_grad_norm_(network.parameters(), clip)
            optimizer.step()
            total += loss.detach() * len(yb)  # the epoch's mean train/loss, as TabularClassifier logs it
        network.eval()
        val_loss = torch.zeros(())
        with torch.no_grad():
            for start in range(0, len(setup.y_val), eval_batch_size):
                xb, yb = setup.x_val[start : start + eval_batch_size], setup.y_val[start : start + eval_batch_size]
                logits = network(xb)
                auroc.update(torch.sigmoid(logits), yb.long())
                # The val/loss TabularClassifier logs: the mean over batches, weighted by their rows.
                val_loss += F.binary_cross_entropy_with_logits(logits, yb) * len(yb)
        score = float(auroc.compute())
        auroc.reset()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(score if monitor.endswith("auroc") else float(val_loss) / len(setup.y_val))
        elif scheduler is not None:
            scheduler.step()
        run.seconds.append(time.perf_counter() - epoch_started)
        run.train_loss.append(float(total) / n)
        run.val_auroc.append(score)
    run.fit_seconds = time.perf_counter() - started
    return run


class EpochClock(L.Callback):
    """Stamps the start of every epoch and the end of training: epoch i lasts from stamp i to i + 1.

    Start to start takes in everything the loop does per epoch: the training batches, validation,
    the epoch-end hooks of every callback and logger, the scheduler step, the next permutation.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.stamps: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stamps.append(time.perf_counter())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.run.train_loss.append(float(metrics.get("train/loss", float("nan"))))
        self.run.val_auroc.append(float(metrics.get("val/auroc", float("nan"))))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stamps.append(time.perf_counter())
        self.run.seconds = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]


def lightning_fit(setup: Setup, epochs: int, project: bool) -> Run:
    """The project's module, datamodule and Trainer; with `project`, also its callbacks and logger."""
    prepare(setup)
    run = Run()
    clock = EpochClock(run)
    trainer_cfg = {k: v for k, v in setup.trainer_cfg.items() if k not in TRAINER_DROPPED}
    trainer_cfg.update(accelerator="cpu", devices=1, max_epochs=epochs, enable_progress_bar=False)
    config = setup.train
    with tempfile.TemporaryDirectory(prefix="gitml-bench-") as scratch, contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        module = TabularClassifier(
            setup.model_cfg,
            in_features=setup.in_features,
            pos_weight=setup.pos_weight,
            monitor=config.monitor,
            numeric_columns=setup.numeric_columns,
            training_rows=len(setup.y_train),
        )
        data = TabularDataModule(
            train=(setup.x_train, setup.y_train, setup.w_train),
            val=(setup.x_val, setup.y_val, torch.ones(len(setup.y_val))),
            batch_size=config.batch_size,
            seed=config.seed,
        )
        callbacks: list[L.Callback] = [clock]
        logger: Any = False
        if project:
            # The train stage's own callbacks and logger; early stopping stays patient enough never
            # to cut a run short, so every setup runs the same number of epochs.
            patient = dataclasses.replace(config, patience=epochs + 1)
            _, stage_callbacks, logger = training_callbacks(
                patient, Path(scratch) / "checkpoints", Path(scratch) / "dvclive"
            )
            callbacks += stage_callbacks
        else:
            trainer_cfg["enable_checkpointing"] = False
        trainer = build_trainer(trainer_cfg, callbacks, logger, Path(scratch))
        trainer.fit(module, datamodule=data)
        run.fit_seconds = time.perf_counter() - started
    if len(run.seconds) != epochs:
        raise RuntimeError(f"lightning ran {len(run.seconds)} epochs, expected {epochs}")
    return run


def timed(runs: list[Run]) -> list[float]:
    """Every epoch of every run but each run's first (warm-up)."""
    return [s for run in runs for s in run.seconds[1:]]


def round_ratios(runs: list[Run], plain: list[Run]) -> list[float]:
    """Each round's median epoch over the plain loop's in the same round (run next to each other)."""
    return [
        statistics.median(run.seconds[1:]) / statistics.median(base.seconds[1:])
        for run, base in zip(runs, plain, strict=True)
    ]


def pipeline_seconds(root: Path) -> tuple[float, dict[str, float]]:
    """Wall time of `dvc repro` from a clean state in a scratch repository, total and per stage."""
    with tempfile.TemporaryDirectory(prefix="gitml-bench-pipeline-") as tmp:
        work = Path(tmp) / "repo"
        make_scratch_repo(root, work)
        # The stages run the copied code (`gitml` from this virtualenv, importing the copy's src/).
        env = {**scratch_env(), "PYTHONPATH": str(work / "src")}
        stages: dict[str, float] = {}
        lines: list[str] = []
        current: str | None = None
        started = time.perf_counter()
        mark = started
        with subprocess.Popen(
            [str(Path(sys.executable).parent / "dvc"), "repro"],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if line.startswith("Running stage '"):
                    now = time.perf_counter()
                    if current is not None:
                        stages[current] = now - mark
                    current, mark = line.split("'")[1], now
        seconds = time.perf_counter() - started
        if current is not None:
            stages[current] = seconds - (mark - started)
        if process.returncode != 0:
            sys.stdout.write("".join(lines))
            raise RuntimeError(f"dvc repro failed with exit status {process.returncode}")
    return seconds, stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run, the first discarded (default 6)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each setup, interleaved (default 5)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default train.threads, else min(2, CPUs))"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--pipeline", action="store_true", help="also time a full `dvc repro` from a clean state")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.rounds < 1:
        parser.error("--epochs must be at least 2 (the first is discarded) and --rounds at least 1")

    root: Path = args.root.resolve()
    missing = [name for name in ("train", "val") if not Paths(root).split_file(name).is_file()]
    if missing:
        print(f"data/processed/{missing[0]}.parquet not found: run `make run` first.", file=sys.stderr)
        return 1

    # As the train stage does: Lightning's info lines and a warning about its own torch use are noise.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    setup = load_setup(root, args.threads)
    steps = -(-len(setup.y_train) // setup.train.batch_size)
    print(
        f"data: train {len(setup.y_train):,} x {setup.in_features}, val {len(setup.y_val):,}; "
        f"batch {setup.train.batch_size} ({steps} steps/epoch); {setup.threads} threads; "
        f"torch {torch.__version__}, lightning {L.__version__}"
    )

    busy_before, own_before, wall_before = busy_cpu_seconds(), time.process_time(), time.perf_counter()
    runs: dict[str, list[Run]] = {"plain": [], "bare": [], "project": []}
    for _ in range(args.rounds):
        runs["plain"].append(plain_loop(setup, args.epochs))
        runs["bare"].append(lightning_fit(setup, args.epochs, project=False))
        runs["project"].append(lightning_fit(setup, args.epochs, project=True))
    busy_after, own, wall = busy_cpu_seconds(), time.process_time() - own_before, time.perf_counter() - wall_before
    # The share of the machine's CPU that other processes (or the hypervisor) took while this one measured.
    others = None
    if busy_before is not None and busy_after is not None:
        others = max(0.0, (busy_after - busy_before - own) / (wall * (os.cpu_count() or 1)))
    median = {name: statistics.median(timed(group)) for name, group in runs.items()}
    ratio = {name: median[name] / median["plain"] for name in LIGHTNING}
    fastest = {name: min(timed(group)) for name, group in runs.items()}
    fastest_ratio = {name: fastest[name] / fastest["plain"] for name in LIGHTNING}
    per_round = {name: round_ratios(runs[name], runs["plain"]) for name in LIGHTNING}
    fit = {name: statistics.median(run.fit_seconds for run in group) for name, group in runs.items()}
    # The same arithmetic on the same batches: every epoch's loss and AUROC agree across setups.
    same = all(
        np.allclose(run.train_loss, plain.train_loss, atol=1e-5)
        and np.allclose(run.val_auroc, plain.val_auroc, atol=1e-5)
        for name in LIGHTNING
        for run, plain in zip(runs[name], runs["plain"], strict=True)
    )

    print(f"{args.rounds} rounds x {args.epochs} epochs per setup, first epoch of each run discarded; medians:")
    print(f"  lightning (bare)          {median['bare']:.3f} s/epoch | ratio {ratio['bare']:.2f}")
    met = "met" if ratio["project"] <= GOAL else "NOT met"
    print(
        f"  lightning (project setup) {median['project']:.3f} s/epoch | plain loop {median['plain']:.3f} s/epoch | "
        f"ratio {ratio['project']:.2f} (goal <= {GOAL:.2f}: {met})"
    )
    print(
        "  spread: per-round ratios (project setup) "
        + " ".join(f"{r:.2f}" for r in per_round["project"])
        + f"; fastest epochs' ratios: bare {fastest_ratio['bare']:.2f}, project setup {fastest_ratio['project']:.2f}"
    )
    print(
        f"  whole fit of {args.epochs} epochs, setup included: plain {fit['plain']:.2f} s, "
        f"bare {fit['bare']:.2f} s, project setup {fit['project']:.2f} s"
    )
    last = runs["plain"][-1]
    print(
        f"  same training on all sides: {'yes' if same else 'NO'} "
        f"(last epoch: train loss {last.train_loss[-1]:.5f}, val AUROC {last.val_auroc[-1]:.5f})"
    )
    if others is not None and others > 0.05:
        print(f"  note: other processes took {others:.0%} of the CPU meanwhile: these figures are noisier than usual")

    figures: dict[str, Any] = {
        "goal": GOAL,
        "goal_met": ratio["project"] <= GOAL,
        "threads": setup.threads,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "steps_per_epoch": steps,
        "cpu_share_of_other_processes": None if others is None else round(others, 3),
        "seconds_per_epoch": {k: round(v, 5) for k, v in median.items()},
        "ratio": {k: round(v, 4) for k, v in ratio.items()},
        "ratio_per_round": {k: [round(r, 4) for r in v] for k, v in per_round.items()},
        "fastest_epoch_seconds": {k: round(v, 5) for k, v in fastest.items()},
        "fastest_epoch_ratio": {k: round(v, 4) for k, v in fastest_ratio.items()},
        "fit_seconds": {k: round(v, 3) for k, v in fit.items()},
        "epoch_seconds": {k: [[round(s, 5) for s in run.seconds] for run in group] for k, group in runs.items()},
        "same_training": same,
    }
    if args.pipeline:
        print("pipeline: dvc repro from a clean state in a scratch repository ...", flush=True)
        try:
            seconds, stages = pipeline_seconds(root)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"pipeline: {exc}", file=sys.stderr)
            return 1
        shown = ", ".join(f"{name} {s:.1f}" for name, s in stages.items())
        print(f"  dvc repro {seconds:.1f} s ({shown})")
        figures["pipeline"] = {"seconds": round(seconds, 2), "stages": {k: round(v, 2) for k, v in stages.items()}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
