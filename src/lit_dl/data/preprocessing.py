"""Fitted, reversible-to-plain-data preparation of tabular features.

Statistics are fitted on the training split only, the figures scikit-learn's SimpleImputer
(median), StandardScaler and OneHotEncoder find. The fitted state is kept as plain Python data
(lists of numbers and strings) so it can live inside a Lightning checkpoint that loads with
``torch.load(weights_only=True)``; training, evaluation and prediction all run the very same
transform from that state.

Built for large tables: a text column is converted once per distinct value and the rows follow
by integer codes; numbers are imputed and standardised a block of rows at a time, straight into
one preallocated float32 array. The tensors equal scikit-learn's, bit for bit
(tests/data/test_prep_scale.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from lit_dl.data.tables import distinct_values
from lit_dl.errors import DataError
from lit_dl.utils import prep_threads

MISSING_CATEGORY = "__missing__"
# Rows standardised and encoded at a time: the block's float64 numbers and float32 features stay in cache.
ROWS_PER_BLOCK = 4096
Encoding = Literal["onehot", "embedding"]


def _text(value: Any) -> Any:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))  # 1.0 and 1 are the same code: a column read as float (it had blanks) or int
    return value.strip() if isinstance(value, str) else value if pd.isna(value) else str(value)


def text_codes(series: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """``(codes, texts)``: the text (see :func:`as_text`) of each distinct value of ``series`` and each
    row's index into them, -1 where missing; None for an object column of mixed Python values (see
    :func:`~lit_dl.data.tables.distinct_values`), which is converted value by value instead."""
    found = distinct_values(series)
    if found is None:
        return None
    codes, values = found
    return codes, np.array([_text(v) for v in values], dtype=object)


def as_text(series: pd.Series) -> pd.Series:
    """Values as strings that do not depend on the column's dtype (``1.0`` -> ``"1"``); missing stays NaN."""
    found = text_codes(series)
    if found is None:
        return series.astype(object).map(_text)
    codes, texts = found
    values = np.append(texts, None)[codes]
    missing = codes < 0
    if missing.any():
        values[missing] = series[missing].astype(object).to_numpy()  # each missing cell as it was
    return pd.Series(values, index=series.index, name=series.name)


