"""Plots a person would rather look at than a table: confusion matrix, ROC and precision-recall
curves of binary classifiers, and labelled test images.

Saved as PNG in the run directory and handed to whichever loggers show images
(:func:`lit_dl.loggers.log_images`); a W&B logger also gets the confusion matrix and the curves as
interactive W&B charts. The step code knows nothing of this.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib
import numpy as np
from sklearn.metrics import auc

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryPrecisionRecallCurve, BinaryROC, MulticlassConfusionMatrix

from lit_dl.loggers import log_images

log = logging.getLogger(__name__)

# Thresholds 0, 0.001, ..., 1 for the test curves: one 2x2 count each, whatever the test set's size.
CURVE_THRESHOLDS = 1001


def class_indices(predictions: Tensor, threshold: float = 0.5) -> Tensor:
    """Predicted class from probabilities ``(B, K)`` or a binary positive-class probability ``(B,)``
    (positive above ``threshold``, as the task decides)."""
    return predictions.argmax(dim=-1) if predictions.ndim == 2 else (predictions > threshold).long()


def decision_threshold(pl_module: Any) -> float:
    """The binary task's decision threshold (``decision_threshold`` buffer), 0.5 when it has none."""
    value = getattr(pl_module, "decision_threshold", None)
    return float(value) if value is not None else 0.5


