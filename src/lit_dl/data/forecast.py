"""LightningDataModule for forecasting one series from a CSV: sliding windows, chronological splits.

The file is read, sorted by time and put on a regular grid (gaps in an evenly spaced
series become missing rows). The last ``test`` and the ``val`` steps before them are
held out in time order; nothing is ever shuffled across time. A window ending at step
``t`` (its *origin*) holds the inputs ``t-window+1 .. t`` and the targets
``t+1 .. t+horizon``; it belongs to the span that holds all its targets, so validation
and test windows may look back into the previous span for inputs but are scored only on
their own steps. Filling missing values, the log transform and the scaler never see a
step after the end of the span they serve (see :meth:`ForecastDataModule.encode`).

Batches are ``(x, naive, y)``: the window ``(B, window, F)`` with the target in
channel 0 (and its seasonal lags in the next ``seasonal_lags`` channels), the seasonal-naive
forecast ``(B, horizon)`` and the targets ``(B, horizon)``, all in scaled units (the task
turns them back into the series' own).

A long season (365 daily steps) needs no window that long: ``seasonal_lags`` puts the values
one (or more) seasons before the steps to forecast into the window, and ``calendar`` adds the
position of each step in the year, week and day as sine/cosine pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import TimeSeriesSplit
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from lit_dl.data.base import InMemoryDataModule, check_cv_arguments, check_split_arguments, on_device_setting
from lit_dl.data.preprocessing import as_text
from lit_dl.data.spec import DataSpec
from lit_dl.data.tables import (
    DEFAULT_NA_VALUES,
    absolute,
    as_list,
    clean_frame,
    numeric_text_columns,
    parse_numbers,
    read_table,
    require_columns,
)
from lit_dl.data.time_index import FillMethod, GridSeries, fill_missing, parse_times, regular_grid
from lit_dl.data.windows import WindowDataset, window_origins
from lit_dl.errors import DataError

log = logging.getLogger(__name__)

# Column of the prediction file when there is no single time column to name it after.
COMBINED_TIME = "time"
ROW_STEP = "step"
# Calendar cycles (data.calendar=true) and the sine/cosine harmonics of each: two for the year, whose
# shape is rarely one smooth wave; one for the week and the day.
CALENDAR_HARMONICS = {"year": 2, "week": 1, "day": 1}


def calendar_cycles(stamps: pd.DatetimeIndex) -> list[str]:
    """The cycles a series of these time stamps can show: the year (steps under half a year apart),
    the week (steps of a day or less) and the day (steps under a day)."""
    spacing = pd.Series(stamps).diff().median() if len(stamps) > 1 else pd.Timedelta(days=1)
    cycles = ["year"] if spacing < pd.Timedelta(days=183) else []
    if spacing <= pd.Timedelta(days=1):
        cycles.append("week")
    if spacing < pd.Timedelta(days=1):
        cycles.append("day")
    return cycles


def calendar_features(stamps: pd.DatetimeIndex, cycles: Sequence[str]) -> np.ndarray:
    """``(T, C)`` sines and cosines of each stamp's position in the given cycles (phase in [0, 1))."""
    day = (stamps.hour + stamps.minute / 60 + stamps.second / 3600).to_numpy(dtype=np.float64) / 24
    phases = {
        "year": (stamps.day_of_year.to_numpy() - 1 + day) / np.where(stamps.is_leap_year, 366, 365),
        "week": (stamps.day_of_week.to_numpy() + day) / 7,
        "day": day,
    }
    columns = [
        wave(2 * np.pi * k * phases[cycle])
        for cycle in cycles
        for k in range(1, CALENDAR_HARMONICS[cycle] + 1)
        for wave in (np.sin, np.cos)
    ]
    return np.stack(columns, axis=1) if columns else np.zeros((len(stamps), 0))


