"""In-memory tensors served in whole batches.

A DataLoader normally fetches one sample at a time and collates them; for small
models on tabular data that per-sample Python work costs as much as the model.
Here the dataset implements ``__getitems__`` (which PyTorch's fetcher calls with
the whole list of indices of a batch), so one batch is one tensor indexing
operation. The loader is a plain ``batch_size`` DataLoader, so Lightning can still swap
in a ``DistributedSampler`` for training under DDP.

Evaluation under DDP uses :func:`eval_loader`: each process reads every ``world_size``-th
row and no row is repeated. (Lightning's own ``DistributedSampler`` pads the set with
copies of its first rows so that every process gets as many batches; those copies would
count twice in test metrics.) The metrics, torchmetrics objects, sum their states over the
processes, so uneven shares give the exact metric of the whole set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from lit_dl.compat import unrepeated_sampler


class TensorBatchDataset(Dataset):
    """Tensors of equal length along dim 0, indexed a whole batch at a time."""

    def __init__(self, *tensors: Tensor) -> None:
        if not tensors:
            raise ValueError("TensorBatchDataset needs at least one tensor")
        length = len(tensors[0])
        if any(len(t) != length for t in tensors):
            raise ValueError(f"tensor lengths differ: {[len(t) for t in tensors]}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[index] for t in self.tensors)


def _already_batched(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """collate_fn for :class:`TensorBatchDataset`: the batch arrives already stacked."""
    return batch


def train_loader(
    dataset: Dataset, batch_size: int, generator: torch.Generator | None = None, world_size: int = 1
) -> DataLoader:
    """Shuffled training batches. A last batch of a single row is dropped: batch norm cannot train on it.

    Under DDP each of the ``world_size`` processes reads ``ceil(len / world_size)`` rows (Lightning's
    ``DistributedSampler``), so the rule looks at that share.
    """
    share = math.ceil(len(dataset) / max(1, world_size))
    drop_last = share > batch_size and share % batch_size == 1
    return batch_loader(dataset, batch_size, shuffle=True, drop_last=drop_last, generator=generator)


def eval_loader(dataset: Dataset, batch_size: int, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Batches in order; under DDP process ``rank`` reads rows ``rank, rank + world_size, ...`` once each."""
    if world_size <= 1:
        return batch_loader(dataset, batch_size, shuffle=False)
    if len(dataset) < world_size:
        raise ValueError(f"{len(dataset)} rows cannot be shared by {world_size} processes")
    sampler = unrepeated_sampler(dataset, num_replicas=world_size, rank=rank)
    return batch_loader(dataset, batch_size, shuffle=False, sampler=sampler)


def batch_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader that yields whole batches of ``dataset`` by index, no per-sample collation.

    A plain ``batch_size`` loader: PyTorch's fetcher hands the dataset's ``__getitems__`` the
    whole list of indices of a batch, and Lightning can swap in its ``DistributedSampler``
    (it keeps a ``sampler`` that already is one, such as :func:`eval_loader`'s).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        drop_last=drop_last,
        generator=generator,
        collate_fn=_already_batched,
    )
