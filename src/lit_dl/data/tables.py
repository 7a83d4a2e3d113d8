"""Table files: reading CSV or Parquet, cleaning cells, coercing numbers stored as text, splitting rows.

Plain pandas/scikit-learn helpers shared by the table-based datamodules; no Lightning here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.model_selection._split import _validate_shuffle_split  # the sizes train_test_split uses
from sklearn.utils import check_array, check_random_state
from sklearn.utils.extmath import _approximate_mode  # StratifiedShuffleSplit's rows per class

from lit_dl.errors import DataError
from lit_dl.utils import prep_threads

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


def distinct_values(series: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """``(codes, values)``: the distinct values of ``series`` as Python objects (as ``astype(object)``
    gives them) and each row's index into them, -1 where the cell is missing.

    Work on a large column is then done once per distinct value and spread to the rows by the codes.
    None for an object column holding anything but text: pandas takes ``1``, ``1.0`` and ``True`` for
    one value, though they read differently, so only value-by-value work is exact there.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        # The codes are there already; keep only the categories some row holds.
        codes = series.cat.codes.to_numpy()
        held = np.bincount(np.add(codes, 1, dtype=np.intp), minlength=len(series.cat.categories) + 1)[1:] > 0
        categories = np.asarray(series.cat.categories.astype(object), dtype=object)
        if held.all():
            return codes, categories
        renumber = np.full(len(held) + 1, -1, dtype=np.int64)  # the last entry: code -1 stays -1
        renumber[np.flatnonzero(held)] = np.arange(held.sum())
        return renumber[codes], categories[held]
    kind = pd.api.types.infer_dtype(series, skipna=True) if series.dtype == object else "typed"
    if kind not in ("typed", "string", "empty"):
        return None
    codes, uniques = pd.factorize(series)
    return codes, np.asarray(uniques.astype(object), dtype=object)


def is_text_column(series: pd.Series) -> bool:
    """A column of pandas' string dtype (``str``), as CSV and Parquet text columns are read."""
    return pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series)


def clean_frame(
    frame: pd.DataFrame, na_values: Sequence[str] = DEFAULT_NA_VALUES, as_category: Sequence[str] = ()
) -> pd.DataFrame:
    """Strip surrounding blanks from text cells and turn blank or NA-marker cells into missing values.

    Text columns named in ``as_category`` come back as pandas ``Categorical`` of the same cleaned
    values: integer codes make splitting and encoding a large table fast. The input frame is left as
    it is (a shallow copy: pandas copies a column only when it is written).
    """
    frame = frame.copy(deep=False)
    markers = {v.strip() for v in na_values}
    categorize = set(as_category)

    def cleaned(col: Any) -> Any:
        """The cleaned column ``col``, or None when it stays as it is."""
        column = frame[col]
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            return None
        if is_text_column(column):
            # Cleaned once per distinct value, spread to the rows by their codes.
            codes, uniques = pd.factorize(column)
            texts = _clean_text(pd.Series(uniques), markers)
            if col in categorize:
                merged, categories = pd.factorize(texts)  # " a" and "a" are one category; markers none
                return pd.Categorical.from_codes(np.append(merged, -1)[codes], categories=categories)
            if not texts.equals(pd.Series(uniques)):
                return pd.Series(texts.array.take(codes, allow_fill=True), index=column.index)
            return None
        text = column.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
        return text.where(~text.isin(markers), np.nan)

    # Columns in parallel (Arrow's and numpy's loops release the GIL), written back one by one.
    with ThreadPoolExecutor(prep_threads()) as pool:
        for col, column in zip(frame.columns, pool.map(cleaned, frame.columns), strict=True):
            if column is not None:
                frame[col] = column
    return frame


def _clean_text(text: pd.Series, markers: set[str]) -> pd.Series:
    """A text column stripped, NA markers made missing."""
    text = text.str.strip()
    return text.where(~text.isin(markers), np.nan)


