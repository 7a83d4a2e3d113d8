"""ForecastTask: shapes, baselines, metrics in the series' units beside seasonal-naive, the summary."""

from __future__ import annotations

import math

import pytest
import torch

from lit_dl.data.spec import DataSpec
from lit_dl.errors import ConfigError
from lit_dl.tasks.forecasting import ForecastTask

NET = {"_target_": "lit_dl.nets.RecurrentForecaster", "hidden_size": 8, "cell": "lstm"}
OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.01}


def make_task(
    horizon: int = 3,
    target_mean: float = 0.0,
    target_std: float = 1.0,
    log_target: bool = False,
    in_features: int = 2,
    **kwargs,  # type: ignore[no-untyped-def]
) -> ForecastTask:
    spec = DataSpec(
        task_type="forecasting",
        modality="series",
        inputs={"in_features": in_features},
        target_mean=target_mean,
        target_std=target_std,
        options={"horizon": horizon, "log_target": log_target},
    )
    return ForecastTask(NET, OPTIMIZER, data=spec, **kwargs)


def zero_head(task: ForecastTask) -> ForecastTask:
    """The network's output becomes 0, so the forecast is the baseline itself."""
    torch.nn.init.zeros_(task.net.head.weight)
    torch.nn.init.zeros_(task.net.head.bias)
    return task


def epoch_metrics(
    task: ForecastTask, batch: tuple[torch.Tensor, ...], stage: str = "val"
) -> dict[str, float]:
    """The stage's metrics after one step on ``batch`` (no trainer: nothing is logged)."""
    task.metric_collection(stage).reset()
    with torch.no_grad():
        task.shared_step(batch, stage)
    return {k: float(v) for k, v in task.metric_collection(stage).compute().items()}


def test_forward_shape_and_baselines() -> None:
    x = torch.randn(5, 10, 2)
    naive = torch.randn(5, 3)
    for baseline in ("naive", "last", "none"):
        task = make_task(baseline=baseline, relative_inputs=baseline != "none")
        assert task(x, naive).shape == (5, 3)
    torch.testing.assert_close(zero_head(make_task(baseline="naive"))(x, naive), naive)
    torch.testing.assert_close(zero_head(make_task(baseline="last"))(x, naive), x[:, -1, :1].expand(5, 3))


def test_relative_inputs_ignore_the_level() -> None:
    task = make_task(baseline="last", relative_inputs=True)
    x, naive = torch.randn(4, 10, 2), torch.zeros(4, 3)
    shifted = x.clone()
    shifted[..., 0] += 5.0  # the same shape of the target, 5 scaled units higher
    torch.testing.assert_close(task(shifted, naive), task(x, naive) + 5.0)


def test_metrics_in_series_units_beside_the_naive_forecast_worked_by_hand() -> None:
    # Scaled units: value = 100 + 10 * scaled. Naive forecast off by 1, 1, 1, 2 (as in the data test).
    task = make_task(horizon=4, target_mean=100.0, target_std=10.0, in_features=1)
    task.eval()
    target = (torch.tensor([[27.0, 37.0, 18.0, 28.0]]) - 100.0) / 10.0
    naive = (torch.tensor([[26.0, 36.0, 17.0, 26.0]]) - 100.0) / 10.0
    x = torch.zeros(1, 6, 1)
    metrics = epoch_metrics(zero_head(task), (x, naive, target))
    assert metrics["val/naive_mae"] == pytest.approx(1.25, abs=1e-4)
    assert metrics["val/naive_rmse"] == pytest.approx(math.sqrt((1 + 1 + 1 + 4) / 4), abs=1e-4)
    smape = (2 / 53 + 2 / 73 + 2 / 35 + 4 / 54) / 4  # 2|y - ŷ| / (|y| + |ŷ|), averaged
    assert metrics["val/naive_smape"] == pytest.approx(smape, abs=1e-5)
    # With a zero head the network's forecast is the naive one: the same numbers.
    for name in ("mae", "rmse", "smape"):
        assert metrics[f"val/{name}"] == pytest.approx(metrics[f"val/naive_{name}"], abs=1e-6)


def test_log_target_is_undone_for_metrics_and_predictions() -> None:
    task = make_task(target_mean=2.0, target_std=0.5, log_target=True)
    scaled = torch.tensor([[0.0, 1.0, -1.0]])
    expected = torch.expm1(torch.tensor([[2.0, 2.5, 1.5]]))
    torch.testing.assert_close(task.predictions(scaled), expected)
    torch.testing.assert_close(task.predict_output(scaled), expected.reshape(-1))


def test_shared_step_logs_both_metric_families() -> None:
    task = make_task(horizon=3)
    batch = (torch.randn(8, 10, 2), torch.randn(8, 3), torch.randn(8, 3))
    loss, predictions = task.shared_step(batch, "val")
    assert predictions.shape == (8, 3) and loss.ndim == 0
    names = set(task.val_metrics.keys())
    assert names == {f"val/{p}{m}" for p in ("", "naive_") for m in ("mae", "rmse", "smape")}
    naive_mae = task.val_metrics["naive_mae"].compute()
    assert float(naive_mae) == pytest.approx(float((batch[1] - batch[2]).abs().mean()), rel=1e-5)
    assert set(task.train_metrics.keys()) == {"train/mae"}


def test_summary_says_whether_the_network_beats_the_baseline() -> None:
    task = make_task()
    metrics = {"test/mae": 12.3, "test/naive_mae": 17.8, "test/rmse": 15.0, "test/naive_rmse": 20.0}
    summary = task.summarize(metrics)
    assert summary is not None
    assert summary.startswith("LSTM beats seasonal-naive on test MAE: 12.3 vs 17.8")
    assert "RMSE 15 vs 20" in summary
    worse = task.summarize({"val/mae": 20.0, "val/naive_mae": 17.8})
    assert worse == "LSTM does not beat seasonal-naive on val MAE: 20 vs 17.8"
    assert task.summarize({"val/loss": 1.0}) is None


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"model\.loss"):
        make_task(loss="mape")
    with pytest.raises(ConfigError, match=r"model\.baseline"):
        make_task(baseline="mean")
    with pytest.raises(ConfigError, match=r"relative_inputs"):
        make_task(baseline="none", relative_inputs=True)
