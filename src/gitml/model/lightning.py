"""The LightningModule: a network from conf/model/, weighted binary cross-entropy, AUROC on validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics.classification import BinaryAUROC

from gitml.model.network import build_network

PLATEAU = "torch.optim.lr_scheduler.ReduceLROnPlateau"


def scheduler_settings(scheduler: Mapping[str, Any], monitor: str) -> dict[str, Any]:
    """model.scheduler as it is built: ReduceLROnPlateau steps on the early-stopping metric, so
    without a `mode` of its own it follows that metric's direction (max for val/auroc)."""
    settings = dict(scheduler)
    if settings.get("_target_") == PLATEAU:
        settings.setdefault("mode", "max" if monitor.endswith("auroc") else "min")
    return settings


class TabularClassifier(L.LightningModule):
    """A binary classifier over the preprocessed matrix; its hyperparameters are plain config.

    Everything needed to rebuild it is saved in the checkpoint, so
    `TabularClassifier.load_from_checkpoint(path)` gives the trained model back.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        in_features: int,
        pos_weight: float = 1.0,
        monitor: str = "val/auroc",
        numeric_columns: Sequence[int] = (),
        training_rows: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.model_config = dict(model)
        self.monitor = monitor
        self.network = build_network(model, in_features, numeric_columns, training_rows)
        self.pos_weight: torch.Tensor
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        self.val_auroc = BinaryAUROC()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the positive class."""
        out: torch.Tensor = self.network(x)
        return out

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._rows = 0

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y, weight = batch
        logits = self(x)
        loss = F.binary_cross_entropy_with_logits(logits, y, weight=weight, pos_weight=self.pos_weight)
        # The epoch's mean loss is summed here and logged once, on the last batch: a self.log call
        # per step costs Lightning about 0.4 ms, a third of its overhead over a plain loop here.
        self._loss_sum += loss.detach() * len(y)
        self._rows += len(y)
        if batch_idx == self.trainer.num_training_batches - 1:
            self.log("train/loss", self._loss_sum / self._rows, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y, _ = batch
        logits = self(x).float()
        self.val_auroc.update(torch.sigmoid(logits), y.long())
        loss = F.binary_cross_entropy_with_logits(logits, y)
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log("val/auroc", self.val_auroc, on_step=False, on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.model_config["optimizer"])(self.parameters())
        scheduler_config = self.model_config.get("scheduler")
        if not scheduler_config:
            return optimizer
        scheduler = instantiate(scheduler_settings(scheduler_config, self.monitor))(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": self.monitor},
        }
