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
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from lit_dl.builder import build
from lit_dl.data.base import InMemoryDataModule, check_split_arguments, on_device_setting
from lit_dl.data.image_files import (
    CIFAR_FILES,
    IDX_FILES,
    IMAGE_SUFFIXES,
    find_file,
    load_image,
    read_cifar_batches,
    read_idx,
)
from lit_dl.data.spec import DataSpec
from lit_dl.errors import DataError

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

    def __len__(self) -> int:
        return len(self.images)

    def _prepare(self, images: Tensor) -> Tensor:
        if self.transform is not None:
            images = torch.stack([self.transform(image) for image in images])
        floats = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if self.resample_binary:  # dynamic binarisation: a fresh 0/1 draw of every pixel each time
            floats = torch.bernoulli(floats)
        return (floats - self.mean) / self.std

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
        elif list(train[0].shape[1:]) != self.image_shape:
            raise DataError(
                f"images are {list(train[0].shape[1:])}, the checkpoint expects {self.image_shape}"
            )
        if self.binarize == "threshold":
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

    def _fit(self, images: Tensor, labels: Tensor, num_classes: int) -> None:
        floats = images.float() / 255.0
        channels = images.shape[1]
        if self.scale == "unit":
            self.mean, self.std = [0.0] * channels, [1.0] * channels
        else:
            self.mean = floats.mean(dim=(0, 2, 3)).tolist()
            self.std = floats.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
        self.image_shape = list(images.shape[1:])
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
        root = Path(path)
        if not root.exists():
            raise DataError(f"input not found: {root}")
        files = (
            [root]
            if root.is_file()
            else sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        )
        if not files:
            raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {root}")
        channels, height, width = self.image_shape
        images = torch.stack([load_image(f, (height, width), channels) for f in files])
        if self.binarize == "threshold":  # as the model saw its data
            images = torch.where(images >= 128, 255, 0).to(torch.uint8)
        elif self.binarize == "stochastic":
            images = self._binary_draw(images, torch.zeros(len(images)), seed=self.split_seed)[0]
        return self._dataset(images, None), pd.DataFrame({"file": [str(f) for f in files]})

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
    and ``root/test/<class>/...`` those folders are used. Images are decoded once,
    resized to ``image_size`` and kept in memory.

    Args:
        root: the folder.
        image_size: ``[height, width]`` every image is resized to.
        channels: 1 (greyscale) or 3 (RGB).
        skip_bad_files: skip unreadable images with a warning instead of stopping.
        **kwargs: see :class:`ImageDataModule`.
    """

    def __init__(
        self,
        root: str,
        image_size: Sequence[int] = (64, 64),
        channels: int = 3,
        skip_bad_files: bool = False,
        **kwargs: Any,
    ) -> None:
        if channels not in (1, 3):
            raise DataError(f"data.channels must be 1 or 3, got {channels}")
        if not is_image_size(image_size):
            raise DataError(f"data.image_size must be [height, width] in pixels, got {image_size!r}")
        super().__init__(**kwargs)
        self.root = Path(root)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.channels = int(channels)
        self.skip_bad_files = bool(skip_bad_files)
        self._class_names: list[str] | None = None

    def class_names(self, num_classes: int) -> list[str]:
        assert self._class_names is not None
        return self._class_names

    def _read_folder(self, folder: Path) -> Arrays:
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
        images, labels = [], []
        for path, label in listing.samples:
            try:
                images.append(load_image(Path(path), self.image_size, self.channels, SKIP_HINT))
            except DataError as err:
                if not self.skip_bad_files:
                    raise
                log.warning(
                    "skipping unreadable image %s (%s)", path, str(err.__cause__ or err).splitlines()[0]
                )
                continue
            labels.append(label)
        if not images:
            raise DataError(f"no readable images in {folder}")
        return torch.stack(images), torch.tensor(labels, dtype=torch.long)

    def load_arrays(self) -> dict[str, Arrays]:
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root} (check data.root)")
        if (self.root / "train").is_dir() and (self.root / "test").is_dir():
            arrays = {
                "train": self._read_folder(self.root / "train"),
                "test": self._read_folder(self.root / "test"),
            }
        else:
            arrays = {"all": self._read_folder(self.root)}
        if self.classes is not None and self.classes != self._class_names:
            raise DataError(
                f"{self.root} has classes {self._class_names}; the checkpoint was trained on {self.classes}"
            )
        return arrays


__all__ = [
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "InMemoryImageDataset",
    "TorchvisionDataModule",
]
