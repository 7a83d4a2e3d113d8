"""Time stamps of a series: parsing time columns, finding the frequency, a regular grid with gaps filled.

A file's time column(s) become stamps (dates, numbers or row positions); the rows are put on
a regular grid where gaps in an evenly spaced series become missing rows, and missing
values of a time-indexed frame are filled. Plain pandas; no Lightning here.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from lit_dl.data.tables import parse_numbers, require_columns
from lit_dl.errors import DataError

log = logging.getLogger(__name__)

FillMethod = Literal["ffill", "interpolate"]
# Column names pandas assembles into a date (data.time_column=[year,month,day,hour]).
DATE_PARTS = {"year", "month", "day", "hour", "minute", "second"}
# A series put on its grid may have at most this many times its rows: more is not gaps but a wrong
# time stamp (a year 9999 among daily dates), and filling the grid would make millions of rows.
MAX_GRID_FACTOR = 10


@dataclass
class GridSeries:
    """A file's rows sorted by time on a regular grid.

    ``frame`` holds the target and the feature columns (raw values, NaN where missing),
    indexed by time stamp (``kind="datetime"``), by number (``"number"``) or by row
    (``"row"``, without a time column). ``freq`` (a pandas frequency) or ``step`` (a
    fixed spacing) give the time stamps after the end.
    """

    frame: pd.DataFrame
    kind: str
    freq: str | None = None
    step: Any = None

    def future(self, horizon: int) -> list[Any]:
        """Time stamps of the ``horizon`` steps after the end of the series."""
        last = self.frame.index[-1]
        if self.kind == "datetime" and self.freq:
            return list(pd.date_range(last, periods=horizon + 1, freq=self.freq)[1:])
        step = self.step if self.step is not None else 1
        if self.kind == "number" and float(last).is_integer() and float(step).is_integer():
            last, step = int(last), int(step)  # an integer step index stays integer
        return [last + step * k for k in range(1, horizon + 1)]


def parse_times(
    frame: pd.DataFrame, columns: list[str], source: str, time_format: str | None = None
) -> tuple[pd.Series, str]:
    """The time stamps of every row and their kind: ``datetime``, ``number`` or ``row`` (no column)."""
    if not columns:
        return pd.Series(np.arange(len(frame)), index=frame.index), "row"
    require_columns(
        frame,
        columns,
        "time column(s)",
        source,
        "set data.time_column, or data.time_column=null to take the rows in file order",
    )
    if len(columns) > 1:
        parts = frame[columns]
        if {c.lower() for c in columns} <= DATE_PARTS:  # e.g. [year, month, day, hour]
            stamps = pd.to_datetime(
                parts.apply(parse_numbers).set_axis([c.lower() for c in columns], axis=1), errors="coerce"
            )
        else:  # e.g. [date, time]: joined with a space, then parsed
            text = parts.astype(str).agg(" ".join, axis=1).where(parts.notna().all(axis=1))
            stamps = to_datetime(text, time_format)
        return stamps, "datetime"
    column = frame[columns[0]]
    if (
        time_format is None
        and pd.api.types.is_numeric_dtype(column)
        and not pd.api.types.is_bool_dtype(column)
    ):
        return column.astype("float64"), "number"
    return to_datetime(column, time_format), "datetime"


def to_datetime(text: pd.Series, time_format: str | None = None) -> pd.Series:
    """Dates from text, in ``time_format`` if given; a column in mixed formats is read cell by cell."""
    if time_format:
        return pd.to_datetime(text.astype(str), errors="coerce", format=time_format)
    stamps = pd.to_datetime(text, errors="coerce")
    if stamps.isna().sum() > text.isna().sum():
        mixed = pd.to_datetime(text, errors="coerce", format="mixed")
        if mixed.isna().sum() < stamps.isna().sum():
            stamps = mixed
    return stamps


def infer_frequency(index: pd.DatetimeIndex) -> str | None:
    """The pandas frequency of evenly spaced stamps (``MS``, ``h``, ...), or None."""
    with warnings.catch_warnings():
        # pandas 3 warns that a later version returns an offset; both are handled below.
        warnings.simplefilter("ignore")
        freq = pd.infer_freq(index)
    return getattr(freq, "freqstr", freq)


def calendar_grid(index: pd.DatetimeIndex) -> tuple[str, pd.DatetimeIndex] | None:
    """A month/quarter/year/week grid that holds every stamp of a series with gaps, or None.

    ``pd.infer_freq`` needs the stamps complete; months have 28 to 31 days, so one missing
    month also defeats a fixed step. The grid must not be mostly gaps (at most twice the rows).
    """
    weekly = f"W-{index[0].day_name()[:3].upper()}"
    span = index[-1] - index[0]
    # (frequency, its longest step in days): a span of more than twice the rows of those steps is
    # skipped unmade (a stamp in year 9999 would make pandas generate millions of them, slowly).
    for freq, days in (("MS", 31), ("ME", 31), ("QS", 92), ("QE", 92), ("YS", 366), ("YE", 366), (weekly, 7)):
        if span / pd.Timedelta(days=days) > 2 * len(index):
            continue
        grid = pd.date_range(index[0], index[-1], freq=freq)
        if len(grid) and len(grid) <= 2 * len(index) and index.isin(grid).all():
            return freq, grid
    return None


def regular_grid(frame: pd.DataFrame, kind: str) -> GridSeries:
    """Put a time-indexed frame on its grid: evenly spaced stamps with gaps become missing rows.

    A datetime index with a pandas frequency (``MS``, ``h``, ...) is regular already.
    Otherwise the most common spacing is the step; when every spacing is a whole number
    of steps, the missing stamps are inserted as rows of NaN (filled like any missing
    value). Irregular stamps are kept as consecutive steps, with a warning.
    """
    if kind == "row" or len(frame) < 3:
        return GridSeries(frame, kind)
    if kind == "datetime":
        freq = infer_frequency(frame.index)
        if freq is not None:
            return GridSeries(frame, kind, freq=freq)
        calendar = calendar_grid(frame.index)
        if calendar is not None:
            freq, grid = calendar
            log.warning(
                "the series has %d missing time steps (gaps in its time column); they are filled "
                "like missing values",
                len(grid) - len(frame),
            )
            return GridSeries(frame.reindex(grid), kind, freq=freq)
    gaps = pd.Series(frame.index).diff().dropna()
    step = gaps.mode().iloc[0]
    ratios = (gaps / step if kind == "datetime" else gaps.astype("float64") / float(step)).to_numpy()
    whole = np.round(ratios).astype(np.int64)
    if np.allclose(ratios, whole):
        positions = np.concatenate([[0], np.cumsum(whole)])  # each row's step number on the grid
        count = int(positions[-1]) + 1
        if count > MAX_GRID_FACTOR * len(frame):
            i = int(np.argmax(whole))
            first, last, size = (str(v).removesuffix(" 00:00:00") for v in (*frame.index[i : i + 2], step))
            raise DataError(
                f"the {len(frame)} time stamps span {count:,} steps of {size}, over {MAX_GRID_FACTOR} times "
                f"as many (gaps are filled as missing rows); the largest gap runs from {first} to {last}: "
                "is one of them a wrong time stamp? fix or drop that row"
            )
        if count > len(frame):
            log.warning(
                "the series has %d missing time steps (gaps in its time column); they are filled "
                "like missing values",
                count - len(frame),
            )
            if kind == "datetime":
                grid = pd.date_range(frame.index[0], periods=count, freq=step)
            else:
                grid = pd.Index(frame.index[0] + step * np.arange(count))
            frame = frame.set_axis(positions).reindex(np.arange(count)).set_axis(grid)
        return GridSeries(frame, kind, step=step)
    log.warning("the time stamps are irregularly spaced; each row is taken as one time step")
    return GridSeries(frame, kind, step=step)


def fill_missing(frame: pd.DataFrame, method: FillMethod) -> pd.DataFrame:
    """Fill missing values of a time-indexed frame.

    ``ffill`` carries the last observation forward (uses only the past); ``interpolate``
    draws a straight line through a gap, by elapsed time (uses the value after the gap).
    Both then carry values forward, and backward over leading gaps.
    """
    frame = frame.copy()
    if method == "interpolate":
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
        if numeric:
            how = "time" if isinstance(frame.index, pd.DatetimeIndex) else "index"
            frame[numeric] = frame[numeric].interpolate(method=how, limit_area="inside")
    return frame.ffill().bfill()
