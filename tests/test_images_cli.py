"""Image classification through the ``lit-dl`` CLI: train, eval and predict on digits; image folders."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from lit_dl.cli import main
from lit_dl.data.image_files import write_noise_idx_set

QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]
N_PREDICT = 10

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("digits") / "train"
    main(["train", "experiment=digits_cnn", "trainer.max_epochs=2", *QUIET, f"hydra.run.dir={run_dir}"])
    return run_dir


def write_image_folder(root: Path, corrupt: bool) -> Path | None:
    """3 classes x 12 small images (sizes and modes differ); optionally one file of random bytes."""
    colours = {"circle": (200, 40, 40), "square": (40, 200, 40), "triangle": (40, 40, 200)}
    rng = np.random.default_rng(0)
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(12):
            image = Image.new("RGB", (12 + i, 10 + i % 4), colour)
            (image.convert("L") if i % 5 == 0 else image).save(root / name / f"{i:02d}.png")
    if not corrupt:
        return None
    bad = root / "square" / "broken.png"
    bad.write_bytes(rng.integers(0, 256, 256, dtype=np.uint8).tobytes())
    return bad


def test_digits_cnn_train_writes_metrics_checkpoints_and_plots(digits_run: Path) -> None:
    metrics = json.loads((digits_run / "metrics.json").read_text())
    for name in ("test/accuracy", "test/f1", "test/auroc", "test/loss", "val/loss"):
        assert isinstance(metrics[name], float) and math.isfinite(metrics[name]), name
    assert metrics["test/accuracy"] > 0.5  # two epochs already learn most digits (random: 0.1)
    for name in ("confusion_matrix.png", "test_predictions.png"):
        with Image.open(digits_run / "plots" / name) as image:
            assert image.format == "PNG"
    checkpoint = torch.load(digits_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["lit_dl"]["datamodule"] == "lit_dl.data.images.DigitsDataModule"
    state = checkpoint["DigitsDataModule"]
    assert state["image_shape"] == [1, 8, 8] and state["classes"] == [str(i) for i in range(10)]
    assert checkpoint["hyper_parameters"]["net"]["_target_"] == "lit_dl.nets.CNN"


def test_eval_reproduces_the_test_accuracy(digits_run: Path, tmp_path: Path) -> None:
    metrics = json.loads((digits_run / "metrics.json").read_text())
    eval_dir = tmp_path / "eval"
    main(
        [
            "eval",
            f"ckpt_path={digits_run / 'checkpoints' / 'best.ckpt'}",
            *QUIET[:1],
            f"hydra.run.dir={eval_dir}",
        ]
    )
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    assert evaluated["test/accuracy"] == metrics["test/accuracy"]
    assert evaluated["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-6)
    assert (eval_dir / "plots" / "confusion_matrix.png").is_file()


def test_predict_a_folder_of_pngs(digits_run: Path, tmp_path: Path) -> None:
    digits = load_digits()
    folder = tmp_path / "new"
    folder.mkdir()
    labels = {}
    for i in range(N_PREDICT):
        pixels = np.clip(np.round(digits.images[i] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"digit_{i:02d}.png")
        labels[f"digit_{i:02d}.png"] = int(digits.target[i])
    (folder / "README.txt").write_text("not an image")
    output = tmp_path / "p.csv"
    main(
        [
            "predict",
            f"ckpt_path={digits_run / 'checkpoints' / 'best.ckpt'}",
            f"input={folder}",
            f"output={output}",
            f"hydra.run.dir={tmp_path / 'predict'}",
        ]
    )
    frame = pd.read_csv(output)
    assert list(frame.columns) == ["file", *[f"prob_{i}" for i in range(10)], "prediction"]
    assert len(frame) == N_PREDICT
    assert sorted(Path(f).name for f in frame["file"]) == sorted(labels)
    probs = frame[[f"prob_{i}" for i in range(10)]].to_numpy()
    assert probs.sum(axis=1) == pytest.approx(np.ones(N_PREDICT), abs=1e-5)
    assert frame["prediction"].tolist() == probs.argmax(axis=1).tolist()
    correct = sum(
        int(p) == labels[Path(f).name] for f, p in zip(frame["file"], frame["prediction"], strict=True)
    )
    assert correct >= 7, frame


def image_folder_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "train",
        "data=image_folder",
        f"data.root={root}",
        "data.image_size=[16,16]",
        "data.batch_size=8",
        "model=cnn_classifier",
        "model.net.channels=[4,8]",
        *QUIET,
        *extra,
        f"hydra.run.dir={run_dir}",
    ]


def test_corrupt_image_fails_in_one_line_or_is_skipped(fail_cli: Callable[..., str], tmp_path: Path) -> None:
    root = tmp_path / "images"
    bad = write_image_folder(root, corrupt=True)
    run_dir = tmp_path / "run"
    line = fail_cli(*image_folder_args(root, run_dir, "trainer.max_epochs=1"))
    assert str(bad) in line and "data.skip_bad_files=true" in line
    assert not run_dir.exists()

    skip_dir = tmp_path / "skip"
    main(image_folder_args(root, skip_dir, "data.skip_bad_files=true", "debug=fast_dev_run"))
    metrics = json.loads((skip_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["test/loss"])
    log = (skip_dir / "train.log").read_text()
    assert "skipping" in log and str(bad) in log
    config = (skip_dir / "config.yaml").read_text()
    assert "skip_bad_files: true" in config


def test_image_folder_trains_from_disk_with_workers(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_image_folder(root, corrupt=False)
    run_dir = tmp_path / "run"
    main(
        image_folder_args(root, run_dir, "data.in_memory=false", "data.num_workers=1", "trainer.max_epochs=2")
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["test/loss"]) and 0.0 <= metrics["test/accuracy"] <= 1.0
    assert (
        "reading" in (run_dir / "train.log").read_text()
        and "from disk" in (run_dir / "train.log").read_text()
    )


def test_channels_last_trains_on_digits(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    main(
        [
            "train",
            "experiment=digits_cnn",
            "model.channels_last=true",
            "debug=fast_dev_run",
            *QUIET,
            f"hydra.run.dir={run_dir}",
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["test/loss"]) and 0.0 <= metrics["test/accuracy"] <= 1.0


def write_fashion_files(root: Path) -> None:
    """Fashion-MNIST's four ``.gz`` IDX files as shipped, with 60 training and 20 test images."""
    write_noise_idx_set(root, n_train=60, n_test=20)


