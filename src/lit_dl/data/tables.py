"""Table files: reading CSV or Parquet, cleaning cells, coercing numbers stored as text, splitting rows.

Plain pandas/scikit-learn helpers shared by the table-based datamodules; no Lightning here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lit_dl.errors import DataError

DEFAULT_NA_VALUES = ("", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")
# A text column is read as numbers when at least this share of its non-blank cells parse as numbers.
NUMERIC_TEXT_SHARE = 0.95
# A numeric target with at most this many distinct integer values is taken as class labels.
MAX_AUTO_CLASSES = 20


def as_list(name: str, value: Any) -> list[str]:
    """A list-valued setting: a single name becomes ``[name]``; anything else but a list is an error."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [str(v) for v in value]
    raise DataError(f"data.{name} must be a list of column names like [a,b], got {value!r}")


def absolute(path: str | None) -> str | None:
    """Paths are kept absolute, so a checkpoint's data config works from any directory."""
    return str(Path(path).expanduser().resolve()) if path else None


def require_file(path: str | Path, key: str) -> None:
    """A one-line error naming the config ``key`` when ``path`` is not a file (e.g. ``data.test_path``)."""
    if not Path(path).is_file():
        what = "is a folder, not a file" if Path(path).is_dir() else "file not found"
        raise DataError(f"{key} {what}: {path} (check {key})")


