"""ForecastDataModule on tiny generated series: splits in time order, no leakage, baseline, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lit_dl.data.forecast import ForecastDataModule
from lit_dl.data.windows import WindowDataset, seasonal_naive_offsets
from lit_dl.errors import DataError

STEPS = 120


def make_series(
    steps: int = STEPS, seed: int = 0, start: str = "2000-01-01", freq: str = "MS"
) -> pd.DataFrame:
    """A monthly seasonal sine plus trend with noise: every value distinct, so it can be found again."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    y = 50.0 + 0.5 * t + 10.0 * np.sin(2 * np.pi * t / 12) + rng.normal(0.0, 1.0, steps)
    temp = 20.0 + 5.0 * np.cos(2 * np.pi * t / 12) + rng.normal(0.0, 0.5, steps)
    return pd.DataFrame(
        {
            "date": pd.date_range(start, periods=steps, freq=freq).strftime("%Y-%m-%d"),
            "y": np.round(y, 6),
            "temp": np.round(temp, 6),
            "wind": rng.choice(["N", "S", "E"], steps),
        }
    )


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def datamodule(path: Path, **kwargs) -> ForecastDataModule:  # type: ignore[no-untyped-def]
    settings = {"time_column": "date", "target": "y", "window": 12, "horizon": 4, "season": 12}
    settings.update(val_steps=20, test_steps=20, batch_size=16)
    settings.update(kwargs)
    dm = ForecastDataModule(path=str(path), **settings)
    dm.setup("fit")
    return dm


def all_windows(dataset: WindowDataset) -> tuple[torch.Tensor, ...]:
    return dataset.__getitems__(list(range(len(dataset))))


def unscale(dm: ForecastDataModule, values: torch.Tensor) -> np.ndarray:
    return values.double().numpy() * dm.scaler_scale[0] + dm.scaler_mean[0]


def test_split_is_chronological_and_targets_stay_in_their_span(tmp_path: Path) -> None:
    frame = make_series()
    shuffled = frame.sample(frac=1.0, random_state=0)  # the file's row order must not matter
    dm = datamodule(write(shuffled, tmp_path / "s.csv"))
    y = frame["y"].to_numpy()
    # (first target, end) of each span: training targets start after one full window of inputs.
    spans = {"train": (12, 80), "val": (80, 100), "test": (100, 120)}
    for name, (first, end) in spans.items():
        x, naive, target = all_windows(dm.datasets[name])
        assert x.shape[1:] == (12, 1) and naive.shape[1:] == target.shape[1:] == (4,)
        expected = np.lib.stride_tricks.sliding_window_view(y[first:end], 4)
        np.testing.assert_allclose(unscale(dm, target), expected, atol=1e-4, err_msg=name)
    # Every step of a held-out span is some window's target; validation inputs look back into train.
    assert len(dm.datasets["val"]) == len(dm.datasets["test"]) == 20 - 4 + 1
    assert len(dm.datasets["train"]) == 80 - 12 - 4 + 1
    x_val = unscale(dm, all_windows(dm.datasets["val"])[0][0, :, 0])
    np.testing.assert_allclose(x_val, y[68:80], atol=1e-4)


def test_scaler_is_fitted_on_the_training_span_only(tmp_path: Path) -> None:
    frame = make_series()
    dm = datamodule(write(frame, tmp_path / "s.csv"), features=["temp"])
    train = frame.iloc[:80]
    assert dm.scaler_mean == pytest.approx([train["y"].mean(), train["temp"].mean()])
    assert dm.scaler_scale == pytest.approx([train["y"].std(ddof=0), train["temp"].std(ddof=0)])


