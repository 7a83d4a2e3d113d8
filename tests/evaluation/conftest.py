"""A feature classifier of the digits, trained once (one epoch, about a second) for the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def digits_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/feature_classifiers/digits.ckpt``: the name the sample-quality callback looks for."""
    from lit_dl.data import DigitsDataModule
    from lit_dl.evaluation.feature_classifier import feature_classifier_path, locate_or_train

    datamodule = DigitsDataModule(scale="unit")
    path = feature_classifier_path(tmp_path_factory.mktemp("cache") / "feature_classifiers", datamodule)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return locate_or_train(datamodule, path, max_epochs=1, seed=0, accelerator="cpu")
    finally:
        torch.set_num_threads(threads)