def read_table(
    path: str | Path | None,
    column_names: Sequence[str] | None = None,
    na_values: Sequence[str] = DEFAULT_NA_VALUES,
) -> pd.DataFrame:
    """Read a CSV (delimited by comma, semicolon, tab or ``|``) or Parquet file into a DataFrame.

    ``column_names`` names the columns of a file without a header row; no ``path`` is the
    one-line error that ``data.path`` is not set. Column names are stripped of surrounding
    blanks and must be unique.
    """
    if not path:
        raise DataError(
            "data.path is not set: point it at a CSV or Parquet file, e.g. data.path=customers.csv"
        )
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path} (check data.path)")
    if path.is_dir():
        raise DataError(f"data.path is a folder, not a file: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"data file is empty: {path}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            if column_names:
                frame.columns = list(column_names)
        else:
            header, delimiter = sniff_header(path)
            if not column_names:
                check_unique(next(csv.reader([header], delimiter=delimiter), []), path)
            frame = pd.read_csv(
                path,
                sep=delimiter,
                engine="python",
                header=None if column_names else "infer",
                names=list(column_names) if column_names else None,
                na_values=list(na_values),
                encoding="utf-8-sig",  # also plain UTF-8; drops the byte-order mark Excel writes
                keep_default_na=True,
                skipinitialspace=True,
                skip_blank_lines=True,
            )
    except pd.errors.EmptyDataError as err:
        raise DataError(f"data file is empty: {path}") from err
    except UnicodeDecodeError as err:
        raise DataError(
            f"cannot read {path}: it is not UTF-8 text ({err.reason} at byte {err.start}); "
            "save it as UTF-8 CSV (or Parquet)"
        ) from err
    except (pd.errors.ParserError, csv.Error, OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {str(err).splitlines()[0]}") from err
    if frame.empty:
        raise DataError(f"data file has no rows: {path}")
    frame.columns = [str(c).strip() for c in frame.columns]
    check_unique(list(frame.columns), path)
    if frame.shape[1] == 1 and not column_names:
        check_one_column(frame, path)
    return frame


# Delimiters a CSV file may use; a header line with none of them is a file of one column.
DELIMITERS = ",;\t|"
# Characters that, found as often in every row as in the header of a one-column file, delimit it.
OTHER_DELIMITERS = {":": "a colon", " ": "spaces", "~": "a tilde", "^": "a caret", "#": "a hash sign"}


def sniff_header(path: Path) -> tuple[str, str]:
    """The header line of a CSV file and its delimiter: comma, semicolon, tab or ``|`` (comma if none).

    Only these are tried: left to itself, the sniffer takes a letter or a decimal point that happens
    to recur in the header (``churn`` split at ``u``).
    """
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = handle.readline(1 << 20)
    try:
        return header, csv.Sniffer().sniff(header, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return header, ","


def check_unique(names: Sequence[Any], path: Path) -> None:
    """Column names, stripped of blanks, must differ: ``data.features=[x]`` would be ambiguous."""
    stripped = [str(n).strip() for n in names]
    repeated = sorted({n for n in stripped if stripped.count(n) > 1})
    if repeated:
        raise DataError(
            f"{path} has duplicate column name(s) {', '.join(map(repr, repeated))} "
            "(after stripping blanks): rename them so that every column has its own name"
        )


def check_one_column(frame: pd.DataFrame, path: Path) -> None:
    """A one-column table whose header and rows all hold a character equally often is delimited by it."""
    name = str(frame.columns[0])
    rows = frame.iloc[:20, 0].astype(str).tolist()
    for char, words in OTHER_DELIMITERS.items():
        count = name.count(char)
        if count and all(row.count(char) == count for row in rows):
            raise DataError(
                f"{path} was read as one column {name!r}: it looks delimited by {words}; lit_dl reads "
                "files delimited by commas, semicolons, tabs or | (save it as CSV)"
            )


def clean_frame(frame: pd.DataFrame, na_values: Sequence[str] = DEFAULT_NA_VALUES) -> pd.DataFrame:
    """Strip surrounding blanks from text cells and turn blank or NA-marker cells into missing values."""
    frame = frame.copy()
    markers = {v.strip() for v in na_values}
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_bool_dtype(frame[col]):
            column = frame[col]
            if pd.api.types.is_string_dtype(column) and not pd.api.types.is_object_dtype(column):
                text = column.str.strip()  # a string column: vectorised
            else:
                text = column.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
            frame[col] = text.where(~text.isin(markers), np.nan)
    return frame


def parse_numbers(series: pd.Series) -> pd.Series:
    """Numbers from text cells; cells that are not numbers become NaN.

    Decimal commas ("29,85", common in ``;``-separated European exports) are read as
    decimal points when no cell of the column uses a point.
    """
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    text = series.astype(object).where(series.notna())
    present = text.dropna().astype(str)
    if len(present) and not present.str.contains(".", regex=False).any():
        text = text.map(lambda v: v.replace(",", ".") if isinstance(v, str) else v)
    return pd.to_numeric(text, errors="coerce")


def numeric_text_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Columns stored as text whose non-missing cells are (nearly all) numbers."""
    found = []
    for col in columns:
        series = frame[col]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        present = series.dropna()
        if present.empty:
            continue
        if parse_numbers(present).notna().mean() >= NUMERIC_TEXT_SHARE:
            found.append(col)
    return found


def looks_like_id(series: pd.Series, categorical: bool) -> bool:
    """Text with a distinct value in (nearly) every row, or whole numbers all distinct: an identifier."""
    present = series.dropna()
    if len(present) < 50:
        return False
    distinct = present.nunique()
    if categorical:
        return distinct > 0.5 * len(present) and distinct > 100
    values = present.to_numpy(dtype=np.float64)
    return distinct == len(present) and bool(np.all(np.mod(values, 1) == 0))


def split_frame(
    frame: pd.DataFrame,
    val_fraction: float,
    test_fraction: float | None,
    seed: int,
    stratify: pd.Series | None = None,
) -> dict[str, pd.DataFrame]:
    """Rows split into ``train``/``val`` (and ``test`` unless ``test_fraction`` is None), stratified."""
    try:
        rest, val = train_test_split(frame, test_size=val_fraction, random_state=seed, stratify=stratify)
        splits = {"val": val}
        if test_fraction is not None:
            share = test_fraction / (1.0 - val_fraction)
            strat = stratify.loc[rest.index] if stratify is not None else None
            rest, test = train_test_split(rest, test_size=share, random_state=seed, stratify=strat)
            splits["test"] = test
    except ValueError as err:
        raise DataError(
            f"cannot split {len(frame)} rows into train/val/test ({err}); "
            "use more rows or change data.val_fraction / data.test_fraction"
        ) from err
    splits["train"] = rest
    return {k: v.reset_index(drop=True) for k, v in splits.items()}


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str, source: str, fix: str) -> None:
    """One-line :class:`DataError` when any of ``columns`` is not in ``frame``: what is missing, the
    columns there are, and the setting to change (``fix``, e.g. "set data.target")."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} {', '.join(map(repr, missing))} not in {source}; columns are: "
            f"{', '.join(map(str, frame.columns))} ({fix})"
        )
