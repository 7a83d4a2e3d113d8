"""Sample grids of generative models, saved as PNG and sent to W&B or TensorBoard."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchvision.utils import make_grid, save_image

log = logging.getLogger(__name__)


def log_image_grid(trainer: L.Trainer, key: str, grid: Tensor, path: Path) -> None:
    """Send a saved image grid ``(C, H, W)`` in [0, 1] to every logger that shows images."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=trainer.global_step)


class SampleGrid(L.Callback):
    """Every ``every_n_epochs`` epochs: a grid of samples from one fixed latent batch.

    The same seed gives the same latent vectors each time, so successive grids show
    the same "people" improving. Writes ``samples/epoch_NNN.png`` (and
    ``samples/latest.png``); for models with ``reconstruct`` (VAEs) also
    ``reconstructions_epoch_NNN.png`` (validation images, each above its
    reconstruction), and, after training, ``interpolation.png`` (rows of decoded
    points between two validation images). Rank zero only. A model that does not generate
    images (a tabular one) gets no grids: one info line says so.

    Args:
        dirpath: folder of the PNG files (default: ``<trainer.default_root_dir>/samples``).
        n: images in the grid (conditional models: classes in turn).
        nrow: images per row.
        every_n_epochs: how often.
        seed: seed of the fixed latent batch.
        min_size: smaller images are enlarged (nearest neighbour) to at least this many pixels
            a side in the PNG, so 8x8 digits can be seen.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        n: int = 64,
        nrow: int = 8,
        every_n_epochs: int = 1,
        seed: int = 0,
        min_size: int = 28,
    ) -> None:
        self.dirpath = dirpath
        self.n = n
        self.nrow = nrow
        self.every_n_epochs = max(1, every_n_epochs)
        self.seed = seed
        self.min_size = min_size
        self.real: Tensor | None = None
        self.skipped = False  # said once that the model draws no images

    def folder(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath or Path(trainer.default_root_dir) / "samples")

    def _labels(self, pl_module: L.LightningModule) -> Tensor | None:
        """One class index per grid cell for a class-conditional model (each row walks the classes)."""
        if not pl_module.hparams.get("conditional"):
            return None
        return torch.arange(self.n) % len(pl_module.data_spec.classes)

    def _draws_images(self, pl_module: L.LightningModule) -> bool:
        """Whether the model generates images; says once, at info level, when it does not."""
        spec = getattr(pl_module, "data_spec", None)
        if spec is None or spec.modality == "images":
            return True
        if not self.skipped:
            log.info(
                "callbacks.samples: %s generates %s rows, not images: no sample grids "
                "(drop it with callbacks.samples=null)",
                type(pl_module).__name__,
                spec.modality,
            )
            self.skipped = True
        return False

    def _save(self, trainer: L.Trainer, images: Tensor, name: str, key: str, nrow: int) -> None:
        folder = self.folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        images = images.float().cpu()
        factor = -(-self.min_size // min(images.shape[-2:]))  # ceil division
        if factor > 1:
            images = F.interpolate(images, scale_factor=factor, mode="nearest")
        grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)
        path = folder / name
        save_image(grid, path)
        log_image_grid(trainer, key, grid, path)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or not trainer.is_global_zero:
            return  # not during the sanity check, nor the validation of the best checkpoint after fit
        if (epoch + 1) % self.every_n_epochs:
            return
        generate = getattr(pl_module, "generate", None)
        if generate is None or not self._draws_images(pl_module):
            return
        generator = torch.Generator().manual_seed(self.seed)
        samples = generate(self.n, generator=generator, condition=self._labels(pl_module))
        self._save(trainer, samples, f"epoch_{epoch:03d}.png", "samples", self.nrow)
        self._save(trainer, samples, "latest.png", "samples_latest", self.nrow)
        if hasattr(pl_module, "reconstruct"):
            real = self._real_images(trainer, pl_module)
            if real is not None:
                pairs = torch.stack([real, pl_module.reconstruct(real)], dim=1).flatten(0, 1)
                self._save(
                    trainer, pairs, f"reconstructions_epoch_{epoch:03d}.png", "reconstructions", self.nrow
                )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not hasattr(pl_module, "interpolate"):
            return
        real = self._real_images(trainer, pl_module)
        if real is None or len(real) < 2:
            return
        half = min(8, len(real) // 2)
        steps = 10
        path = pl_module.interpolate(real[:half], real[half : 2 * half], steps=steps)
        self._save(trainer, path, "interpolation.png", "interpolation", steps)

    def _real_images(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Tensor | None:
        """The first validation images (up to half the grid), kept for every later grid."""
        if self.real is None:
            datamodule = trainer.datamodule
            datasets = getattr(datamodule, "datasets", {}) if datamodule is not None else {}
            if "val" not in datasets or not len(datasets["val"]):
                return None
            count = min(self.n // 2, len(datasets["val"]))
            self.real = datasets["val"].__getitems__(list(range(count)))[0]
        return self.real.to(pl_module.device)
