"""A reversible transform of a mixed-type table into floats for generative networks (CTGAN/TVAE style).

Numbers use mode-specific normalisation (Xu et al., 2019): a Bayesian Gaussian mixture
(scikit-learn) is fitted per column; a value becomes its mode as a one-hot vector and its
offset from that mode's mean, ``alpha = (x - mean_k) / (4 std_k)``. A zero-inflated column
(at least :data:`ZERO_MODE_SHARE` of its values exactly 0, e.g. a capital gain) gives exact zero
a mode of its own, first in the span, and fits the mixture on the other values: a generated zero
is an exact zero, never a small number near one. Categories become one-hot vectors. A missing
cell is one more slot of the column's one-hot span, so a generator learns and reproduces the
real missing rate. Every column also stores how many training rows fell in each slot of its span
(``counts``: the real rates a sampler can be calibrated to). The inverse returns the original columns in their
order, with their dtypes, categories and value ranges (integers stay integers).

The fitted state is plain data (lists of numbers and strings), so it lives in checkpoints
that load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture

from lit_dl.errors import ConfigError, DataError

# Mixture components with less weight than this are dropped (CTGAN's threshold).
MODE_WEIGHT_THRESHOLD = 0.005
# Offsets are scaled by 4 standard deviations, so nearly every value of a mode lies in [-1, 1].
ALPHA_SCALE = 4.0
# A numeric column with at least this share of exact zeros gets a zero mode (its own one-hot slot).
ZERO_MODE_SHARE = 0.05
MAX_DECIMALS = 6


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python scalar it holds (plain data for checkpoints)."""
    return value.item() if isinstance(value, np.generic) else value


def _decimals(values: np.ndarray) -> int:
    """The fewest decimals that write every value exactly (up to :data:`MAX_DECIMALS`)."""
    for places in range(MAX_DECIMALS + 1):
        if np.allclose(
            np.round(values, places), values, rtol=0.0, atol=1e-9 * max(1.0, np.abs(values).max())
        ):
            return places
    return MAX_DECIMALS


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float | bool) else (1, str(value))


