"""Forecast inputs for long seasons: seasonal lags and calendar waves, old checkpoints, the task's view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from lit_dl.data.forecast import ForecastDataModule, calendar_cycles, calendar_features
from lit_dl.data.windows import WindowDataset
from lit_dl.errors import DataError
from lit_dl.nets import RecurrentForecaster
from lit_dl.tasks.forecasting import ForecastTask

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on shared cores


def daily_frame(steps: int = 400) -> pd.DataFrame:
    """A daily series whose value is its own step number: every lag can be read off the value."""
    return pd.DataFrame(
        {
            "date": pd.date_range("2001-01-01", periods=steps, freq="D").strftime("%Y-%m-%d"),
            "y": np.arange(steps, dtype=np.float64),
        }
    )


def prepared(tmp_path: Path, frame: pd.DataFrame, **kwargs: Any) -> ForecastDataModule:
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    settings = {"time_column": "date", "target": "y", "window": 5, "horizon": 3, "season": 30}
    settings.update(val_steps=40, test_steps=40, batch_size=8, **kwargs)
    dm = ForecastDataModule(path=str(path), **settings)
    dm.setup("fit")
    return dm


def windows(dataset: WindowDataset) -> tuple[torch.Tensor, ...]:
    return dataset.__getitems__(list(range(len(dataset))))


def unscale(dm: ForecastDataModule, values: torch.Tensor) -> np.ndarray:
    return np.round(values.double().numpy() * dm.scaler_scale[0] + dm.scaler_mean[0], 3)


def test_seasonal_lags_hold_the_target_seasons_before_each_step_to_forecast(tmp_path: Path) -> None:
    dm = prepared(tmp_path, daily_frame(), seasonal_lags=2)
    x, naive, _ = windows(dm.datasets["test"])
    assert x.shape[1:] == (5, 3)  # target, lag 1, lag 2
    steps = unscale(dm, x[..., 0])  # the value is the step number
    origin = steps[:, -1:]
    offsets = np.arange(-4, 1)[None, :]  # input steps relative to the origin
    np.testing.assert_allclose(unscale(dm, x[..., 1]), origin + offsets + 3 - 30)
    np.testing.assert_allclose(unscale(dm, x[..., 2]), origin + offsets + 3 - 60)
    # The last `horizon` steps of lag 1 are the seasonal-naive forecast.
    np.testing.assert_allclose(unscale(dm, x[:, -3:, 1]), unscale(dm, naive))
    # Windows start once the oldest lag exists: origin >= window - 1 + 2 * season - horizon.
    first = unscale(dm, windows(dm.datasets["train"])[0][0, -1, 0])
    assert first == 5 - 1 + 60 - 3
    assert dm.history == 5 + 60 - 3
    assert dm.data_spec().inputs["in_features"] == 3
    assert dm.data_spec().options["target_channels"] == 3


def test_calendar_waves_follow_the_dates(tmp_path: Path) -> None:
    dm = prepared(tmp_path, daily_frame(), calendar=True)
    assert dm.calendar_cycles == ["year", "week"]  # daily steps: no day cycle
    x, _, _ = windows(dm.datasets["train"])
    assert x.shape[-1] == 1 + 4 + 2 == dm.num_inputs()
    stamps = pd.date_range("2001-01-01", periods=400, freq="D")
    expected = calendar_features(stamps, ["year", "week"])
    step = int(unscale(dm, x[0, -1, 0]))
    np.testing.assert_allclose(x[0, -1, 1:].numpy(), expected[step], atol=1e-6)
    # Mondays share their week phase; 2001-01-01 was a Monday, so day 0 has sin 0, cos 1.
    np.testing.assert_allclose(expected[[0, 7, 14], 4:], [[0.0, 1.0]] * 3, atol=1e-12)
    # The year phase runs once around a (non-leap) year.
    np.testing.assert_allclose(expected[[0, 365], :2], [[0.0, 1.0], [0.0, 1.0]], atol=1e-12)


def test_calendar_cycles_depend_on_the_spacing() -> None:
    assert calendar_cycles(pd.date_range("2000-01-01", periods=30, freq="MS")) == ["year"]
    assert calendar_cycles(pd.date_range("2000-01-01", periods=30, freq="h")) == ["year", "week", "day"]
    assert calendar_cycles(pd.date_range("2000-01-01", periods=30, freq="YS")) == []


def test_old_checkpoint_state_loads_with_defaults(tmp_path: Path) -> None:
    dm = prepared(tmp_path, daily_frame())
    state = dm.state_dict()
    del state["calendar_cycles"]  # a checkpoint written before data.calendar
    fresh = ForecastDataModule(path=dm.path, time_column="date", target="y", window=5, horizon=3, season=30)
    fresh.load_state_dict(state)
    assert fresh.calendar_cycles == [] and fresh.seasonal_lags == 0
    assert fresh.num_inputs() == 1
    # Its checkpointed data spec had no target_channels: the task reads the target channel alone.
    spec = dm.data_spec()
    old_spec = type(spec)(**{**spec.to_dict(), "options": {"horizon": 3, "log_target": False}})
    net = {"_target_": "lit_dl.nets.RecurrentForecaster", "hidden_size": 4}
    task = ForecastTask(net, {"_target_": "torch.optim.AdamW", "_partial_": True}, data=old_spec)
    assert task(torch.randn(2, 5, 1), torch.zeros(2, 3)).shape == (2, 3)


def test_relative_inputs_cover_the_lag_channels(tmp_path: Path) -> None:
    dm = prepared(tmp_path, daily_frame(), seasonal_lags=1)
    seen: list[torch.Tensor] = []
    net = {"_target_": "lit_dl.nets.RecurrentForecaster", "hidden_size": 4}
    task = ForecastTask(net, {"_target_": "torch.optim.AdamW", "_partial_": True}, data=dm.data_spec())
    task.net.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    x, naive, _ = windows(dm.datasets["test"])
    task(x, naive)
    level = x[:, -1:, :1]
    torch.testing.assert_close(seen[0], x - level)  # both target channels, shifted by the last value


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"seasonal_lags": -1}, "data.seasonal_lags must be 0 or more"),
        ({"seasonal_lags": 1, "horizon": 31}, r"data.horizon \(31\) <= data.season \(30\)"),
        ({"calendar": True, "time_column": None}, "data.calendar=true needs dates"),
    ],
)
def test_bad_settings_are_named(settings: dict[str, Any], message: str) -> None:
    base = {"path": "x.csv", "time_column": "date", "target": "y", "window": 5, "horizon": 3, "season": 30}
    with pytest.raises(DataError, match=message):
        ForecastDataModule(**{**base, **settings})


def test_calendar_needs_dates_in_the_file(tmp_path: Path) -> None:
    frame = daily_frame().assign(date=np.arange(400))  # numbers, not dates
    with pytest.raises(DataError, match=r"data\.calendar=true needs dates"):
        prepared(tmp_path, frame, calendar=True)


def test_too_short_a_series_for_the_lags_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.seasonal_lags=5"):
        prepared(tmp_path, daily_frame(150), seasonal_lags=5)


def test_linear_skip_starts_at_zero_and_reads_the_last_steps() -> None:
    torch.manual_seed(0)
    plain = RecurrentForecaster(2, 3, hidden_size=4)
    skip = RecurrentForecaster(2, 3, hidden_size=4, linear_skip=4)
    skip.load_state_dict(plain.state_dict(), strict=False)
    # linear_skip=0 (the class default) keeps the parameter names of a forecaster from before the option.
    assert set(skip.state_dict()) - set(plain.state_dict()) == {"skip.weight", "skip.bias"}
    x = torch.randn(6, 8, 2)
    torch.testing.assert_close(skip(x), plain(x))  # the linear path starts at zero
    torch.nn.init.ones_(skip.skip.weight)
    older = x.clone()
    older[:, :4] += 1.0  # steps the linear path does not read
    torch.testing.assert_close(skip(x) - plain(x), skip(older) - plain(older))
    # A shorter window is padded with zeros in front.
    short = x[:, -3:]
    padded = torch.cat([torch.zeros(6, 1, 2), short], dim=1)
    torch.testing.assert_close(skip(short) - plain(short), skip.skip(padded.flatten(1)))
