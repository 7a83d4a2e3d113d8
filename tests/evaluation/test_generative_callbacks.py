"""Sample grids: readable size with exact pixels, sent to TensorBoard; the warning when epoch 0 stays best."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lit_dl.callbacks.samples import FirstEpochBest, SampleGrid, readable_grid

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*smaller than the logging interval.*"),
]


class ScoredGenerator(L.LightningModule):
    """Draws 8x8 images of seeded noise and logs ``val/score`` from a given list, one value an epoch."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores
        self.weight = nn.Parameter(torch.zeros(1))

    def generate(self, n: int, *, generator: torch.Generator, condition: object = None) -> Tensor:
        return torch.rand(n, 1, 8, 8, generator=generator)

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        return self.weight.square().sum()

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> None:
        self.log("val/score", self.scores[self.current_epoch])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path: Path, scores: list[float], logger: TensorBoardLogger | bool = False) -> SampleGrid:
    loader = DataLoader(TensorDataset(torch.zeros(4, 1, 8, 8)), batch_size=4)
    grids = SampleGrid(dirpath=str(tmp_path / "samples"), n=16, nrow=4)
    trainer = L.Trainer(
        max_epochs=len(scores),
        accelerator="cpu",
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/score", mode="min"), grids],
    )
    trainer.fit(ScoredGenerator(scores), train_dataloaders=loader, val_dataloaders=loader)
    return grids


def test_readable_grid_enlarges_by_whole_pixels_and_keeps_their_values() -> None:
    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    native = readable_grid(images, nrow=8, min_side=0)
    assert native.shape[-2:] == (82, 82)  # 8 * (8 + 2) + 2
    big = readable_grid(images, nrow=8)
    factor = 8  # the smallest with 8 * (8 * f + 2) + 2 >= 512
    assert big.shape[-2:] == (8 * (8 * factor + 2) + 2,) * 2
    # Each native pixel is a factor x factor block of the same value: no interpolation, no blur.
    for row, col in ((0, 0), (3, 5), (7, 7)):
        tile = big[:, 2 + row * (8 * factor + 2) :, 2 + col * (8 * factor + 2) :][
            :, : 8 * factor, : 8 * factor
        ]
        blocks = tile.reshape(3, 8, factor, 8, factor)  # (make_grid draws grey images in RGB)
        assert torch.equal(blocks, images[row * 8 + col].reshape(1, 8, 1, 8, 1).expand_as(blocks))
    assert readable_grid(torch.rand(4, 3, 600, 300), nrow=2).shape[-2:] == (1206, 606)  # big enough: as is


def test_grids_are_readable_files_and_reach_tensorboard(tmp_path: Path) -> None:
    logger = TensorBoardLogger(save_dir=str(tmp_path / "tb"), name="run", version=0)
    fit(tmp_path, [3.0, 2.0], logger=logger)
    with Image.open(tmp_path / "samples" / "epoch_001.png") as image:
        assert image.size == (4 * (8 * 16 + 2) + 2,) * 2  # 4 x 4 digits of 8x8, 16x: 522 pixels a side
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0}).Reload()
    assert "samples" in events.Tags()["images"]
    shown = events.Images("samples")
    assert [event.step for event in shown] == [1, 2]  # one grid per epoch, at the global step
    assert (shown[-1].width, shown[-1].height) == (522, 522)


@pytest.mark.parametrize(
    ("scores", "warned"),
    [([1.0, 2.0, 3.0], True), ([1.0, 1.0], True), ([3.0, 2.0, 2.5], False), ([1.0], False)],
)
def test_a_run_whose_best_checkpoint_is_epoch_0_says_so(
    scores: list[float], warned: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lit_dl.callbacks.samples"):
        grids = fit(tmp_path, scores)
    lines = [r.getMessage() for r in caplog.records if "best checkpoint is still epoch 0" in r.getMessage()]
    assert len(lines) == int(warned)
    if warned:
        assert f"epoch 0 of {len(scores)}: val/score never improved" in lines[0]
        assert "trainer.max_epochs" in lines[0] and "callbacks.model_checkpoint.monitor" in lines[0]
    assert grids.first_epoch_best.values == dict(enumerate(scores))


def test_first_epoch_watch_keeps_its_values_across_a_checkpoint() -> None:
    watch = FirstEpochBest()
    watch.values = {2: 0.5, 3: 0.4}
    restored = FirstEpochBest()
    restored.values = {3: 0.4, 4: 0.3}
    restored.load_state_dict(watch.state_dict())  # e.g. the best checkpoint restored for testing
    assert restored.values == {2: 0.5, 3: 0.4, 4: 0.3}
