"""Regression of one numeric target."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from lit_dl.errors import ConfigError
from lit_dl.tasks.base import BaseTask

LOSSES = {"mse": nn.MSELoss, "l1": nn.L1Loss, "huber": nn.HuberLoss}


class RegressionTask(BaseTask):
    """Predict one number. The network sees a standardised target; metrics are in the target's units.

    Args:
        target_mean, target_std: training statistics of the target (from the datamodule).
        loss: ``mse``, ``l1`` or ``huber`` (on the standardised target).
        **kwargs: see :class:`~lit_dl.tasks.base.BaseTask`.
    """

    task_type = "regression"

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        target_mean: float = 0.0,
        target_std: float = 1.0,
        loss: str = "mse",
        **kwargs: Any,
    ) -> None:
        if loss not in LOSSES:
            raise ConfigError(f"model.loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        super().__init__(net, optimizer, **kwargs)
        self.criterion = LOSSES[loss]()
        self.target_mean = float(target_mean)
        self.target_std = float(target_std)

    def output_size(self) -> int:
        return 1

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "mse": MeanSquaredError(),
                "rmse": MeanSquaredError(squared=False),
                "mae": MeanAbsoluteError(),
                "r2": R2Score(),
            }
        )

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.criterion(output.squeeze(-1).float(), target.float())

    def metric_target(self, target: Tensor) -> Tensor:
        return target.float() * self.target_std + self.target_mean

    def predictions(self, output: Tensor) -> Tensor:
        return output.squeeze(-1).float() * self.target_std + self.target_mean
