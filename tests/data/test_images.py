"""Image datamodules on tiny generated data: digits, torchvision sets read offline, image folders."""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lit_dl.data import DigitsDataModule, ImageFolderDataModule, TorchvisionDataModule
from lit_dl.data.image_files import ImageFileDataset
from lit_dl.data.images import TORCHVISION_SETS
from lit_dl.errors import DataError

FASHION_CLASSES = [
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
]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FLIP = {"_target_": "torchvision.transforms.v2.RandomHorizontalFlip", "p": 1.0}


def set_up(datamodule: Any) -> Any:
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def all_images(dataset: Any) -> torch.Tensor:
    """Every (normalised) image of a dataset, fetched the way the loaders do: one ``__getitems__``."""
    return dataset.__getitems__(list(range(len(dataset))))[0]


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    return set_up(DigitsDataModule(batch_size=32, val_fraction=0.1, test_fraction=0.15, split_seed=3))


def test_digits_shapes_classes_and_stratified_split(digits: DigitsDataModule) -> None:
    sizes = {name: len(ds) for name, ds in digits.datasets.items()}
    # 1,797 images: ceil(15%) for test, then ceil(10%) of the rest for validation (scikit-learn rounds up).
    assert sizes == {"train": 1374, "val": 153, "test": 270}
    assert digits.image_shape == [1, 8, 8]
    assert digits.classes == [str(i) for i in range(10)]
    assert sum(digits.class_counts) == sizes["train"]
    overall = np.bincount(np.concatenate([digits.datasets[s].labels.numpy() for s in sizes]), minlength=10)
    for split, size in sizes.items():
        counts = np.bincount(digits.datasets[split].labels.numpy(), minlength=10)
        assert np.all(np.abs(counts - overall * size / overall.sum()) <= 1.0), (split, counts)
    assert digits.data_spec().inputs == {"in_channels": 1, "image_size": [8, 8]}
    assert digits.data_spec().classes == digits.classes


def test_digits_normalisation_is_fitted_on_the_training_split(digits: DigitsDataModule) -> None:
    train = all_images(digits.datasets["train"])
    assert train.dtype == torch.float32 and train.shape == (1374, 1, 8, 8)
    assert train.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert train.std().item() == pytest.approx(1.0, abs=1e-3)
    raw_train = digits.datasets["train"].images.float() / 255.0
    assert digits.mean == pytest.approx([raw_train.mean().item()], abs=1e-6)
    raw_all = torch.cat([digits.datasets[s].images for s in ("train", "val", "test")]).float() / 255.0
    assert abs(digits.mean[0] - raw_all.mean().item()) > 1e-5  # not the statistics of all images
    test = all_images(digits.datasets["test"])
    expected = (digits.datasets["test"].images.float() / 255.0 - digits.mean[0]) / digits.std[0]
    assert torch.allclose(test, expected, atol=1e-6)


def test_digits_state_survives_a_weights_only_checkpoint(digits: DigitsDataModule, tmp_path: Path) -> None:
    state = digits.state_dict()
    assert set(state) == {"classes", "mean", "std", "image_shape", "class_counts"}
    torch.save({"DigitsDataModule": state}, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)["DigitsDataModule"]
    assert loaded == state

    fresh = DigitsDataModule(batch_size=32, val_fraction=0.1, test_fraction=0.15, split_seed=3)
    assert fresh.state_dict() == {}
    fresh.load_state_dict(loaded)
    set_up(fresh)
    assert torch.equal(all_images(fresh.datasets["test"]), all_images(digits.datasets["test"]))
    assert torch.equal(fresh.datasets["test"].labels, digits.datasets["test"].labels)
    assert fresh.state_dict() == state

    # The restored statistics are used as they are, not refitted on another training split.
    other = DigitsDataModule(batch_size=32, split_seed=99)
    other.load_state_dict(loaded)
    set_up(other)
    assert other.mean == state["mean"] and other.std == state["std"]


