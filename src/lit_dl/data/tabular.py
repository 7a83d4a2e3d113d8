"""LightningDataModule for tables (CSV or Parquet): cleaning, encoding, stratified splits."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lit_dl.data.base import (
    InMemoryDataModule,
    check_cv_arguments,
    check_split_arguments,
    cv_split,
    on_device_setting,
)
from lit_dl.data.batching import TensorBatchDataset
from lit_dl.data.preprocessing import (
    Encoding,
    TabularPreprocessor,
    encode_classes,
    fit_category_columns,
    fit_classes,
    fit_number_columns,
)
from lit_dl.data.spec import DataSpec
from lit_dl.data.tables import (
    DEFAULT_NA_VALUES,
    MAX_AUTO_CLASSES,
    TableRows,
    absolute,
    as_list,
    clean_frame,
    is_number_column,
    looks_like_id,
    numeric_text_columns,
    parse_numbers_of_rows,
    read_table,
    require_columns,
    require_file,
    split_rows,
    whole_numbers,
)
from lit_dl.errors import DataError

log = logging.getLogger(__name__)

TaskType = Literal["classification", "regression"]


class TabularDataModule(InMemoryDataModule):
    """Tables from CSV or Parquet, prepared for a neural network.

    Cleaning: blank and NA-marker cells become missing; numbers stored as text are
    coerced; missing numbers are imputed with training medians, numbers standardised,
    categories one-hot encoded (or indexed for embeddings) with missing as a
    category; string targets become class indices. The split is stratified for
    classification and seeded. All statistics come from the training split only
    and are saved in checkpoints as plain data (see :meth:`state_dict`).

    Batches are ``(x_num, x_cat, y)``: float features ``(B, F)``, category
    indices ``(B, C)`` (``C = 0`` with one-hot encoding) and targets ``(B,)``.

    Args:
        path: CSV or Parquet file.
        target: name of the target column.
        features: feature columns to use; default all but ``target`` and ``drop``.
        drop: columns not used as features (ids); ``predict`` passes them through.
        categorical: columns to treat as categorical even when they hold numbers.
        column_names: column names for a file without a header row.
        na_values: cell values that mean "missing".
        task: ``classification``, ``regression`` or ``auto`` (from the target's values).
        positive_label: for binary targets, the label that counts as positive (class 1).
        test_path: a separate file for the test split; otherwise it is carved from ``path``.
        val_fraction, test_fraction: shares of rows for validation and test.
        split_seed: seed of the split (kept apart from the training seed, so the
            test set stays the same when you change the training seed).
        categorical_encoding: ``onehot`` or ``embedding``.
        batch_size: rows per batch.
        on_device: keep the prepared tensors on the training device: ``auto`` (on a GPU when they
            fit in an eighth of its memory), ``true`` or ``false``
            (:class:`~lit_dl.data.batching.TensorBatchLoader`).
        cv_folds, cv_fold: cross-validation (``lit-dl cv``): fold ``cv_fold`` (0-based) of a seeded
            k-fold split of the rows, stratified like the ordinary split, is the test set; validation
            rows (``val_fraction`` of all rows) come from the other folds; ``test_fraction`` is unused.
            ``None`` (default): the ordinary train/val/test split.
    """

    cv_kind = "k-fold of rows (stratified by class for classification)"

    def __init__(
        self,
        path: str | None = None,
        target: str | None = None,
        features: Sequence[str] | None = None,
        drop: Sequence[str] = (),
        categorical: Sequence[str] = (),
        column_names: Sequence[str] | None = None,
        na_values: Sequence[str] = DEFAULT_NA_VALUES,
        task: Literal["auto", "classification", "regression"] = "auto",
        positive_label: str | None = None,
        test_path: str | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 42,
        categorical_encoding: Encoding = "onehot",
        batch_size: int = 256,
        on_device: bool | str = "auto",
        cv_folds: int | None = None,
        cv_fold: int | None = None,
    ) -> None:
        super().__init__()
        if task not in ("auto", "classification", "regression"):
            raise DataError(f"data.task must be auto, classification or regression, got {task!r}")
        if categorical_encoding not in ("onehot", "embedding"):
            raise DataError(
                f"data.categorical_encoding must be onehot or embedding, got {categorical_encoding!r}"
            )
        check_split_arguments(val_fraction, test_fraction, batch_size)
        cv_folds, cv_fold = check_cv_arguments(cv_folds, cv_fold)
        if cv_folds is None and val_fraction + (0 if test_path else test_fraction) >= 0.9:
            raise DataError("data.val_fraction + data.test_fraction leave under 10% of rows for training")
        if not target:
            raise DataError("data.target is not set: name the column to predict, e.g. data.target=churn")
        if cv_folds is not None and test_path:
            raise DataError(
                "data.test_path and data.cv_folds: cross-validation tests on each fold of data.path in turn; "
                "set data.test_path=null"
            )
        target_columns = as_list("target", target)
        features = as_list("features", features) or None
        drop, categorical = as_list("drop", drop), as_list("categorical", categorical)
        column_names = as_list("column_names", column_names) or None
        path, test_path = absolute(path), absolute(test_path)
        self.save_hyperparameters()
        self.path = path
        self.target = target_columns[0] if len(target_columns) == 1 else target_columns
        self.target_columns = target_columns
        self.features = features
        self.drop = drop
        self.categorical = categorical
        self.column_names = column_names
        self.na_values = list(na_values)
        self.task = task
        self.positive_label = positive_label
        self.test_path = test_path
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)
        self.categorical_encoding = categorical_encoding
        self.batch_size = int(batch_size)
        self.on_device = on_device_setting(on_device)
        self.cv_folds, self.cv_fold = cv_folds, cv_fold

        # Fitted state (restored from a checkpoint by load_state_dict).
        self.preprocessor: TabularPreprocessor | None = None
        self.task_type: TaskType | None = None
        self.classes: list[str] | None = None
        self.target_mean = 0.0
        self.target_std = 1.0
        self.class_counts: list[int] | None = None
        self.source_rows: int | None = None  # labelled rows of `path` when the preprocessing was fitted
        self.datasets: dict[str, TensorBatchDataset] = {}

    # ------------------------------------------------------------------ loading
    def load_frame(self, path: str | None) -> pd.DataFrame:
        """Read the raw table. Subclasses override this to generate or fetch data."""
        return read_table(path, self.column_names, self.na_values)

    def _load_clean(self, path: str | None) -> pd.DataFrame:
        raw = self.load_frame(path)
        # Text features as pandas Categorical: splitting and encoding then move integer codes.
        maybe_features = self.features or [c for c in raw.columns if c not in self.drop]
        text_features = [c for c in maybe_features if c not in self.target_columns]
        frame = clean_frame(raw, self.na_values, as_category=text_features)
        require_columns(frame, self.target_columns, "target column", path or "the data", "set data.target")
        missing_target = frame[self.target_columns].isna().any(axis=1)
        if missing_target.all():
            raise DataError(f"target column {self.target!r} has no values")
        if missing_target.any():
            log.warning(
                "dropping %d rows without a value in target %r", int(missing_target.sum()), self.target
            )
            frame = frame.loc[~missing_target].reset_index(drop=True)
        return frame

    def feature_columns(self, frame: pd.DataFrame) -> list[str]:
        """The feature columns: ``features`` if given, else all but target and ``drop``."""
        columns = self.features or [
            c for c in frame.columns if c not in self.target_columns and c not in self.drop
        ]
        missing = [c for c in columns + self.drop + self.categorical if c not in frame.columns]
        if missing:
            raise DataError(
                f"column(s) {', '.join(map(repr, missing))} not found; "
                f"columns are: {', '.join(frame.columns)}"
            )
        overlap = [c for c in self.target_columns if c in columns]
        if overlap:
            raise DataError(f"target {overlap[0]!r} is also listed in data.features; remove it there")
        if not columns:
            raise DataError("no feature columns left: check data.features and data.drop")
        return columns

    # ------------------------------------------------------------------ target (extension points)
    # A datamodule for another kind of target (e.g. several 0/1 label columns) overrides these
    # five methods; the features, splits, checkpoint state and loaders stay as they are.
    def resolve_task(self, targets: pd.DataFrame) -> str:
        """The problem the target columns pose (``data.task``, or guessed from the values)."""
        if len(self.target_columns) > 1:
            raise DataError(
                f"data.target names {len(self.target_columns)} columns: one target column per table "
                "(a multi-label target needs a datamodule that says how to encode it; see docs/extending.md)"
            )
        if self.task != "auto":
            return self.task
        target = targets.iloc[:, 0]
        if not pd.api.types.is_numeric_dtype(target):
            return "classification"
        values = target.to_numpy(dtype=np.float64)
        integral = np.all(np.equal(np.mod(values, 1), 0))
        return "classification" if integral and len(np.unique(values)) <= MAX_AUTO_CLASSES else "regression"

    def fit_target(self, targets: pd.DataFrame) -> None:
        """Fit what encoding the target needs on all labelled rows (class names; no statistics)."""
        if self.task_type == "classification":
            self.classes = fit_classes(targets.iloc[:, 0], self.target, self.positive_label)

    def fit_target_statistics(self, train_targets: pd.DataFrame) -> None:
        """Statistics of the training split's target: class counts, or mean and standard deviation."""
        if self.task_type == "regression":
            values = pd.to_numeric(train_targets.iloc[:, 0], errors="coerce")
            self.target_mean = float(values.mean())
            self.target_std = float(values.std(ddof=0)) or 1.0
        else:
            counts = self.encode_target(train_targets).bincount(minlength=len(self.classes))
            self.class_counts = counts.tolist()

    def stratify_labels(self, targets: pd.DataFrame) -> pd.Series | None:
        """Labels the train/val/test split keeps in proportion (None: a plain random split)."""
        if self.task_type != "classification":
            return None
        return pd.Series(self.encode_target(targets).numpy(), index=targets.index)

    def encode_target(self, targets: pd.DataFrame | pd.Series) -> Tensor:
        """Target values as a tensor: class indices (long) or standardised numbers (float)."""
        target = targets.iloc[:, 0] if isinstance(targets, pd.DataFrame) else targets
        if self.task_type == "regression":
            values = pd.to_numeric(target, errors="coerce")
            if values.isna().any():
                bad = target[values.isna()].iloc[0]
                raise DataError(f"regression target {self.target!r} holds a non-number: {bad!r}")
            scaled = (values.to_numpy(dtype=np.float64) - self.target_mean) / self.target_std
            return torch.from_numpy(scaled.astype(np.float32))
        assert self.classes is not None
        return encode_classes(target, self.classes, self.target)

    # ------------------------------------------------------------------ setup
    def _split(self, frame: pd.DataFrame, stratify: pd.Series | None) -> dict[str, TableRows]:
        """The rows of each split: ``train``, ``val`` and (unless ``data.test_path`` is set) ``test``."""
        if self.cv_folds is not None:
            labels = None if stratify is None else stratify.to_numpy()
            parts = cv_split(
                len(frame), self.cv_folds, self.cv_fold, self.val_fraction, self.split_seed, labels
            )
        else:
            test_fraction = None if self.test_path else self.test_fraction
            parts = split_rows(len(frame), self.val_fraction, test_fraction, self.split_seed, stratify)
        return {name: TableRows(frame, rows) for name, rows in parts.items()}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        frame = self._load_clean(self.path)
        columns = self.feature_columns(frame)
        fitted = self.preprocessor is not None
        if fitted and self.source_rows is not None and len(frame) != self.source_rows:
            log.warning(
                "%s now has %d labelled rows, %d when the model was trained: its validation and test "
                "splits are not the ones of the training run",
                self.path,
                len(frame),
                self.source_rows,
            )
        if not fitted:
            self.source_rows = len(frame)
            self.task_type = self.resolve_task(frame[self.target_columns])
            self.fit_target(frame[self.target_columns])
        # Splits are row positions: each split's rows are gathered where they are fitted or encoded.
        splits = self._split(frame, self.stratify_labels(frame[self.target_columns]))
        if self.test_path:
            require_file(self.test_path, "data.test_path")
            splits["test"] = TableRows(self._load_clean(self.test_path))
        if not fitted:
            self._fit_features(splits["train"], columns)
            self.fit_target_statistics(splits["train"].take(self.target_columns))
        self.datasets = {name: self.make_dataset(part.frame, part.rows) for name, part in splits.items()}
        log.info(
            "data: %s rows train / %s val / %s test, %d features%s",
            *(len(self.datasets[s]) for s in ("train", "val", "test")),
            self.preprocessor.num_features,
            "" if self.cv_folds is None else f" (fold {self.cv_fold} of {self.cv_folds})",
        )

    def _fit_features(self, train: TableRows, columns: list[str]) -> None:
        """Fit the preprocessing on the training rows ``train`` of the feature ``columns``."""
        frame = train.frame
        number_columns = [c for c in columns if c not in self.categorical and is_number_column(frame[c])]
        # The other columns' training rows (a text column cleaned to categories: its integer codes).
        other = [c for c in columns if c not in number_columns]
        other_rows = train.take(other)
        coerced = [c for c in numeric_text_columns(other_rows, other) if c not in self.categorical]
        if coerced:
            log.info("reading text column(s) as numbers: %s", ", ".join(coerced))
            # The training rows parsed on their own (decimal commas are read as they are written there).
            frame = frame.assign(**{col: parse_numbers_of_rows(frame[col], train.rows) for col in coerced})
        numeric = [c for c in columns if c in number_columns or c in coerced]
        statistics = fit_number_columns(frame, numeric, train.rows)  # None: no number in the training rows
        empty = [c for c, fitted in zip(numeric, statistics, strict=True) if fitted is None]
        if empty:
            log.warning("ignoring column(s) with no numbers in the training split: %s", ", ".join(empty))
            statistics = [fitted for fitted in statistics if fitted is not None]
            numeric = [c for c in numeric if c not in empty]
        categorical = [c for c in columns if c not in numeric and c not in empty]
        if not numeric and not categorical:
            raise DataError(
                f"no feature to learn from: column(s) {', '.join(map(repr, empty))} have no values in the "
                "training split; check data.features and data.drop"
            )
        for col in [c for c in columns if c not in empty]:
            if col in categorical:
                series = other_rows[col]
            elif train.rows is None:
                series = frame[col]
            elif whole_numbers(frame[col].take(train.rows[:1000])):  # else fractions: not an id
                series = frame[col].take(train.rows)
            else:
                continue
            if looks_like_id(series, categorical=col in categorical):
                log.warning(
                    "column %r looks like an id (a distinct value in almost every row); add it to data.drop",
                    col,
                )
        categories = fit_category_columns(other_rows, categorical)
        self.preprocessor = TabularPreprocessor.from_statistics(
            numeric, categorical, statistics, categories, self.categorical_encoding
        )

    def transform_features(
        self, frame: pd.DataFrame, rows: np.ndarray | None = None
    ) -> tuple[Tensor, Tensor]:
        """Apply the fitted preprocessing to the rows ``rows`` (positions; default: all) of ``frame``
        (columns as in the training file)."""
        assert self.preprocessor is not None, "setup() or load_state_dict() first"
        prep = self.preprocessor
        missing = [c for c in prep.numeric + prep.categorical if c not in frame.columns]
        if missing:
            raise DataError(f"input lacks feature column(s) used in training: {', '.join(missing)}")
        text = [c for c in prep.numeric if not is_number_column(frame[c])]
        if text:  # numbers stored as text, these rows parsed on their own (the frame is left as it is)
            frame = frame.assign(**{col: parse_numbers_of_rows(frame[col], rows) for col in text})
        return prep.transform(frame, rows)

    def make_dataset(self, frame: pd.DataFrame, rows: np.ndarray | None = None) -> TensorBatchDataset:
        """Tensors ``(x_num, x_cat, y)`` of the labelled rows ``rows`` (positions; all: None) of ``frame``."""
        x_num, x_cat = self.transform_features(frame, rows)
        targets = TableRows(frame, rows).take(self.target_columns)
        return TensorBatchDataset(x_num, x_cat, self.encode_target(targets))

    def load_inputs(self, path: str) -> tuple[TensorBatchDataset, pd.DataFrame]:
        """Unlabelled rows for prediction: ``(dataset of (x_num, x_cat), their id columns)``.

        The id columns are the ``drop`` columns present in the file, passed through to the output.
        """
        if not Path(path).is_file():
            raise DataError(f"input file not found: {path} (check input)")
        frame = clean_frame(read_table(path, self.column_names, self.na_values), self.na_values)
        x_num, x_cat = self.transform_features(frame)
        ids = frame[[c for c in self.drop if c in frame.columns]].reset_index(drop=True)
        return TensorBatchDataset(x_num, x_cat), ids

    # ------------------------------------------------------------------ data contract
    def data_spec(self) -> DataSpec:
        """Feature sizes, categorical cardinalities and the target's classes or scale."""
        assert self.preprocessor is not None, "setup() or load_state_dict() first"
        return DataSpec(
            task_type=self.task_type,
            modality="table",
            inputs={
                "in_features": self.preprocessor.num_features,
                "cat_cardinalities": list(self.preprocessor.cardinalities),
            },
            classes=None if self.classes is None else list(self.classes),
            class_counts=self.class_counts,
            target_mean=self.target_mean,
            target_std=self.target_std,
        )

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """Fitted preprocessing as plain data; Lightning stores it in every checkpoint."""
        if self.preprocessor is None:
            return {}
        return {
            "preprocessor": self.preprocessor.state_dict(),
            "task_type": self.task_type,
            "classes": self.classes,
            "class_counts": self.class_counts,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "source_rows": self.source_rows,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or state == self.state_dict():
            # Nothing new (e.g. testing the best checkpoint of this very run): keep the prepared splits.
            return
        self.preprocessor = TabularPreprocessor.from_state_dict(state["preprocessor"])
        self.task_type = state["task_type"]
        self.classes = state["classes"]
        self.class_counts = state["class_counts"]
        self.target_mean = state["target_mean"]
        self.target_std = state["target_std"]
        self.source_rows = state.get("source_rows")
        self.datasets = {}
