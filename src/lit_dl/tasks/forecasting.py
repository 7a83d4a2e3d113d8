"""Forecasting the next ``horizon`` steps of a series, scored beside the seasonal-naive baseline."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import (
    MeanAbsoluteError,
    MeanSquaredError,
    MetricCollection,
    SymmetricMeanAbsolutePercentageError,
)

from lit_dl.data.spec import DataSpec
from lit_dl.errors import ConfigError
from lit_dl.tasks.supervised import SupervisedTask

BASELINES = ("naive", "last", "none")
NAIVE = "naive_"  # prefix of the baseline's metrics: val/naive_mae beside val/mae


class ForecastTask(SupervisedTask):
    """Forecast ``horizon`` steps at once from a window of the past; compare with seasonal-naive.

    Batches are ``(x (B, window, F), naive (B, horizon), y (B, horizon))`` in scaled units,
    the target in channel 0 of ``x`` (see :class:`~lit_dl.data.forecast.ForecastDataModule`).
    The loss is taken on scaled values; the metrics MAE, RMSE and sMAPE are in the series'
    own units, for the network (``mae``) and for the seasonal-naive forecast on the very
    same windows (``naive_mae``). sMAPE is torchmetrics' ``2|y-ŷ| / (|y|+|ŷ|)``, in [0, 2].

    The data spec gives the ``horizon`` (steps forecast at once), the scaler of the (log)
    target fitted on the training span (``target_mean``, ``target_std``) and ``log_target``
    (the datamodule modelled ``log1p(target)``; metrics undo it).

    Args:
        baseline: what the network's output is added to. ``naive``: the seasonal-naive
            forecast, so the network learns a correction to it and starts out equal to it;
            ``last``: the last observed value; ``none``: the output is the forecast itself.
        relative_inputs: feed the target channel (and its seasonal lags, the data spec's
            ``target_channels``) as the difference to the window's last value, so the network
            sees the shape of the recent past, not its level (the level of a trending series
            leaves the range seen in training). Needs a baseline that carries the level
            (``naive`` or ``last``).
        **kwargs: see :class:`~lit_dl.tasks.supervised.SupervisedTask` (``loss``: default
            ``mse``, on the scaled target).
    """

    task_type = "forecasting"

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        baseline: str = "naive",
        relative_inputs: bool = True,
        **kwargs: Any,
    ) -> None:
        if baseline not in BASELINES:
            raise ConfigError(f"model.baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
        if relative_inputs and baseline == "none":
            raise ConfigError(
                "model.relative_inputs=true hides the level from the network, so model.baseline must add "
                "it back: set model.baseline=naive or last, or model.relative_inputs=false"
            )
        super().__init__(net, optimizer, **kwargs)

    def check_data(self, spec: DataSpec | None) -> None:
        super().check_data(spec)
        assert spec is not None
        if int(spec.options.get("horizon", 0)) < 1:
            raise ConfigError("forecasting data must give a horizon of at least one step (data.horizon)")

    @property
    def horizon(self) -> int:
        return int(self.data_spec.options["horizon"])

    def output_size(self) -> int:
        return self.horizon

    def default_loss(self) -> nn.Module:
        return nn.MSELoss()

    def default_metrics(self) -> MetricCollection:
        metrics = {}
        for prefix in ("", NAIVE):
            metrics[f"{prefix}mae"] = MeanAbsoluteError()
            metrics[f"{prefix}rmse"] = MeanSquaredError(squared=False)
            metrics[f"{prefix}smape"] = SymmetricMeanAbsolutePercentageError()
        # No compute groups: the network's and the baseline's metrics share state types but
        # are updated with different forecasts (see shared_step).
        return MetricCollection(metrics, compute_groups=False)

    def train_metric_names(self, metrics: MetricCollection) -> list[str]:
        """Training batches track the network's MAE only (the baseline's is known from validation)."""
        return ["mae"] if "mae" in metrics else super().train_metric_names(metrics)

    # ------------------------------------------------------------ steps
    def forward(self, x: Tensor, naive: Tensor) -> Tensor:
        """``x (B, window, F)``, ``naive (B, horizon)`` -> forecast ``(B, horizon)``, scaled units."""
        level = x[:, -1, :1]  # (B, 1): the last observed (scaled) target
        if self.hparams.relative_inputs:
            # The target and its seasonal lags (checkpoints from before lags: the target alone).
            n = int(self.data_spec.options.get("target_channels", 1))
            x = torch.cat([x[..., :n] - level[:, None], x[..., n:]], dim=-1)
        output = self._run_net(x)
        if self.hparams.baseline == "naive":
            return output + naive
        if self.hparams.baseline == "last":
            return output + level
        return output

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.criterion(output.float(), target.float())

    def predictions(self, output: Tensor) -> Tensor:
        """Scaled values ``(B, horizon)`` in the series' own units."""
        spec = self.data_spec
        values = output.float() * spec.target_std + spec.target_mean
        return torch.expm1(values) if spec.options.get("log_target") else values

    def metric_target(self, target: Tensor) -> Tensor:
        return self.predictions(target)

    def update_metrics(
        self, metrics: MetricCollection, predictions: Tensor, target: Tensor, inputs: tuple[Tensor, ...]
    ) -> None:
        """The ``naive_*`` metrics get the seasonal-naive forecast, on the same windows and targets."""
        naive = inputs[1]  # batches are (x, naive, target)
        actual, baseline = self.metric_target(target), self.predictions(naive)
        for name, metric in metrics.items(keep_base=True, copy_state=False):
            metric.update(baseline if name.startswith(NAIVE) else predictions, actual)

    def predict_output(self, output: Tensor) -> Tensor:
        """Forecasts flattened to one value per (window, step) row, as ``load_inputs`` lists them."""
        return self.predictions(output).reshape(-1)

    # ------------------------------------------------------------ reporting
    def model_name(self) -> str:
        """``LSTM``, ``GRU`` or ``RNN`` for the recurrent forecaster, else the network's class name."""
        net = self.hparams.net
        if "cell" in net:
            return str(net["cell"]).upper()
        return str(net.get("_target_", "network")).rsplit(".", 1)[-1]

    def summarize(self, metrics: dict[str, float]) -> str | None:
        """Whether the network beats seasonal-naive on MAE (test if tested, else validation)."""
        stage = "test" if f"test/{NAIVE}mae" in metrics else "val"
        if f"{stage}/mae" not in metrics or f"{stage}/{NAIVE}mae" not in metrics:
            return None
        ours, naive = metrics[f"{stage}/mae"], metrics[f"{stage}/{NAIVE}mae"]
        verdict = "beats" if ours < naive else "does not beat"
        change = f", {(naive - ours) / naive:.1%} lower" if naive > 0 and ours < naive else ""
        details = ", ".join(
            f"{name} {metrics[f'{stage}/{key}']:.4g} vs {metrics[f'{stage}/{NAIVE}{key}']:.4g}"
            for key, name in (("rmse", "RMSE"), ("smape", "sMAPE"))
            if f"{stage}/{key}" in metrics and f"{stage}/{NAIVE}{key}" in metrics
        )
        return (
            f"{self.model_name()} {verdict} seasonal-naive on {stage} MAE: {ours:.4g} vs {naive:.4g}{change}"
            + (f"; {details}" if details else "")
        )