class ClassificationPlots(L.Callback):
    """After testing a classifier: ``confusion_matrix.png``; for two classes also ``roc_curve.png``
    and ``pr_curve.png`` with the decision threshold's point marked (the confusion matrix is that
    of the decision threshold too); for images ``test_predictions.png``.

    Every PNG goes to the loggers that show images; a ``WandbLogger`` also gets W&B charts
    ``test/confusion_matrix_chart``, ``test/roc_curve_chart`` and ``test/pr_curve_chart``.

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
        self.curves: MetricCollection | None = None
        self.threshold = 0.5
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
        self.threshold = decision_threshold(pl_module)
        self.curves = None
        if pl_module.num_classes == 2:
            self.curves = MetricCollection(
                {
                    "roc": BinaryROC(thresholds=CURVE_THRESHOLDS),
                    "pr": BinaryPrecisionRecallCurve(thresholds=CURVE_THRESHOLDS),
                }
            ).to(pl_module.device)

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
        predicted = class_indices(outputs["predictions"], self.threshold)
        self.confusion.update(predicted, target)
        if self.curves is not None:
            self.curves.update(outputs["predictions"], target.long())
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
        curves = None
        if self.curves is not None:
            roc, pr = self.curves["roc"].compute(), self.curves["pr"].compute()
            curves = BinaryCurves(
                fpr=roc[0].cpu().numpy(),
                tpr=roc[1].cpu().numpy(),
                roc_thresholds=roc[2].cpu().numpy(),
                precision=pr[0][:-1].cpu().numpy(),  # (torchmetrics appends the point recall 0, precision 1)
                recall=pr[1][:-1].cpu().numpy(),
                pr_thresholds=pr[2].cpu().numpy(),
            )
        self.confusion, self.curves = None, None
        self._write(trainer, pl_module, matrix, curves)

    @rank_zero_only
    def _write(
        self, trainer: L.Trainer, pl_module: L.LightningModule, matrix: Tensor, curves: BinaryCurves | None
    ) -> None:
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "plots")
        folder.mkdir(parents=True, exist_ok=True)
        spec = getattr(pl_module, "data_spec", None)
        names = [str(n) for n in ((spec.classes if spec is not None else None) or range(matrix.shape[0]))]
        binary_threshold = self.threshold if curves is not None else None
        figures = {
            "test/confusion_matrix": (confusion_figure(matrix, names, binary_threshold), "confusion_matrix")
        }
        if curves is not None:
            point = operating_point(matrix)
            figures["test/roc_curve"] = (roc_figure(curves, point, self.threshold, names[1]), "roc_curve")
            figures["test/pr_curve"] = (pr_figure(curves, point, self.threshold, names[1]), "pr_curve")
        if self.samples:
            figures["test/predictions"] = (image_grid(self.samples, names), "test_predictions")
        images: dict[str, Path] = {}
        for key, (figure, stem) in figures.items():
            images[key] = folder / f"{stem}.png"
            figure.savefig(images[key], dpi=110, bbox_inches="tight")
            plt.close(figure)
        log_images(trainer, images, step=trainer.global_step)
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if wandb_loggers:
            charts = wandb_charts(matrix, names, curves, binary_threshold)
            for logger in wandb_loggers:
                logger.log_metrics(charts, step=trainer.global_step)


@dataclass(frozen=True)
class BinaryCurves:
    """A test set's ROC curve (thresholds descending) and precision-recall curve (thresholds
    ascending, precision NaN where nothing is predicted positive) on the curve grid."""

    fpr: np.ndarray
    tpr: np.ndarray
    roc_thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    pr_thresholds: np.ndarray


def operating_point(matrix: Tensor) -> dict[str, float]:
    """Recall (true positive rate), precision and false positive rate of a binary confusion matrix
    (rows true, columns predicted); NaN where undefined."""
    (tn, fp), (fn, tp) = matrix.double().tolist()

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {"recall": ratio(tp, tp + fn), "precision": ratio(tp, tp + fp), "fpr": ratio(fp, fp + tn)}


def _nearest(thresholds: np.ndarray, value: float) -> int:
    return int(np.argmin(np.abs(thresholds - value)))


def roc_figure(curves: BinaryCurves, point: dict[str, float], threshold: float, positive: str) -> plt.Figure:
    """The test ROC curve with the decision threshold's point (and 0.5's, when it differs)."""
    figure, axes = plt.subplots(figsize=(5, 5))
    order = np.argsort(curves.fpr, kind="stable")
    area = float(auc(curves.fpr[order], curves.tpr[order]))
    axes.plot(curves.fpr, curves.tpr, color="tab:blue", label=f"{positive} (AUC {area:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    if not math.isclose(threshold, 0.5):
        i = _nearest(curves.roc_thresholds, 0.5)
        axes.scatter(curves.fpr[i], curves.tpr[i], color="grey", zorder=3, label="threshold 0.5")
    axes.scatter(
        point["fpr"],
        point["recall"],
        color="tab:red",
        zorder=4,
        label=f"threshold {threshold:.3f}: TPR {point['recall']:.3f}, FPR {point['fpr']:.3f}",
    )
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate (recall)")
    axes.set_title("test ROC curve")
    axes.legend(loc="lower right", fontsize=8)
    return figure


def pr_figure(curves: BinaryCurves, point: dict[str, float], threshold: float, positive: str) -> plt.Figure:
    """The test precision-recall curve with the decision threshold's point (and 0.5's, when it differs)."""
    figure, axes = plt.subplots(figsize=(5, 5))
    defined = np.isfinite(curves.precision)
    axes.plot(curves.recall[defined], curves.precision[defined], color="tab:blue", label=positive)
    base_rate = float(curves.precision[0])  # at threshold 0 every row is predicted positive
    axes.axhline(
        base_rate, color="grey", linestyle=":", linewidth=1, label=f"share of {positive} {base_rate:.3f}"
    )
    if not math.isclose(threshold, 0.5):
        i = _nearest(curves.pr_thresholds, 0.5)
        if defined[i]:
            axes.scatter(curves.recall[i], curves.precision[i], color="grey", zorder=3, label="threshold 0.5")
    if math.isfinite(point["precision"]):
        axes.scatter(
            point["recall"],
            point["precision"],
            color="tab:red",
            zorder=4,
            label=f"threshold {threshold:.3f}: recall {point['recall']:.3f}, "
            f"precision {point['precision']:.3f}",
        )
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    axes.set_title("test precision-recall curve")
    axes.legend(loc="lower left", fontsize=8)
    return figure


def wandb_charts(
    matrix: Tensor, names: list[str], curves: BinaryCurves | None, threshold: float | None
) -> dict[str, Any]:
    """W&B charts of the test results: the confusion matrix, and for two classes ROC and PR curves.

    Built as ``wandb.Table``s on W&B's own presets (those of ``wandb.plot.confusion_matrix``,
    ``roc_curve`` and ``pr_curve``) from the counts the PNGs show: those functions take every test
    row as Python lists (the confusion matrix counts them in a Python loop) and recompute the curves.
    """
    import wandb

    title = "test confusion matrix" + (f" (threshold {threshold:.3f})" if threshold is not None else "")
    cells = [[names[i], names[j], int(matrix[i, j])] for i in range(len(names)) for j in range(len(names))]
    charts: dict[str, Any] = {
        "test/confusion_matrix_chart": wandb.plot_table(
            "wandb/confusion_matrix/v1",
            wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=cells),
            {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            {"title": title},
        )
    }
    if curves is None:
        return charts
    positive = names[1]
    roc_rows = [
        [positive, float(f), float(t), float(h)]
        for f, t, h in zip(curves.fpr, curves.tpr, curves.roc_thresholds, strict=True)
    ]
    defined = np.isfinite(curves.precision)
    pr_rows = [
        [positive, float(r), float(p), float(h)]
        for r, p, h in zip(
            curves.recall[defined], curves.precision[defined], curves.pr_thresholds[defined], strict=True
        )
    ]
    for key, rows, x, y, title, axis_titles in (
        ("roc", roc_rows, "fpr", "tpr", "test ROC curve", ("False positive rate", "True positive rate")),
        ("pr", pr_rows, "recall", "precision", "test precision-recall curve", ("Recall", "Precision")),
    ):
        charts[f"test/{key}_curve_chart"] = wandb.plot_table(
            "wandb/area-under-curve/v0",
            wandb.Table(columns=["class", x, y, "threshold"], data=rows),
            {"x": x, "y": y, "class": "class"},
            {"title": title, "x-axis-title": axis_titles[0], "y-axis-title": axis_titles[1]},
        )
    return charts


def confusion_figure(matrix: Tensor, names: list[str], threshold: float | None = None) -> plt.Figure:
    """Counts, with each cell shaded by its share of the true class (row); ``threshold``: the binary
    decision threshold the predictions were made at (named in the title)."""
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
    at = f", threshold {threshold:.3f}" if threshold is not None else ""
    axes.set_title(f"test confusion matrix (accuracy {accuracy:.3f}{at})")
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


__all__ = [
    "ClassificationPlots",
    "class_indices",
    "confusion_figure",
    "image_grid",
    "operating_point",
    "pr_figure",
    "roc_figure",
    "wandb_charts",
]
