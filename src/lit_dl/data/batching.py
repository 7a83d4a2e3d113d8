"""In-memory tensors served in whole batches.

A DataLoader normally fetches one sample at a time and collates them; for small
models on tabular data that per-sample Python work costs as much as the model.
Here the dataset implements ``__getitems__`` (which PyTorch's fetcher calls with
the whole list of indices of a batch), so one batch is one tensor indexing
operation. The loader is a plain ``batch_size`` DataLoader, so Lightning can still swap
in a ``DistributedSampler`` for training under DDP.

Training batches come in an order that is a function of the seed and the epoch
(:class:`EpochShuffleSampler`; under DDP Lightning's ``DistributedSampler``, also seed + epoch),
so a run resumed from a checkpoint sees the same batches as one that never stopped.

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
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

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


class EpochShuffleSampler(RandomSampler):
    """A permutation of the rows that depends only on ``seed`` and the epoch Lightning sets (``set_epoch``).

    PyTorch's ``RandomSampler`` draws each epoch's order from a generator that runs on from epoch to
    epoch, so a run resumed at epoch k would repeat epoch 0's order; here epoch k's order is
    ``randperm(n)`` from a generator seeded with ``seed + k``, whether or not the run was stopped.
    A ``RandomSampler`` still, so that under DDP Lightning puts its ``DistributedSampler`` (seed +
    epoch as well) in its place.
    """

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):  # type: ignore[no-untyped-def]
        generator = torch.Generator().manual_seed((self.seed + self.epoch) % 2**63)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


def train_loader(
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator | None = None,
    world_size: int = 1,
    seed: int | None = None,
) -> DataLoader:
    """Shuffled training batches. A last batch of a single row is dropped: batch norm cannot train on it.

    The order is :class:`EpochShuffleSampler`'s, seeded with ``seed`` (else the seed ``generator`` was
    given, else the run's: ``torch.initial_seed()`` after ``seed_everything``). Under DDP each of the
    ``world_size`` processes reads ``ceil(len / world_size)`` rows (Lightning's ``DistributedSampler``),
    so the rule looks at that share.
    """
    if seed is None:
        seed = generator.initial_seed() if generator is not None else torch.initial_seed()
    share = math.ceil(len(dataset) / max(1, world_size))
    drop_last = share > batch_size and share % batch_size == 1
    # No `shuffle=` argument: Lightning reads shuffling from the sampler's class when it swaps in
    # its DistributedSampler (a `shuffle=False` beside a sampler would turn shuffling off there).
    # The loader's own generator draws its per-epoch base seed (for workers; lit_dl's loaders use
    # none): without one it would draw from the global generator, at a point of the loop that
    # differs between a resumed run and one that never stopped.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(dataset, seed),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed % 2**63),
        collate_fn=_already_batched,
    )


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
