"""Regression of one numeric target."""

from __future__ import annotations

from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from lit_dl.tasks.supervised import SupervisedTask


class RegressionTask(SupervisedTask):
    """Predict one number. The network sees a standardised target; metrics are in the target's units.

    The target's training mean and standard deviation come from the data spec. The loss
    (``model.loss``: default ``mse``; ``l1``, ``huber`` or any entry) is taken on the
    standardised target.

    Args:
        **kwargs: see :class:`~lit_dl.tasks.supervised.SupervisedTask`.
    """

    task_type = "regression"

    def output_size(self) -> int:
        return 1

    def default_loss(self) -> nn.Module:
        return nn.MSELoss()

    def default_metrics(self) -> MetricCollection:
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
        return target.float() * self.data_spec.target_std + self.data_spec.target_mean

    def predictions(self, output: Tensor) -> Tensor:
        return output.squeeze(-1).float() * self.data_spec.target_std + self.data_spec.target_mean


__all__ = ["RegressionTask"]
