"""Image classification data: scikit-learn digits, MNIST, Fashion-MNIST, CIFAR-10, a folder of images.

All share one interface: batches ``(image, label)`` with images ``(B, C, H, W)``
float, normalised per channel with statistics of the training split, and labels
``(B,)``. Images are held in memory as uint8 (Fashion-MNIST: 47 MB) and served a
whole batch at a time; augmentation, a list of ``torchvision.transforms.v2``
entries, is applied to training images only, image by image.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from lit_dl.builder import build
from lit_dl.data.base import InMemoryDataModule, check_split_arguments, on_device_setting, world
from lit_dl.data.batching import TensorBatchLoader, _already_batched
from lit_dl.data.image_files import (
    CIFAR_FILES,
    IDX_FILES,
    IMAGE_SUFFIXES,
    ImageFileDataset,
    ImageFileStatistics,
    ShardSampler,
    find_file,
    load_image,
    read_cifar_batches,
    read_idx,
)
from lit_dl.data.spec import DataSpec
from lit_dl.errors import DataError
from lit_dl.utils import cpu_count

log = logging.getLogger(__name__)

SKIP_HINT = " (set data.skip_bad_files=true to skip unreadable files)"
Arrays = tuple[Tensor, Tensor]  # images (N, C, H, W) uint8, labels (N,) int64


class InMemoryImageDataset(Dataset):
    """uint8 images in memory, normalised (and optionally augmented) when a batch is taken."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | None,
        mean: Tensor,
        std: Tensor,
        transform: v2.Transform | None = None,
        resample_binary: bool = False,
    ) -> None:
        self.images = images
        self.labels = labels
        self.mean = mean.view(-1, 1, 1)
        self.std = std.view(-1, 1, 1)
        self.transform = transform
        self.resample_binary = resample_binary
        # Pixels in [0, 1] as they are (data.scale=unit): no two passes over every batch to change nothing.
        self.normalises = bool((self.mean != 0).any() or (self.std != 1).any())

    def __len__(self) -> int:
        return len(self.images)

    def _prepare(self, images: Tensor) -> Tensor:
        if self.transform is not None:
            images = torch.stack([self.transform(image) for image in images])
        floats = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if self.resample_binary:  # dynamic binarisation: a fresh 0/1 draw of every pixel each time
            floats = torch.bernoulli(floats)
        return (floats - self.mean) / self.std if self.normalises else floats

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([index]))

    def __getitems__(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self._prepare(self.images[index])
        return (images,) if self.labels is None else (images, self.labels[index])

    def to(self, device: torch.device | str) -> InMemoryImageDataset:
        """The same images (and their normalisation) on ``device``; batches are then made there."""
        moved = copy.copy(self)
        moved.images = self.images.to(device)
        moved.labels = None if self.labels is None else self.labels.to(device)
        moved.mean, moved.std = self.mean.to(device), self.std.to(device)
        return moved


class ImageDataModule(InMemoryDataModule):
    """Base of the image datamodules: splits, normalisation, augmentation, loaders, checkpoint state.

    Subclasses implement :meth:`load_arrays`, returning ``{"train": ..., "test": ...}``
    (an official test split) or ``{"all": ...}`` (carved into train/val/test here).

    Args:
        batch_size: images per batch.
        on_device: keep the prepared tensors on the training device: ``auto`` (on a GPU when they
            fit in an eighth of its memory), ``true`` or ``false``
            (:class:`~lit_dl.data.batching.TensorBatchLoader`).
        val_fraction: share of the training images held out for validation.
        test_fraction: share of all images used for testing when there is no official test split.
        split_seed: seed of the stratified split.
        augment: ``torchvision.transforms.v2`` entries (``_target_`` dicts) applied to training
            images, given as uint8 tensors ``(C, H, W)``, e.g. RandomCrop, RandomHorizontalFlip.
        scale: ``standardize`` (per-channel mean 0 / std 1 from the training split: classifiers)
            or ``unit`` (pixels in [0, 1]: what generative models (VAE, GAN) model).
        binarize: ``false``; ``threshold`` (pixels >= 0.5 become 1, the rest 0); or ``stochastic``
            (each pixel is 1 with probability its intensity: a fresh draw for every training
            batch, one fixed, seeded draw for validation and test, the usual "binarised MNIST"
            of likelihood papers). Binary pixels are served in [0, 1].
        exclude_classes: class names or indices left out of training and validation but kept in
            the test split (e.g. to score them as anomalies with a VAE).
    """

    modality = "images"

    def __init__(
        self,
        batch_size: int = 128,
        on_device: bool | str = "auto",
        val_fraction: float = 0.1,
        test_fraction: float = 0.15,
        split_seed: int = 42,
        augment: Sequence[dict[str, Any]] | None = None,
        scale: str = "standardize",
        binarize: bool | str = False,
        exclude_classes: Sequence[str | int] | None = None,
    ) -> None:
        super().__init__()
        if scale not in ("standardize", "unit"):
            raise DataError(f"data.scale must be 'standardize' or 'unit', got {scale!r}")
        binarize = {True: "threshold", False: None, "false": None, "none": None}.get(binarize, binarize)
        if binarize not in (None, "threshold", "stochastic"):
            raise DataError(f"data.binarize must be false, 'threshold' or 'stochastic', got {binarize!r}")
        check_split_arguments(val_fraction, test_fraction, batch_size)
        self.save_hyperparameters()
        self.batch_size = int(batch_size)
        self.on_device = on_device_setting(on_device)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)
        self.augment = list(augment or [])
        self.binarize: str | None = binarize
        self.scale = "unit" if binarize else scale  # binary pixels are modelled as 0/1
        self.exclude_classes = [str(c) for c in exclude_classes or []]
        # Fitted state (restored from a checkpoint by load_state_dict).
        self.task_type = "classification"
        self.classes: list[str] | None = None
        self.mean: list[float] | None = None
        self.std: list[float] | None = None
        self.image_shape: list[int] | None = None
        self.class_counts: list[int] | None = None
        self.datasets: dict[str, Dataset] = {}

    # ------------------------------------------------------------ to implement
    def load_arrays(self) -> dict[str, Arrays]:
        raise NotImplementedError

    def class_names(self, num_classes: int) -> list[str]:
        return [str(i) for i in range(num_classes)]

    # ------------------------------------------------------------ setup
    def _split(self, images: Tensor, labels: Tensor, fraction: float) -> tuple[Arrays, Arrays]:
        index = np.arange(len(labels))
        try:
            keep, held = train_test_split(
                index, test_size=fraction, random_state=self.split_seed, stratify=labels.numpy()
            )
        except ValueError as err:
            raise DataError(f"cannot split {len(labels)} images stratified by class: {err}") from err
        keep, held = torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(held))
        return (images[keep], labels[keep]), (images[held], labels[held])

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        arrays = self.load_arrays()
        if "all" in arrays:
            rest, test = self._split(*arrays["all"], self.test_fraction)
        else:
            rest, test = arrays["train"], arrays["test"]
        train, val = self._split(*rest, self.val_fraction)
        num_classes = int(max(rest[1].max(), test[1].max())) + 1
        excluded = self.excluded_indices(
            self.class_names(num_classes) if self.classes is None else self.classes
        )
        if excluded:
            train, val = (self._without(*split, excluded) for split in (train, val))
        if self.mean is None:
            self._fit(*train, num_classes=num_classes)
        elif self.shape_of(train[0]) != self.image_shape:
            raise DataError(
                f"images are {self.shape_of(train[0])}, the checkpoint expects {self.image_shape}"
            )
        if self.binarize == "threshold" and self.thresholds_in_memory:
            train, val, test = (
                (torch.where(x >= 128, 255, 0).to(torch.uint8), y) for x, y in (train, val, test)
            )
        elif self.binarize == "stochastic":  # evaluation splits: one seeded draw, the same every run
            val, test = (
                self._binary_draw(*split, seed=self.split_seed + i) for i, split in enumerate((val, test))
            )
        augment = (
            v2.Compose([build(t, f"data.augment[{i}]") for i, t in enumerate(self.augment)])
            if self.augment
            else None
        )
        self.datasets = {
            "train": self._dataset(*train, transform=augment, resample_binary=self.binarize == "stochastic"),
            "val": self._dataset(*val),
            "test": self._dataset(*test),
        }
        log.info(
            "data: %d train / %d val / %d test images of shape %s, %d classes",
            len(train[1]),
            len(val[1]),
            len(test[1]),
            self.image_shape,
            len(self.classes),
        )

    # Whether setup thresholds (binarize=threshold) the uint8 images it holds; a dataset that reads its
    # images from files thresholds each one as it reads it.
    thresholds_in_memory: bool = True

    def shape_of(self, images: Tensor) -> list[int]:
        """``[channels, height, width]`` of the images of a split (as ``load_arrays`` gives them)."""
        return list(images.shape[1:])

    def channel_statistics(self, images: Tensor) -> tuple[list[float], list[float]]:
        """Per-channel mean and (unbiased) standard deviation of the training images' pixels in [0, 1].

        Summed in float64 a chunk of images at a time: a float copy of the whole set took 8 bytes a
        pixel at its peak (3 GiB for 20,000 RGB images of 64x64 held as 250 MB of uint8).
        """
        sums = torch.zeros(images.shape[1], 2, dtype=torch.float64)
        for chunk in images.split(STATISTICS_CHUNK):
            pixels = chunk.transpose(0, 1).flatten(1).double() / 255.0  # (C, pixels of the chunk)
            sums += torch.stack([pixels.sum(dim=1), pixels.square().sum(dim=1)], dim=1)
        return mean_and_std(sums, images.shape[0] * images.shape[2] * images.shape[3])

    def _fit(self, images: Tensor, labels: Tensor, num_classes: int) -> None:
        shape = self.shape_of(images)
        if self.scale == "unit":
            self.mean, self.std = [0.0] * shape[0], [1.0] * shape[0]
        else:
            self.mean, self.std = self.channel_statistics(images)
        self.image_shape = shape
        self.classes = self.class_names(num_classes)
        self.class_counts = torch.bincount(labels, minlength=num_classes).tolist()

    def excluded_indices(self, classes: Sequence[str]) -> list[int]:
        """Indices of ``exclude_classes`` (given by name or index) among ``classes``."""
        indices = []
        for entry in self.exclude_classes:
            if entry in classes:
                indices.append(list(classes).index(entry))
            elif entry.isdigit() and int(entry) < len(classes):
                indices.append(int(entry))
            else:
                raise DataError(
                    f"data.exclude_classes: no class {entry!r}; the classes are {', '.join(classes)}"
                )
        if len(set(indices)) >= len(classes):
            raise DataError("data.exclude_classes leaves no class to train on")
        return sorted(set(indices))

    @staticmethod
    def _without(images: Tensor, labels: Tensor, excluded: list[int]) -> Arrays:
        keep = ~torch.isin(labels, torch.tensor(excluded))
        return images[keep], labels[keep]

    @staticmethod
    def _binary_draw(images: Tensor, labels: Tensor, seed: int) -> Arrays:
        generator = torch.Generator().manual_seed(seed)
        draw = torch.rand(images.shape, generator=generator) * 255.0 < images.float()
        return draw.to(torch.uint8) * 255, labels

    def _dataset(
        self,
        images: Tensor,
        labels: Tensor | None,
        transform: v2.Transform | None = None,
        resample_binary: bool = False,
    ) -> Dataset:
        return InMemoryImageDataset(
            images, labels, torch.tensor(self.mean), torch.tensor(self.std), transform, resample_binary
        )

    # ------------------------------------------------------------ prediction
    def load_inputs(self, path: str) -> tuple[Dataset, pd.DataFrame]:
        """An image file or a folder of images (recursively) -> ``(dataset, frame of file names)``."""
        assert self.image_shape is not None, "setup() or load_state_dict() first"
        return self.decoded_inputs(input_files(path))

    def decoded_inputs(self, files: list[Path]) -> tuple[Dataset, pd.DataFrame]:
        """Image ``files`` decoded into memory, as the model saw its data: ``(dataset, file names)``."""
        assert self.image_shape is not None, "setup() or load_state_dict() first"
        channels, height, width = self.image_shape
        images = torch.stack([load_image(f, (height, width), channels) for f in files])
        if self.binarize == "threshold":  # as the model saw its data
            images = torch.where(images >= 128, 255, 0).to(torch.uint8)
        elif self.binarize == "stochastic":
            images = self._binary_draw(images, torch.zeros(len(images)), seed=self.split_seed)[0]
        # The in-memory dataset whatever the training data was (a subclass may read its splits from disk).
        return ImageDataModule._dataset(self, images, None), pd.DataFrame({"file": [str(f) for f in files]})

    # ------------------------------------------------------------ task wiring and state
    def data_spec(self) -> DataSpec:
        """Image geometry, classes and pixel scale; held-out classes for anomaly scoring."""
        assert self.image_shape is not None, "setup() or load_state_dict() first"
        return DataSpec(
            task_type="classification",
            modality="images",
            inputs={"in_channels": self.image_shape[0], "image_size": list(self.image_shape[1:])},
            classes=list(self.classes),
            class_counts=self.class_counts,
            scale=self.scale,
            anomaly_classes=self.excluded_indices(self.classes) if self.exclude_classes else None,
        )

    def state_dict(self) -> dict[str, Any]:
        if self.mean is None:
            return {}
        return {
            "classes": self.classes,
            "mean": self.mean,
            "std": self.std,
            "image_shape": self.image_shape,
            "class_counts": self.class_counts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or state == self.state_dict():
            return
        self.classes, self.mean, self.std = state["classes"], state["mean"], state["std"]
        self.image_shape, self.class_counts = state["image_shape"], state["class_counts"]
        self.datasets = {}


def input_files(path: str) -> list[Path]:
    """The image file ``path``, or the image files in the folder ``path`` (recursively), sorted."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"input not found: {root}")
    files = (
        [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    )
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    return files


# Images converted to float64 at a time when the normalisation is fitted.
STATISTICS_CHUNK = 1024


def mean_and_std(sums: Tensor, pixels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and unbiased standard deviation (as ``Tensor.std``, at least 1e-3) from float64
    sums ``(C, 2)`` of the pixels and of their squares over ``pixels`` pixels a channel."""
    mean = sums[:, 0] / pixels
    variance = (sums[:, 1] - sums[:, 0] * mean) / max(pixels - 1, 1)
    return mean.tolist(), variance.clamp_min(0).sqrt().clamp_min(1e-3).tolist()


def is_image_size(value: Any) -> bool:
    """``[height, width]``: two whole numbers of pixels, each at least 1."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(side, int) and not isinstance(side, bool) and side >= 1 for side in value)
    )


def to_arrays(images: np.ndarray, labels: np.ndarray) -> Arrays:
    """numpy images ``(N, H, W)`` or ``(N, C, H, W)`` and labels -> uint8 / int64 tensors ``(N, C, H, W)``."""
    tensor = torch.from_numpy(np.array(images, dtype=np.uint8))  # a writable copy (IDX buffers are read-only)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    return tensor, torch.from_numpy(np.asarray(labels, dtype=np.int64))


class DigitsDataModule(ImageDataModule):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): no download."""

    def load_arrays(self) -> dict[str, Arrays]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255)  # pixel values 0..16 -> 0..255
        return {"all": to_arrays(images, digits.target)}