class TableTransform:
    """Mixed-type rows <-> float vectors ``(N, output_dim)``; fit with :meth:`fit`.

    Each column is described by a plain dict (see :meth:`fit`); ``kind`` is ``numeric``,
    ``categorical`` or ``id`` (identifier columns carry no information: the inverse writes
    fresh ids ``synthetic-0, synthetic-1, ...`` or ``0, 1, ...`` for numbers).
    """

    def __init__(self, columns: list[dict[str, Any]]) -> None:
        self.columns = [dict(c) for c in columns]

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        categorical: Sequence[str] = (),
        ids: Sequence[str] = (),
        max_modes: int = 10,
        max_fit_rows: int = 20000,
        seed: int = 0,
        zero_mode_share: float | None = None,
    ) -> TableTransform:
        """Fit on ``frame`` (training rows only).

        Args:
            frame: the table; numeric dtypes are numbers, anything else categories.
            categorical: numeric columns to treat as categories (codes, 0/1 flags, the target).
            ids: identifier columns, not modelled.
            max_modes: mixture components per numeric column (unused ones get no weight).
            max_fit_rows: rows the mixtures are fitted on (a seeded sample of larger tables).
            seed: seed of that sample and of the mixtures.
            zero_mode_share: numeric columns with at least this share of exact zeros give zero a
                mode of its own (None, the default: never; :data:`ZERO_MODE_SHARE` is the value tried).
        """
        columns = []
        for name in frame.columns:
            series = frame[name]
            dtype = series.dtype
            spec: dict[str, Any] = {"name": str(name), "dtype": str(dtype)}
            if isinstance(dtype, pd.CategoricalDtype):
                spec["dtype_categories"] = [_plain(c) for c in dtype.categories]
            if name in ids:
                columns.append({**spec, "kind": "id", "numeric": bool(pd.api.types.is_numeric_dtype(dtype))})
            elif pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
                raise DataError(
                    f"column {name!r} holds dates or times, which the synthetic-data transform does not "
                    "model; drop it (data.drop) or convert it to numbers"
                )
            elif (
                pd.api.types.is_numeric_dtype(dtype)
                and not pd.api.types.is_bool_dtype(dtype)
                and name not in categorical
            ):
                columns.append(
                    {**spec, **cls._fit_numeric(series, max_modes, max_fit_rows, seed, zero_mode_share)}
                )
            else:
                present = series.dropna()
                categories = sorted({_plain(v) for v in present.tolist()}, key=_sort_key)
                columns.append(
                    {
                        **spec,
                        "kind": "categorical",
                        "categories": categories,
                        "has_missing": bool(series.isna().any()),
                        # Rows per slot (missing last): conditions are drawn at this rate when sampling.
                        "counts": [int((present == c).sum()) for c in categories]
                        + ([int(series.isna().sum())] if series.isna().any() else []),
                    }
                )
        transform = cls(columns)
        # Training rows per slot of every numeric column (categorical ones counted above).
        numeric = [c for c in transform.modelled if c["kind"] == "numeric"]
        for column in numeric:
            slots = transform._numeric_slots(column, frame[column["name"]])
            column["counts"] = np.bincount(slots, minlength=transform.one_hot_size(column)).tolist()
        return transform

    @staticmethod
    def _fit_numeric(
        series: pd.Series, max_modes: int, max_fit_rows: int, seed: int, zero_mode_share: float | None = None
    ) -> dict[str, Any]:
        values = series.dropna().to_numpy(dtype=np.float64)
        if not len(values):
            raise DataError(f"numeric column {series.name!r} has no values in the training rows; drop it")
        zero = values == 0
        zero_mode = bool(zero_mode_share is not None and zero.mean() >= zero_mode_share and not zero.all())
        # With a zero mode the mixture describes the other values (the zeros are the zero mode's).
        fit_values = values[~zero] if zero_mode else values
        if len(fit_values) > max_fit_rows:
            fit_values = np.random.default_rng(seed).choice(fit_values, max_fit_rows, replace=False)
        distinct = np.unique(fit_values)
        if len(distinct) == 1:
            means, stds, weights = [float(distinct[0])], [1.0], [1.0]
        else:
            mixture = BayesianGaussianMixture(
                n_components=min(max_modes, len(distinct)),
                weight_concentration_prior_type="dirichlet_process",
                weight_concentration_prior=0.001,  # few modes unless the data asks for more (CTGAN)
                n_init=1,
                max_iter=100,
                random_state=seed,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                mixture.fit(fit_values.reshape(-1, 1))
            keep = mixture.weights_ > MODE_WEIGHT_THRESHOLD
            means = mixture.means_[keep, 0].tolist()
            stds = np.sqrt(mixture.covariances_[keep].reshape(-1)).tolist()
            weights = (mixture.weights_[keep] / mixture.weights_[keep].sum()).tolist()
        integer = bool(np.all(np.mod(values, 1) == 0))
        # With a zero mode, the other modes write values within the non-zero values' range (a capital
        # gain's smallest is 114: a tail mode never writes a 3).
        nonzero = values[~zero]
        tail = {"tail_min": float(nonzero.min()), "tail_max": float(nonzero.max())} if zero_mode else {}
        return {
            "kind": "numeric",
            "means": means,
            "stds": [max(s, 1e-6) for s in stds],
            "weights": weights,
            "has_missing": bool(series.isna().any()),
            "zero_mode": zero_mode,
            **tail,
            "min": float(values.min()),
            "max": float(values.max()),
            "integer": integer,
            "decimals": 0 if integer else _decimals(values),
        }

    # ------------------------------------------------------------------ layout
    @staticmethod
    def one_hot_size(column: dict[str, Any]) -> int:
        """Slots of a column's one-hot span: its modes (numbers: the zero mode first, if it has one) or
        categories, and one for missing."""
        if column["kind"] == "numeric":
            return int(column.get("zero_mode", False)) + len(column["means"]) + int(column["has_missing"])
        return len(column["categories"]) + int(column["has_missing"])

    def slot_rates(self) -> list[np.ndarray | None]:
        """Share of the training rows in each slot of every one-hot span (in :meth:`one_hot_spans` order);
        None for a column fitted without counts (a numeric column of a transform from before they were
        stored)."""
        rates: list[np.ndarray | None] = []
        for column in self.modelled:
            counts = column.get("counts")
            if counts is None or len(counts) != self.one_hot_size(column) or not sum(counts):
                rates.append(None)
            else:
                rates.append(np.asarray(counts, dtype=np.float64) / sum(counts))
        return rates

    @classmethod
    def column_width(cls, column: dict[str, Any]) -> int:
        """Width of a column's block in a transformed row (a number: its offset and its mode span)."""
        return cls.one_hot_size(column) + int(column["kind"] == "numeric")

    @property
    def modelled(self) -> list[dict[str, Any]]:
        """The columns the networks see (all but ids), in order."""
        return [c for c in self.columns if c["kind"] != "id"]

    @property
    def spans(self) -> list[tuple[str, int]]:
        """Output layout: ``("tanh", 1)`` for a mode offset, ``("softmax", k)`` for a one-hot span."""
        spans: list[tuple[str, int]] = []
        for column in self.modelled:
            if column["kind"] == "numeric":
                spans.append(("tanh", 1))
            spans.append(("softmax", self.one_hot_size(column)))
        return spans

    @property
    def output_dim(self) -> int:
        return sum(size for _, size in self.spans)

    @property
    def discrete(self) -> list[dict[str, Any]]:
        """Categorical columns: the ones a generator can be conditioned on."""
        return [c for c in self.modelled if c["kind"] == "categorical"]

    def discrete_spans(self) -> list[tuple[int, int]]:
        """``(start, size)`` in the transformed vector of each categorical column's one-hot span."""
        out, start = [], 0
        for column in self.modelled:
            if column["kind"] == "numeric":
                start += 1 + self.one_hot_size(column)
            else:
                out.append((start, self.one_hot_size(column)))
                start += self.one_hot_size(column)
        return out

    def condition_sizes(self) -> list[int]:
        """Slots of each categorical column: the layout of a conditional generator's condition vector."""
        return [size for _, size in self.discrete_spans()]

    def offset_columns(self) -> list[int]:
        """Index in the transformed vector of every mode offset (the ``tanh`` spans)."""
        starts = np.cumsum([0] + [size for _, size in self.spans])
        return [int(starts[i]) for i, (kind, _) in enumerate(self.spans) if kind == "tanh"]

    def one_hot_spans(self) -> list[tuple[int, int]]:
        """``(start, size)`` of every one-hot span (the ``softmax`` spans: modes and categories)."""
        starts = np.cumsum([0] + [size for _, size in self.spans])
        return [(int(starts[i]), size) for i, (kind, size) in enumerate(self.spans) if kind == "softmax"]

    def span_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Columns of the offsets ``(T,)`` and of the one-hot spans ``(S, K_max)``, as index tensors.

        Spans shorter than ``K_max`` are padded with the index ``D`` (:attr:`output_dim`, one past
        the last column), so all spans are handled at once by gathering from rows ``(B, D + 1)``
        with one extra padding column (see :func:`lit_dl.nets.tabular_generative.activate`).
        """
        spans = self.one_hot_spans()
        width = max((size for _, size in spans), default=0)
        index = torch.full((len(spans), width), self.output_dim, dtype=torch.long)
        for i, (start, size) in enumerate(spans):
            index[i, :size] = torch.arange(start, start + size)
        return torch.tensor(self.offset_columns(), dtype=torch.long), index

    def category_labels(self, column: dict[str, Any]) -> list[Any]:
        """The values of a categorical column's one-hot slots (``None`` for missing)."""
        return list(column["categories"]) + ([None] if column["has_missing"] else [])

    def condition_slot(self, condition: str) -> tuple[int, int]:
        """``(categorical column index, slot)`` of a condition ``column=value`` (e.g. ``churn=Yes``)."""
        names = [c["name"] for c in self.discrete]
        name, sep, value = str(condition).partition("=")
        name, value = name.strip(), value.strip().strip("'\"")
        if not sep or name not in names:
            raise ConfigError(
                f"condition {condition!r} must be column=value with a categorical column, one of: "
                f"{', '.join(names) or '(none: the table has no categorical column)'}"
            )
        index = names.index(name)
        labels = self.discrete[index]["categories"]
        for slot, label in enumerate(labels):
            if str(label) == value or (isinstance(label, bool | int | float) and str(label) == value.title()):
                return index, slot
            if isinstance(label, int | float) and not isinstance(label, bool):
                try:
                    if float(value) == float(label):
                        return index, slot
                except ValueError:
                    pass
        raise ConfigError(
            f"condition {condition!r}: {name!r} has no value {value!r}; its values are: "
            f"{', '.join(map(str, labels))}"
        )

    # ------------------------------------------------------------------ transform
    def _mode_log_posterior(self, column: dict[str, Any], values: np.ndarray) -> np.ndarray:
        # Plug-in posterior of each mode, log N(x; mean_k, std_k) + log w_k, computed from the
        # stored point estimates (the fitted mixture object itself is not kept: it is not plain data).
        means, stds = np.asarray(column["means"]), np.asarray(column["stds"])
        return (
            norm.logpdf(values[:, None], means[None, :], stds[None, :]) + np.log(column["weights"])[None, :]
        )

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows ``(N,)`` of the table as float32 vectors ``(N, output_dim)``."""
        missing = [c["name"] for c in self.modelled if c["name"] not in frame.columns]
        if missing:
            raise DataError(f"the table lacks column(s) the transform was fitted on: {', '.join(missing)}")
        n = len(frame)
        parts = []
        for column in self.modelled:
            series = frame[column["name"]]
            size = self.one_hot_size(column)
            one_hot = np.zeros((n, size), dtype=np.float64)
            absent = series.isna().to_numpy()
            if column["kind"] == "numeric":
                alpha, mode = self._numeric_parts(column, series)
                parts.append(alpha[:, None])
            else:
                index = {label: i for i, label in enumerate(column["categories"])}
                by_text = {str(label): i for i, label in enumerate(column["categories"])}
                codes = []
                for value, gone in zip(series.tolist(), absent, strict=True):
                    if gone:
                        if not column["has_missing"]:
                            raise DataError(
                                f"column {column['name']!r} has missing values but had none when fitted"
                            )
                        codes.append(size - 1)
                        continue
                    code = index.get(_plain(value), by_text.get(str(value)))
                    if code is None:
                        raise DataError(
                            f"column {column['name']!r} has a value not seen in fitting: {value!r}"
                        )
                    codes.append(code)
                mode = np.asarray(codes, dtype=np.int64)
            one_hot[np.arange(n), mode] = 1.0
            parts.append(one_hot)
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((n, 0), np.float32)

    def _numeric_parts(self, column: dict[str, Any], series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Offsets ``alpha`` ``(N,)`` and slots ``(N,)`` of a numeric column's values (see the module)."""
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        absent = series.isna().to_numpy()
        bad = np.isnan(values) & ~absent
        if bad.any():
            raise DataError(f"column {column['name']!r} holds a non-number: {series[bad].iloc[0]!r}")
        if absent.any() and not column["has_missing"]:
            raise DataError(f"column {column['name']!r} has missing values but had none when fitted")
        means, stds = np.asarray(column["means"]), np.asarray(column["stds"])
        filled = np.where(absent, means[0], values)
        mode = self._mode_log_posterior(column, filled).argmax(axis=1)
        alpha = (filled - means[mode]) / (ALPHA_SCALE * stds[mode])
        zero_slots = int(column.get("zero_mode", False))
        slot = mode + zero_slots
        if zero_slots:  # exact zeros: the zero mode, offset 0
            zero = (filled == 0) & ~absent
            slot, alpha = np.where(zero, 0, slot), np.where(zero, 0.0, alpha)
        slot = np.where(absent, self.one_hot_size(column) - 1, slot)
        return np.where(absent, 0.0, alpha), slot

    def _numeric_slots(self, column: dict[str, Any], series: pd.Series) -> np.ndarray:
        return self._numeric_parts(column, series)[1]

    def category_codes(self, data: np.ndarray) -> np.ndarray:
        """Slot index ``(N, C)`` of each categorical column in transformed rows."""
        spans = self.discrete_spans()
        if not spans:
            return np.zeros((len(data), 0), dtype=np.int64)
        return np.stack([data[:, s : s + k].argmax(axis=1) for s, k in spans], axis=1)

    # ------------------------------------------------------------------ inverse
    def inverse_transform(self, data: np.ndarray) -> pd.DataFrame:
        """Float rows ``(N, output_dim)`` back to a table with the original columns, dtypes and ranges.

        One-hot spans are read by their largest entry (so softmax outputs work), offsets are used
        as they are; numbers are clipped to the fitted range and rounded as the data was written.
        """
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.output_dim:
            raise ValueError(f"expected rows of width {self.output_dim}, got shape {data.shape}")
        n, start = len(data), 0
        values: dict[str, Any] = {}
        for column in self.modelled:
            size = self.one_hot_size(column)
            if column["kind"] == "numeric":
                alpha = data[:, start]
                slot = data[:, start + 1 : start + 1 + size].argmax(axis=1)
                start += 1 + size
                zero_slots = int(column.get("zero_mode", False))
                absent = slot == zero_slots + len(column["means"])
                mode = np.clip(slot - zero_slots, 0, len(column["means"]) - 1)
                x = alpha * ALPHA_SCALE * np.asarray(column["stds"])[mode] + np.asarray(column["means"])[mode]
                if zero_slots:  # the zero mode writes an exact zero, the others non-zero values
                    low, high = column.get("tail_min", column["min"]), column.get("tail_max", column["max"])
                    x = np.where(slot == 0, 0.0, np.clip(x, low, high))
                x = np.round(np.clip(x, column["min"], column["max"]), column["decimals"])
                values[column["name"]] = np.where(absent, np.nan, x)
            else:
                labels = self.category_labels(column)
                codes = data[:, start : start + size].argmax(axis=1)
                start += size
                values[column["name"]] = np.array([labels[c] for c in codes], dtype=object)
        out = {}
        for column in self.columns:
            if column["kind"] == "id":
                ids = np.arange(n) if column["numeric"] else np.array([f"synthetic-{i}" for i in range(n)])
                out[column["name"]] = restore_dtype(ids, column)
            else:
                out[column["name"]] = restore_dtype(values[column["name"]], column)
        return pd.DataFrame(out, columns=[c["name"] for c in self.columns])

    # ------------------------------------------------------------------ plain state
    def state_dict(self) -> dict[str, Any]:
        return {"columns": [dict(c) for c in self.columns]}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TableTransform:
        return cls(state["columns"])


def restore_dtype(values: np.ndarray, column: dict[str, Any]) -> pd.Series:
    """A column's values with the dtype (and category order) of the table it was fitted on."""
    dtype = column["dtype"]
    series = pd.Series(values, dtype=object if values.dtype == object else values.dtype)
    series = series.where(series.notna(), None) if series.dtype == object else series
    if dtype == "category":
        return pd.Series(pd.Categorical(series, categories=column.get("dtype_categories")))
    has_missing = bool(series.isna().any())
    if has_missing and (pd.api.types.is_integer_dtype(dtype) or dtype == "bool"):
        # A plain int or bool column cannot hold a gap: use pandas' nullable twin.
        dtype = "boolean" if dtype == "bool" else dtype.capitalize().replace("Uint", "UInt")
    try:
        return series.astype(dtype)
    except (TypeError, ValueError):
        return series.astype(object)


def draw_rows(
    draw: Callable[[int], np.ndarray],
    transform: TableTransform,
    n: int,
    condition: tuple[int, int] | None = None,
    batch_size: int = 4096,
    max_batches: int = 200,
) -> np.ndarray:
    """``n`` transformed rows from ``draw(batch)``, keeping only rows that meet ``condition`` if given.

    Without a condition every draw counts. With one, the model may draw ``max_batches`` batches,
    or 20 rows per asked row if that is more (a category in 5% of its rows still gives ``n``).

    Raises:
        DataError: when the model writes too few rows with the asked category to collect ``n``.
    """
    kept: list[np.ndarray] = []
    found = drawn = 0
    budget = max(max_batches * batch_size, 20 * n)
    while found < n and (condition is None or drawn < budget):
        rows = draw(min(batch_size, n - found) if condition is None else batch_size)
        drawn += len(rows)
        if condition is not None:
            column, slot = condition
            rows = rows[transform.category_codes(rows)[:, column] == slot]
        kept.append(rows)
        found += len(rows)
    if found < n:
        column, slot = condition if condition is not None else (0, 0)
        spec = transform.discrete[column]
        raise DataError(
            f"the model wrote only {found} rows with {spec['name']}={spec['categories'][slot]} in "
            f"{drawn} draws; ask for fewer rows or train the model longer"
        )
    return np.concatenate(kept)[:n] if kept else np.zeros((0, transform.output_dim), np.float32)
