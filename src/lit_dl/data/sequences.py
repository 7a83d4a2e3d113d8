"""Sequence classification data: one label per sequence, from a long-format table.

A long-format table has one row per (id, time step): an id column, a time column,
feature columns and a label column that is constant per id. The datamodule groups
rows by id, sorts them by time, prepares the step features exactly like a table
(median imputation, standardisation, one-hot categories; fitted on the training
sequences only), pads the sequences and keeps their lengths so the network can
pack them. Splits are stratified by label, by *sequence* (never by row).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import Dataset

from lit_dl.data.activity import make_activity_frame
from lit_dl.data.base import (
    InMemoryDataModule,
    check_cv_arguments,
    check_split_arguments,
    cv_split,
    on_device_setting,
)
from lit_dl.data.preprocessing import TabularPreprocessor, encode_classes, fit_classes
from lit_dl.data.spec import DataSpec
from lit_dl.data.tables import (
    absolute,
    as_list,
    clean_frame,
    numeric_text_columns,
    parse_numbers,
    read_table,
)
from lit_dl.errors import DataError

log = logging.getLogger(__name__)


class PaddedSequenceDataset(Dataset):
    """Padded sequences ``(N, T, F)`` with lengths; a batch is trimmed to its longest sequence."""

    def __init__(self, x: Tensor, lengths: Tensor, y: Tensor | None = None) -> None:
        self.x, self.lengths, self.y = x, lengths, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([index]))

    def __getitems__(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        lengths = self.lengths[index]
        x = self.x[index, : int(lengths.max())]
        return (x, lengths) if self.y is None else (x, lengths, self.y[index])

    def to(self, device: torch.device | str) -> PaddedSequenceDataset:
        """The same sequences on ``device`` (cutting a batch to its longest one reads a number back)."""
        y = None if self.y is None else self.y.to(device)
        return PaddedSequenceDataset(self.x.to(device), self.lengths.to(device), y)


class SequenceDataModule(InMemoryDataModule):
    """Sequences from a long-format CSV or Parquet file, one label per sequence.

    Batches are ``(x, lengths, y)``: ``x (B, T, F)`` float (padded with zeros after each
    sequence's end), ``lengths (B,)`` and class indices ``y (B,)``.

    Args:
        path: the long-format file.
        id_column: column naming the sequence a row belongs to.
        time_column: column that orders the rows of a sequence (numbers or dates).
        target: label column (one value per sequence; the last row's value is used).
        features: step feature columns; default all but id, time and target.
        categorical: feature columns to treat as categorical even when numeric.
        max_length: keep only the last ``max_length`` steps of longer sequences.
        positive_label: for binary labels, the one that is class 1.
        val_fraction, test_fraction, split_seed: stratified split of the sequences.
        batch_size: sequences per batch.
        on_device: keep the prepared tensors on the training device: ``auto`` (on a GPU when they
            fit in an eighth of its memory), ``true`` or ``false``
            (:class:`~lit_dl.data.batching.TensorBatchLoader`).
        cv_folds, cv_fold: cross-validation (``lit-dl cv``): fold ``cv_fold`` (0-based) of a seeded
            stratified k-fold split of the ids is the test set (all steps of an id in one fold);
            validation ids (``val_fraction`` of all) come from the other folds; ``test_fraction``
            is unused. ``None`` (default): the ordinary split.
    """

    # One sequence per id: a k-fold split of the sequences is a split grouped by id (every step of a
    # customer lands in one fold), so StratifiedKFold over ids is what StratifiedGroupKFold over rows
    # would give, without its per-group search.
    cv_kind = "stratified k-fold of ids (all steps of an id in one fold)"

    def __init__(
        self,
        path: str | None = None,
        id_column: str = "id",
        time_column: str = "time",
        target: str = "label",
        features: Sequence[str] | None = None,
        categorical: Sequence[str] = (),
        max_length: int | None = None,
        positive_label: str | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 42,
        batch_size: int = 64,
        on_device: bool | str = "auto",
        cv_folds: int | None = None,
        cv_fold: int | None = None,
    ) -> None:
        super().__init__()
        check_split_arguments(val_fraction, test_fraction, batch_size)
        cv_folds, cv_fold = check_cv_arguments(cv_folds, cv_fold)
        if max_length is not None and int(max_length) < 1:
            raise DataError(f"data.max_length must be a positive integer or null, got {max_length}")
        features = as_list("features", features) or None
        categorical = as_list("categorical", categorical)
        path = absolute(path)
        self.save_hyperparameters()
        self.path = path
        self.id_column, self.time_column, self.target = id_column, time_column, target
        self.features = features
        self.categorical = categorical
        self.max_length = int(max_length) if max_length else None
        self.positive_label = positive_label
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.split_seed = int(split_seed)
        self.batch_size = int(batch_size)
        self.on_device = on_device_setting(on_device)
        self.cv_folds, self.cv_fold = cv_folds, cv_fold
        # Fitted state.
        self.task_type = "classification"
        self.preprocessor: TabularPreprocessor | None = None
        self.classes: list[str] | None = None
        self.class_counts: list[int] | None = None
        self.datasets: dict[str, PaddedSequenceDataset] = {}

    # ------------------------------------------------------------ loading
    def load_frame(self, path: str | None) -> pd.DataFrame:
        """The raw long-format table; subclasses override this to generate or fetch data."""
        if not path:
            raise DataError("data.path is not set: point it at a long-format CSV or Parquet file")
        return read_table(path)

    def _check_columns(self, frame: pd.DataFrame, labelled: bool) -> list[str]:
        needed = {
            "id column (data.id_column)": self.id_column,
            "time column (data.time_column)": self.time_column,
        }
        if labelled:
            needed["target column (data.target)"] = self.target
        for what, column in needed.items():
            if column not in frame.columns:
                raise DataError(f"{what} {column!r} not found; columns are: {', '.join(frame.columns)}")
        special = {self.id_column, self.time_column, self.target}
        features = self.features or [c for c in frame.columns if c not in special]
        missing = [c for c in features if c not in frame.columns]
        if missing:
            raise DataError(
                f"feature column(s) {', '.join(missing)} not found; columns are: {', '.join(frame.columns)}"
            )
        if not features:
            raise DataError("no feature columns: set data.features")
        return features

    def _sorted(self, frame: pd.DataFrame) -> pd.DataFrame:
        order = frame[self.time_column]
        if not pd.api.types.is_numeric_dtype(order):
            parsed = parse_numbers(order)
            if parsed.notna().all():
                order = parsed
            else:
                order = pd.to_datetime(order, errors="coerce")
                if order.isna().any():
                    bad = frame.loc[order.isna(), self.time_column].iloc[0]
                    raise DataError(f"time column {self.time_column!r} holds {bad!r}: not a number or a date")
        return (
            frame.assign(_order=order)
            .sort_values([self.id_column, "_order"], kind="stable")
            .drop(columns="_order")
        )

    # ------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        frame = clean_frame(self.load_frame(self.path))
        features = self._check_columns(frame, labelled=True)
        frame = self._sorted(frame)
        # The label may sit on every row or only on some (e.g. the last): take the last one given,
        # keep all the steps, and drop only the sequences that have no label at all.
        labels = frame.groupby(self.id_column, sort=False)[self.target].last().dropna()
        frame = frame[frame[self.id_column].isin(labels.index)]
        if labels.empty:
            raise DataError(f"target column {self.target!r} has no values")
        if labels.nunique() > max(20, 0.5 * len(labels)):
            raise DataError(
                f"target {self.target!r} has {labels.nunique()} distinct values over {len(labels)} "
                "sequences: it looks continuous, not a label; set data.target to the label column"
            )
        if self.classes is None:
            self.classes = fit_classes(labels, self.target, self.positive_label)
        y = encode_classes(labels, self.classes, self.target)
        ids = labels.index.to_numpy()
        splits = self._split(y.numpy())
        if self.preprocessor is None:
            train_rows = frame[frame[self.id_column].isin(ids[splits["train"]])]
            self._fit(train_rows, features)
            self.class_counts = torch.bincount(y[splits["train"]], minlength=len(self.classes)).tolist()
        for name, index in splits.items():
            rows = frame[frame[self.id_column].isin(ids[index])]
            x, lengths, _ = self._tensors(rows)
            self.datasets[name] = PaddedSequenceDataset(x, lengths, y[index])
        log.info(
            "data: %d / %d / %d sequences (train / val / test), up to %d steps, %d features%s",
            *(len(self.datasets[s]) for s in ("train", "val", "test")),
            max(int(d.lengths.max()) for d in self.datasets.values()),
            self.preprocessor.num_features,
            "" if self.cv_folds is None else f" (fold {self.cv_fold} of {self.cv_folds})",
        )

    def _split(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Sorted indices of the train/val/test sequences: stratified by label, seeded by ``split_seed``;
        with ``cv_folds``, fold ``cv_fold`` of a k-fold split is the test set."""
        if self.cv_folds is not None:
            return cv_split(
                len(labels),
                self.cv_folds,
                self.cv_fold,
                self.val_fraction,
                self.split_seed,
                labels,
                "sequences",
            )
        try:
            rest, test = train_test_split(
                np.arange(len(labels)),
                test_size=self.test_fraction,
                random_state=self.split_seed,
                stratify=labels,
            )
            train, val = train_test_split(
                rest,
                test_size=self.val_fraction / (1 - self.test_fraction),
                random_state=self.split_seed,
                stratify=labels[rest],
            )
        except ValueError as err:
            raise DataError(f"cannot split {len(labels)} sequences stratified by label: {err}") from err
        return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}

    def _fit(self, rows: pd.DataFrame, features: list[str]) -> None:
        rows = rows.copy()
        for col in numeric_text_columns(rows, features):
            if col not in self.categorical:
                rows[col] = parse_numbers(rows[col])
        numeric = [
            c
            for c in features
            if c not in self.categorical
            and pd.api.types.is_numeric_dtype(rows[c])
            and not pd.api.types.is_bool_dtype(rows[c])
        ]
        categorical = [c for c in features if c not in numeric]
        self.preprocessor = TabularPreprocessor.fit(rows, numeric, categorical, "onehot")

    def _tensors(self, rows: pd.DataFrame) -> tuple[Tensor, Tensor, list[Any]]:
        """Rows of several sequences (sorted) -> padded ``(N, T, F)``, lengths, ids in order."""
        prep = self.preprocessor
        assert prep is not None
        rows = rows.copy()
        for col in prep.numeric:
            rows[col] = parse_numbers(rows[col])
        steps, _ = prep.transform(rows)
        # Rows are sorted by id, so each sequence is a contiguous run of rows.
        id_values = rows[self.id_column].to_numpy()
        starts = np.flatnonzero(np.r_[True, id_values[1:] != id_values[:-1]])
        ids = id_values[starts].tolist()
        sequences = list(torch.split(steps, np.diff(np.r_[starts, len(rows)]).tolist()))
        if self.max_length:
            sequences = [s[-self.max_length :] for s in sequences]
        lengths = torch.tensor([len(s) for s in sequences])
        x = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)
        return x, lengths, ids

    def load_inputs(self, path: str) -> tuple[Dataset, pd.DataFrame]:
        """Unlabelled sequences (long format) for prediction: ``(dataset of (x, lengths), frame of ids)``."""
        if not Path(path).is_file():
            raise DataError(f"input file not found: {path} (check input)")
        frame = clean_frame(read_table(path))
        self._check_columns(frame, labelled=False)
        missing = [
            c for c in self.preprocessor.numeric + self.preprocessor.categorical if c not in frame.columns
        ]
        if missing:
            raise DataError(f"input lacks feature column(s) used in training: {', '.join(missing)}")
        x, lengths, ids = self._tensors(self._sorted(frame))
        return PaddedSequenceDataset(x, lengths), pd.DataFrame({self.id_column: ids})

    # ------------------------------------------------------------ task wiring and state
    def data_spec(self) -> DataSpec:
        """Step features per month and the target's classes."""
        assert self.preprocessor is not None, "setup() or load_state_dict() first"
        return DataSpec(
            task_type="classification",
            modality="sequences",
            inputs={"in_features": self.preprocessor.num_features},
            classes=list(self.classes),
            class_counts=self.class_counts,
        )

    def state_dict(self) -> dict[str, Any]:
        if self.preprocessor is None:
            return {}
        return {
            "preprocessor": self.preprocessor.state_dict(),
            "classes": self.classes,
            "class_counts": self.class_counts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or state == self.state_dict():
            return
        self.preprocessor = TabularPreprocessor.from_state_dict(state["preprocessor"])
        self.classes, self.class_counts = state["classes"], state["class_counts"]
        self.datasets = {}


class ActivitySequenceDataModule(SequenceDataModule):
    """The embedded default: synthetic monthly customer activity (see :mod:`lit_dl.data.activity`).

    Args:
        n_customers: sequences to generate.
        max_months: the longest history.
        data_seed: seed of the generator.
        **kwargs: see :class:`SequenceDataModule`; with ``path`` set, that file is read instead.
    """

    def __init__(
        self, n_customers: int = 3000, max_months: int = 60, data_seed: int = 0, **kwargs: Any
    ) -> None:
        kwargs.setdefault("id_column", "customer_id")
        kwargs.setdefault("time_column", "month")
        kwargs.setdefault("target", "churn")
        super().__init__(**kwargs)
        self.n_customers, self.max_months, self.data_seed = int(n_customers), int(max_months), int(data_seed)

    def load_frame(self, path: str | None) -> pd.DataFrame:
        if path:
            return super().load_frame(path)
        return make_activity_frame(self.n_customers, self.max_months, self.data_seed)


__all__ = ["ActivitySequenceDataModule", "PaddedSequenceDataset", "SequenceDataModule"]