def test_later_spans_do_not_leak_into_training(tmp_path: Path) -> None:
    frame = make_series()
    altered = frame.copy()
    altered.loc[80:, "y"] = altered.loc[80:, "y"] * 10 + 1000  # other validation and test values
    altered.loc[80:83, "y"] = np.nan  # and a gap right after the training span
    altered.loc[80:, "temp"] = -5.0
    before = datamodule(write(frame, tmp_path / "a.csv"), features=["temp", "wind"], fill="interpolate")
    after = datamodule(write(altered, tmp_path / "b.csv"), features=["temp", "wind"], fill="interpolate")
    assert before.state_dict() == after.state_dict()  # same scaler and categories
    for a, b in zip(all_windows(before.datasets["train"]), all_windows(after.datasets["train"]), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_seasonal_naive_on_a_case_worked_by_hand(tmp_path: Path) -> None:
    # season 3: y(t) = 10 * (phase + 1) + cycle, e.g. 10 20 30 | 11 21 31 | 12 22 32 | 13 23 33 | ...
    values = [10 * (i % 3 + 1) + i // 3 for i in range(30)]
    frame = pd.DataFrame({"t": range(30), "y": values})
    dm = datamodule(
        write(frame, tmp_path / "s.csv"),
        time_column="t",
        window=3,
        horizon=4,
        season=3,
        val_steps=8,
        test_steps=8,
    )
    assert seasonal_naive_offsets(4, 3).tolist() == [-2, -1, 0, -2]
    # First test window: origin 21 (value 17), targets y22..y25 = 27 37 18 28. Seasonal naive:
    # h=1,2,3 one season back (y19, y20, y21 = 26 36 17), h=4 two seasons back (y19 = 26).
    _, naive, target = all_windows(dm.datasets["test"])
    assert values[19:22] == [26, 36, 17] and values[22:26] == [27, 37, 18, 28]
    np.testing.assert_allclose(unscale(dm, target[0]), [27, 37, 18, 28], atol=1e-4)
    np.testing.assert_allclose(unscale(dm, naive[0]), [26, 36, 17, 26], atol=1e-4)
    # Naive MAE of this window: (1 + 1 + 1 + 2) / 4.
    assert np.abs(unscale(dm, naive[0]) - unscale(dm, target[0])).mean() == pytest.approx(1.25, abs=1e-4)


def test_missing_values_filled_and_windows_with_missing_targets_dropped(tmp_path: Path) -> None:
    frame = make_series()
    frame.loc[10, "y"] = np.nan
    frame.loc[[20, 21], "temp"] = np.nan
    frame.loc[30, "wind"] = np.nan
    path = write(frame, tmp_path / "s.csv")
    ffill = datamodule(path, features=["temp", "wind"])
    interp = datamodule(path, features=["temp", "wind"], fill="interpolate")
    for dm in (ffill, interp):
        assert dm.categories == {"wind": ["E", "N", "S"]}
        for name in ("train", "val", "test"):
            assert all(torch.isfinite(t).all() for t in all_windows(dm.datasets[name]))
        # windows with y(10) among their targets (origins 6..9) are gone; origins 11.. remain
        assert set(dm.datasets["train"].origins.tolist()) == set(range(11, 76))
    series_ffill = ffill.datasets["train"].series
    series_interp = interp.datasets["train"].series
    y = frame["y"].to_numpy()
    assert unscale(ffill, series_ffill[10, 0]) == pytest.approx(y[9], abs=1e-4)
    # Time-aware: 2000-11-01 lies 31 of the 61 days from 2000-10-01 to 2000-12-01.
    assert unscale(interp, series_interp[10, 0]) == pytest.approx(y[9] + 31 / 61 * (y[11] - y[9]), abs=1e-4)
    # The category of row 30 is carried forward from row 29 (one-hot columns follow temp).
    assert series_ffill[30, 2:].tolist() == series_ffill[29, 2:].tolist() and series_ffill[30, 2:].sum() == 1


def test_gaps_in_the_time_column_become_missing_steps(tmp_path: Path) -> None:
    frame = make_series(freq="D").drop(index=[40, 41, 42])
    dm = datamodule(write(frame, tmp_path / "s.csv"))
    assert len(dm.datasets["train"].series) == STEPS  # the three missing days are back, then filled


def test_time_from_several_columns_or_row_order(tmp_path: Path) -> None:
    frame = make_series()
    stamps = pd.to_datetime(frame["date"])
    hourly = frame.drop(columns="date").assign(
        year=2020, month=1, day=1 + np.arange(STEPS) // 24, hour=np.arange(STEPS) % 24
    )
    combined = datamodule(write(hourly, tmp_path / "h.csv"), time_column=["year", "month", "day", "hour"])
    rows = datamodule(write(frame.drop(columns="date"), tmp_path / "r.csv"), time_column=None)
    european = frame.assign(date=stamps.dt.strftime("%d.%m.%Y"))  # 01.02.2000 is February 1st
    by_date = datamodule(write(european, tmp_path / "d.csv"), time_format="%d.%m.%Y")
    reference = datamodule(write(frame, tmp_path / "s.csv"))
    for dm in (combined, rows, by_date):
        torch.testing.assert_close(dm.datasets["test"].series, reference.datasets["test"].series)
    _, future = combined.load_inputs(str(tmp_path / "h.csv"))
    assert future["time"].iloc[0] == pd.Timestamp("2020-01-06 00:00")
    _, future = rows.load_inputs(str(tmp_path / "r.csv"))
    assert future["step"].tolist() == [120, 121, 122, 123]


def test_state_dict_is_plain_and_rebuilds_the_same_windows(tmp_path: Path) -> None:
    path = write(make_series(), tmp_path / "s.csv")
    dm = datamodule(path, features=["temp", "wind"], log_target=True)
    state = dm.state_dict()
    torch.save(state, tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True) == state
    restored = ForecastDataModule(**dict(dm.hparams))
    restored.load_state_dict(state)
    restored.setup("test")
    assert restored.data_spec() == dm.data_spec()
    assert dm.data_spec().inputs == {"in_features": 1 + 1 + 3}
    for a, b in zip(all_windows(dm.datasets["test"]), all_windows(restored.datasets["test"]), strict=True):
        torch.testing.assert_close(a, b)


def test_load_inputs_forecasts_past_the_end_of_the_file(tmp_path: Path) -> None:
    frame = make_series()
    dm = datamodule(write(frame, tmp_path / "s.csv"))
    recent = write(frame.iloc[-30:], tmp_path / "recent.csv")
    dataset, future = dm.load_inputs(str(recent))
    x, naive = dataset.__getitems__([0])
    assert x.shape == (1, 12, 1) and naive.shape == (1, 4)
    np.testing.assert_allclose(unscale(dm, x[0, :, 0]), frame["y"].to_numpy()[-12:], atol=1e-4)
    np.testing.assert_allclose(unscale(dm, naive[0]), frame["y"].to_numpy()[-12:-8], atol=1e-4)
    assert list(future.columns) == ["date", "horizon"]
    assert future["date"].tolist() == list(pd.date_range("2010-01-01", periods=4, freq="MS"))
    with pytest.raises(DataError, match=r"a forecast reads the last 12"):
        dm.load_inputs(str(write(frame.iloc[-5:], tmp_path / "short.csv")))


@pytest.mark.parametrize(
    ("change", "settings", "message"),
    [
        ({}, {"time_column": "when"}, "time column(s) 'when' not in"),
        ({}, {"target": "sales"}, "target column 'sales' not in"),
        ({}, {"features": ["humidity"]}, "feature column(s) 'humidity' not in"),
        ({"rows": 15}, {}, "the series has 15 time steps, fewer than one window needs"),
        ({}, {"val_steps": 3}, "no complete window in the val span"),
        ({"negative": True}, {"log_target": True}, "needs a target >= 0"),
        ({"duplicate": True}, {}, "duplicate time stamp"),
        ({"dates": "not a date"}, {}, "cannot read time column(s) date"),
    ],
)
def test_bad_inputs_raise_clear_errors(tmp_path: Path, change: dict, settings: dict, message: str) -> None:
    frame = make_series(change.get("rows", STEPS))
    if change.get("negative"):
        frame.loc[5, "y"] = -1.0
    if change.get("duplicate"):
        frame.loc[7, "date"] = frame.loc[6, "date"]
    if "dates" in change:
        frame["date"] = change["dates"]
    with pytest.raises(DataError) as error:
        datamodule(write(frame, tmp_path / "s.csv"), **settings)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_settings_are_checked_when_built() -> None:
    with pytest.raises(DataError, match=r"data\.target is not set"):
        ForecastDataModule(path="x.csv", time_column="t")
    with pytest.raises(DataError, match=r"data\.window must be a positive"):
        ForecastDataModule(path="x.csv", time_column="t", target="y", window=0)
    with pytest.raises(DataError, match=r"data\.fill must be"):
        ForecastDataModule(path="x.csv", time_column="t", target="y", fill="zero")


def test_gaps_in_a_numeric_time_column_become_missing_steps(tmp_path: Path) -> None:
    frame = make_series().assign(date=np.arange(STEPS) * 0.1).drop(index=[50, 51])
    dm = datamodule(write(frame, tmp_path / "s.csv"))
    series = dm.datasets["train"].series
    assert len(series) == STEPS
    assert unscale(dm, series[50, 0]) == pytest.approx(frame.loc[49, "y"], abs=1e-4)  # carried forward


def test_missing_months_are_put_back_on_the_calendar(tmp_path: Path) -> None:
    months = pd.date_range("2000-01-01", periods=72, freq="MS")
    frame = pd.DataFrame(
        {"Month": months.strftime("%Y-%m"), "y": np.arange(72.0) + 10 * np.sin(np.arange(72))}
    )
    frame = frame.drop(index=[20, 21, 50])  # three months missing
    frame.to_csv(tmp_path / "gaps.csv", index=False)
    dm = ForecastDataModule(
        path=str(tmp_path / "gaps.csv"), time_column="Month", target="y", window=12, horizon=6, season=12
    )
    dm.setup("fit")
    _, future = dm.load_inputs(str(tmp_path / "gaps.csv"))
    stamps = pd.to_datetime(future.iloc[:, 0])
    assert list(stamps) == list(pd.date_range("2006-01-01", periods=6, freq="MS"))  # whole months, no drift


def test_spans_that_leave_no_training_window_are_named(tmp_path: Path) -> None:
    frame = pd.DataFrame({"t": range(100), "y": np.sin(np.arange(100.0))})
    frame.to_csv(tmp_path / "s.csv", index=False)
    dm = ForecastDataModule(
        path=str(tmp_path / "s.csv"),
        time_column="t",
        target="y",
        window=12,
        horizon=6,
        season=12,
        test_steps=90,
    )
    with pytest.raises(DataError, match=r"data\.test_steps"):
        dm.setup("fit")


def test_cv_rolling_origin_tests_each_block_after_its_training_and_validation_steps(tmp_path: Path) -> None:
    frame = make_series()
    path = write(frame, tmp_path / "s.csv")
    y = frame["y"].to_numpy()
    # 3 folds of test blocks of 20 steps, the last at the end; validation: the 20 steps before each.
    for fold, test_start in enumerate((60, 80, 100)):
        dm = datamodule(path, cv_folds=3, cv_fold=fold)
        spans = {
            "train": (12, test_start - 20),
            "val": (test_start - 20, test_start),
            "test": (test_start, test_start + 20),
        }
        for name, (first, end) in spans.items():
            target = all_windows(dm.datasets[name])[2]
            expected = np.lib.stride_tricks.sliding_window_view(y[first:end], 4)
            np.testing.assert_allclose(
                unscale(dm, target), expected, atol=1e-4, err_msg=f"fold {fold} {name}"
            )
        # Scaled with the fold's training steps only (an expanding window), never a later step.
        assert dm.scaler_mean[0] == pytest.approx(y[: test_start - 20].mean())
    last, plain = datamodule(path, cv_folds=3, cv_fold=2), datamodule(path)
    assert last.state_dict() == plain.state_dict()  # the last fold is the ordinary split
    for name in ("train", "val", "test"):
        assert torch.equal(last.datasets[name].origins, plain.datasets[name].origins)


@pytest.mark.parametrize(
    ("folds", "message"),
    [(6, "cannot cut 6 test blocks of 20 steps"), (5, "for training before fold 0's test block")],
)
def test_cv_folds_that_leave_no_training_steps_are_named(tmp_path: Path, folds: int, message: str) -> None:
    with pytest.raises(DataError, match=message):
        datamodule(write(make_series(), tmp_path / "s.csv"), cv_folds=folds, cv_fold=0)
