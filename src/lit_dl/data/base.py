"""The loaders shared by datamodules whose prepared splits live in memory."""

from __future__ import annotations

from typing import ClassVar

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from torch.utils.data import DataLoader, Dataset

from lit_dl.data.batching import TensorBatchLoader, tensor_bytes
from lit_dl.errors import ConfigError, DataError


def check_split_arguments(val_fraction: float, test_fraction: float, batch_size: int | None = None) -> None:
    """One-line errors for split fractions outside (0, 1) and a batch size below 1."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < float(value) < 1.0:
            raise DataError(f"data.{name} must be between 0 and 1, got {value}")
    if batch_size is not None and int(batch_size) < 1:
        raise DataError(f"data.batch_size must be a positive integer, got {batch_size}")


def check_cv_arguments(cv_folds: int | None, cv_fold: int | None) -> tuple[int | None, int | None]:
    """``(folds, fold)`` as integers; one-line errors for fewer than 2 folds or a fold out of range.

    ``cv_folds=None`` (the default) is the datamodule's ordinary split and then ``cv_fold`` must be unset.
    """
    if cv_folds is None:
        if cv_fold is not None:
            raise DataError(
                f"data.cv_fold={cv_fold} needs data.cv_folds (the number of folds); or run lit-dl cv"
            )
        return None, None
    try:
        folds, fold = int(cv_folds), None if cv_fold is None else int(cv_fold)
    except (TypeError, ValueError):
        raise DataError(
            f"data.cv_folds and data.cv_fold must be integers, got {cv_folds!r} and {cv_fold!r}"
        ) from None
    if isinstance(cv_folds, bool) or folds < 2:
        raise DataError(f"data.cv_folds must be at least 2 (or null: no cross-validation), got {cv_folds}")
    if fold is None or not 0 <= fold < folds:
        raise DataError(
            f"data.cv_fold must be one of 0 .. {folds - 1} (data.cv_folds={folds}), got {cv_fold}"
        )
    return folds, fold


def cv_split(
    n_items: int,
    folds: int,
    fold: int,
    val_fraction: float,
    seed: int,
    labels: np.ndarray | None = None,
    what: str = "rows",
) -> dict[str, np.ndarray]:
    """Sorted indices of ``train``/``val``/``test`` for fold ``fold`` of a seeded k-fold split of ``n_items``.

    ``test`` is the fold's held-out part (``StratifiedKFold`` by ``labels``, else ``KFold``; every
    item is in exactly one test part over the ``folds`` folds). ``val`` is carved from the other folds,
    ``val_fraction`` of all items (stratified too), so early stopping and the choice of the best
    checkpoint never see the test part; ``train`` is what is left.
    """
    index = np.arange(n_items)
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if labels is not None
        else KFold(folds, shuffle=True, random_state=seed)
    )
    try:
        rest, test = list(splitter.split(index, labels))[fold]
        share = val_fraction * n_items / len(rest)
        if share >= 0.9:
            raise ValueError(
                f"data.val_fraction={val_fraction} is {share:.0%} of the {len(rest)} {what} left beside the "
                "test fold"
            )
        train, val = train_test_split(
            rest, test_size=share, random_state=seed, stratify=None if labels is None else labels[rest]
        )
    except ValueError as err:
        raise DataError(
            f"cannot split {n_items} {what} into {folds} folds ({err}); use fewer folds (cv.folds) or more "
            f"{what}, or a lower data.val_fraction"
        ) from err
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


ON_DEVICE_CHOICES = ("auto", True, False)


def on_device_setting(value: bool | str) -> bool | str:
    """``data.on_device`` checked: ``"auto"``, ``True`` or ``False`` (strings ``"true"``/``"false"`` too)."""
    if isinstance(value, str) and value.lower() in ("true", "false", "auto"):
        value = {"true": True, "false": False, "auto": "auto"}[value.lower()]
    if value not in ON_DEVICE_CHOICES or (value != "auto" and not isinstance(value, bool)):
        raise ConfigError(f"data.on_device must be auto, true or false, got {value!r}")
    return value


def world(datamodule: L.LightningDataModule) -> tuple[int, int]:
    """``(rank, world_size)`` of this process in the datamodule's trainer; ``(0, 1)`` without one."""
    trainer = datamodule.trainer
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def device_for_data(trainer: L.Trainer | None, on_device: bool | str, nbytes: int) -> torch.device | None:
    """Where a datamodule's ``nbytes`` of prepared tensors live in training: the accelerator when
    ``on_device`` is true, or ``auto`` and they take at most an eighth of a GPU's memory; None
    (host memory) otherwise, and always on the CPU."""
    if trainer is None or on_device is False:
        return None
    device = trainer.strategy.root_device
    if device.type == "cpu":
        return None  # the tensors are in host memory already
    if on_device == "auto":
        if device.type != "cuda":
            return None
        return device if nbytes <= torch.cuda.get_device_properties(device).total_memory / 8 else None
    return device


class InMemoryDataModule(L.LightningDataModule):
    """A datamodule whose ``setup`` fills ``self.datasets["train" | "val" | "test"]``.

    Batches come from :class:`~lit_dl.data.batching.TensorBatchLoader`: one indexing operation
    per batch, with the tensors on the training device when ``on_device`` says so (``auto``: on a
    GPU when every split together takes at most an eighth of its memory). Training batches are
    shuffled in an order set by the run's seed and the epoch (a resumed run sees the batches an
    uninterrupted one would). ``batch_size`` is per process: under DDP each process reads its
    share of the training rows (the order of torch's ``DistributedSampler``), and validation and
    test rows are shared without repeats, so metrics cover each row exactly once.
    """

    datasets: dict[str, Dataset]
    batch_size: int
    on_device: bool | str = "auto"
    # How data.cv_folds / data.cv_fold make folds (``lit-dl cv``), in words; None: no cross-validation.
    cv_kind: ClassVar[str | None] = None

    def data_device(self) -> torch.device | None:
        """The device batches are made on: the trainer's accelerator when ``on_device`` allows, else None."""
        needed = sum(tensor_bytes(d) for d in getattr(self, "datasets", {}).values())
        return device_for_data(self.trainer, self.on_device, needed)

    def loader(self, stage: str) -> TensorBatchLoader:
        """Batches of one split for this process (training: shuffled per epoch, unless overfitting)."""
        rank, world_size = world(self)
        trainer = self.trainer
        shuffle = stage == "train" and not (trainer is not None and trainer.overfit_batches > 0)
        return TensorBatchLoader(
            self.datasets[stage],
            self.batch_size,
            shuffle=shuffle,
            # The run's seed (seed_everything(seed) sets torch.initial_seed()).
            seed=torch.initial_seed() % 2**63,
            rank=rank,
            world_size=world_size,
            device=self.data_device(),
        )

    def train_dataloader(self) -> TensorBatchLoader | DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> TensorBatchLoader | DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> TensorBatchLoader | DataLoader:
        return self.loader("test")