def test_train_loader_serves_whole_batches(digits: DigitsDataModule, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = digits.datasets["train"]
    calls: list[int] = []
    original = dataset.__getitems__

    def counting(indices: list[int]) -> tuple[torch.Tensor, ...]:
        calls.append(len(indices))
        return original(indices)

    monkeypatch.setattr(dataset, "__getitems__", counting)
    loader = digits.train_dataloader()
    images, labels = next(iter(loader))
    assert images.shape == (32, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (32,) and labels.dtype == torch.long
    assert calls == [32]  # one indexing call for the whole batch, no per-image fetch
    assert len(loader) == -(-1374 // 32)
    val_images, val_labels = next(iter(digits.val_dataloader()))
    assert torch.equal(val_labels, digits.datasets["val"].labels[:32])  # not shuffled
    assert torch.equal(val_images, all_images(digits.datasets["val"])[:32])


def test_augmentation_changes_training_images_only(digits: DigitsDataModule) -> None:
    flipped = set_up(
        DigitsDataModule(batch_size=32, val_fraction=0.1, test_fraction=0.15, split_seed=3, augment=[FLIP])
    )
    assert flipped.mean == digits.mean  # statistics of the raw images
    plain_train, flipped_train = all_images(digits.datasets["train"]), all_images(flipped.datasets["train"])
    assert not torch.equal(plain_train, flipped_train)
    assert torch.allclose(flipped_train, torch.flip(plain_train, dims=[-1]), atol=1e-6)
    batch, _ = next(iter(flipped.train_dataloader()))
    assert batch.shape == (32, 1, 8, 8)
    for split in ("val", "test"):
        assert torch.equal(all_images(flipped.datasets[split]), all_images(digits.datasets[split]))


def test_augment_entries_survive_the_verbs_build(digits: DigitsDataModule) -> None:
    from omegaconf import OmegaConf

    from lit_dl.verbs.common import build_datamodule

    config = {"_target_": "lit_dl.data.DigitsDataModule", "batch_size": 32, "split_seed": 3}
    config.update(val_fraction=0.1, test_fraction=0.15, augment=[FLIP])
    flipped = set_up(build_datamodule(OmegaConf.create({"data": config})))  # as `lit-dl train` builds data
    assert flipped.hparams["augment"] == [FLIP]  # plain data, for a weights_only checkpoint
    expected = torch.flip(all_images(digits.datasets["train"]), dims=[-1])
    assert torch.allclose(all_images(flipped.datasets["train"]), expected, atol=1e-6)


def test_load_inputs_folder_and_single_file(digits: DigitsDataModule, tmp_path: Path) -> None:
    folder = tmp_path / "new"
    (folder / "nested").mkdir(parents=True)
    Image.new("L", (8, 8), 255).save(folder / "white.png")
    Image.new("RGB", (20, 12), (0, 0, 0)).save(folder / "nested" / "black.jpg")  # resized, made grey
    Image.new("L", (8, 8), 0).save(folder / "b.bmp")
    (folder / "notes.txt").write_text("not an image")

    dataset, frame = digits.load_inputs(str(folder))
    assert list(frame.columns) == ["file"]
    names = [Path(f).name for f in frame["file"]]
    assert sorted(names) == ["b.bmp", "black.jpg", "white.png"]
    images = dataset.__getitems__(list(range(len(dataset))))
    assert len(images) == 1  # no labels
    assert images[0].shape == (3, 1, 8, 8) and images[0].dtype == torch.float32
    mean, std = digits.mean[0], digits.std[0]
    by_name = dict(zip(names, images[0], strict=True))
    assert torch.allclose(by_name["white.png"], torch.full((1, 8, 8), (1.0 - mean) / std), atol=1e-5)
    assert torch.allclose(by_name["black.jpg"], torch.full((1, 8, 8), (0.0 - mean) / std), atol=0.05)

    single, single_frame = digits.load_inputs(str(folder / "white.png"))
    assert len(single) == 1 and single_frame["file"].tolist() == [str(folder / "white.png")]
    assert torch.equal(single[0][0], by_name["white.png"])

    with pytest.raises(DataError, match="not found"):
        digits.load_inputs(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        digits.load_inputs(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"test_fraction": 0}, "test"),
    ],
)
def test_bad_arguments_are_data_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        DigitsDataModule(**kwargs)


# ---------------------------------------------------------------- torchvision sets, offline

N_TRAIN, N_TEST = 60, 20  # 6 and 2 images per class


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format by hand: two zero bytes, dtype code 0x08 (uint8), ndim, big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_split(n: int, seed: int, shape: tuple[int, ...] = (28, 28)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    return images, labels


def write_idx_files(
    folder: Path, compressed: bool, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train and test IDX files as shipped (``.gz``) or as torchvision leaves them (uncompressed)."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": make_split(N_TRAIN, seed), "t10k": make_split(N_TEST, seed + 1)}
    for prefix, (images, labels) in splits.items():
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(array)
            assert data[:4] == (b"\x00\x00\x08\x03" if kind.startswith("images") else b"\x00\x00\x08\x01")
            name = f"{prefix}-{kind}-ubyte"
            if compressed:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return {"train": splits["train"], "test": splits["t10k"]}


def write_cifar_files(folder: Path, per_batch: int = 12) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    train_images, train_labels = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(per_batch) + i) % 10]
        with open(folder / f"data_batch_{i}", "wb") as handle:
            pickle.dump({"data": data, "labels": labels, "batch_label": f"training batch {i} of 5"}, handle)
        train_images.append(data)
        train_labels += labels
    test_data = rng.integers(0, 256, size=(20, 3072), dtype=np.uint8)
    test_labels = [i % 10 for i in range(20)]
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"data": test_data, "labels": test_labels}, handle)
    return {
        "train": (np.concatenate(train_images).reshape(-1, 3, 32, 32), np.array(train_labels)),
        "test": (test_data.reshape(-1, 3, 32, 32), np.array(test_labels)),
    }


