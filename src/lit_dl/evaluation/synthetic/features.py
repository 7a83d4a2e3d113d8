"""Real and synthetic rows as features for scikit-learn (shared by the efficacy and privacy measures)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from lit_dl.evaluation.synthetic.fidelity import as_categories


class BenchmarkScaler(BaseEstimator, TransformerMixin):
    """SDGym's numeric features (the benchmark behind Xu et al.'s figures): the log of a column that is
    never negative and reaches 1000 (``fnlwgt``, ``capital_gain``), else min-max scaled to ``[0, 5]``."""

    def fit(self, x: np.ndarray, y: Any = None) -> BenchmarkScaler:
        x = np.asarray(x, dtype=np.float64)
        self.min_, self.max_ = x.min(axis=0), x.max(axis=0)
        self.log_ = (self.min_ >= 0) & (self.max_ >= 1e3)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        span = np.where(self.max_ > self.min_, self.max_ - self.min_, 1.0)
        return np.where(self.log_, np.log(np.maximum(x, 1e-2)), (x - self.min_) / span * 5.0)


def feature_encoder(kinds: dict[str, str], scale: str = "benchmark") -> ColumnTransformer:
    """Numbers imputed (median) and scaled; categories one-hot (missing a category of its own).

    ``scale`` is ``benchmark`` (:class:`BenchmarkScaler`, for the classifiers), ``standard`` or ``minmax``.
    """
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    categorical = [c for c, k in kinds.items() if k == "categorical"]
    scaler = {"benchmark": BenchmarkScaler, "standard": StandardScaler, "minmax": MinMaxScaler}[scale]()
    parts = []
    if numeric:
        parts.append(
            ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), scaler), numeric)
        )
    if categorical:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical))
    return ColumnTransformer(parts)


def prepared(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """The columns of ``kinds``: numbers as floats, categories as text."""
    out = {}
    for name, kind in kinds.items():
        column = frame[name]
        out[name] = (
            pd.to_numeric(column, errors="coerce").astype(float)
            if kind == "numeric"
            else as_categories(column)
        )
    return pd.DataFrame(out, index=frame.index)
