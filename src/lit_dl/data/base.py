"""The loaders shared by datamodules whose prepared splits live in memory."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lit_dl.data.batching import eval_loader, train_loader
from lit_dl.errors import DataError


def check_split_arguments(val_fraction: float, test_fraction: float, batch_size: int | None = None) -> None:
    """One-line errors for split fractions outside (0, 1) and a batch size below 1."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < float(value) < 1.0:
            raise DataError(f"data.{name} must be between 0 and 1, got {value}")
    if batch_size is not None and int(batch_size) < 1:
        raise DataError(f"data.batch_size must be a positive integer, got {batch_size}")


def world(datamodule: L.LightningDataModule) -> tuple[int, int]:
    """``(rank, world_size)`` of this process in the datamodule's trainer; ``(0, 1)`` without one."""
    trainer = datamodule.trainer
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


class InMemoryDataModule(L.LightningDataModule):
    """A datamodule whose ``setup`` fills ``self.datasets["train" | "val" | "test"]``.

    Each dataset is indexed a whole batch at a time (``__getitems__``); training
    batches are shuffled in an order set by the run's seed and the epoch (a resumed run sees the
    batches an uninterrupted one would). ``batch_size`` is
    per process: under DDP Lightning gives each process its share of the training rows
    (``DistributedSampler``), and validation and test rows are shared without repeats
    (:func:`~lit_dl.data.batching.eval_loader`), so metrics cover each row exactly once.
    """

    datasets: dict[str, Dataset]
    batch_size: int

    def train_dataloader(self) -> DataLoader:
        # The seed is the run's (seed_everything(seed) sets torch.initial_seed()).
        seed = torch.initial_seed() % 2**63
        return train_loader(self.datasets["train"], self.batch_size, seed=seed, world_size=world(self)[1])

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.datasets["val"], self.batch_size, *world(self))

    def test_dataloader(self) -> DataLoader:
        return eval_loader(self.datasets["test"], self.batch_size, *world(self))
