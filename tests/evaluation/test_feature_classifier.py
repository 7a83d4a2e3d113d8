"""The feature classifier: names, cache hits without training, training when absent, the command."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch

from lit_dl.data import DigitsDataModule
from lit_dl.errors import CheckpointError
from lit_dl.evaluation import feature_classifier
from lit_dl.evaluation.feature_classifier import (
    FeatureExtractor,
    classifier_net,
    dataset_name,
    duration,
    feature_classifier_path,
    locate_or_train,
)
from lit_dl.verbs.common import load_checkpoint

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
]


def test_dataset_names() -> None:
    fashion = {"_target_": "lit_dl.data.TorchvisionDataModule", "dataset": "fashion_mnist", "binarize": False}
    assert dataset_name(fashion) == "fashion_mnist"
    assert dataset_name({**fashion, "dataset": "mnist", "binarize": "stochastic"}) == "mnist_binary"
    assert dataset_name(DigitsDataModule()) == "digits"
    folder = {"_target_": "lit_dl.data.ImageFolderDataModule", "root": "/x/my_photos", "image_size": [64, 48]}
    assert dataset_name(folder).startswith("my_photos_64x48_")
    # The cache is the user's, shared by projects: two folders of one name get two classifiers.
    assert dataset_name(folder) != dataset_name({**folder, "root": "/y/my_photos"})
    assert dataset_name(folder) == dataset_name({**folder, "root": "/x/../x/my_photos"})


def test_the_cache_is_the_users_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra import compose, initialize_config_dir

    from lit_dl.cli import CONFIG_DIR

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "lit_dl" / "feature_classifiers" / "digits.ckpt"
    assert feature_classifier_path(None, DigitsDataModule()) == expected
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = tmp_path / "home" / ".cache" / "lit_dl" / "feature_classifiers" / "digits.ckpt"
    assert feature_classifier_path(None, DigitsDataModule()) == home
    assert feature_classifier_path("~/mine", DigitsDataModule()) == tmp_path / "home" / "mine" / "digits.ckpt"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=digits_gan"])
    assert cfg.callbacks.sample_quality.cache_dir is None  # the default: the user's cache


def test_training_is_announced_in_one_line_with_its_time_and_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache" / "digits.ckpt"
    with caplog.at_level(logging.INFO, logger="lit_dl.evaluation.feature_classifier"):
        locate_or_train(DigitsDataModule(batch_size=512), path, max_epochs=1, accelerator="cpu")
    lines = [r.getMessage() for r in caplog.records if r.name == "lit_dl.evaluation.feature_classifier"]
    notice = [line for line in lines if "training a feature classifier" in line]
    assert len(notice) == 1, lines
    assert "for digits" in notice[0] and "FID" in notice[0] and str(path) in notice[0]
    assert re.search(r"1 epoch\(s\) over \d{4} images, about \d+ s here", notice[0])
    assert "callbacks.sample_quality=null" in notice[0]
    assert any(line.startswith("feature classifier for digits: test accuracy") for line in lines)
    assert path.is_file()


def test_durations_read_as_a_person_would_say_them() -> None:
    assert [duration(s) for s in (0.2, 42, 600, 5400, 9000)] == ["1 s", "42 s", "10 min", "1.5 h", "2.5 h"]


def test_classifier_net_fits_the_image_size() -> None:
    assert classifier_net([1, 8, 8])["channels"] == [32, 64]
    assert classifier_net([1, 28, 28])["channels"] == [32, 64, 128]
    assert classifier_net([3, 4, 4])["channels"] == [32]


def test_a_cached_file_is_used_without_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = tmp_path / "digits.ckpt"
    cached.write_bytes(b"whatever is there")

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained although the file was cached")

    monkeypatch.setattr(feature_classifier.L, "Trainer", no_training)
    assert locate_or_train(DigitsDataModule(), cached) == cached
    assert cached.read_bytes() == b"whatever is there"


def test_trained_when_absent_with_standardised_pixels(digits_classifier: Path) -> None:
    # The fixture asked for scale=unit data: the classifier is trained on standardised pixels anyway.
    checkpoint = load_checkpoint(digits_classifier)
    assert checkpoint["lit_dl"]["datamodule_hparams"]["scale"] == "standardize"
    assert checkpoint["DigitsDataModule"]["std"][0] > 0.2  # fitted statistics, not the unit 0/1
    assert not list(digits_classifier.parent.glob(".*tmp"))  # the temporary file was renamed
    extractor = FeatureExtractor.from_checkpoint(digits_classifier)
    assert extractor(torch.rand(3, 1, 8, 8)).shape == (3, 64)


def test_extractor_rejects_a_checkpoint_that_is_no_classifier(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        FeatureExtractor.from_checkpoint(tmp_path / "nothing.ckpt")


def test_command_locates_the_cached_classifier(
    digits_classifier: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = feature_classifier.main(["data=digits", f"out={digits_classifier}", "epochs=1"])
    assert path == digits_classifier
    assert f"feature classifier: {digits_classifier}" in capsys.readouterr().out


def test_command_fails_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        feature_classifier.main(["data=no_such_data"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot compose the data config") and len(err.splitlines()) == 1
