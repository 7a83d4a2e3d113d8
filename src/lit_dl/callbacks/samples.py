"""Sample grids of generative models, saved as PNG and sent to W&B or TensorBoard; a warning when a
generative run's best checkpoint is still its first epoch."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchvision.utils import make_grid, save_image

from lit_dl.loggers import log_images

log = logging.getLogger(__name__)

# Pixels on the longer side of a written grid: 64 digits of 8x8 are 82 pixels wide at their own size.
READABLE_SIDE = 512


def readable_grid(images: Tensor, nrow: int, min_side: int = READABLE_SIDE, padding: int = 2) -> Tensor:
    """A grid ``(C, H, W)`` of images ``(N, C, h, w)`` in [0, 1], each enlarged by one whole factor.

    The factor is the smallest that gives the grid at least ``min_side`` pixels on its longer
    side (1 when it has them already; ``min_side=0``: native size). Enlarging repeats every pixel
    into a block of equal pixels (nearest neighbour), so the values are exactly the model's:
    no interpolation blurs them. ``nrow`` images a row, ``padding`` white pixels between them.
    """
    images = images.detach().float().cpu()
    count, (height, width) = len(images), images.shape[-2:]
    columns = max(1, min(nrow, count))
    rows = math.ceil(count / columns)
    # The smallest factor f with  k * (f * size + padding) + padding >= min_side  along either axis.
    factors = [
        math.ceil((min_side - padding - k * padding) / (k * size))
        for k, size in ((columns, width), (rows, height))
    ]
    factor = max(1, min(factors))
    if factor > 1:
        images = images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return make_grid(images, nrow=columns, padding=padding, pad_value=1.0)


class FirstEpochBest:
    """Watches the best checkpoint's metric and says, after fitting, when epoch 0 was never beaten.

    A generative run of a few epochs often keeps its first epoch as "best" (a GAN's FID can rise
    while it finds its feet): its test figures and samples are then those of a barely trained
    model (flat grey grids), which nothing in the run's output says. :meth:`record` keeps the
    value of ``trainer.checkpoint_callback.monitor`` after each validation of fitting;
    :meth:`warn` logs one line when more than one epoch was validated and none improved on epoch 0.
    Written here because Lightning's ``ModelCheckpoint`` keeps the best score, not the epoch it came from.
    """

    def __init__(self) -> None:
        self.values: dict[int, float] = {}  # epoch -> monitored value

    def record(self, trainer: L.Trainer) -> None:
        """Keep this epoch's monitored value (fitting only, not in the sanity check)."""
        checkpoint = trainer.checkpoint_callback
        monitor = getattr(checkpoint, "monitor", None)
        if not monitor or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(monitor)
        if value is not None and math.isfinite(float(value)):
            self.values[trainer.current_epoch] = float(value)

    def message(self, trainer: L.Trainer) -> str | None:
        """The warning, or None when the best epoch is a later one (or too little was seen to tell)."""
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or 0 not in self.values or len(self.values) < 2:
            return None
        sign = -1.0 if getattr(checkpoint, "mode", "min") == "max" else 1.0
        first = self.values[0]
        if any(sign * value < sign * first for epoch, value in self.values.items() if epoch > 0):
            return None  # a later epoch improved on the first: it is the best checkpoint
        last_epoch = max(self.values)
        return (
            f"the best checkpoint is still epoch 0 of {last_epoch + 1}: {checkpoint.monitor} never "
            f"improved on its first value ({first:.4g}; last {self.values[last_epoch]:.4g}), so the tested "
            "model and its samples are those of a barely trained one; train longer (trainer.max_epochs=...) "
            "or select by another metric (callbacks.model_checkpoint.monitor=...)"
        )

    def warn(self, trainer: L.Trainer) -> None:
        """Log :meth:`message` once (global rank zero)."""
        text = self.message(trainer)
        if text and trainer.is_global_zero:
            log.warning(text)

    def state_dict(self) -> dict[str, Any]:
        return {"monitored": {str(epoch): value for epoch, value in self.values.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Merged, not replaced: testing the best checkpoint after fitting restores an earlier state.
        restored = {int(epoch): float(value) for epoch, value in state.get("monitored", {}).items()}
        self.values = {**restored, **self.values}


class SampleGrid(L.Callback):
    """Every ``every_n_epochs`` epochs: a grid of samples from one fixed latent batch.

    The same seed gives the same latent vectors each time, so successive grids show
    the same "people" improving. Writes ``samples/epoch_NNN.png`` (and
    ``samples/latest.png``); for models with ``reconstruct`` (VAEs) also
    ``reconstructions_epoch_NNN.png`` (validation images, each above its
    reconstruction), and, after training, ``interpolation.png`` (rows of decoded
    points between two validation images). Each file is also sent to the run's loggers
    (W&B, TensorBoard: :func:`lit_dl.loggers.log_images`). Rank zero only. A model that does not
    generate images (a tabular one) gets no grids: one info line says so. After fitting, one
    warning line when the best checkpoint is still epoch 0 (:class:`FirstEpochBest`).

    Args:
        dirpath: folder of the PNG files (default: ``<trainer.default_root_dir>/samples``).
        n: images in the grid (conditional models: classes in turn).
        nrow: images per row.
        every_n_epochs: how often.
        seed: seed of the fixed latent batch.
        min_side: pixels on the longer side of a grid at least: images are enlarged by a whole
            factor (nearest neighbour, pixel values unchanged) so 8x8 digits can be seen; 0: native size.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        n: int = 64,
        nrow: int = 8,
        every_n_epochs: int = 1,
        seed: int = 0,
        min_side: int = READABLE_SIDE,
    ) -> None:
        self.dirpath = dirpath
        self.n = n
        self.nrow = nrow
        self.every_n_epochs = max(1, every_n_epochs)
        self.seed = seed
        self.min_side = int(min_side)
        self.real: Tensor | None = None
        self.skipped = False  # said once that the model draws no images
        self.first_epoch_best = FirstEpochBest()

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

    def _save(self, trainer: L.Trainer, images: Tensor, name: str, key: str | None, nrow: int) -> Path:
        """Write a readable grid of ``images`` as ``name``; send it to the loggers as ``key`` (None: not)."""
        folder = self.folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        save_image(readable_grid(images, nrow, self.min_side), path)
        if key:
            log_images(trainer, {key: path}, step=trainer.global_step)
        return path

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
        self._save(trainer, samples, "latest.png", None, self.nrow)  # (the same picture: logged once)
        if hasattr(pl_module, "reconstruct"):
            real = self._real_images(trainer, pl_module)
            if real is not None:
                pairs = torch.stack([real, pl_module.reconstruct(real)], dim=1).flatten(0, 1)
                self._save(
                    trainer, pairs, f"reconstructions_epoch_{epoch:03d}.png", "reconstructions", self.nrow
                )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.first_epoch_best.record(trainer)  # (after the epoch's metrics are in callback_metrics)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.first_epoch_best.warn(trainer)
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

    def state_dict(self) -> dict[str, Any]:
        return self.first_epoch_best.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_epoch_best.load_state_dict(state_dict)


__all__ = ["READABLE_SIDE", "FirstEpochBest", "SampleGrid", "readable_grid"]