def torchvision_dm(dataset: str, root: Path, **kwargs: Any) -> TorchvisionDataModule:
    kwargs.setdefault("download", False)
    return TorchvisionDataModule(dataset=dataset, root=str(root), batch_size=16, val_fraction=0.2, **kwargs)


@pytest.mark.parametrize(
    ("dataset", "layout"),
    [
        ("mnist", "flat_gz"),
        ("mnist", "torchvision"),
        ("fashion_mnist", "flat_gz"),
        ("fashion_mnist", "torchvision"),
    ],
)
def test_idx_files_are_read_offline(dataset: str, layout: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    folder = root if layout == "flat_gz" else root / TORCHVISION_SETS[dataset]["folder"] / "raw"
    written = write_idx_files(folder, compressed=layout == "flat_gz")
    dm = set_up(torchvision_dm(dataset, root))

    assert dm.image_shape == [1, 28, 28]
    assert dm.classes == (FASHION_CLASSES if dataset == "fashion_mnist" else [str(i) for i in range(10)])
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 48, "val": 12, "test": N_TEST}
    # The official test files are the test split, in their order.
    test_images, test_labels = written["test"]
    assert torch.equal(dm.datasets["test"].images, torch.from_numpy(test_images).unsqueeze(1))
    assert torch.equal(dm.datasets["test"].labels, torch.from_numpy(test_labels.astype(np.int64)))
    # Train and val together are exactly the training file.
    seen = torch.cat([dm.datasets["train"].images, dm.datasets["val"].images]).flatten(1)
    expected = torch.from_numpy(written["train"][0]).flatten(1)
    assert sorted(map(bytes, seen.numpy())) == sorted(map(bytes, expected.numpy()))
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.long


def test_binarize_leaves_two_pixel_values(tmp_path: Path) -> None:
    write_idx_files(tmp_path, compressed=True)
    dm = set_up(torchvision_dm("mnist", tmp_path, binarize="threshold"))
    raw = torch.cat([dm.datasets[s].images for s in ("train", "val", "test")])
    assert set(raw.unique().tolist()) == {0, 255}
    assert len(all_images(dm.datasets["train"]).unique()) == 2
    plain = set_up(torchvision_dm("mnist", tmp_path))
    assert len(plain.datasets["train"].images.unique()) > 2


def test_cifar10_batch_files(tmp_path: Path) -> None:
    written = write_cifar_files(tmp_path / "cifar-10-batches-py")
    dm = set_up(torchvision_dm("cifar10", tmp_path))
    assert dm.image_shape == [3, 32, 32]
    assert dm.classes == CIFAR_CLASSES
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 48, "val": 12, "test": 20}
    assert torch.equal(dm.datasets["test"].images, torch.from_numpy(written["test"][0]))
    assert dm.datasets["test"].labels.tolist() == written["test"][1].tolist()
    assert len(dm.mean) == 3 and len(dm.std) == 3
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 3, 32, 32)


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_files_without_download_name_the_folder(dataset: str, tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"data\.download=true") as info:
        torchvision_dm(dataset, root).prepare_data()
    assert str(root) in str(info.value)
    with pytest.raises(DataError) as info:
        torchvision_dm(dataset, root).setup("fit")
    assert str(root) in str(info.value)