def test_fashion_cnn_offline_from_files_in_data_root(tmp_path: Path) -> None:
    root = tmp_path / "fashion"
    write_fashion_files(root)
    run_dir = tmp_path / "run"
    main(
        [
            "train",
            "experiment=fashion_cnn",
            f"data.root={root}",
            "data.download=false",
            "data.batch_size=16",
            "data.val_fraction=0.2",
            "debug=fast_dev_run",
            *QUIET,
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert math.isfinite(json.loads((run_dir / "metrics.json").read_text())["test/loss"])
    assert "48 train / 12 val / 20 test images of shape [1, 28, 28]" in (run_dir / "train.log").read_text()
    assert (run_dir / "plots" / "test_predictions.png").is_file()


def test_missing_dataset_files_offline_fail_in_one_line(fail_cli: Callable[..., str], tmp_path: Path) -> None:
    root = tmp_path / "no_files_here"
    run_dir = tmp_path / "run"
    args = ["train", "data=mnist", f"data.root={root}", "data.download=false", "model=cnn_classifier"]
    line = fail_cli(*args, *QUIET, f"hydra.run.dir={run_dir}")
    assert str(root) in line and "data.download=true" in line
    assert not run_dir.exists()


def test_failed_download_leaves_no_empty_data_folders(
    fail_cli: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    # Refused at once on any machine: the download fails as it does offline (it does here anyway).
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    data_dir = tmp_path / "data"
    args = ["train", "data=mnist", f"paths.data_dir={data_dir}", "model=cnn_classifier"]
    line = fail_cli(*args, *QUIET, f"hydra.run.dir={tmp_path / 'run'}")
    assert line.startswith(f"error: could not download mnist into {data_dir / 'mnist'}")
    assert "fetch train-images-idx3-ubyte.gz" in line and f"data.root={data_dir / 'mnist'}" in line
    assert not data_dir.exists()


def test_augmentation_from_the_command_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    flip = "data.augment=[{_target_:torchvision.transforms.v2.RandomHorizontalFlip,p:0.5}]"
    main(["train", "experiment=digits_cnn", flip, "debug=limit", *QUIET, f"hydra.run.dir={run_dir}"])
    best = run_dir / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, weights_only=True)
    [entry] = checkpoint["lit_dl"]["datamodule_hparams"]["augment"]
    assert entry == {"_target_": "torchvision.transforms.v2.RandomHorizontalFlip", "p": 0.5}
    eval_dir = tmp_path / "eval"
    main(
        [
            "eval",
            f"ckpt_path={best}",
            "+trainer.limit_test_batches=2",
            *QUIET[:1],
            f"hydra.run.dir={eval_dir}",
        ]
    )
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    assert evaluated["test/accuracy"] == json.loads((run_dir / "metrics.json").read_text())["test/accuracy"]


def test_resnet_classifier_trains_on_digits(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    main(
        [
            "train",
            "data=digits",
            "model=resnet_classifier",
            "data.batch_size=16",
            "debug=fast_dev_run",
            *QUIET,
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert math.isfinite(json.loads((run_dir / "metrics.json").read_text())["test/loss"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The number of training batches")
def test_compile_trains_and_its_checkpoint_holds_the_plain_network(tmp_path: Path) -> None:
    """torch.compile (about 15 s of compilation on CPU with a tiny network): plain state_dict keys."""
    run_dir = tmp_path / "run"
    small_net = ["model.net.channels=[4]", "model.net.batch_norm=false", "model.net.dropout=0"]
    main(
        [
            "train",
            "experiment=digits_cnn",
            "model.compile=true",
            *small_net,
            "debug=limit",
            *QUIET,
            f"hydra.run.dir={run_dir}",
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["test/loss"])
    best = run_dir / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, weights_only=True)
    assert checkpoint["hyper_parameters"]["compile"] is True
    keys = list(checkpoint["state_dict"])
    assert keys and all(k.startswith(("net.", "train_metrics", "val_metrics", "test_metrics")) for k in keys)
    assert not any("_orig_mod" in k for k in keys)

    eval_dir = tmp_path / "eval"
    main(
        [
            "eval",
            f"ckpt_path={best}",
            "+trainer.limit_test_batches=2",
            *QUIET[:1],
            f"hydra.run.dir={eval_dir}",
        ]
    )
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    assert evaluated["test/accuracy"] == metrics["test/accuracy"]