class ForecastDataModule(InMemoryDataModule):
    """One time series from a CSV or Parquet file, cut into sliding windows for forecasting.

    Time: ``time_column`` is parsed as dates (or numbers), or several columns are combined
    (``[year, month, day, hour]`` assembled as a date, others joined as text and parsed);
    ``null`` takes the rows in file order. ``time_format`` settles ambiguous dates
    (``%d.%m.%Y``: pandas reads ``01.02.2000`` as January 2nd otherwise). Rows are sorted
    by time; duplicate stamps are an error; gaps in an evenly spaced series are inserted as
    missing rows.

    Missing values (see ``fill``) are filled span by span: values of the training span
    are filled from the training span alone, those of validation from train + validation,
    so no fill ever uses a later span. A window whose targets were missing in the file is
    dropped (its score would be one of the filler's values). Categorical features (text)
    are one-hot encoded with the categories of the training span (unseen: all zeros).

    Scaling: the target (after ``log_target``) and the numeric features are standardised
    with a scikit-learn ``StandardScaler`` fitted on the training span only; its means and
    scales are kept as plain data in checkpoints.

    Args:
        path: CSV or Parquet file with one row per time step.
        time_column: the time column, a list of columns to combine, or null (row order).
        time_format: ``strftime`` format of the time column (e.g. ``%d.%m.%Y``); null: inferred.
        target: the column to forecast.
        features: extra input columns (their past only); empty: the target's own history.
        window: past steps the network reads.
        horizon: steps forecast at once.
        season: steps per season for the seasonal-naive baseline (12 for monthly data,
            24 for hourly data with a daily cycle, 1 for "the last value").
        seasonal_lags: extra input channels with the target ``k = 1 .. seasonal_lags`` seasons
            before each step to forecast (see :class:`~lit_dl.data.windows.WindowDataset`): a
            long season without a window that long. Needs ``horizon <= season``; windows start
            ``seasonal_lags * season`` steps later.
        calendar: add the position of each step in the year (2 sine/cosine pairs), the week
            (daily or finer steps) and the day (finer than daily) as inputs; needs dates in
            ``time_column``.
        val_fraction, test_fraction: shares of the time steps held out at the end.
        val_steps, test_steps: the same as numbers of time steps (override the fractions).
        log_target: model ``log1p(target)`` (needs a target >= 0): turns the growing
            seasonal swings of a multiplicative series into even ones.
        fill: ``ffill`` (last observation carried forward; past only, so a window's
            inputs never borrow from its targets) or ``interpolate`` (time-aware straight
            line through gaps; smoother, but a gap's fill uses the value after it).
        na_values: cell values that mean "missing".
        batch_size: windows per batch.
        on_device: keep the prepared tensors on the training device: ``auto`` (on a GPU when they
            fit in an eighth of its memory), ``true`` or ``false``
            (:class:`~lit_dl.data.batching.TensorBatchLoader`).
        cv_folds, cv_fold: cross-validation by rolling origin (``lit-dl cv``): fold ``cv_fold``
            (0-based) of ``cv_folds`` tests on a block of ``test`` steps (``test_steps`` or
            ``test_fraction``) that ends ``(cv_folds - 1 - cv_fold)`` blocks before the end of the
            series, validates on the ``val`` steps just before it and trains on everything earlier
            (an expanding window); steps after the test block are not used. The last fold is the
            ordinary split. ``None`` (default): the ordinary split.
    """

    task_type = "forecasting"
    cv_kind = "rolling origin (expanding window; each test block after its training and validation steps)"

    def __init__(
        self,
        path: str | None = None,
        time_column: str | Sequence[str] | None = None,
        target: str | None = None,
        time_format: str | None = None,
        features: Sequence[str] | None = None,
        window: int = 24,
        horizon: int = 12,
        season: int = 12,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        val_steps: int | None = None,
        test_steps: int | None = None,
        log_target: bool = False,
        fill: FillMethod = "ffill",
        na_values: Sequence[str] = DEFAULT_NA_VALUES,
        batch_size: int = 32,
        on_device: bool | str = "auto",
        cv_folds: int | None = None,
        cv_fold: int | None = None,
        seasonal_lags: int = 0,
        calendar: bool = False,
    ) -> None:
        super().__init__()
        if not target:
            raise DataError(
                "data.target is not set: name the column to forecast, e.g. data.target=Passengers"
            )
        for name, value in (("window", window), ("horizon", horizon), ("season", season)):
            if int(value) < 1:
                raise DataError(f"data.{name} must be a positive number of time steps, got {value}")
        check_split_arguments(val_fraction, test_fraction, batch_size)
        cv_folds, cv_fold = check_cv_arguments(cv_folds, cv_fold)
        for name, value in (("val_steps", val_steps), ("test_steps", test_steps)):
            if value is not None and int(value) < 1:
                raise DataError(f"data.{name} must be a positive number of time steps or null, got {value}")
        if val_steps is None and test_steps is None and val_fraction + test_fraction >= 0.9:
            raise DataError(
                "data.val_fraction + data.test_fraction leave under 10% of the series for training"
            )
        if fill not in ("ffill", "interpolate"):
            raise DataError(f"data.fill must be ffill or interpolate, got {fill!r}")
        if int(seasonal_lags) < 0:
            raise DataError(f"data.seasonal_lags must be 0 or more seasons, got {seasonal_lags}")
        if int(seasonal_lags) and int(horizon) > int(season):
            raise DataError(
                f"data.seasonal_lags needs data.horizon ({horizon}) <= data.season ({season}): a lag of "
                "one season would otherwise lie after the forecast origin; set data.seasonal_lags=0"
            )
        if calendar and not time_column:
            raise DataError("data.calendar=true needs dates: set data.time_column (or data.calendar=false)")
        time_column = as_list("time_column", time_column) or None
        features = as_list("features", features)
        path = absolute(path)
        self.save_hyperparameters()
        self.path = path
        self.time_columns = time_column or []
        self.time_format = time_format or None
        self.target = str(target)
        self.features = features
        self.window = int(window)
        self.horizon = int(horizon)
        self.season = int(season)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.val_steps = None if val_steps is None else int(val_steps)
        self.test_steps = None if test_steps is None else int(test_steps)
        self.log_target = bool(log_target)
        self.fill = fill
        self.na_values = list(na_values)
        self.batch_size = int(batch_size)
        self.on_device = on_device_setting(on_device)
        self.cv_folds, self.cv_fold = cv_folds, cv_fold
        self.seasonal_lags = int(seasonal_lags)
        self.calendar = bool(calendar)

        # Fitted state (restored from a checkpoint by load_state_dict).
        self.numeric_features: list[str] | None = None
        self.calendar_cycles: list[str] = []  # data.calendar: the cycles found in the training file
        self.categories: dict[str, list[str]] = {}
        self.scaler_mean: list[float] = []
        self.scaler_scale: list[float] = []
        self.source_steps: int | None = None  # time steps of `path` when the scaler was fitted
        self.datasets: dict[str, WindowDataset] = {}

    @property
    def history(self) -> int:
        """Steps before the origin a window needs: its inputs (with their seasonal lags), and one
        season for the baseline."""
        return max(self.window, self.season, self.window + self.seasonal_lags * self.season - self.horizon)

    @property
    def fitted(self) -> bool:
        return self.numeric_features is not None

    # ------------------------------------------------------------------ reading
    def read_series(self, path: str | None) -> GridSeries:
        """Read a file into a :class:`GridSeries`: target and features by time, on a regular grid."""
        if not path:
            raise DataError(
                "data.path is not set: point it at a CSV or Parquet file, e.g. data.path=series.csv"
            )
        frame = clean_frame(read_table(path, na_values=self.na_values), self.na_values)
        columns = [self.target, *self.features]
        require_columns(frame, [self.target], "target column", path, "set data.target")
        require_columns(frame, self.features, "feature column(s)", path, "set data.features")
        if self.target in self.features or set(self.time_columns) & set(columns):
            raise DataError("data.target, data.features and data.time_column must name different columns")
        stamps, kind = parse_times(frame, self.time_columns, path, self.time_format)
        bad = stamps.isna()
        if bad.all():
            raise DataError(
                f"cannot read time column(s) {', '.join(self.time_columns)} of {path} as dates or numbers "
                f"(first value: {frame[self.time_columns[0]].iloc[0]!r})"
            )
        if bad.any():
            log.warning("dropping %d rows whose time cannot be read", int(bad.sum()))
        frame = frame.loc[~bad, columns]
        frame.index = pd.Index(stamps[~bad].to_numpy())
        frame = frame.sort_index(kind="stable")
        duplicated = frame.index.duplicated()
        if duplicated.any():
            raise DataError(
                f"{int(duplicated.sum())} duplicate time stamp(s) in {path} "
                f"(first: {frame.index[duplicated][0]}); a series has one row per time step: "
                "aggregate the file first, or check data.time_column"
            )
        frame[self.target] = parse_numbers(frame[self.target])
        if frame[self.target].isna().all():
            raise DataError(f"target column {self.target!r} of {path} holds no numbers")
        return regular_grid(frame, kind)

    def split_bounds(self, steps: int) -> tuple[int, int, int]:
        """Ends of the training, validation and test spans of a series of ``steps`` time steps.

        The test span runs to ``steps``; with ``cv_folds``, it is fold ``cv_fold``'s block of a
        rolling-origin split (scikit-learn's ``TimeSeriesSplit``: test blocks of equal size, the
        last one at the end of the series, each trained on all steps before it).
        """
        val = self.val_steps if self.val_steps is not None else round(self.val_fraction * steps)
        test = self.test_steps if self.test_steps is not None else round(self.test_fraction * steps)
        end, fold = steps, ""
        if self.cv_folds is not None:
            try:
                _, test_steps = list(TimeSeriesSplit(self.cv_folds, test_size=test).split(np.arange(steps)))[
                    self.cv_fold
                ]
            except ValueError as err:
                raise DataError(
                    f"cannot cut {self.cv_folds} test blocks of {test} steps from the series' {steps} "
                    f"({err}); use fewer folds (cv.folds) or a smaller data.test_steps / data.test_fraction"
                ) from err
            end, fold = int(test_steps[-1]) + 1, f" before fold {self.cv_fold}'s test block"
        if end - val - test < self.history + self.horizon:
            raise DataError(
                f"validation ({val}) and test ({test}) steps leave {end - val - test} of the series' "
                f"{steps} for training{fold}, fewer than one window needs ({self.history} + {self.horizon}); "
                "lower data.val_steps / data.test_steps (or data.val_fraction / data.test_fraction)"
                + (", or use fewer folds (cv.folds)" if fold else "")
            )
        return end - val - test, end - test, end

    # ------------------------------------------------------------------ fitting and encoding
    def _fit(self, frame: pd.DataFrame) -> None:
        """Feature kinds and categories from the training span of ``frame`` (raw values)."""
        numeric_text = set(numeric_text_columns(frame, self.features))
        self.numeric_features = [
            c
            for c in self.features
            if c in numeric_text
            or (pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]))
        ]
        self.categories = {
            c: sorted(as_text(frame[c]).dropna().astype(str).unique().tolist())
            for c in self.features
            if c not in self.numeric_features
        }

    def _numbers(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Target, numeric features (as floats) and categorical features (as text) in encoding order."""
        out = pd.DataFrame(index=frame.index)
        for col in [self.target, *(self.numeric_features or [])]:
            out[col] = parse_numbers(frame[col])
        for col in self.categories:
            out[col] = as_text(frame[col])
        return out

    def encode(self, frame: pd.DataFrame, ends: Sequence[int], fit_end: int | None = None) -> Tensor:
        """Scaled ``(T, F)`` values: target, numeric features, one-hot categories, then calendar waves.

        ``ends`` are the span ends: each span is filled from the rows up to its own end.
        ``fit_end`` fits the scaler on rows ``[0, fit_end)`` (the training span) first.
        """
        raw = self._numbers(frame)
        parts, start = [], 0
        for end in ends:
            parts.append(fill_missing(raw.iloc[:end], self.fill).iloc[start:end])
            start = end
        filled = pd.concat(parts)
        numeric_cols = [self.target, *(self.numeric_features or [])]
        empty = [c for c in numeric_cols if filled[c].isna().any()]
        if empty:
            raise DataError(
                f"column(s) {', '.join(map(repr, empty))} have no values in the first {ends[0]} time steps "
                "(the training span), so there is nothing to fill their gaps from"
            )
        numbers = filled[numeric_cols].to_numpy(dtype=np.float64, copy=True)
        if self.log_target:
            if (numbers[:, 0] < 0).any():
                raise DataError(
                    f"data.log_target=true needs a target >= 0, but {self.target!r} has negative values "
                    "(set data.log_target=false)"
                )
            numbers[:, 0] = np.log1p(numbers[:, 0])
        if fit_end is not None:
            scaler = StandardScaler().fit(numbers[:fit_end])
            self.scaler_mean = scaler.mean_.tolist()
            self.scaler_scale = scaler.scale_.tolist()
        scaled = (numbers - np.asarray(self.scaler_mean)) / np.asarray(self.scaler_scale)
        onehots = [
            (filled[col].to_numpy(dtype=object)[:, None] == np.asarray(cats, dtype=object)[None, :])
            for col, cats in self.categories.items()
        ]
        if self.calendar_cycles:
            if not isinstance(frame.index, pd.DatetimeIndex):
                raise DataError(
                    "data.calendar=true: this model was trained with calendar inputs, which need dates in "
                    f"the time column ({', '.join(self.time_columns) or 'none set'})"
                )
            onehots.append(calendar_features(frame.index, self.calendar_cycles))
        values = np.concatenate([scaled, *onehots], axis=1) if onehots else scaled
        return torch.from_numpy(values.astype(np.float32))

    def window_origins(self, observed: np.ndarray, start: int, end: int) -> Tensor:
        """Origins of the windows whose targets all lie in ``[start, end)`` and were observed."""
        return window_origins(observed, start, end, self.history, self.horizon)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        series = self.read_series(self.path)
        steps = len(series.frame)
        if steps < self.history + self.horizon:
            raise DataError(
                f"the series has {steps} time steps, fewer than one window needs: max(data.window="
                f"{self.window}, data.season={self.season}) past steps"
                + (
                    f" (with data.seasonal_lags={self.seasonal_lags}: {self.history})"
                    if self.seasonal_lags
                    else ""
                )
                + f" + data.horizon={self.horizon} to forecast; use a longer series or a shorter window or "
                "horizon"
            )
        if self.fitted and self.source_steps is not None and steps != self.source_steps:
            log.warning(
                "%s now has %d time steps, %d when the model was trained: its validation and test "
                "spans are not the ones of the training run",
                self.path,
                steps,
                self.source_steps,
            )
        train_end, val_end, fold_end = self.split_bounds(steps)
        if not self.fitted:
            self.source_steps = steps
            self._fit(series.frame.iloc[:train_end])
            if self.calendar:
                if series.kind != "datetime":
                    raise DataError(
                        f"data.calendar=true needs dates, but time column(s) {', '.join(self.time_columns)} "
                        f"hold {series.kind}s; set data.calendar=false"
                    )
                self.calendar_cycles = calendar_cycles(series.frame.index)
        # (A cross-validation fold ends with its test block: later steps are never read.)
        frame = series.frame.iloc[:fold_end]
        values = self.encode(
            frame, [train_end, val_end, fold_end], fit_end=None if self.scaler_mean else train_end
        )
        observed = frame[self.target].notna().to_numpy()
        spans = {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, fold_end)}
        self.datasets = {}
        for name, (start, end) in spans.items():
            origins = self.window_origins(observed, start, end)
            if len(origins) == 0:
                raise DataError(
                    f"no complete window in the {name} span (steps {start}-{end - 1} of {steps}): each needs "
                    f"{self.history} past steps and data.horizon={self.horizon} observed targets inside "
                    "the span; use a shorter window or horizon, or a longer span "
                    "(data.val_fraction / data.test_fraction / data.val_steps / data.test_steps)"
                )
            self.datasets[name] = self.window_dataset(values, origins)
        dropped = int((~observed).sum())
        log.info(
            "data: %d time steps%s; %d train / %d val / %d test windows; %d inputs per step%s",
            steps,
            ""
            if self.cv_folds is None
            else f" (fold {self.cv_fold} of {self.cv_folds}: steps 0-{fold_end - 1})",
            *(len(self.datasets[s]) for s in ("train", "val", "test")),
            values.shape[1],
            f"; {dropped} missing target values filled, windows with one among their targets dropped"
            if dropped
            else "",
        )

    def window_dataset(self, values: Tensor, origins: Tensor, with_targets: bool = True) -> WindowDataset:
        """The windows ending at ``origins`` of the encoded series ``values``."""
        return WindowDataset(
            values, origins, self.window, self.horizon, self.season, with_targets, self.seasonal_lags
        )

    # ------------------------------------------------------------------ prediction
    def load_inputs(self, path: str) -> tuple[WindowDataset, pd.DataFrame]:
        """The forecast origin at the end of ``path``: ``(dataset of one (x, naive), future steps)``.

        The frame has one row per forecast step: the time stamp (named after the time
        column; ``time`` for combined columns, ``step`` for row order) and ``horizon``
        (1 .. horizon). ``lit-dl predict`` adds the forecast beside them.
        """
        assert self.fitted, "setup() or load_state_dict() first"
        if not Path(path).is_file():
            raise DataError(f"input file not found: {path} (check input)")
        series = self.read_series(path)
        steps = len(series.frame)
        if steps < self.history:
            raise DataError(
                f"{path} has {steps} time steps; a forecast reads the last {self.history} "
                f"(data.window={self.window}, data.season={self.season}, "
                f"data.seasonal_lags={self.seasonal_lags})"
            )
        values = self.encode(series.frame, [steps])
        dataset = self.window_dataset(values, torch.tensor([steps - 1]), with_targets=False)
        if series.kind == "row":
            name = ROW_STEP
        else:
            name = self.time_columns[0] if len(self.time_columns) == 1 else COMBINED_TIME
        future = pd.DataFrame({name: series.future(self.horizon), "horizon": range(1, self.horizon + 1)})
        return dataset, future

    # ------------------------------------------------------------------ task wiring
    def num_inputs(self) -> int:
        """Values per time step: target, its seasonal lags, numeric features, one-hot categories,
        calendar waves."""
        assert self.numeric_features is not None
        calendar = sum(2 * CALENDAR_HARMONICS[c] for c in self.calendar_cycles)
        return (
            1
            + self.seasonal_lags
            + len(self.numeric_features)
            + sum(len(c) for c in self.categories.values())
            + calendar
        )

    def data_spec(self) -> DataSpec:
        """Values per step, the horizon and the target's scaler (the task reads forecasts back with it)."""
        assert self.fitted, "setup() or load_state_dict() first"
        return DataSpec(
            task_type="forecasting",
            modality="series",
            inputs={"in_features": self.num_inputs()},
            target_mean=float(self.scaler_mean[0]),
            target_std=float(self.scaler_scale[0]),
            # target_channels: the target and its lags, which the task may read relative to the last value.
            options={
                "horizon": int(self.horizon),
                "log_target": bool(self.log_target),
                "target_channels": 1 + self.seasonal_lags,
            },
        )

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """Feature kinds, categories and scaler as plain data; Lightning stores it in every checkpoint."""
        if not self.fitted:
            return {}
        return {
            "numeric_features": list(self.numeric_features),
            "categories": {k: list(v) for k, v in self.categories.items()},
            "scaler_mean": list(self.scaler_mean),
            "scaler_scale": list(self.scaler_scale),
            "source_steps": self.source_steps,
            "calendar_cycles": list(self.calendar_cycles),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or state == self.state_dict():
            # Nothing new (e.g. testing the best checkpoint of this very run): keep the prepared windows.
            return
        self.numeric_features = list(state["numeric_features"])
        self.categories = {k: list(v) for k, v in state["categories"].items()}
        self.scaler_mean = [float(v) for v in state["scaler_mean"]]
        self.scaler_scale = [float(v) for v in state["scaler_scale"]]
        self.source_steps = state.get("source_steps")
        self.calendar_cycles = list(state.get("calendar_cycles", []))  # (checkpoints before data.calendar)
        self.datasets = {}
