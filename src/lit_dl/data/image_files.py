"""Reading image data sets from files already on disk.

torchvision downloads MNIST, Fashion-MNIST and CIFAR-10, but its readers only
accept its own folder layout, uncompressed IDX files, and (for CIFAR-10) files whose
MD5 matches the official release. Users often have the files elsewhere: Debian's
``dataset-fashion-mnist`` package, a shared folder of the ``.gz`` files as
shipped, a subset written by a test. The two formats are small and fixed, so we
read them here (IDX: a magic number, the dimensions, the bytes; CIFAR-10: pickled
dicts) from either layout, compressed or not.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from lit_dl.errors import DataError

# Suffixes of the image files a folder of images is read from.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# The files of MNIST and Fashion-MNIST (IDX, each also as .gz) and of CIFAR-10 (pickled batches), per split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
}


def find_file(folders: Sequence[Path], name: str) -> Path | None:
    """First of ``name`` or ``name.gz`` in ``folders``."""
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format), optionally gzip-compressed, as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
        zero, dtype_code, ndim = data[0:2], data[2], data[3]
        if zero != b"\x00\x00" or dtype_code not in IDX_DTYPES:
            raise ValueError("not an IDX file (bad magic number)")
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        array = np.frombuffer(data, dtype=IDX_DTYPES[dtype_code], offset=4 + 4 * ndim)
        return array.reshape(shape)
    except (OSError, ValueError, IndexError, struct.error, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from err


def write_noise_idx_set(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """MNIST's four ``.gz`` IDX files, as shipped, holding 28x28 noise images and labels 0-9 in turn.

    A stand-in for MNIST or Fashion-MNIST (``data.root=root``) where nothing can be downloaded:
    tests and ``scripts/gpu_check.sh`` train on it. The format is the one :func:`read_idx` reads.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            (root / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + array.tobytes()))
    return root


class CifarUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR-10 batch holds and nothing else.

    A pickle may name any function for the reader to call (``os.system`` in a ``__reduce__``); a
    batch is a dict of lists, bytes and one numpy array, so only numpy's array reconstruction is
    found (and ``_codecs.encode``, with which Python 3 pickles bytes at protocol 2).
    """

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),  # numpy < 2 (the official files)
            ("numpy._core.multiarray", "_reconstruct"),  # numpy >= 2
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"it would call {module}.{name}, which a CIFAR-10 batch never holds (only numpy arrays "
                "and lists): the file is not a CIFAR-10 batch or was tampered with"
            )
        return super().find_class(module, name)


def cifar_entry(batch: Any, key: str) -> Any:
    """``batch[key]`` of a batch dict whose keys are text (Python 2's files read as latin-1) or bytes."""
    if not isinstance(batch, dict):
        raise ValueError(f"it holds a {type(batch).__name__}, not a dict")
    if key in batch:
        return batch[key]
    if key.encode() in batch:
        return batch[key.encode()]
    raise KeyError(f"no {key!r} entry")


def read_cifar_batches(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 python batch files -> images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)``.

    The official format is a pickled dict; it is read with :class:`CifarUnpickler`, so a batch
    file is data and cannot run code.
    """
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                batch = CifarUnpickler(handle, encoding="latin1").load()
            images.append(np.asarray(cifar_entry(batch, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(cifar_entry(batch, "labels"), dtype=np.int64))
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as err:
            raise DataError(f"cannot read CIFAR-10 batch file {path}: {err}") from err
    return np.concatenate(images), np.concatenate(labels)


def load_image(path: Path, size: tuple[int, int] | None, channels: int, hint: str = "") -> Tensor:
    """Decode one image file to a uint8 tensor ``(C, H, W)``, resized to ``size`` (H, W) if given.

    Raises :class:`DataError` naming the file (and ``hint``, what to do) when it cannot be decoded.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {str(err).splitlines()[0]}{hint}") from err
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


class ImageFileDataset(Dataset):
    """Images read from their files when a sample is taken: folders too large to hold in memory.

    Each item is one image, decoded, resized to ``size``, optionally thresholded to 0/1 pixels,
    augmented and normalised: the very steps the in-memory dataset takes, here in a DataLoader's
    worker processes. Items are ``(image, label)`` (``(image,)`` without labels).

    Args:
        paths: the image files.
        labels: class index per file, or None.
        size: ``(height, width)`` every image is resized to.
        channels: 1 (greyscale) or 3 (RGB).
        mean, std: per-channel normalisation of pixels in [0, 1].
        transform: augmentation of the uint8 image ``(C, H, W)`` (training only).
        threshold: pixels >= 128 become 255, the rest 0, before normalising (``binarize=threshold``).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Tensor | None,
        size: tuple[int, int],
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        transform: Any = None,
        threshold: bool = False,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = labels
        self.size, self.channels = size, channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.transform = transform
        self.threshold = threshold

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        image = load_image(Path(self.paths[index]), self.size, self.channels)
        if self.threshold:
            image = torch.where(image >= 128, 255, 0).to(torch.uint8)
        if self.transform is not None:
            image = self.transform(image)
        image = (image.float() / 255.0 - self.mean) / self.std
        return (image,) if self.labels is None else (image, self.labels[index])

    def __getitems__(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, ...]:
        """A whole batch ``(images, labels)``, stacked (the batch interface of lit_dl's datasets)."""
        items = [self[int(i)] for i in indices]
        return tuple(torch.stack(parts) for parts in zip(*items, strict=True))


class ImageFileStatistics(Dataset):
    """One pass over image files: per file whether it decodes and its per-channel pixel sums.

    Item ``i`` is ``(ok, sums, reason)``: ``sums`` ``(C, 2)`` float64 holds the sum and the sum of
    squares of the pixels in [0, 1] of each channel; a file that does not decode gives
    ``(False, zeros, why)``. Summed over the training files the sums give the normalisation.
    """

    def __init__(self, paths: Sequence[str | Path], size: tuple[int, int], channels: int) -> None:
        self.paths = [str(p) for p in paths]
        self.size, self.channels = size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[bool, Tensor, str]:
        try:
            image = load_image(Path(self.paths[index]), self.size, self.channels)
        except DataError as err:
            reason = str(err.__cause__ or err).splitlines()[0]
            return False, torch.zeros(self.channels, 2, dtype=torch.float64), reason
        pixels = image.double().flatten(1) / 255.0
        return True, torch.stack([pixels.sum(dim=1), pixels.square().sum(dim=1)], dim=1), ""


class ShardSampler(DistributedSampler):
    """Evaluation items for one process, each item once over all processes: ``rank, rank + world_size, ...``.

    torch's ``DistributedSampler`` pads the set with copies of its first items so every process gets
    as many; those would count twice in the metrics. A ``DistributedSampler`` only so that Lightning
    keeps it under DDP instead of putting its own in its place.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]
