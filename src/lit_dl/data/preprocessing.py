"""Fitted, reversible-to-plain-data preparation of tabular features.

Statistics are fitted with scikit-learn on the training split only. The fitted
state is kept as plain Python data (lists of numbers and strings) so it can live
inside a Lightning checkpoint that loads with ``torch.load(weights_only=True)``;
scikit-learn transformers are rebuilt from that state, so training, evaluation
and prediction all run the very same transform.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import LabelEncoder, OneHotEncoder, OrdinalEncoder, StandardScaler
from torch import Tensor

from lit_dl.errors import DataError

MISSING_CATEGORY = "__missing__"
Encoding = Literal["onehot", "embedding"]


def _text(value: Any) -> Any:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))  # 1.0 and 1 are the same code: a column read as float (it had blanks) or int
    return value.strip() if isinstance(value, str) else value if pd.isna(value) else str(value)


def as_text(series: pd.Series) -> pd.Series:
    """Values as strings that do not depend on the column's dtype (``1.0`` -> ``"1"``); missing stays NaN."""
    return series.astype(object).map(_text)


def categorical_strings(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Categorical columns as plain strings, with missing cells as their own category."""
    out = frame[columns].apply(as_text)
    return out.where(out.notna(), MISSING_CATEGORY).astype(str)


def fit_classes(target: pd.Series, name: str, positive_label: str | None = None) -> list[str]:
    """Class names of a label column, sorted (numerically for numbers); ``positive_label`` last (class 1)."""
    labels = as_text(target.dropna())
    classes = [str(c) for c in LabelEncoder().fit(labels).classes_]
    if pd.api.types.is_numeric_dtype(target):
        classes = sorted(classes, key=float)
    if len(classes) < 2:
        raise DataError(
            f"target {name!r} has a single class ({classes[0]!r}) in {len(labels)} rows; "
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
    labels = as_text(target)
    # Some exports (UCI Adult's test file) end labels with a period: ">50K." for ">50K".
    labels = labels.map(lambda v: v if v in index or v.rstrip(".") not in index else v.rstrip("."))
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"target {name!r} has labels not seen in training: {unknown[:5]}")
    return torch.tensor(labels.map(index).to_numpy(dtype=np.int64))


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
        self._scaler = self._build_scaler()
        self._encoder = self._build_encoder()

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str], encoding: Encoding = "onehot"
    ) -> TabularPreprocessor:
        """Fit on ``frame`` (the training split) and return the fitted preprocessor."""
        medians: list[float] = []
        means: list[float] = []
        scales: list[float] = []
        if numeric:
            values = frame[numeric].to_numpy(dtype=np.float64)
            imputer = SimpleImputer(strategy="median").fit(values)
            scaler = StandardScaler().fit(imputer.transform(values))
            medians, means, scales = (
                imputer.statistics_.tolist(),
                scaler.mean_.tolist(),
                scaler.scale_.tolist(),
            )
        categories: list[list[str]] = []
        if categorical:
            encoder = OneHotEncoder(handle_unknown="ignore").fit(categorical_strings(frame, categorical))
            categories = [c.tolist() for c in encoder.categories_]
        return cls(numeric, categorical, medians, means, scales, categories, encoding)

    def _build_scaler(self) -> StandardScaler | None:
        if not self.numeric:
            return None
        # A StandardScaler whose fitted attributes are set from the stored state:
        # transform() only reads mean_ and scale_ (and n_features_in_ to check shapes).
        scaler = StandardScaler()
        scaler.mean_ = np.asarray(self.means, dtype=np.float64)
        scaler.scale_ = np.asarray(self.scales, dtype=np.float64)
        scaler.var_ = scaler.scale_**2
        scaler.n_features_in_ = len(self.numeric)
        scaler.n_samples_seen_ = 1
        return scaler

    def _build_encoder(self) -> OneHotEncoder | OrdinalEncoder | None:
        if not self.categorical:
            return None
        # Explicit categories make fit() a pure validation step: the encoder is the one fitted in training.
        if self.encoding == "onehot":
            encoder: OneHotEncoder | OrdinalEncoder = OneHotEncoder(
                categories=self.categories, handle_unknown="ignore", sparse_output=False, dtype=np.float32
            )
        else:
            encoder = OrdinalEncoder(
                categories=self.categories,
                handle_unknown="use_encoded_value",
                unknown_value=-1,
                dtype=np.int64,
            )
        one_row = pd.DataFrame(
            {col: [cats[0]] for col, cats in zip(self.categorical, self.categories, strict=True)}
        )
        return encoder.fit(one_row)

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

    def transform(self, frame: pd.DataFrame) -> tuple[Tensor, Tensor]:
        """Return ``(x_num, x_cat)``: float features ``(N, num_features)`` and category indices ``(N, C)``."""
        n = len(frame)
        parts = []
        if self._scaler is not None:
            numbers = (
                frame[self.numeric]
                .astype("float64")
                .fillna(dict(zip(self.numeric, self.medians, strict=True)))
            )
            parts.append(self._scaler.transform(numbers.to_numpy()).astype(np.float32))
        x_cat = np.zeros((n, 0), dtype=np.int64)
        if self._encoder is not None:
            encoded = self._encoder.transform(categorical_strings(frame, self.categorical))
            if self.encoding == "onehot":
                parts.append(encoded)
            else:
                x_cat = encoded.astype(np.int64) + 1  # -1 (unseen) becomes 0
        x_num = np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(x_num, dtype=np.float32)), torch.from_numpy(x_cat)

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
