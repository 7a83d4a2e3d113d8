"""SampleQuality callback: logged keys, the floor, the history file, checkpoint monitoring, errors."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn

from lit_dl.callbacks.sample_quality import SampleQuality
from lit_dl.data import DigitsDataModule
from lit_dl.errors import CheckpointError, ConfigError

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*sync_dist=True.*"),
]
MAX_EPOCHS = 3


class ToyGenerator(L.LightningModule):
    """Generates a mix of training images and uniform noise: all noise at epoch 0, all real from the last."""

    def __init__(self, real: Tensor) -> None:
        super().__init__()
        self.real = real
        self.weight = nn.Parameter(torch.zeros(1))

    def generate(self, n: int, generator: torch.Generator) -> Tensor:
        index = torch.randint(len(self.real), (n,), generator=generator)  # CPU generator, as the tasks
        noise = torch.rand(self.real[index].shape, generator=generator)
        real_share = min(1.0, self.current_epoch / (MAX_EPOCHS - 1))
        is_real = torch.rand(n, 1, 1, 1, generator=generator) < real_share
        return torch.where(is_real, self.real[index], noise).to(self.device)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.weight.square().sum()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        pass

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def digits() -> DigitsDataModule:
    datamodule = DigitsDataModule(scale="unit", batch_size=128)
    datamodule.setup("fit")
    return datamodule


def fast_trainer(tmp_path: Path, callbacks: list[L.Callback], max_epochs: int = MAX_EPOCHS) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        limit_train_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )


def test_callback_logs_falling_fid_the_floor_and_writes_its_history(
    digits_classifier: Path, tmp_path: Path
) -> None:
    datamodule = digits()
    real = torch.cat([images for images, _ in datamodule.train_dataloader()])
    quality = SampleQuality(
        cache_dir=str(digits_classifier.parent),  # found by the data set's name: digits.ckpt
        n_samples=120,
        test_samples=200,
        kid_subsets=10,
        kid_subset_size=60,
        dirpath=str(tmp_path),
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/fid", mode="min")
    worst = ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="worst", monitor="val/fid", mode="max")
    trainer = fast_trainer(tmp_path, [quality, checkpoint, worst])
    model = ToyGenerator(real)
    trainer.fit(model, datamodule=datamodule)

    logged = trainer.callback_metrics
    for name in ("fid", "kid", "precision", "recall", "fid_real", "kid_real"):
        assert f"val/{name}" in logged, name
    fids = [quality.history[epoch]["fid"] for epoch in range(MAX_EPOCHS)]
    assert fids[0] > fids[1] > fids[2]
    floor = quality.floor["val"]["fid"]
    assert fids[0] > 5 * floor and fids[2] < 3 * floor + 1.0
    assert checkpoint.best_model_path.endswith("epoch=2-step=3.ckpt")  # the lowest FID: the last epoch
    assert len(quality.real["val"]) == min(120, len(datamodule.datasets["val"]))

    # Restoring an earlier checkpoint (its callback state has epoch 0 only) keeps the later epochs.
    trainer.validate(model, datamodule=datamodule, ckpt_path=worst.best_model_path, verbose=False)
    assert sorted(quality.history) == [0, 1, 2] and quality.history[2]["fid"] == fids[2]
    trainer.test(model, datamodule=datamodule, verbose=False)
    logged = trainer.callback_metrics
    assert set(logged) >= {f"test/{n}" for n in ("fid", "kid", "precision", "recall", "fid_real", "kid_real")}
    assert float(logged["test/fid"]) < 0.2 * fids[0]
    assert len(quality.real["test"]) == 200  # test_samples, of 270 test images

    saved = json.loads((tmp_path / "sample_quality.json").read_text())
    assert sorted(saved["val"]) == ["0", "1", "2"]
    assert saved["val"]["0"]["fid"] == pytest.approx(fids[0])
    assert saved["test"]["fid"] == pytest.approx(float(logged["test/fid"]))
    assert set(saved["floor"]) == {"val", "test"}


def test_same_seed_same_figures_and_history_survives_a_checkpoint(
    digits_classifier: Path, tmp_path: Path
) -> None:
    datamodule = digits()
    real = torch.cat([images for images, _ in datamodule.train_dataloader()])
    figures = []
    for run in range(2):
        quality = SampleQuality(
            feature_ckpt=str(digits_classifier),
            n_samples=60,
            test_samples=60,
            kid_subsets=5,
            kid_subset_size=30,
        )
        trainer = fast_trainer(tmp_path / str(run), [quality], max_epochs=1)
        trainer.fit(ToyGenerator(real), datamodule=datamodule)
        figures.append(quality.history[0])
    assert figures[0] == figures[1]
    restored = SampleQuality()
    restored.load_state_dict(quality.state_dict())
    assert restored.history == {0: figures[1]}


def test_callback_errors_are_one_line(digits_classifier: Path, tmp_path: Path) -> None:
    datamodule = digits()

    class NotGenerative(ToyGenerator):
        generate = None  # type: ignore[assignment]

    with pytest.raises(ConfigError, match="needs a generative model with generate"):
        fast_trainer(tmp_path, [SampleQuality(feature_ckpt=str(digits_classifier))]).fit(
            NotGenerative(torch.rand(4, 1, 8, 8)), datamodule=datamodule
        )
    with pytest.raises(CheckpointError, match="feature classifier not found"):
        fast_trainer(tmp_path, [SampleQuality(feature_ckpt=str(tmp_path / "missing.ckpt"))]).fit(
            ToyGenerator(torch.rand(4, 1, 8, 8)), datamodule=datamodule
        )

    class WrongShape(ToyGenerator):
        def generate(self, n: int, generator: torch.Generator) -> Tensor:
            return torch.rand(n, 64)

    quality = SampleQuality(feature_ckpt=str(digits_classifier), n_samples=20, kid_subset_size=10)
    with pytest.raises(ConfigError, match=r"returned shape \[20, 64\]; expected \(20, C, H, W\)"):
        fast_trainer(tmp_path, [quality], max_epochs=1).fit(
            WrongShape(torch.rand(4, 1, 8, 8)), datamodule=datamodule
        )
    with pytest.raises(ConfigError, match="must exceed k=3"):
        SampleQuality(n_samples=3)