def categorical_strings(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Categorical columns as plain strings, with missing cells as their own category."""
    out = frame[columns].apply(as_text)
    return out.where(out.notna(), MISSING_CATEGORY).astype(str)


def category_texts_by_value(series: pd.Series) -> pd.Series:
    """A column's category texts converted cell by cell (missing: :data:`MISSING_CATEGORY`); the way
    for an object column of mixed Python values, where :func:`text_codes` declines."""
    text = as_text(series)
    return text.where(text.notna(), MISSING_CATEGORY).astype(str)


def category_list(series: pd.Series) -> list[str]:
    """The categories of a column, as OneHotEncoder finds them: its texts sorted, and
    :data:`MISSING_CATEGORY` among them when a cell is missing."""
    found = text_codes(series)
    if found is None:
        return sorted(set(category_texts_by_value(series)))
    codes, texts = found
    return sorted({str(t) for t in texts} | ({MISSING_CATEGORY} if (codes < 0).any() else set()))


def distinct_texts(series: pd.Series) -> list[str]:
    """The texts (see :func:`as_text`) of the values present in ``series``, sorted."""
    found = text_codes(series)
    texts = found[1] if found is not None else as_text(series).dropna().to_numpy()
    return sorted({str(t) for t in texts})


def category_lookup(series: pd.Series, categories: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, lookup)``: row ``i``'s index in ``categories`` is ``lookup[codes[i]]`` (-1 where unseen;
    a missing cell is :data:`MISSING_CATEGORY`).

    The work is done once per distinct value; rows are looked up by their codes (a Categorical's own,
    or pandas' factorisation), so any subset of rows is encoded by gathering its codes. An object
    column of mixed Python values is converted cell by cell: its codes are then the positions.
    """
    index = {c: i for i, c in enumerate(categories)}
    missing = index.get(MISSING_CATEGORY, -1)
    if isinstance(series.dtype, pd.CategoricalDtype):
        # Every category (held by a row or not): its codes are the Categorical's own, no pass over the rows.
        codes = series.cat.codes.to_numpy()
        texts = [_text(v) for v in series.cat.categories.astype(object)]
    else:
        found = text_codes(series)
        if found is None:  # an object column of mixed Python values: converted cell by cell
            codes = np.fromiter(
                (index.get(t, -1) for t in category_texts_by_value(series)), dtype=np.int64, count=len(series)
            )
            return codes, np.append(np.arange(len(categories)), -1)
        codes, texts = found
    # Code -1 (a missing cell) takes the last entry.
    return codes, np.asarray([index.get(t, -1) for t in texts] + [missing], dtype=np.int64)


def fit_classes(target: pd.Series, name: str, positive_label: str | None = None) -> list[str]:
    """Class names of a label column, sorted (numerically for numbers); ``positive_label`` last (class 1)."""
    present = target.dropna()
    classes = distinct_texts(present)  # as LabelEncoder sorts them
    if pd.api.types.is_numeric_dtype(target):
        classes = sorted(classes, key=float)
    if len(classes) < 2:
        raise DataError(
            f"target {name!r} has a single class ({classes[0]!r}) in {len(present)} rows; "
            "a classifier needs at least two (check data.target, or use data.task=regression)"
        )
    if positive_label is not None:
        if len(classes) != 2 or str(positive_label) not in classes:
            raise DataError(f"data.positive_label={positive_label!r} is not one of the 2 classes {classes}")
        classes = [c for c in classes if c != str(positive_label)] + [str(positive_label)]
    return classes


def encode_classes(target: pd.Series, classes: list[str], name: str) -> Tensor:
    """Class indices ``(N,)`` of a label column; labels not among ``classes`` are an error."""
    index = {c: i for i, c in enumerate(classes)}
    found = text_codes(target)
    codes, labels = found if found is not None else pd.factorize(as_text(target))
    if (codes < 0).any():
        raise DataError(f"target {name!r} has {int((codes < 0).sum())} missing values; drop those rows")
    # Some exports (UCI Adult's test file) end labels with a period: ">50K." for ">50K".
    labels = [v if v in index or v.rstrip(".") not in index else v.rstrip(".") for v in labels]
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"target {name!r} has labels not seen in training: {unknown[:5]}")
    return torch.from_numpy(np.asarray([index[v] for v in labels], dtype=np.int64)[codes])


def numbers(series: pd.Series) -> np.ndarray:
    """A numeric column as float64 (missing as NaN); no copy of a float64 column."""
    return series.astype("float64").to_numpy()


def median(values: np.ndarray) -> float:
    """``np.median`` of finite numbers, the same figure from a single-point partition (half the time).

    ``values`` is reordered (pass a copy).
    """
    half = len(values) // 2
    values.partition(half)
    if len(values) % 2:
        return float(values[half])
    return float((values[:half].max() + values[half]) / 2)  # np.median's mean of the middle two


def number_statistics(values: np.ndarray, name: str) -> tuple[float, float, float] | None:
    """``(median, mean, scale)`` of a column: scikit-learn's SimpleImputer median, then StandardScaler
    on the imputed values (the very same figures: the scaler itself is fitted); None without a number."""
    missing = np.isnan(values)
    present = values[~missing]  # a copy: the median may reorder it
    if present.size == 0:
        return None
    if np.isinf(present).any():
        raise DataError(f"numeric column {name!r} holds infinite values; replace or drop them")
    middle = median(present)
    scaler = StandardScaler().fit(np.where(missing, middle, values)[:, None])
    return middle, float(scaler.mean_[0]), float(scaler.scale_[0])


def fit_number_columns(
    frame: pd.DataFrame, columns: list[str], rows: np.ndarray | None = None
) -> list[tuple[float, float, float] | None]:
    """:func:`number_statistics` of each column's rows ``rows`` (default: all), None for a column without
    a number there; columns in parallel, each gathering its own rows (no copy of the table)."""

    def fit(column: str) -> tuple[float, float, float] | None:
        values = numbers(frame[column])
        return number_statistics(values if rows is None else values[rows], column)

    with ThreadPoolExecutor(prep_threads()) as pool:  # columns in parallel (see prep_threads)
        return list(pool.map(fit, columns))


