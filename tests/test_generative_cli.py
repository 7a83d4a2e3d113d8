"""Image VAE and GAN through the ``lit-dl`` CLI on digits: train, sample (PNG, .pt), anomalies, bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_dl.cli import main

FAST = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.sample_quality=null",  # its feature classifier is tested in tests/evaluation
    "callbacks.model_checkpoint.monitor=val/loss",
]
GAN_FAST = [*FAST[:-1], "callbacks.model_checkpoint.monitor=val/d_loss"]

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("vae") / "train"
    main(["train", "experiment=digits_vae", *FAST, "model.nll_samples=20", f"hydra.run.dir={run_dir}"])
    return run_dir


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("gan") / "train"
    main(["train", "experiment=digits_gan", *GAN_FAST, "model.conditional=true", f"hydra.run.dir={run_dir}"])
    return run_dir


def test_vae_run_reports_elbo_terms_and_nll_in_nats_and_writes_grids(vae_run: Path) -> None:
    metrics = json.loads((vae_run / "metrics.json").read_text())
    for key in ("test/nelbo", "test/recon", "test/kl", "test/nll", "val/loss"):
        assert key in metrics, sorted(metrics)
    assert metrics["test/nelbo"] == pytest.approx(metrics["test/recon"] + metrics["test/kl"], rel=1e-4)
    # 64 binary pixels: at most 64 * log(2) nats apart from the KL; a trained model is far below that
    # is not asked of one epoch, but the bound holds: NLL <= negative ELBO (up to sampling noise).
    assert 0 < metrics["test/nll"] <= metrics["test/nelbo"] + 0.5
    samples = vae_run / "samples"
    for name in ("epoch_000.png", "latest.png", "reconstructions_epoch_000.png", "interpolation.png"):
        with Image.open(samples / name) as image:
            image.verify()
    with Image.open(samples / "epoch_000.png") as image:
        assert image.size == (8 * (8 * 8 + 2) + 2,) * 2  # 64 digits of 8x8, enlarged 8x to 530 pixels


def test_sample_verb_writes_a_png_grid_and_a_raw_tensor(vae_run: Path, tmp_path: Path) -> None:
    ckpt = vae_run / "checkpoints" / "best.ckpt"
    png = tmp_path / "grid.png"
    main(["sample", f"ckpt_path={ckpt}", "n=16", f"output={png}", f"hydra.run.dir={tmp_path / 'a'}"])
    with Image.open(png) as image:
        image.verify()
    native = tmp_path / "native.png"
    main(
        [
            "sample",
            f"ckpt_path={ckpt}",
            "n=16",
            "grid_px=0",
            f"output={native}",
            f"hydra.run.dir={tmp_path / 'n'}",
        ]
    )
    with Image.open(png) as image, Image.open(native) as small:
        # 4 x 4 grid of 8x8 digits with 2-pixel padding: 4 * (8 + 2) + 2 = 42 pixels a side as drawn;
        # enlarged 16x (the smallest whole factor reaching 512 pixels): 4 * (8 * 16 + 2) + 2 = 522.
        assert small.size == (42, 42) and image.size == (522, 522)
        big, pixels = np.asarray(image), np.asarray(small)
    # Every pixel of a digit is a 16 x 16 block of its own value in the enlarged grid: nothing blurred.
    tile = np.arange(4)[:, None] * 10 + 2 + np.arange(8)[None, :]  # rows (and columns) of the digits
    big_tile = np.arange(4)[:, None] * 130 + 2 + 16 * np.arange(8)[None, :]
    for dy in (0, 7, 15):
        for dx in (0, 9, 15):
            rows, cols = (big_tile.ravel() + dy)[:, None], (big_tile.ravel() + dx)[None, :]
            assert np.array_equal(big[rows, cols], pixels[tile.ravel()[:, None], tile.ravel()[None, :]])
    raw = tmp_path / "samples.pt"
    main(["sample", f"ckpt_path={ckpt}", "n=5", "seed=3", f"output={raw}", f"hydra.run.dir={tmp_path / 'b'}"])
    images = torch.load(raw, weights_only=True)
    assert images.shape == (5, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    again = tmp_path / "again.pt"
    main(
        ["sample", f"ckpt_path={ckpt}", "n=5", "seed=3", f"output={again}", f"hydra.run.dir={tmp_path / 'c'}"]
    )
    assert torch.equal(images, torch.load(again, weights_only=True))  # the seed fixes the samples


def test_sample_verb_refuses_a_table_suffix_for_images_and_writes_nothing(
    vae_run: Path, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    out = tmp_path / "x.csv"
    ckpt = vae_run / "checkpoints" / "best.ckpt"
    line = fail_cli("sample", f"ckpt_path={ckpt}", f"output={out}", f"hydra.run.dir={tmp_path / 'r'}")
    assert "images are written as .png" in line and str(out) in line
    assert not out.exists()
    line = fail_cli("sample", f"ckpt_path={ckpt}", "grid_px=-5", f"hydra.run.dir={tmp_path / 's'}")
    assert line == "error: grid_px must be a whole number of pixels (0: native size), got -5"


def test_conditional_gan_samples_the_asked_class(
    gan_run: Path, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    metrics = json.loads((gan_run / "metrics.json").read_text())
    assert "test/d_loss" in metrics
    ckpt = gan_run / "checkpoints" / "best.ckpt"
    out = tmp_path / "threes.pt"
    main(
        [
            "sample",
            f"ckpt_path={ckpt}",
            "n=6",
            "condition=3",
            f"output={out}",
            f"hydra.run.dir={tmp_path / 'a'}",
        ]
    )
    assert torch.load(out, weights_only=True).shape == (6, 1, 8, 8)
    line = fail_cli("sample", f"ckpt_path={ckpt}", "condition=eleven", f"hydra.run.dir={tmp_path / 'b'}")
    assert line.startswith("error: condition='eleven' is not a class; the classes are 0, 1, 2")


@pytest.mark.parametrize("experiment", ["digits_vae", "digits_gan"])
def test_fast_dev_run_in_bf16_mixed(experiment: str, tmp_path: Path) -> None:
    main(
        [
            "train",
            f"experiment={experiment}",
            "trainer.precision=bf16-mixed",
            "+trainer.fast_dev_run=1",
            "callbacks.sample_quality=null",
            "callbacks.progress_bar=null",
            "model.nll_samples=4" if experiment == "digits_vae" else "model.loss=wgan_gp",
            *([] if experiment == "digits_vae" else ["model.discriminator.norm=layer"]),
            f"hydra.run.dir={tmp_path}",
        ]
    )
    assert (tmp_path / "samples" / "epoch_000.png").is_file()


def test_vae_scores_a_held_out_class_as_anomalies(tmp_path: Path) -> None:
    main(
        [
            "train",
            "experiment=digits_vae",
            *[arg for arg in FAST if "limit_test_batches" not in arg],
            "model.nll_samples=0",
            "data.exclude_classes=[0]",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["test/anomaly_auroc"] <= 1.0
    assert "test/nll" not in metrics


def test_generative_models_refuse_standardised_or_tabular_data(
    tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    line = fail_cli(
        "train",
        "experiment=digits_vae",
        *FAST,
        "data.scale=standardize",
        "data.binarize=false",
        f"hydra.run.dir={tmp_path / 'a'}",
    )
    assert line.endswith("set data.scale=unit (the generative experiments do)")
    line = fail_cli(
        "train", "model=vae_conv", "callbacks=generative", *FAST, f"hydra.run.dir={tmp_path / 'b'}"
    )
    assert "needs images data" in line and "data=digits" in line
    line = fail_cli(
        "train", "experiment=digits_cnn", "data.exclude_classes=[1]", f"hydra.run.dir={tmp_path / 'c'}"
    )
    assert "data.exclude_classes is for generative models" in line


def test_predict_writes_each_images_negative_elbo(vae_run: Path, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    folder = tmp_path / "images"
    folder.mkdir()
    digits = load_digits()
    Image.fromarray((digits.images[0] * 255 / 16).astype("uint8")).save(folder / "digit.png")
    noise = torch.Generator().manual_seed(0)
    Image.fromarray((torch.rand(8, 8, generator=noise) * 255).byte().numpy()).save(folder / "noise.png")
    out = tmp_path / "scores.csv"
    ckpt = vae_run / "checkpoints" / "best.ckpt"
    main(
        [
            "predict",
            f"ckpt_path={ckpt}",
            f"input={folder}",
            f"output={out}",
            f"hydra.run.dir={tmp_path / 'p'}",
        ]
    )
    import pandas as pd

    scores = pd.read_csv(out).set_index("file")["negative_elbo"]
    assert len(scores) == 2 and (scores > 0).all()