def test_partial_files_count_as_missing(tmp_path: Path) -> None:
    write_idx_files(tmp_path, compressed=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        torchvision_dm("fashion_mnist", tmp_path).prepare_data()


def fake_torchvision_class(calls: list[tuple[str, bool, bool]], write: Callable[[Path], Any]) -> type:
    class FakeDataset:
        def __init__(self, root: str, train: bool = True, download: bool = False, **_: Any) -> None:
            calls.append((root, train, download))
            write(Path(root))

    return FakeDataset


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10"])
def test_download_uses_torchvision_when_files_are_missing(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    calls: list[tuple[str, bool, bool]] = []
    folder = TORCHVISION_SETS[dataset]["folder"]
    if dataset == "cifar10":
        fake = fake_torchvision_class(calls, lambda root: write_cifar_files(root / folder))
    else:  # torchvision leaves uncompressed files in root/FashionMNIST/raw/
        fake = fake_torchvision_class(calls, lambda root: write_idx_files(root / folder / "raw", False))
    monkeypatch.setattr(torchvision.datasets, TORCHVISION_SETS[dataset]["class"], fake)

    root = tmp_path / "downloads"
    dm = set_up(torchvision_dm(dataset, root, download=True))
    assert calls == [(str(root), True, True), (str(root), False, True)]
    assert len(dm.datasets["test"]) == 20

    calls.clear()
    set_up(torchvision_dm(dataset, root, download=True))  # files now there: no second download
    assert calls == []


def test_failed_download_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    class Offline:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz\nURLError")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(DataError, match="could not download mnist") as info:
        torchvision_dm("mnist", tmp_path, download=True).prepare_data()
    assert "\n" not in str(info.value)


# An address that refuses every connection at once, on any machine: torchvision's own download code
# runs and fails as it does without a network, and nothing is fetched where there is one.
REFUSED = "http://127.0.0.1:9/"


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_a_failed_download_removes_what_it_created_and_says_where_to_get_the_files(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, TORCHVISION_SETS[dataset]["class"])
    if dataset == "cifar10":
        monkeypatch.setattr(dataset_class, "url", REFUSED + "cifar-10-python.tar.gz")
    else:
        monkeypatch.setattr(dataset_class, "mirrors", [REFUSED])
    # A root that does not exist yet: the whole path torchvision made goes again.
    root = tmp_path / "new" / "data" / dataset
    with pytest.raises(DataError, match=f"could not download {dataset} into {root}") as info:
        torchvision_dm(dataset, root, download=True).prepare_data()
    message = str(info.value)
    assert "\n" not in message and f"data.root={root}" in message
    assert ("cifar-10-python.tar.gz" if dataset == "cifar10" else "train-images-idx3-ubyte.gz") in message
    assert list(tmp_path.iterdir()) == []
    # A root of the user's: it stays, with what was in it; only the attempt's own folder goes.
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="could not download"):
        torchvision_dm(dataset, root, download=True).prepare_data()
    assert [p.name for p in root.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("compressed", [True, False])
def test_corrupt_idx_file_is_named(compressed: bool, tmp_path: Path) -> None:
    write_idx_files(tmp_path, compressed=compressed)
    name = "train-images-idx3-ubyte" + (".gz" if compressed else "")
    bad = b"\x12\x34\x08\x03" + b"\x00" * 64  # wrong magic number
    (tmp_path / name).write_bytes(gzip.compress(bad) if compressed else bad)
    with pytest.raises(DataError, match="bad magic") as info:
        torchvision_dm("fashion_mnist", tmp_path).setup("fit")
    assert str(tmp_path / name) in str(info.value)


def test_truncated_idx_file_and_count_mismatch(tmp_path: Path) -> None:
    write_idx_files(tmp_path, compressed=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=re.escape(str(path))):
        torchvision_dm("mnist", tmp_path).setup("fit")

    write_idx_files(tmp_path, compressed=False)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(N_TEST - 1, dtype=np.uint8)))
    with pytest.raises(DataError, match="20 images but 19 labels"):
        torchvision_dm("mnist", tmp_path).setup("fit")


