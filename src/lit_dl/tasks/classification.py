"""Classification: binary (one logit, BCE) and multi-class (K logits, cross-entropy)."""

from __future__ import annotations

from typing import Any

import numpy as np
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

from lit_dl.data.spec import DataSpec
from lit_dl.errors import ConfigError
from lit_dl.tasks.base import softmax_or_sigmoid
from lit_dl.tasks.supervised import SupervisedTask


class ClassificationTask(SupervisedTask):
    """Classify inputs into the data's classes (``data_spec.classes``).

    Binary problems use one logit and ``BCEWithLogitsLoss``; multi-class problems use
    cross-entropy. A ``model.loss`` entry replaces either; it receives ``(logits (B,), float
    targets (B,))`` for two classes and ``(logits (B, K), class indices (B,))`` otherwise.
    Metrics: accuracy, precision, recall, F1 (macro for multi-class), AUROC and average
    precision.

    Args:
        class_weights: None, ``balanced`` (inverse class frequency) or one weight per class
            (for the default loss).
        label_smoothing: cross-entropy label smoothing (multi-class, default loss).
        **kwargs: see :class:`~lit_dl.tasks.supervised.SupervisedTask`.
    """

    task_type = "classification"

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        class_weights: str | list[float] | None = None,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, optimizer, **kwargs)

    @property
    def num_classes(self) -> int:
        assert self.data_spec is not None
        return self.data_spec.num_classes

    def check_data(self, spec: DataSpec | None) -> None:
        super().check_data(spec)
        assert spec is not None
        if spec.num_classes < 2:
            raise ConfigError(
                f"a classifier needs at least 2 classes, the data has {spec.classes}: give it labelled "
                "examples of another class (images: one sub-folder of data.root per class)"
            )
        if spec.anomaly_classes:
            raise ConfigError(
                "data.exclude_classes is for generative models (a VAE scores the held-out classes as "
                f"anomalies); {type(self).__name__} is a classifier: set data.exclude_classes=[]"
            )
        if self.hparams.get("loss") and self.hparams.get("class_weights") is not None:
            raise ConfigError(
                "model.class_weights applies to the default loss; with model.loss set, leave it null"
            )

    def output_size(self) -> int:
        return 1 if self.num_classes == 2 else self.num_classes

    def class_weight_tensor(self) -> Tensor | None:
        spec, counts = self.hparams.get("class_weights"), self.data_spec.class_counts
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

    def default_loss(self) -> nn.Module:
        weights = self.class_weight_tensor()
        if self.num_classes == 2:
            return nn.BCEWithLogitsLoss(pos_weight=None if weights is None else weights[1:] / weights[0])
        return nn.CrossEntropyLoss(weight=weights, label_smoothing=float(self.hparams.label_smoothing))

    def default_metrics(self) -> MetricCollection:
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

    def train_metric_names(self, metrics: MetricCollection) -> list[str]:
        # AUROC and average precision keep every prediction of the epoch: too costly for training.
        cheap = [n for n in ("accuracy", "f1") if n in metrics]
        return cheap if cheap else super().train_metric_names(metrics)

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

    def prediction_columns(self, outputs: Tensor) -> dict[str, Any]:
        """``prob_<class>`` for every class, then the most probable class as ``prediction``."""
        classes = list(self.data_spec.classes or [])
        columns: dict[str, Any] = {
            f"prob_{name}": outputs[:, i].float().numpy() for i, name in enumerate(classes)
        }
        columns["prediction"] = np.asarray(classes, dtype=object)[outputs.argmax(dim=1).numpy()]
        return columns
