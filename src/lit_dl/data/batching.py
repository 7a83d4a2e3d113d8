"""In-memory tensors served in whole batches.

A DataLoader normally fetches one sample at a time and collates them; for small
models on tabular data that per-sample Python work costs as much as the model.
The datasets here implement ``__getitems__`` (one batch is one tensor indexing
operation), and :class:`TensorBatchLoader`, the loader of every in-memory
datamodule, hands them one index tensor per batch, with the tensors on the
training device when they fit there (``data.on_device``).

Training batches come in an order that is a function of the seed and the epoch
(:class:`EpochOrder`, the order of torch's ``DistributedSampler``), so a run resumed
from a checkpoint sees the same batches as one that never stopped. Under DDP each
process reads its own share; evaluation rows are shared without repeats (a
``DistributedSampler`` pads the set with copies of its first rows, which would count
twice in test metrics). The metrics, torchmetrics objects, sum their states over the
processes, so uneven shares give the exact metric of the whole set.

:func:`train_loader` and :func:`batch_loader` are DataLoaders, for datasets that draw
their own rows (CTGAN's training-by-sampling) and for prediction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler


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

    def __getitems__(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[index] for t in self.tensors)

    def to(self, device: torch.device | str) -> TensorBatchDataset:
        """The same rows with every tensor on ``device`` (itself when they already are)."""
        if all(t.device == torch.device(device) for t in self.tensors):
            return self
        return TensorBatchDataset(*(t.to(device) for t in self.tensors))


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


class EpochOrder:
    """The rows one process reads in one epoch, as a tensor of indices; ``set_epoch`` picks the epoch.

    Shuffled: ``randperm(n)`` from a generator seeded with ``seed + epoch``, then, under DDP, padded
    with its first rows to a multiple of ``world_size`` and strided (``perm[rank::world_size]``): the
    very order of torch's ``DistributedSampler`` (and of :class:`EpochShuffleSampler` on one process),
    so a run resumed from a checkpoint, or one written by an earlier lit_dl, sees the same batches.
    In order: ``rank, rank + world_size, ...``, each row once (uneven shares, no padding).
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if n < world_size:
            raise ValueError(f"{n} rows cannot be shared by {world_size} processes")
        self.n, self.shuffle, self.seed = n, shuffle, int(seed)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch (it looks for ``loader.sampler.set_epoch``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.shuffle:
            return math.ceil(self.n / self.world_size)
        return len(range(self.rank, self.n, self.world_size))

    def indices(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.rank, self.n, self.world_size)
        generator = torch.Generator().manual_seed((self.seed + self.epoch) % 2**63)
        order = torch.randperm(self.n, generator=generator)
        if self.world_size == 1:
            return order
        padding = len(self) * self.world_size - self.n
        if padding:
            order = torch.cat([order, order[:padding]])
        return order[self.rank :: self.world_size]


class TensorBatchLoader:
    """Whole batches of an in-memory dataset: one indexing operation per batch, no per-row Python.

    The fast path of every in-memory datamodule. The dataset is a :class:`TensorBatchDataset` or
    any dataset with ``__getitems__(index_tensor)`` (augmenting image sets, padded sequences); with
    ``device`` set, its tensors are moved there once (``dataset.to(device)``) and each epoch's
    index is moved there once, so on a GPU a batch is a gather on the GPU: no host-to-device copy
    and no host synchronisation per step. Lightning iterates it like a DataLoader (it has
    ``__len__``, ``dataset`` and a ``sampler`` whose ``set_epoch`` Lightning calls), but does
    not replace its sampler under DDP: sharding is done here (:class:`EpochOrder`), so each
    process reads its own rows. Written by hand because torch's ``DataLoader`` pulls every index
    through a Python sampler and fetcher: Python work per row, every step.

    Args:
        dataset: the rows.
        batch_size: rows per batch (per process).
        shuffle: a new seeded order each epoch (training) or rows in order (evaluation).
        seed: seed of the order (the run's seed).
        rank, world_size: this process and the number of processes.
        drop_last: leave out a last, shorter batch. ``None`` (default): only when it would hold a
            single row while the others hold more (batch norm cannot train on one row).
        device: where batches are made (``None``: where the dataset is).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if device is not None and callable(getattr(dataset, "to", None)):
            dataset = dataset.to(device)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if device is not None else None
        self.sampler = EpochOrder(len(dataset), shuffle, seed, rank, world_size)
        self.batch_sampler = None  # Lightning looks for one beside ``sampler``, as on a DataLoader
        share = len(self.sampler)
        if drop_last is None:
            drop_last = shuffle and share > self.batch_size and share % self.batch_size == 1
        self.drop_last = bool(drop_last)

    def __len__(self) -> int:
        share = len(self.sampler)
        return share // self.batch_size if self.drop_last else math.ceil(share / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        index = self.sampler.indices()
        if self.device is not None:
            index = index.to(self.device, non_blocking=True)
        getitems = self.dataset.__getitems__
        for k in range(len(self)):
            yield getitems(index[k * self.batch_size : (k + 1) * self.batch_size])


def tensor_bytes(dataset: Dataset) -> int:
    """Bytes held by a dataset's tensors (its ``tensors`` or tensor attributes); 0 when unknown."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is None:
        tensors = [v for v in vars(dataset).values() if isinstance(v, Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


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
    (it keeps a ``sampler`` that already is one).
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
