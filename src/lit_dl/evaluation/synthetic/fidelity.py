"""Fidelity of a synthetic table: how alike its columns and pairs of columns are to the real ones.

Per column, ``1 - KS statistic`` (numbers) or ``1 - total variation distance`` (categories,
missing counted as a category); per pair of columns, correlation similarity
``1 - |r_real - r_synthetic| / 2`` (two numbers) or contingency similarity ``1 - TVD`` of the
joint frequency table (numbers cut at the real data's quantiles).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

MISSING = "__missing__"
CONTINGENCY_BINS = 10


def column_kinds(frame: pd.DataFrame, categorical: Sequence[str] = ()) -> dict[str, str]:
    """``numeric`` or ``categorical`` per column (numbers are numeric unless listed in ``categorical``)."""
    return {
        str(c): "numeric"
        if pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
        and c not in categorical
        else "categorical"
        for c in frame.columns
    }


def as_categories(series: pd.Series) -> pd.Series:
    """Values as text with missing as its own category, so that real and synthetic tables compare."""
    from lit_dl.data.preprocessing import as_text

    text = as_text(series)
    return text.where(text.notna(), MISSING).astype(str)


def numeric_shape(real: pd.Series, synthetic: pd.Series) -> float:
    """``1 - KS statistic`` of the present values (0 when one side has none)."""
    a, b = real.dropna().to_numpy(float), pd.to_numeric(synthetic, errors="coerce").dropna().to_numpy(float)
    if not len(a) or not len(b):
        return 0.0
    return float(1.0 - ks_2samp(a, b).statistic)


def total_variation(real: pd.Series, synthetic: pd.Series) -> float:
    """Total variation distance between the category frequencies of two columns."""
    p = real.value_counts(normalize=True)
    q = synthetic.value_counts(normalize=True)
    p, q = p.align(q, fill_value=0.0)
    return float(0.5 * np.abs(p - q).sum())


def categorical_shape(real: pd.Series, synthetic: pd.Series) -> float:
    """``1 - total variation distance`` of the category frequencies (missing is a category)."""
    return 1.0 - total_variation(as_categories(real), as_categories(synthetic))


def correlation_similarity(real: pd.DataFrame, synthetic: pd.DataFrame, a: str, b: str) -> float:
    """``1 - |r_real - r_synthetic| / 2`` with Pearson's r (rows where both are present)."""

    def corr(frame: pd.DataFrame) -> float:
        pair = frame[[a, b]].apply(pd.to_numeric, errors="coerce").dropna()
        if len(pair) < 2 or pair[a].std() == 0 or pair[b].std() == 0:
            return 0.0
        return float(pair[a].corr(pair[b]))

    return 1.0 - abs(corr(real) - corr(synthetic)) / 2.0


def _binned(real: pd.Series, synthetic: pd.Series, bins: int) -> tuple[pd.Series, pd.Series]:
    """Numbers cut at the real column's quantiles, as categories (missing is a category)."""
    values = real.dropna().to_numpy(float)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1))) if len(values) else np.array([0.0])

    def cut(series: pd.Series) -> pd.Series:
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(float)
        codes = np.searchsorted(edges[1:-1], numbers, side="right").astype(str)
        return pd.Series(np.where(np.isnan(numbers), MISSING, codes), index=series.index)

    return cut(real), cut(synthetic)


def contingency_similarity(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    a: str,
    b: str,
    kinds: dict[str, str],
    bins: int = CONTINGENCY_BINS,
) -> float:
    """``1 - total variation distance`` between the joint frequency tables of two columns."""
    columns = {}
    for name in (a, b):
        if kinds[name] == "numeric":
            columns[name] = _binned(real[name], synthetic[name], bins)
        else:
            columns[name] = (as_categories(real[name]), as_categories(synthetic[name]))
    joint_real = columns[a][0] + "\x1f" + columns[b][0]
    joint_synthetic = columns[a][1] + "\x1f" + columns[b][1]
    return 1.0 - total_variation(joint_real, joint_synthetic)


def column_shapes(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> dict[str, float]:
    """Shape similarity per column (1 is identical)."""
    return {
        name: numeric_shape(real[name], synthetic[name])
        if kind == "numeric"
        else categorical_shape(real[name], synthetic[name])
        for name, kind in kinds.items()
    }


def _codes(real: pd.Series, synthetic: pd.Series, kind: str, bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of two columns over their shared categories (numbers binned as in the contingency)."""
    if kind == "numeric":
        a, b = _binned(real, synthetic, bins)
    else:
        a, b = as_categories(real), as_categories(synthetic)
    labels = pd.Index(pd.concat([a, b], ignore_index=True).unique())
    return labels.get_indexer(a), labels.get_indexer(b), len(labels)


def _joint_tvd(
    codes_real: tuple[np.ndarray, np.ndarray], codes_synthetic: tuple[np.ndarray, np.ndarray], k: int
):
    """Total variation distance of the joint frequencies of two coded columns (``k`` codes of the second)."""
    joint_real = np.bincount(codes_real[0] * k + codes_real[1])
    joint_synthetic = np.bincount(codes_synthetic[0] * k + codes_synthetic[1])
    size = max(len(joint_real), len(joint_synthetic))
    p = np.pad(joint_real, (0, size - len(joint_real))) / max(len(codes_real[0]), 1)
    q = np.pad(joint_synthetic, (0, size - len(joint_synthetic))) / max(len(codes_synthetic[0]), 1)
    return float(0.5 * np.abs(p - q).sum())


def fidelity(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> dict[str, Any]:
    """Column shapes, pair trends and their means (``score`` is the mean of the two means).

    Pair trends are :func:`correlation_similarity` for two numbers and
    :func:`contingency_similarity` otherwise, computed here on integer codes made once per column
    (fast enough to score a sample every validation epoch).
    """
    shapes = column_shapes(real, synthetic, kinds)
    codes = {
        name: _codes(real[name], synthetic[name], kind, CONTINGENCY_BINS) for name, kind in kinds.items()
    }
    pairs: list[dict[str, Any]] = []
    for a, b in itertools.combinations(kinds, 2):
        if kinds[a] == kinds[b] == "numeric":
            metric, score = "correlation", correlation_similarity(real, synthetic, a, b)
        else:
            (ra, sa, _), (rb, sb, kb) = codes[a], codes[b]
            metric, score = "contingency", 1.0 - _joint_tvd((ra, rb), (sa, sb), kb)
        pairs.append({"columns": [a, b], "metric": metric, "score": score})
    shape_mean = float(np.mean(list(shapes.values()))) if shapes else float("nan")
    pair_mean = float(np.mean([p["score"] for p in pairs])) if pairs else shape_mean
    return {
        "column_shapes": shapes,
        "column_shapes_mean": shape_mean,
        "column_pairs": pairs,
        "column_pairs_mean": pair_mean,
        "score": (shape_mean + pair_mean) / 2.0,
    }
