"""Plots a person would rather look at than a table: confusion matrix and labelled test images.

Saved as PNG in the run directory and handed to whichever loggers are active
(W&B as images, TensorBoard as figures); the step code knows nothing of this.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

log = logging.getLogger(__name__)


def log_figure(trainer: L.Trainer, key: str, figure: plt.Figure, path: Path) -> None:
    """Send a saved figure to every logger that shows images."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(key, figure, global_step=trainer.global_step)


def class_indices(predictions: Tensor) -> Tensor:
    """Predicted class from probabilities ``(B, K)`` or a binary positive-class probability ``(B,)``."""
    return predictions.argmax(dim=-1) if predictions.ndim == 2 else (predictions > 0.5).long()


class ClassificationPlots(L.Callback):
    """After testing a classifier: ``confusion_matrix.png`` and, for images, ``test_predictions.png``.

    Args:
        dirpath: folder for the PNG files (default: ``<trainer.default_root_dir>/plots``).
        max_images: test images in the labelled grid.
        max_classes: more classes than this: no plots, with a warning (a matrix of k x k counts is
            unreadable long before 1,000 classes, and takes minutes to draw).
    """

    def __init__(self, dirpath: str | None = None, max_images: int = 32, max_classes: int = 50) -> None:
        self.dirpath = dirpath
        self.max_images = max_images
        self.max_classes = max_classes
        self.confusion: MulticlassConfusionMatrix | None = None
        self.samples: list[tuple[Tensor, int, int]] = []

    def _active(self, pl_module: L.LightningModule) -> bool:
        return getattr(pl_module, "task_type", None) == "classification"

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active(pl_module):
            return
        if pl_module.num_classes > self.max_classes:
            if trainer.is_global_zero:
                log.warning(
                    "no confusion matrix or test image plots: %d classes, more than "
                    "callbacks.plots.max_classes=%d",
                    pl_module.num_classes,
                    self.max_classes,
                )
            return
        self.confusion = MulticlassConfusionMatrix(num_classes=pl_module.num_classes).to(pl_module.device)
        self.samples = []

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.confusion is None or not isinstance(outputs, dict) or "predictions" not in outputs:
            return
        target = batch[-1]
        predicted = class_indices(outputs["predictions"])
        self.confusion.update(predicted, target)
        images = batch[0]
        if images.ndim == 4 and len(self.samples) < self.max_images:
            for image, pred, true in zip(images, predicted.tolist(), target.tolist(), strict=True):
                if len(self.samples) == self.max_images:
                    break
                self.samples.append((image.detach().float().cpu(), pred, true))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.confusion is None:
            return
        matrix = self.confusion.compute().cpu()  # every rank takes part in the sync
        self.confusion = None
        self._write(trainer, pl_module, matrix)

    @rank_zero_only
    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, matrix: Tensor) -> None:
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "plots")
        folder.mkdir(parents=True, exist_ok=True)
        spec = getattr(pl_module, "data_spec", None)
        names = list((spec.classes if spec is not None else None) or range(matrix.shape[0]))
        figure = confusion_figure(matrix, [str(n) for n in names])
        self._save(trainer, "test/confusion_matrix", figure, folder / "confusion_matrix.png")
        if self.samples:
            figure = image_grid(self.samples, [str(n) for n in names])
            self._save(trainer, "test/predictions", figure, folder / "test_predictions.png")

    @staticmethod
    def _save(trainer: L.Trainer, key: str, figure: plt.Figure, path: Path) -> None:
        figure.savefig(path, dpi=110, bbox_inches="tight")
        log_figure(trainer, key, figure, path)
        plt.close(figure)


def confusion_figure(matrix: Tensor, names: list[str]) -> plt.Figure:
    """Counts, with each cell shaded by its share of the true class (row)."""
    k = matrix.shape[0]
    rates = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp_min(1)
    size = max(4.0, 0.55 * k + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            axes.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.5 else "black",
                fontsize=8 if k > 10 else 10,
            )
    axes.set_xticks(range(k), names, rotation=45, ha="right")
    axes.set_yticks(range(k), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    accuracy = matrix.diag().sum() / matrix.sum().clamp_min(1)
    axes.set_title(f"test confusion matrix (accuracy {accuracy:.3f})")
    return figure


def image_grid(samples: list[tuple[Tensor, int, int]], names: list[str]) -> plt.Figure:
    """Images with "predicted (true)" titles, green when right and red when wrong."""
    cols = min(8, len(samples))
    rows = math.ceil(len(samples) / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, pred, true) in zip(axes.flat, samples, strict=False):
        low, high = image.min(), image.max()
        shown = ((image - low) / (high - low).clamp_min(1e-6)).permute(1, 2, 0)  # back to [0, 1] for display
        ax.imshow(
            shown.squeeze(-1).numpy() if shown.shape[-1] == 1 else shown.numpy(),
            cmap="gray" if shown.shape[-1] == 1 else None,
            interpolation="nearest",
        )
        ax.set_title(f"{names[pred]}\n({names[true]})", fontsize=7, color="green" if pred == true else "red")
    figure.suptitle("test images: predicted (true)", fontsize=9)
    figure.tight_layout()
    return figure


__all__ = ["ClassificationPlots", "class_indices", "confusion_figure", "image_grid", "log_figure"]
