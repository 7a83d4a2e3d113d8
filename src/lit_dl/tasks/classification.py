"""Classification: binary (one logit, BCE) and multi-class (K logits, cross-entropy)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    AUROC,
    Accuracy,
    AveragePrecision,
    F1Score,
    Precision,
    Recall,
)

from lit_dl.errors import ConfigError
from lit_dl.tasks.base import BaseTask, softmax_or_sigmoid


class ClassificationTask(BaseTask):
    """Classify inputs into ``len(class_names)`` classes.

    Binary problems use one logit and ``BCEWithLogitsLoss``; multi-class problems
    use cross-entropy. Metrics: accuracy, precision, recall, F1 (macro for
    multi-class), AUROC and average precision.

    Args:
        class_names: names of the classes, index order (from the datamodule).
        class_counts: training rows per class (from the datamodule), for ``balanced`` weights.
        class_weights: None, ``balanced`` (inverse class frequency) or one weight per class.
        label_smoothing: cross-entropy label smoothing (multi-class only).
        **kwargs: see :class:`~lit_dl.tasks.base.BaseTask`.
    """

    task_type = "classification"

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        class_names: list[str],
        class_counts: list[int] | None = None,
        class_weights: str | list[float] | None = None,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if len(class_names) < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {class_names}")
        self.num_classes = len(class_names)
        super().__init__(net, optimizer, **kwargs)
        weights = self._class_weights(class_weights, class_counts)
        if self.num_classes == 2:
            pos_weight = None if weights is None else weights[1:] / weights[0]
            self.criterion: nn.Module = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        else:
            self.criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)

    def _class_weights(self, spec: str | list[float] | None, counts: list[int] | None) -> Tensor | None:
        if spec is None:
            return None
        if spec == "balanced":
            if not counts:
                raise ConfigError("model.class_weights=balanced needs class counts from the datamodule")
            counts_t = torch.tensor(counts, dtype=torch.float32).clamp_min(1)
            return counts_t.sum() / (len(counts) * counts_t)
        if isinstance(spec, str) or len(spec) != self.num_classes:
            raise ConfigError(
                f"model.class_weights must be null, 'balanced' or {self.num_classes} numbers, got {spec!r}"
            )
        return torch.tensor(spec, dtype=torch.float32)

    def output_size(self) -> int:
        return 1 if self.num_classes == 2 else self.num_classes

    def configure_metrics(self) -> MetricCollection:
        if self.num_classes == 2:
            args: dict[str, Any] = {"task": "binary"}
        else:
            args = {"task": "multiclass", "num_classes": self.num_classes, "average": "macro"}
        return MetricCollection(
            {
                "accuracy": Accuracy(**{**args, "average": "micro"} if self.num_classes > 2 else args),
                "precision": Precision(**args),
                "recall": Recall(**args),
                "f1": F1Score(**args),
                "auroc": AUROC(**args),
                "average_precision": AveragePrecision(**args),
            }
        )

    def train_metric_subset(self, metrics: MetricCollection) -> MetricCollection:
        # AUROC and average precision keep every prediction of the epoch: too costly for training.
        return MetricCollection({k: metrics[k] for k in ("accuracy", "f1")})

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        if self.num_classes == 2:
            return self.criterion(output.squeeze(-1), target.to(output.dtype))
        return self.criterion(output, target)

    def predict_output(self, output: Tensor) -> Tensor:
        """Class probabilities ``(B, K)``, also for binary problems."""
        return softmax_or_sigmoid(output)

    def predictions(self, output: Tensor) -> Tensor:
        probs = softmax_or_sigmoid(output)
        # Binary torchmetrics want the positive-class probability (B,), multi-class the matrix (B, K).
        return probs[:, 1] if self.num_classes == 2 else probs
