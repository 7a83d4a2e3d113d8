"""The loaders shared by datamodules whose prepared splits live in memory."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lit_dl.data.batching import batch_loader, train_loader


class InMemoryDataModule(L.LightningDataModule):
    """A datamodule whose ``setup`` fills ``self.datasets["train" | "val" | "test"]``.

    Each dataset is indexed a whole batch at a time (``__getitems__``); training
    batches are shuffled with a generator seeded from the run's seed.
    """

    datasets: dict[str, Dataset]
    batch_size: int

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
        return train_loader(self.datasets["train"], self.batch_size, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return batch_loader(self.datasets["val"], self.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return batch_loader(self.datasets["test"], self.batch_size, shuffle=False)