TORCHVISION_SETS: dict[str, dict[str, Any]] = {
    "mnist": {"class": "MNIST", "folder": "MNIST", "format": "idx", "classes": [str(i) for i in range(10)]},
    "fashion_mnist": {
        "class": "FashionMNIST",
        "folder": "FashionMNIST",
        "format": "idx",
        "classes": [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
    },
    "cifar10": {
        "class": "CIFAR10",
        "folder": "cifar-10-batches-py",
        "format": "cifar",
        "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    },
}


class TorchvisionDataModule(ImageDataModule):
    """MNIST, Fashion-MNIST or CIFAR-10, from ``root`` or downloaded there by torchvision.

    The files are looked for in ``root`` itself (the ``.gz`` IDX files as shipped, or
    CIFAR-10's batch files) and in torchvision's layout under it
    (``root/FashionMNIST/raw/``, ``root/cifar-10-batches-py/``). When they are not
    there and ``download`` is true, torchvision downloads them into ``root``.

    Args:
        dataset: ``mnist``, ``fashion_mnist`` or ``cifar10``.
        root: folder of the files.
        download: download when the files are missing.
        **kwargs: see :class:`ImageDataModule`.
    """

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        root: str = "data",
        download: bool = True,
        **kwargs: Any,
    ) -> None:
        if dataset not in TORCHVISION_SETS:
            raise DataError(f"data.dataset must be one of {', '.join(TORCHVISION_SETS)}, got {dataset!r}")
        super().__init__(**kwargs)
        self.dataset = dataset
        self.root = Path(root)
        self.download = bool(download)
        self.spec = TORCHVISION_SETS[dataset]

    def class_names(self, num_classes: int) -> list[str]:
        return list(self.spec["classes"][:num_classes])

    def _folders(self) -> list[Path]:
        return [self.root, self.root / self.spec["folder"], self.root / self.spec["folder"] / "raw"]

    def _local_files(self) -> dict[str, list[Path]] | None:
        names = IDX_FILES if self.spec["format"] == "idx" else CIFAR_FILES
        found = {split: [find_file(self._folders(), n) for n in files] for split, files in names.items()}
        return None if any(p is None for paths in found.values() for p in paths) else found  # type: ignore[misc]

    def prepare_data(self) -> None:
        if self._local_files() is not None:
            return
        expected = ", ".join(
            n
            for files in (IDX_FILES if self.spec["format"] == "idx" else CIFAR_FILES).values()
            for n in files
        )
        if not self.download:
            raise DataError(
                f"{self.dataset} files not found in {self.root} (expected {expected}); "
                "set data.root to their folder, or data.download=true"
            )
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, self.spec["class"])
        created = self._download_leftovers(dataset_class)
        log.info("data: downloading %s into %s (torchvision)", self.dataset, self.root)
        try:
            # torchvision prints each mirror it tries ("Failed to download (trying next)"): one line is ours.
            with contextlib.redirect_stdout(io.StringIO()):
                for train in (True, False):
                    dataset_class(str(self.root), train=train, download=True)
        except Exception as err:
            for path in created:  # only what this attempt created: no empty folders left behind
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            reason = next(
                (line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__
            )
            raise DataError(
                f"could not download {self.dataset} into {self.root} ({reason.rstrip(':')}); "
                f"{self._manual_download_hint(dataset_class, expected)}"
            ) from err

    def _download_leftovers(self, dataset_class: type) -> list[Path]:
        """What a download would create that is not there yet: the highest missing folder of ``root``
        (torchvision makes the whole path), else the data set's folder and archive inside it."""
        missing = [folder for folder in (self.root, *self.root.parents) if not folder.exists()]
        if missing:
            return [missing[-1]]  # everything below it is new
        names = [self.spec["folder"], getattr(dataset_class, "filename", None)]
        return [self.root / name for name in names if name and not (self.root / name).exists()]

    def _manual_download_hint(self, dataset_class: type, expected: str) -> str:
        """How to get the files without torchvision's download: where from, and where to put them."""
        if self.spec["format"] == "cifar":
            source = getattr(dataset_class, "url", "the CIFAR-10 page")
            return (
                f"on a machine with a network, fetch {source}, unpack it and put its {self.spec['folder']} "
                f"folder ({expected}) in data.root={self.root}"
            )
        mirrors = getattr(dataset_class, "mirrors", None) or ["the data set's page"]
        archives = ", ".join(f"{name}.gz" for files in IDX_FILES.values() for name in files)
        return (
            f"on a machine with a network, fetch {archives} from {mirrors[0]} and put them in "
            f"data.root={self.root}"
        )

    def load_arrays(self) -> dict[str, Arrays]:
        files = self._local_files()
        if files is None:
            self.prepare_data()
            files = self._local_files()
            assert files is not None
        arrays = {}
        for split, paths in files.items():
            if self.spec["format"] == "idx":
                images, labels = read_idx(paths[0]), read_idx(paths[1])
            else:
                images, labels = read_cifar_batches(paths)
            if len(images) != len(labels):
                raise DataError(f"{self.dataset} {split}: {len(images)} images but {len(labels)} labels")
            arrays[split] = to_arrays(images, labels)
        return arrays


class ImageFolderDataModule(ImageDataModule):
    """Your own images: one sub-folder per class (torchvision's ImageFolder layout).

    ``root/<class>/<image>`` is split into train/val/test; with ``root/train/<class>/...``
    and ``root/test/<class>/...`` those folders are used. Every image is resized to ``image_size``.

    A folder whose decoded images fit in memory (``in_memory=auto``: at most
    :data:`IN_MEMORY_LIMIT` bytes and a quarter of the machine's memory) is decoded once and
    held as uint8, batches taken a whole batch at a time. A larger one stays on disk: setup reads
    every file once, in worker processes, to check that it decodes and to fit the normalisation, and
    training reads the images again batch by batch through a ``DataLoader`` with ``num_workers``
    worker processes, persistent across epochs, each ``prefetch_factor`` batches ahead, into pinned
    memory when training on a GPU. The split, the per-epoch order (seed + epoch, torch's
    ``DistributedSampler`` order under DDP) and the normalisation are the same either way.

    Args:
        root: the folder.
        image_size: ``[height, width]`` every image is resized to.
        channels: 1 (greyscale) or 3 (RGB).
        skip_bad_files: skip unreadable images with a warning instead of stopping.
        in_memory: ``auto``, ``true`` (decode every image into memory) or ``false`` (read from disk).
        num_workers: worker processes reading files (from disk only); ``auto``: one per CPU core
            of this process's share, less one for the training loop, at most 8.
        prefetch_factor: batches each worker reads ahead.
        **kwargs: see :class:`ImageDataModule`.
    """

    def __init__(
        self,
        root: str,
        image_size: Sequence[int] = (64, 64),
        channels: int = 3,
        skip_bad_files: bool = False,
        in_memory: bool | str = "auto",
        num_workers: int | str = "auto",
        prefetch_factor: int = 4,
        **kwargs: Any,
    ) -> None:
        if channels not in (1, 3):
            raise DataError(f"data.channels must be 1 or 3, got {channels}")
        if not is_image_size(image_size):
            raise DataError(f"data.image_size must be [height, width] in pixels, got {image_size!r}")
        in_memory = {"true": True, "false": False}.get(str(in_memory).lower(), in_memory)
        if in_memory not in ("auto", True, False):
            raise DataError(f"data.in_memory must be auto, true or false, got {in_memory!r}")
        if num_workers != "auto" and (
            isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0
        ):
            raise DataError(f"data.num_workers must be auto or a whole number >= 0, got {num_workers!r}")
        if isinstance(prefetch_factor, bool) or not isinstance(prefetch_factor, int) or prefetch_factor < 1:
            raise DataError(f"data.prefetch_factor must be a whole number >= 1, got {prefetch_factor!r}")
        super().__init__(**kwargs)
        self.root = Path(root)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.channels = int(channels)
        self.skip_bad_files = bool(skip_bad_files)
        self.in_memory = in_memory
        self.num_workers = num_workers
        self.prefetch_factor = int(prefetch_factor)
        self._class_names: list[str] | None = None
        # Reading from disk: every file (train listing, then test), and each file's pixel sums.
        self.file_backed = False
        self._paths: list[str] = []
        self._file_sums: Tensor | None = None

    def class_names(self, num_classes: int) -> list[str]:
        assert self._class_names is not None
        return self._class_names

    # ------------------------------------------------------------ listing and reading
    def _list_folder(self, folder: Path) -> list[tuple[str, int]]:
        """``(path, class index)`` of every image file under ``folder``, checking its classes."""
        from torchvision.datasets import ImageFolder

        try:
            listing = ImageFolder(str(folder), loader=str, allow_empty=False)
        except (FileNotFoundError, RuntimeError) as err:
            raise DataError(
                f"{folder}: {str(err).splitlines()[0]} (expected one sub-folder per class)"
            ) from err
        if self._class_names is None:
            self._class_names = list(listing.classes)
        elif listing.classes != self._class_names:
            raise DataError(f"{folder} has classes {listing.classes}, expected {self._class_names}")
        return list(listing.samples)

    def _skip_or_raise(self, path: str, err: DataError | str) -> None:
        """Stop on an unreadable image (the error names it), or skip it with a warning (skip_bad_files)."""
        if isinstance(err, DataError):
            cause, error = str(err.__cause__ or err), err
        else:  # the reason from a worker process
            cause, error = err, DataError(f"cannot read image {path}: {err}{SKIP_HINT}")
        if not self.skip_bad_files:
            raise error
        log.warning("skipping unreadable image %s (%s)", path, cause.splitlines()[0])

    def _decode(self, folder: Path, samples: list[tuple[str, int]]) -> Arrays:
        images, labels = [], []
        for path, label in samples:
            try:
                images.append(load_image(Path(path), self.image_size, self.channels, SKIP_HINT))
            except DataError as err:
                self._skip_or_raise(path, err)
                continue
            labels.append(label)
        if not images:
            raise DataError(f"no readable images in {folder}")
        return torch.stack(images), torch.tensor(labels, dtype=torch.long)

    def _check_files(self, folder: Path, samples: list[tuple[str, int]]) -> Arrays:
        """Read every file once (in workers): drop or name the unreadable ones, keep each file's pixel
        sums; the "images" of the split are then the files' indices into ``self._paths``."""
        statistics = ImageFileStatistics([p for p, _ in samples], self.image_size, self.channels)
        workers = self.worker_count()
        loader = DataLoader(
            statistics,
            batch_size=64,
            num_workers=workers,
            prefetch_factor=self.prefetch_factor if workers else None,
        )
        ok, sums, errors = [], [], []
        for batch_ok, batch_sums, batch_errors in loader:
            ok.append(batch_ok)
            sums.append(batch_sums)
            errors.extend(batch_errors)
        readable = torch.cat(ok)
        for (path, _), good, error in zip(samples, readable.tolist(), errors, strict=True):
            if not good:
                self._skip_or_raise(path, error)
        if not readable.any():
            raise DataError(f"no readable images in {folder}")
        kept = [sample for sample, good in zip(samples, readable.tolist(), strict=True) if good]
        first = len(self._paths)
        self._paths.extend(path for path, _ in kept)
        file_sums = torch.cat(sums)[readable]
        self._file_sums = file_sums if self._file_sums is None else torch.cat([self._file_sums, file_sums])
        indices = torch.arange(first, first + len(kept))
        return indices, torch.tensor([label for _, label in kept], dtype=torch.long)

    def _fits_in_memory(self, files: int) -> bool:
        if self.in_memory != "auto":
            return bool(self.in_memory)
        decoded = files * self.channels * self.image_size[0] * self.image_size[1]
        return decoded <= min(IN_MEMORY_LIMIT, machine_memory() // 4)

    def load_arrays(self) -> dict[str, Arrays]:
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root} (check data.root)")
        if (self.root / "train").is_dir() and (self.root / "test").is_dir():
            folders = {"train": self.root / "train", "test": self.root / "test"}
        else:
            folders = {"all": self.root}
        listings = {name: self._list_folder(folder) for name, folder in folders.items()}
        self.file_backed = not self._fits_in_memory(sum(map(len, listings.values())))
        if self.file_backed and self.binarize == "stochastic":
            raise DataError(
                "data.binarize=stochastic draws every pixel of the images in memory: set data.in_memory=true "
                "(or binarize=threshold)"
            )
        self._paths, self._file_sums = [], None
        read = self._check_files if self.file_backed else self._decode
        arrays = {name: read(folders[name], samples) for name, samples in listings.items()}
        if self.classes is not None and self.classes != self._class_names:
            raise DataError(
                f"{self.root} has classes {self._class_names}; the checkpoint was trained on {self.classes}"
            )
        if self.file_backed:
            log.info("reading %d images from disk (data.in_memory=%s)", len(self._paths), self.in_memory)
        return arrays

    def load_inputs(self, path: str) -> tuple[Dataset, pd.DataFrame]:
        """Images to predict on: decoded into memory when they fit (``in_memory``, as for training),
        else read from their files batch by batch."""
        assert self.image_shape is not None, "setup() or load_state_dict() first"
        files = input_files(path)
        if self._fits_in_memory(len(files)):
            return self.decoded_inputs(files)
        if self.binarize == "stochastic":
            raise DataError(
                "data.binarize=stochastic draws every pixel of the images in memory: set data.in_memory=true"
            )
        dataset = ImageFileDataset(
            files,
            None,
            self.image_size,
            self.channels,
            self.mean,
            self.std,
            threshold=self.binarize == "threshold",
        )
        return dataset, pd.DataFrame({"file": [str(f) for f in files]})

    # ------------------------------------------------------------ reading from disk
    @property
    def thresholds_in_memory(self) -> bool:  # type: ignore[override]
        """From disk, each image is thresholded as it is read (:class:`ImageFileDataset`)."""
        return not self.file_backed

    def shape_of(self, images: Tensor) -> list[int]:
        if not self.file_backed:
            return super().shape_of(images)
        return [self.channels, *self.image_size]

    def channel_statistics(self, images: Tensor) -> tuple[list[float], list[float]]:
        if not self.file_backed:
            return super().channel_statistics(images)
        assert self._file_sums is not None
        totals = self._file_sums[images].sum(dim=0)  # (C, 2): sums and sums of squares, float64
        return mean_and_std(totals, len(images) * self.image_size[0] * self.image_size[1])

    def _dataset(
        self,
        images: Tensor,
        labels: Tensor | None,
        transform: v2.Transform | None = None,
        resample_binary: bool = False,
    ) -> Dataset:
        if not self.file_backed:
            return super()._dataset(images, labels, transform, resample_binary)
        return ImageFileDataset(
            [self._paths[i] for i in images.tolist()],
            labels,
            self.image_size,
            self.channels,
            self.mean,
            self.std,
            transform,
            threshold=self.binarize == "threshold",
        )

    def worker_count(self) -> int:
        """Worker processes reading files: ``num_workers``, or per ``auto`` (see the class docstring)."""
        if self.num_workers != "auto":
            return int(self.num_workers)
        trainer = self.trainer
        processes = max(1, trainer.num_devices) if trainer is not None else 1
        return max(0, min(8, cpu_count() // processes - 1))

    def loader(self, stage: str) -> TensorBatchLoader | DataLoader:
        """From disk: a DataLoader with workers (training: shuffled per epoch; under DDP each process reads
        its share, evaluation items each once); in memory: the whole-batch loader."""
        if not self.file_backed:
            return super().loader(stage)
        rank, world_size = world(self)
        trainer = self.trainer
        dataset = self.datasets[stage]
        seed = torch.initial_seed() % 2**63  # the run's seed (seed_everything sets it)
        shuffle = stage == "train" and not (trainer is not None and trainer.overfit_batches > 0)
        sampler: DistributedSampler = (
            DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
            if shuffle
            else ShardSampler(dataset, num_replicas=world_size, rank=rank)
        )
        share = len(sampler)
        workers = self.worker_count()
        on_gpu = trainer is not None and trainer.strategy.root_device.type == "cuda"
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            # A last training batch of one image is left out: batch norm cannot train on it.
            drop_last=shuffle and share > self.batch_size and share % self.batch_size == 1,
            num_workers=workers,
            pin_memory=on_gpu,
            persistent_workers=workers > 0,
            prefetch_factor=self.prefetch_factor if workers else None,
            generator=torch.Generator().manual_seed(seed),  # the workers' seeds, the same on a resumed run
            collate_fn=_already_batched,  # the dataset stacks a batch itself (__getitems__)
        )


# A folder is decoded into memory (data.in_memory=auto) when its uint8 images take at most this many bytes.
IN_MEMORY_LIMIT = 4 * 2**30


def machine_memory() -> int:
    """Bytes of physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


__all__ = [
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFileDataset",
    "ImageFolderDataModule",
    "InMemoryImageDataset",
    "TorchvisionDataModule",
]