def test_corrupt_cifar_batch_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_files(folder)
    (folder / "data_batch_3").write_bytes(b"garbage, not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        torchvision_dm("cifar10", tmp_path).setup("fit")


def test_unknown_dataset_name() -> None:
    with pytest.raises(DataError, match="mnist, fashion_mnist, cifar10"):
        TorchvisionDataModule(dataset="svhn")


# ---------------------------------------------------------------- image folders

COLOURS = {"blue": (10, 20, 230), "green": (15, 210, 30), "red": (220, 15, 25)}


def write_image_folder(
    root: Path, per_class: int = 12, classes: dict[str, tuple[int, int, int]] = COLOURS
) -> None:
    """Solid-colour images of several sizes, RGB and greyscale, PNG and JPEG, one folder per class."""
    for name, colour in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (10 + 3 * i, 7 + 2 * (i % 5))  # (width, height)
            image = Image.new("RGB", size, colour)
            if i % 4 == 3:
                image = image.convert("L")
            image.save(folder / f"{name}_{i:02d}.{'jpg' if i % 3 == 0 else 'png'}")


def folder_dm(root: Path, **kwargs: Any) -> ImageFolderDataModule:
    kwargs.setdefault("image_size", (16, 12))
    kwargs.setdefault("val_fraction", 0.25)
    kwargs.setdefault("test_fraction", 0.25)
    return ImageFolderDataModule(root=str(root), batch_size=8, **kwargs)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root)
    return root


def test_image_folder_rgb(image_root: Path) -> None:
    dm = set_up(folder_dm(image_root, channels=3))
    assert dm.classes == ["blue", "green", "red"]
    assert dm.image_shape == [3, 16, 12]  # [channels, height, width]
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 20, "val": 7, "test": 9}
    assert dm.class_counts == [7, 7, 6]  # stratified: 12 images per class, 20 for training
    for split in ("train", "val", "test"):
        dataset = dm.datasets[split]
        assert dataset.images.shape[1:] == (3, 16, 12) and dataset.images.dtype == torch.uint8
        for image, label in zip(dataset.images, dataset.labels.tolist(), strict=True):
            colour = COLOURS[dm.classes[label]]
            pixel = image[:, 8, 6].int()
            if not torch.equal(pixel[0:1].expand(3), pixel):  # greyscale sources have R == G == B
                assert torch.allclose(pixel, torch.tensor(colour, dtype=torch.int), atol=12), (pixel, colour)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 16, 12) and images.dtype == torch.float32 and labels.dtype == torch.long


def test_image_folder_greyscale(image_root: Path) -> None:
    dm = set_up(folder_dm(image_root, channels=1, image_size=[9, 20]))
    assert dm.image_shape == [1, 9, 20]
    assert len(dm.mean) == 1
    red = dm.classes.index("red")
    image = dm.datasets["train"].images[dm.datasets["train"].labels == red][0]
    r, g, b = COLOURS["red"]
    assert abs(int(image[0, 4, 10]) - round(0.299 * r + 0.587 * g + 0.114 * b)) <= 8
    batch, _ = next(iter(dm.train_dataloader()))
    assert batch.shape == (8, 1, 9, 20)


