"""Multi-label classification: one logit per label, each label its own yes/no question."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAUROC, MultilabelF1Score

from lit_dl.tasks import SupervisedTask


class MultiLabelTask(SupervisedTask):
    """One sigmoid output per label (the data spec's ``classes``); loss from ``model.loss``."""

    task_type = "multilabel"

    def output_size(self) -> int:
        return self.data_spec.num_classes

    def default_loss(self) -> nn.Module:
        return nn.BCEWithLogitsLoss()

    def default_metrics(self) -> MetricCollection:
        labels = self.data_spec.num_classes
        return MetricCollection(
            {"f1": MultilabelF1Score(num_labels=labels), "auroc": MultilabelAUROC(num_labels=labels)}
        )

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.criterion(output.float(), target.float())

    def predictions(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output.float())

    def metric_target(self, target: Tensor) -> Tensor:
        return target.long()

    def prediction_columns(self, outputs: Tensor) -> dict[str, Any]:
        return {f"prob_{label}": outputs[:, i].numpy() for i, label in enumerate(self.data_spec.classes)}