def fit_category_columns(frame: pd.DataFrame, columns: list[str]) -> list[list[str]]:
    """:func:`category_list` of each column, columns in parallel."""
    with ThreadPoolExecutor(prep_threads()) as pool:  # (see prep_threads)
        return list(pool.map(lambda column: category_list(frame[column]), columns))


class TabularPreprocessor:
    """Median imputation + standard scaling of numbers, one-hot or index encoding of categories.

    Args:
        numeric: numeric feature columns, in order.
        categorical: categorical feature columns, in order.
        medians, means, scales: per numeric column, fitted on the training split.
        categories: per categorical column, the sorted categories seen in training.
        encoding: ``onehot`` appends indicator columns to the numeric features;
            ``embedding`` returns category indices (0 = unseen) for embedding layers.
    """

    def __init__(
        self,
        numeric: list[str],
        categorical: list[str],
        medians: list[float],
        means: list[float],
        scales: list[float],
        categories: list[list[str]],
        encoding: Encoding = "onehot",
    ) -> None:
        if encoding not in ("onehot", "embedding"):
            raise ValueError(f"encoding must be 'onehot' or 'embedding', got {encoding!r}")
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.medians = [float(v) for v in medians]
        self.means = [float(v) for v in means]
        self.scales = [float(v) for v in scales]
        self.categories = [[str(c) for c in cats] for cats in categories]
        self.encoding = encoding
        if not len(self.medians) == len(self.means) == len(self.scales) == len(self.numeric):
            raise ValueError("medians, means and scales need one value per numeric column")
        if len(self.categories) != len(self.categorical):
            raise ValueError("categories need one list per categorical column")

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str], encoding: Encoding = "onehot"
    ) -> TabularPreprocessor:
        """Fit on ``frame`` (the training split) and return the fitted preprocessor."""
        statistics, categories = fit_number_columns(frame, numeric), fit_category_columns(frame, categorical)
        return cls.from_statistics(numeric, categorical, statistics, categories, encoding)

    @classmethod
    def from_statistics(
        cls,
        numeric: list[str],
        categorical: list[str],
        statistics: list[tuple[float, float, float] | None],
        categories: list[list[str]],
        encoding: Encoding = "onehot",
    ) -> TabularPreprocessor:
        """The preprocessor of fitted ``(median, mean, scale)`` per numeric column (see
        :func:`fit_number_columns`) and categories per categorical column."""
        for column, fitted in zip(numeric, statistics, strict=True):
            if fitted is None:
                raise DataError(
                    f"numeric column {column!r} has no numbers in the training rows; drop it (data.drop)"
                )
        medians, means, scales = (list(s) for s in zip(*statistics, strict=True)) if numeric else ([], [], [])
        return cls(numeric, categorical, medians, means, scales, categories, encoding)

    @property
    def num_features(self) -> int:
        """Width of the float feature tensor."""
        width = len(self.numeric)
        if self.encoding == "onehot":
            width += sum(len(c) for c in self.categories)
        return width

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes per categorical column (index 0 is kept for unseen categories)."""
        return [len(c) + 1 for c in self.categories] if self.encoding == "embedding" else []

    @property
    def feature_names(self) -> list[str]:
        """Names of the columns of the float feature tensor."""
        names = list(self.numeric)
        if self.encoding == "onehot":
            names += [
                f"{col}={cat}"
                for col, cats in zip(self.categorical, self.categories, strict=True)
                for cat in cats
            ]
        return names

    def transform(self, frame: pd.DataFrame, rows: np.ndarray | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(x_num, x_cat)`` of the rows ``rows`` of ``frame`` (positions; default: all rows):
        float features ``(N, num_features)`` and category indices ``(N, C)``.

        Equal to scikit-learn's StandardScaler (after median imputation) and OneHotEncoder (unseen
        categories all zeros) or OrdinalEncoder (+1, unseen 0), written a block of rows at a time into
        preallocated arrays: no copy of the frame's rows, no float64 matrix of the whole table (an
        integer column is read as a float64 copy of it).
        """
        if rows is not None:
            rows = np.asarray(rows)
            if rows.ndim != 1 or rows.dtype.kind not in "iu":
                raise TypeError(
                    f"rows must be positions (a 1-d integer array), got {rows.dtype} {rows.shape}"
                )
        n = len(frame) if rows is None else len(rows)
        columns = [numbers(frame[col]) for col in self.numeric]  # views of float64 columns
        # Rows are read in the frame's order and written to their places: a gather of scattered rows
        # from each of the frame's columns (a cache miss per cell) costs twice the whole transform.
        order = None if rows is None else np.argsort(rows)  # output rows by their row in the frame
        threads = prep_threads()
        with ThreadPoolExecutor(threads) as pool:
            lookups = list(
                pool.map(
                    lambda column: category_lookup(frame[column[0]], column[1]),
                    zip(self.categorical, self.categories, strict=True),
                )
            )
            x_num = np.zeros((n, self.num_features), dtype=np.float32)
            x_cat = np.zeros((n, len(lookups) if self.encoding == "embedding" else 0), dtype=np.int64)
            # Ranges of rows in parallel, a whole number of blocks each: the threads write disjoint rows.
            share = -(-n // (ROWS_PER_BLOCK * threads)) * ROWS_PER_BLOCK
            ranges = [range(start, min(start + share, n)) for start in range(0, n, share)] if n else []
            list(
                pool.map(
                    lambda part: self._write_rows(x_num, x_cat, part, rows, order, columns, lookups), ranges
                )
            )
        return torch.from_numpy(x_num), torch.from_numpy(x_cat)

    def _write_rows(
        self,
        x_num: np.ndarray,
        x_cat: np.ndarray,
        part: range,
        rows: np.ndarray | None,
        order: np.ndarray | None,
        columns: list[np.ndarray],
        lookups: list[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """Write rows ``part`` of the features into ``x_num`` and ``x_cat`` (zeros), a block at a time.

        Without ``rows``, output row ``i`` is the frame's row ``i``. With them, ``part`` counts output
        rows in ``order`` (by their row in the frame): the block's frame rows ``rows[order[block]]`` are
        read in ascending order and written to output rows ``order[block]``.
        """
        k, width = len(self.numeric), x_num.shape[1]
        medians, means, scales = (
            np.asarray(v, dtype=np.float64) for v in (self.medians, self.means, self.scales)
        )
        unseen = [bool((lookup < 0).any()) for _, lookup in lookups]  # some value gets no slot
        onehot = self.encoding == "onehot" and bool(lookups)
        if onehot:
            offsets = k + np.cumsum([0] + [len(c) for c in self.categories[:-1]])
            flat = x_num.reshape(-1)  # rows one after another (a view)
        for start in range(part.start, part.stop, ROWS_PER_BLOCK):
            block = slice(start, min(start + ROWS_PER_BLOCK, part.stop))
            if order is None:
                source = target = block
            else:
                target = order[block]
                source = rows[target]
            if k:
                values = np.empty((block.stop - start, k))  # (B, numeric) float64, as the scaler computes
                for j, column in enumerate(columns):
                    values[:, j] = column[source]
                np.copyto(values, medians, where=np.isnan(values))
                values -= means
                values /= scales
                if not np.isfinite(values).all():
                    bad = self.numeric[int(np.flatnonzero(~np.isfinite(values).all(axis=0))[0])]
                    raise DataError(f"numeric column {bad!r} holds infinite values; replace or drop them")
                x_num[target, :k] = values
            if onehot:
                starts = np.arange(block.start, block.stop) if order is None else target
                starts = starts * width
                for (codes, lookup), offset, has_unseen in zip(lookups, offsets, unseen, strict=True):
                    at = lookup[codes[source]]
                    if has_unseen:
                        seen = at >= 0
                        flat[starts[seen] + offset + at[seen]] = 1.0
                    else:
                        flat[starts + offset + at] = 1.0
            elif self.encoding == "embedding":
                indices = np.empty((block.stop - start, len(lookups)), dtype=np.int64)
                for j, (codes, lookup) in enumerate(lookups):
                    np.add(lookup[codes[source]], 1, out=indices[:, j])  # -1 (unseen) becomes 0
                x_cat[target] = indices

    def state_dict(self) -> dict[str, Any]:
        """The fitted state as plain data (safe for ``torch.load(weights_only=True)``)."""
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "medians": self.medians,
            "means": self.means,
            "scales": self.scales,
            "categories": self.categories,
            "encoding": self.encoding,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TabularPreprocessor:
        return cls(**state)