def is_number_column(series: pd.Series) -> bool:
    """A column of numbers (booleans are not): :func:`parse_numbers` only casts it to float64."""
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def parse_numbers(series: pd.Series) -> pd.Series:
    """Numbers from text cells; cells that are not numbers become NaN.

    Decimal commas ("29,85", common in ``;``-separated European exports) are read as
    decimal points when no cell of the column uses a point.
    """
    if is_number_column(series):
        return series.astype("float64")
    found = distinct_values(series) if len(series) else None
    if found is not None:
        codes, uniques = found
        numbers = _parse_text_numbers(pd.Series(uniques, dtype=object)).to_numpy()
        if numbers.dtype in (np.float64, np.int64):
            if (codes < 0).any():
                numbers = np.append(numbers.astype(np.float64), np.nan)  # a missing cell is NaN
            return pd.Series(numbers[codes], index=series.index, name=series.name)
    return _parse_text_numbers(series.astype(object).where(series.notna()))


def parse_numbers_of_rows(series: pd.Series, rows: np.ndarray | None) -> pd.Series:
    """:func:`parse_numbers` of the rows ``rows`` (positions; None: all) of ``series`` on their own (a
    split reads decimal commas as its own cells are written), as a float64 column of ``series``'s
    length, NaN in the other rows."""
    if rows is None:
        return parse_numbers(series)
    values = np.full(len(series), np.nan)
    values[rows] = parse_numbers(series.take(rows)).to_numpy(dtype=np.float64)
    return pd.Series(values, index=series.index, name=series.name)


def _parse_text_numbers(text: pd.Series) -> pd.Series:
    """``pd.to_numeric`` of an object column (missing cells NaN), with decimal commas read as points."""
    present = text.dropna().astype(str)
    if len(present) and not present.str.contains(".", regex=False).any():
        text = text.map(lambda v: v.replace(",", ".") if isinstance(v, str) else v)
    return pd.to_numeric(text, errors="coerce")


def numeric_text_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Columns stored as text whose non-missing cells are (nearly) all numbers."""
    found = []
    for col in columns:
        series = frame[col]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        distinct = distinct_values(series)
        if distinct is None:
            present = series.dropna()
            share = parse_numbers(present).notna().mean() if len(present) else None
        else:
            # Each distinct value parsed once, weighed by the rows that hold it (counted only if need be).
            codes, uniques = distinct
            parsed = parse_numbers(pd.Series(uniques, dtype=object)).notna().to_numpy()
            if len(uniques) == 0 or parsed.all() or not parsed.any():
                share = None if len(uniques) == 0 else float(parsed.all())
            else:
                counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
                share = counts[parsed].sum() / counts.sum()
        if share is not None and share >= NUMERIC_TEXT_SHARE:
            found.append(col)
    return found


def whole_numbers(series: pd.Series) -> bool:
    """Whether every number of ``series`` (missing cells aside) is a whole number."""
    return bool(np.all(np.mod(series.dropna().to_numpy(dtype=np.float64), 1) == 0))


def looks_like_id(series: pd.Series, categorical: bool) -> bool:
    """Text with a distinct value in (nearly) every row, or whole numbers all distinct: an identifier."""
    if not categorical and not whole_numbers(series.iloc[:1000]):
        return False  # a fraction among the first rows: no need to look at the rest of a large column
    if categorical and isinstance(series.dtype, pd.CategoricalDtype):  # distinct values counted on the codes
        codes = series.cat.codes.to_numpy()
        held = np.bincount(codes[codes >= 0], minlength=len(series.cat.categories))
        present_count, distinct = int(held.sum()), int((held > 0).sum())
        return present_count >= 50 and distinct > 0.5 * present_count and distinct > 100
    present = series.dropna()
    if len(present) < 50:
        return False
    distinct = present.nunique()
    if categorical:
        return distinct > 0.5 * len(present) and distinct > 100
    values = present.to_numpy(dtype=np.float64)
    return distinct == len(present) and bool(np.all(np.mod(values, 1) == 0))


def class_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(labels, return_inverse=True, return_counts=True)``; for class indices (small
    non-negative integers, as ``stratify_labels`` gives them) by counting instead of sorting, with the
    inverse in the narrowest integer type (a stable argsort of it is then a radix sort)."""
    if labels.ndim == 1 and labels.dtype.kind in "iu" and len(labels) and labels.min() >= 0:
        top = int(labels.max())
        if top < 2**16:
            counts = np.bincount(labels, minlength=top + 1)
            classes = np.flatnonzero(counts)
            index = np.zeros(top + 1, dtype=np.uint8 if len(classes) <= 2**8 else np.uint16)
            index[classes] = np.arange(len(classes))
            return classes.astype(labels.dtype), index[labels], counts[classes]
    return np.unique(labels, return_inverse=True, return_counts=True)