def test_image_folder_train_test_layout(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", per_class=8)
    write_image_folder(tmp_path / "test", per_class=3)
    dm = set_up(folder_dm(tmp_path, channels=3))
    assert dm.classes == ["blue", "green", "red"]
    assert len(dm.datasets["test"]) == 9
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 24
    assert dm.datasets["test"].labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_image_folder_test_classes_must_match(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", per_class=8)
    write_image_folder(tmp_path / "test", per_class=3, classes={"blue": (0, 0, 255), "red": (255, 0, 0)})
    with pytest.raises(DataError, match="expected"):
        folder_dm(tmp_path).setup("fit")


def test_normalisation_is_summed_chunk_by_chunk_to_torch_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lit_dl.data.images.STATISTICS_CHUNK", 7)  # 25 images: 4 chunks, the last short
    images = torch.randint(0, 256, (25, 3, 5, 4), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    mean, std = DigitsDataModule().channel_statistics(images)
    floats = images.float() / 255.0
    torch.testing.assert_close(torch.tensor(mean), floats.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(torch.tensor(std), floats.std(dim=(0, 2, 3)))


# ---------------------------------------------------------------- image folders read from disk


def disk_images(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image and label of a dataset read from files, item by item."""
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([image for image, _ in items]), torch.stack([label for _, label in items])


class FakeTrainer:
    """What the datamodule's loaders read of a trainer: this process's rank among ``world_size``."""

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        self.global_rank, self.world_size, self.num_devices = rank, world_size, world_size
        self.overfit_batches = 0
        self.strategy = type("Strategy", (), {"root_device": torch.device("cpu")})()


@pytest.mark.parametrize("scale", ["standardize", "unit"])
def test_image_folder_from_disk_gives_what_memory_gives(image_root: Path, scale: str) -> None:
    memory = set_up(folder_dm(image_root, in_memory=True, scale=scale))
    disk = set_up(folder_dm(image_root, in_memory=False, num_workers=0, scale=scale))
    assert not memory.file_backed and disk.file_backed
    assert (disk.classes, disk.class_counts, disk.image_shape) == (
        memory.classes,
        memory.class_counts,
        memory.image_shape,
    )
    torch.testing.assert_close(torch.tensor(disk.mean), torch.tensor(memory.mean))
    torch.testing.assert_close(torch.tensor(disk.std), torch.tensor(memory.std))
    for split in ("train", "val", "test"):
        images, labels = disk_images(disk.datasets[split])
        torch.testing.assert_close(images, all_images(memory.datasets[split]))
        assert torch.equal(labels, memory.datasets[split].labels)


def test_image_folder_from_disk_loader_reads_each_image_once_per_epoch_in_workers(image_root: Path) -> None:
    dm = set_up(folder_dm(image_root, in_memory=False, num_workers=2, prefetch_factor=2))
    dm.trainer = FakeTrainer()
    loader = dm.train_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (2, True, 2)
    orders = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)  # as Lightning does before each epoch
        order = list(loader.sampler)
        assert sorted(order) == list(range(len(dm.datasets["train"])))
        orders.append(order)
        images = torch.cat([batch for batch, _ in loader])
        expected, _ = disk_images(torch.utils.data.Subset(dm.datasets["train"], order))
        torch.testing.assert_close(images, expected)  # the workers' batches, in the epoch's order
    assert orders[0] != orders[1]
    validation = dm.val_dataloader()
    assert list(validation.sampler) == list(range(len(dm.datasets["val"])))


def test_image_folder_from_disk_shares_items_among_processes(image_root: Path) -> None:
    dm = set_up(folder_dm(image_root, in_memory=False, num_workers=0))
    shares = {}
    for rank in (0, 1):
        dm.trainer = FakeTrainer(rank, world_size=2)
        samplers = {stage: dm.loader(stage).sampler for stage in ("train", "val", "test")}
        # DistributedSamplers, which Lightning keeps under DDP (it replaces any other sampler).
        assert all(isinstance(s, torch.utils.data.DistributedSampler) for s in samplers.values())
        shares[rank] = {stage: list(sampler) for stage, sampler in samplers.items()}
    for stage in ("val", "test"):  # evaluation: every item once over the processes, no padding
        assert sorted(shares[0][stage] + shares[1][stage]) == list(range(len(dm.datasets[stage])))
    train = len(dm.datasets["train"])  # training: torch's DistributedSampler, padded to equal shares
    assert len(shares[0]["train"]) == len(shares[1]["train"]) == (train + 1) // 2
    assert set(shares[0]["train"]) | set(shares[1]["train"]) == set(range(train))


def test_image_folder_in_memory_auto_reads_a_large_folder_from_disk(
    image_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not set_up(folder_dm(image_root)).file_backed
    monkeypatch.setattr("lit_dl.data.images.IN_MEMORY_LIMIT", 16 * 12 * 3 * 35)  # 35 of the 36 images
    assert set_up(folder_dm(image_root, num_workers=0)).file_backed


def test_image_folder_from_disk_thresholds_and_refuses_stochastic_draws(image_root: Path) -> None:
    dm = set_up(folder_dm(image_root, in_memory=False, num_workers=0, binarize="threshold", channels=1))
    images, _ = disk_images(dm.datasets["train"])
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    memory = set_up(folder_dm(image_root, in_memory=True, binarize="threshold", channels=1))
    torch.testing.assert_close(images, all_images(memory.datasets["train"]))
    with pytest.raises(DataError, match="in_memory=true"):
        folder_dm(image_root, in_memory=False, binarize="stochastic").setup("fit")


def test_image_folder_from_disk_predicts_on_files_as_read_in_memory(image_root: Path) -> None:
    memory = set_up(folder_dm(image_root, in_memory=True))
    disk = folder_dm(image_root, in_memory=False)
    disk.load_state_dict(memory.state_dict())  # as lit-dl predict restores it from a checkpoint
    expected, files = memory.load_inputs(str(image_root / "red"))
    dataset, disk_files = disk.load_inputs(str(image_root / "red"))
    assert isinstance(dataset, ImageFileDataset) and disk_files.equals(files)
    torch.testing.assert_close(dataset.__getitems__(range(len(dataset)))[0], all_images(expected))


@pytest.mark.parametrize("value", [{"in_memory": "sometimes"}, {"num_workers": -1}, {"prefetch_factor": 0}])
def test_image_folder_reading_settings_are_checked(image_root: Path, value: dict[str, Any]) -> None:
    with pytest.raises(DataError, match=f"data.{next(iter(value))}"):
        folder_dm(image_root, **value)


@pytest.mark.parametrize("in_memory", [True, False])
def test_corrupt_image_is_named_or_skipped(
    image_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, in_memory: bool
) -> None:
    root = tmp_path / "images"
    write_image_folder(root)
    bad = root / "green" / "broken.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    reading = {"in_memory": in_memory, "num_workers": 1}  # from disk: the reason comes from a worker
    with pytest.raises(DataError, match="skip_bad_files") as info:
        folder_dm(root, **reading).setup("fit")
    assert str(bad) in str(info.value)
    assert "\n" not in str(info.value)

    with caplog.at_level(logging.WARNING, logger="lit_dl.data.images"):
        dm = set_up(folder_dm(root, skip_bad_files=True, **reading))
    assert dm.file_backed is not in_memory
    assert sum(len(ds) for ds in dm.datasets.values()) == 36  # 37 files, one skipped
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and str(bad) in r.getMessage()]
    assert len(warnings) == 1


def test_truncated_image_is_named(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    path = tmp_path / "red" / "red_01.png"
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (1, 2, 3)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue()[:60])  # a valid header, then nothing
    with pytest.raises(DataError) as info:
        folder_dm(tmp_path).setup("fit")
    assert str(path) in str(info.value)


def test_missing_or_empty_image_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        folder_dm(tmp_path / "missing").setup("fit")
    assert str(tmp_path / "missing") in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="sub-folder per class"):
        folder_dm(empty).setup("fit")
    (empty / "cats").mkdir()
    (empty / "cats" / "readme.txt").write_text("no images")
    with pytest.raises(DataError):
        folder_dm(empty).setup("fit")


def test_only_unreadable_images_with_skip_is_an_error(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="no readable images"):
        folder_dm(tmp_path, skip_bad_files=True).setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"channels": 2}, "channels"), ({"image_size": [16]}, "image_size")]
)
def test_image_folder_bad_arguments(kwargs: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=message):
        ImageFolderDataModule(root=str(tmp_path), **kwargs)


def test_image_folder_state_restores_and_checks_classes(image_root: Path, tmp_path: Path) -> None:
    dm = set_up(folder_dm(image_root))
    restored = folder_dm(image_root)
    restored.load_state_dict(dm.state_dict())
    set_up(restored)
    assert torch.equal(all_images(restored.datasets["test"]), all_images(dm.datasets["test"]))

    other = tmp_path / "other"
    write_image_folder(other, per_class=4, classes={"cat": (1, 1, 1), "dog": (9, 9, 9), "eel": (5, 5, 5)})
    moved = folder_dm(other)
    moved.load_state_dict(dm.state_dict())
    with pytest.raises(DataError, match="checkpoint"):
        moved.setup("test")
