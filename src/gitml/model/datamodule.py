"""A LightningDataModule for tables that fit in memory: tensors batched by slicing.

A per-sample Dataset with a collate function builds every batch from Python objects, which on a
table this size costs about three times the epoch. Here each split is one tensor; an epoch
permutes it once (seeded) and yields contiguous slices. Under DDP every process takes an equal
shard of each epoch's permutation.

Epoch e's permutation is seeded with seed + e, where e is the trainer's epoch: a run resumed from a
checkpoint goes on with the permutation an uninterrupted run would have used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch


class TensorBatches:
    """An iterable of batches (x, y, weight) over tensors of equal length.

    `epoch_of` gives the epoch an iteration is for (the trainer's); without it, iterations count
    epochs from 0.
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_of: Callable[[], int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch_of = epoch_of
        self.epoch = 0

    @property
    def rows(self) -> int:
        """Rows this process sees per epoch (an equal share of the table under DDP)."""
        n = len(self.tensors[0])
        return n if self.world_size == 1 else n // self.world_size

    def __len__(self) -> int:
        return -(-self.rows // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.tensors[0])
        tensors = self.tensors
        epoch = self.epoch if self.epoch_of is None else self.epoch_of()
        if self.shuffle or self.world_size > 1:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
            order = order[: self.rows * self.world_size][self.rank :: self.world_size]
            order = order.to(tensors[0].device)
            tensors = tuple(t[order] for t in tensors)
        self.epoch += 1
        for start in range(0, self.rows, self.batch_size):
            yield tuple(t[start : start + self.batch_size] for t in tensors)


class TabularDataModule(L.LightningDataModule):
    """Train and validation matrices held as tensors, moved to the training device once."""

    def __init__(
        self,
        train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        batch_size: int,
        seed: int,
        eval_batch_size: int = 8192,
    ) -> None:
        super().__init__()
        self.train = train
        self.val = val
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed

    def _placed(self, tensors: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], int, int]:
        trainer = self.trainer
        if trainer is None:
            return tensors, 0, 1
        device = trainer.strategy.root_device
        return tuple(t.to(device) for t in tensors), trainer.global_rank, trainer.world_size

    def _current_epoch(self) -> int:
        assert self.trainer is not None
        return self.trainer.current_epoch

    def train_dataloader(self) -> Any:
        tensors, rank, world = self._placed(self.train)
        epoch_of = None if self.trainer is None else self._current_epoch
        return TensorBatches(
            tensors, self.batch_size, shuffle=True, seed=self.seed, rank=rank, world_size=world, epoch_of=epoch_of
        )

    def val_dataloader(self) -> Any:
        tensors, rank, world = self._placed(self.val)
        return TensorBatches(tensors, self.eval_batch_size, shuffle=False, rank=rank, world_size=world)