def split_positions(
    n_rows: int, test_size: float, seed: int, stratify: pd.Series | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, test)`` row positions: scikit-learn's ``train_test_split(np.arange(n_rows), ...)``.

    The stratified case draws the same random numbers as sklearn's ``StratifiedShuffleSplit`` (so the
    same rows) but keeps each class's rows as arrays instead of a Python list of a million integers;
    anything unusual (a class of one row, too few rows per class) goes to sklearn for its error.
    """
    positions = np.arange(n_rows)
    if stratify is None:
        rest, test = train_test_split(positions, test_size=test_size, random_state=seed)
        return rest, test
    n_train, n_test = _validate_shuffle_split(n_rows, test_size, None, default_test_size=0.25)
    labels = check_array(stratify, input_name="y", ensure_2d=False, dtype=None)
    classes, label_index, class_counts = class_index(labels)
    if (
        labels.ndim != 1
        or len(labels) != n_rows
        or class_counts.min() < 2
        or min(n_train, n_test) < len(classes)
    ):
        rest, test = train_test_split(positions, test_size=test_size, random_state=seed, stratify=stratify)
        return rest, test
    class_rows = np.split(np.argsort(label_index, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = check_random_state(seed)
    n_rest = _approximate_mode(class_counts, n_train, rng)
    n_test_per_class = _approximate_mode(class_counts - n_rest, n_test, rng)
    rest_parts, test_parts = [], []
    for rows, count, in_rest, in_test in zip(class_rows, class_counts, n_rest, n_test_per_class, strict=True):
        shuffled = rows.take(rng.permutation(count), mode="clip")
        rest_parts.append(shuffled[:in_rest])
        test_parts.append(shuffled[in_rest : in_rest + in_test])
    return rng.permutation(np.concatenate(rest_parts)), rng.permutation(np.concatenate(test_parts))


def split_rows(
    n_rows: int,
    val_fraction: float,
    test_fraction: float | None,
    seed: int,
    stratify: pd.Series | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Positions of the ``train``/``val`` (and ``test`` unless ``test_fraction`` is None) rows, stratified.

    The rows sklearn's ``train_test_split`` picks: ``val`` first, then ``test`` from the rest.
    """
    labels = stratify.to_numpy() if isinstance(stratify, pd.Series) else stratify
    try:
        rest, val = split_positions(n_rows, val_fraction, seed, labels)
        parts = {"val": val}
        if test_fraction is not None:
            share = test_fraction / (1.0 - val_fraction)
            rest_of_rest, test = split_positions(
                len(rest), share, seed, labels[rest] if labels is not None else None
            )
            rest, parts["test"] = rest[rest_of_rest], rest[test]
    except ValueError as err:
        raise DataError(
            f"cannot split {n_rows} rows into train/val/test ({err}); "
            "use more rows or change data.val_fraction / data.test_fraction"
        ) from err
    parts["train"] = rest
    return parts


def split_frame(
    frame: pd.DataFrame,
    val_fraction: float,
    test_fraction: float | None,
    seed: int,
    stratify: pd.Series | None = None,
) -> dict[str, pd.DataFrame]:
    """:func:`split_rows` of ``frame``, each split a frame of its own (each row copied once)."""
    parts = split_rows(len(frame), val_fraction, test_fraction, seed, stratify)
    return {k: frame.take(rows).reset_index(drop=True) for k, rows in parts.items()}


@dataclass(frozen=True, eq=False)
class TableRows:
    """Rows of a table by position (``rows``; None: all of them), without a copy of the table.

    A split of a large table is kept this way: the preprocessing gathers each column's rows where it
    needs them (a block of rows at a time where it writes the tensors), so the table is never
    copied into three split frames.
    """

    frame: pd.DataFrame
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame) if self.rows is None else len(self.rows)

    def take(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """These rows of ``columns`` (default: all) as a frame of their own, indexed ``0 .. n-1``."""
        frame = self.frame if columns is None else self.frame[list(columns)]
        if self.rows is not None:
            frame = frame.take(self.rows)
        return frame.reset_index(drop=True)


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str, source: str, fix: str) -> None:
    """One-line :class:`DataError` when any of ``columns`` is not in ``frame``: what is missing, the
    columns there are, and the setting to change (``fix``, e.g. "set data.target")."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} {', '.join(map(repr, missing))} not in {source}; columns are: "
            f"{', '.join(map(str, frame.columns))} ({fix})"
        )
