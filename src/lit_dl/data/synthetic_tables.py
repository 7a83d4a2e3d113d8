"""Tables prepared for generative training: split, reversible transform, raw frames for the report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lit_dl.data.base import InMemoryDataModule, check_split_arguments, on_device_setting, world
from lit_dl.data.batching import TensorBatchDataset, train_loader
from lit_dl.data.churn_datamodule import EmbeddedChurnTable
from lit_dl.data.preprocessing import as_text
from lit_dl.data.spec import DataSpec
from lit_dl.data.table_transform import TableTransform
from lit_dl.data.tables import (
    DEFAULT_NA_VALUES,
    MAX_AUTO_CLASSES,
    absolute,
    as_list,
    clean_frame,
    numeric_text_columns,
    parse_numbers,
    read_table,
    require_columns,
    require_file,
    split_frame,
)
from lit_dl.errors import DataError

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")
# How training batches are drawn (data.sampling): shuffled rows, or CTGAN's training-by-sampling.
SAMPLING = ("uniform", "conditional")


def label_values(labels: pd.Series) -> list[str]:
    """The distinct values of a label column as text (``1.0`` -> ``"1"``), sorted; missing left out."""
    return sorted({str(v) for v in as_text(labels).dropna()})


class TrainingBySampling(Dataset):
    """CTGAN's training-by-sampling: each row comes with a condition it satisfies.

    For each requested row a categorical column is drawn uniformly, one of its categories with
    probability proportional to the log of its frequency (so rare categories are seen often),
    then a real row with that category. Items are ``(rows (B, D), conditions (B, cond_dim))``.
    The draw is seeded by the batch's (shuffled) indices: reproducible, and different per batch
    and per DDP rank.

    Args:
        data: transformed rows ``(N, D)``.
        codes: slot of each categorical column per row ``(N, C)``.
        sizes: slots per categorical column (their sum is ``cond_dim``).
    """

    def __init__(self, data: Tensor, codes: np.ndarray, sizes: Sequence[int]) -> None:
        self.data = data
        self.sizes = list(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.cond_dim = int(sum(self.sizes))
        # Per column: rows sorted by category, where each category starts, how many rows it has.
        self.order = [np.argsort(codes[:, j], kind="stable") for j in range(codes.shape[1])]
        self.counts = [np.bincount(codes[:, j], minlength=k) for j, k in enumerate(self.sizes)]
        self.starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in self.counts]
        logs = [np.log1p(c) for c in self.counts]
        self.probs = [w / w.sum() for w in logs]

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        n = len(indices)
        cond = np.zeros((n, self.cond_dim), dtype=np.float32)
        if not self.sizes:
            return self.data[torch.as_tensor(indices, dtype=torch.long)], torch.from_numpy(cond)
        rng = np.random.default_rng([int(i) for i in indices])
        column = rng.integers(len(self.sizes), size=n)
        rows = np.empty(n, dtype=np.int64)
        for j in np.unique(column):
            chosen = np.flatnonzero(column == j)
            category = rng.choice(self.sizes[j], size=len(chosen), p=self.probs[j])
            pick = (rng.random(len(chosen)) * self.counts[j][category]).astype(np.int64)
            rows[chosen] = self.order[j][self.starts[j][category] + pick]
            cond[chosen, self.offsets[j] + category] = 1.0
        return self.data[torch.from_numpy(rows)], torch.from_numpy(cond)


class SyntheticTableDataModule(InMemoryDataModule):
    """A table (CSV or Parquet) for training a generative model of its rows.

    Cleaning as in :class:`~lit_dl.data.TabularDataModule` (NA markers, numbers stored as
    text read as numbers); a seeded train/val/test split, stratified by ``target`` when one is
    given; the :class:`~lit_dl.data.table_transform.TableTransform` fitted on training rows
    only; batches are transformed rows ``(B, D)`` (with ``sampling="conditional"``, training
    batches also carry conditions ``(B, cond_dim)``: :class:`TrainingBySampling`). The cleaned
    raw splits stay in :attr:`frames` for the synthetic-data report; the fitted transform is
    saved in checkpoints as plain data (once: the task gets it from :meth:`data_spec`).

    Args:
        path: CSV or Parquet file.
        target: a label column (stratifies the split, is the label of the report's
            machine-learning efficacy, and is always categorical when it has few values).
        drop: identifier columns: not modelled; samples get fresh ids.
        categorical: numeric columns to model as categories (codes, flags).
        column_names: names for a file without a header row.
        na_values: cell values that mean "missing".
        positive_label: the label counted as positive in the report's F1 (default: the rarer one).
        test_path: a separate file of real held-out rows; otherwise carved from ``path``.
        val_fraction, test_fraction: shares of rows for validation and test.
        split_seed: seed of the split.
        max_modes: mixture components per numeric column.
        zero_mode_share: a numeric column with at least this share of exact zeros gets an exact-zero
            mode (:mod:`lit_dl.data.table_transform`); None: none (the default).
        max_fit_rows: rows the mixtures are fitted on (a seeded sample of larger tables).
        batch_size: rows per batch.
        on_device: keep the prepared tensors on the training device: ``auto`` (on a GPU when they
            fit in an eighth of its memory), ``true`` or ``false``
            (:class:`~lit_dl.data.batching.TensorBatchLoader`).
        sampling: how training rows are drawn: ``uniform`` (shuffled rows; what a VAE learns
            from) or ``conditional`` (CTGAN's training-by-sampling: each row with a condition
            vector, rare categories drawn at the log of their frequency; what the conditional
            GAN needs). The task checks it when it is built.
        exclude_classes: values of ``target`` whose rows are left out of training and validation
            but kept in the test split, to learn the normal rows and score the others as anomalies
            (``test/anomaly_auroc`` of a tabular VAE). The target is then the anomaly label, not
            a column of the model: :attr:`label_column` names it, :attr:`target` is None (the
            synthetic-data report sees no label), test batches are ``(rows, class index)``
            (index into :attr:`classes`, -1 where the label is missing) and :attr:`frames` hold the
            normal rows without the label.
    """

    def __init__(
        self,
        path: str | None = None,
        target: str | None = None,
        drop: Sequence[str] = (),
        categorical: Sequence[str] = (),
        column_names: Sequence[str] | None = None,
        na_values: Sequence[str] = DEFAULT_NA_VALUES,
        positive_label: str | None = None,
        test_path: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 42,
        max_modes: int = 10,
        zero_mode_share: float | None = None,
        max_fit_rows: int = 20000,
        batch_size: int = 500,
        on_device: bool | str = "auto",
        sampling: str = "uniform",
        exclude_classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        check_split_arguments(val_fraction, test_fraction, batch_size)
        if sampling not in SAMPLING:
            raise DataError(f"data.sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}")
        exclude_classes = as_list("exclude_classes", exclude_classes)
        if exclude_classes and not target:
            raise DataError(
                "data.exclude_classes names values of data.target, which is not set: "
                "set data.target to the column that labels the rows (e.g. data.target=churn)"
            )
        if float(val_fraction) + (0 if test_path else float(test_fraction)) >= 0.9:
            raise DataError("data.val_fraction + data.test_fraction leave under 10% of rows for training")
        drop, categorical = as_list("drop", drop), as_list("categorical", categorical)
        column_names = as_list("column_names", column_names) or None
        path, test_path = absolute(path), absolute(test_path)
        self.save_hyperparameters()
        self.path, self.test_path = path, test_path
        self.target = str(target) if target else None
        self.drop, self.categorical, self.column_names = drop, categorical, column_names
        self.na_values = list(na_values)
        self.positive_label = None if positive_label is None else str(positive_label)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.split_seed = int(split_seed)
        self.max_modes, self.max_fit_rows = int(max_modes), int(max_fit_rows)
        if zero_mode_share is not None and not 0.0 < float(zero_mode_share) <= 1.0:
            raise DataError(f"data.zero_mode_share must be in (0, 1] or null, got {zero_mode_share}")
        self.zero_mode_share = None if zero_mode_share is None else float(zero_mode_share)
        self.batch_size = int(batch_size)
        self.on_device = on_device_setting(on_device)
        self.sampling = sampling
        self.exclude_classes = exclude_classes
        # With held-out classes the target labels the test rows (normal or not) and is not modelled.
        self.label_column = self.target if exclude_classes else None
        if self.label_column:
            self.target = None

        # Fitted state (restored from a checkpoint by load_state_dict).
        self.transform: TableTransform | None = None
        self.classes: list[str] | None = None  # values of label_column (with exclude_classes)
        self.numeric_text: list[str] = []  # text columns read as numbers
        self.frames: dict[str, pd.DataFrame] = {}
        self.datasets: dict[str, TensorBatchDataset] = {}

    # ------------------------------------------------------------------ loading
    def load_frame(self, path: str | None) -> pd.DataFrame:
        """Read the raw table. Subclasses override this to generate data."""
        return read_table(path, self.column_names, self.na_values)

    def _load_clean(self, path: str | None) -> pd.DataFrame:
        frame = clean_frame(self.load_frame(path), self.na_values)
        wanted = [c for c in [self.target, self.label_column, *self.drop, *self.categorical] if c]
        require_columns(
            frame, wanted, "column(s)", path or "the data", "check data.target, data.drop, data.categorical"
        )
        for col in self.numeric_text:
            frame[col] = parse_numbers(frame[col])
        return frame

    def _categorical_columns(self, frame: pd.DataFrame) -> list[str]:
        columns = list(self.categorical)
        if self.target and self.target not in columns:
            values = frame[self.target].dropna()
            few = values.nunique() <= MAX_AUTO_CLASSES and (
                not pd.api.types.is_numeric_dtype(values)
                or bool(np.all(np.mod(values.to_numpy(float), 1) == 0))
            )
            if few:
                columns.append(self.target)
        return columns

    def _align_labels(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Labels of another file written as training labels (UCI Adult's test file ends ``>50K.``)."""
        assert self.transform is not None
        spec = next((c for c in self.transform.discrete if c["name"] == self.target), None)
        if spec is None:
            return frame
        known = {str(c) for c in spec["categories"]}
        frame = frame.copy()
        frame[self.target] = frame[self.target].map(
            lambda v: v[:-1] if isinstance(v, str) and v not in known and v.rstrip(".") in known else v
        )
        return frame

    def _known_rows(self, frame: pd.DataFrame, split: str) -> pd.DataFrame:
        """Rows whose categories were all seen in training, without gaps in columns that had none there
        (others cannot be transformed; warned)."""
        assert self.transform is not None
        keep = pd.Series(True, index=frame.index)
        for spec in self.transform.discrete:
            values = frame[spec["name"]]
            known = {str(c) for c in spec["categories"]}
            ok = values.map(lambda v, known=known: str(v) in known) | (values.isna() & spec["has_missing"])
            keep &= ok
        for spec in self.transform.modelled:
            if spec["kind"] == "numeric" and not spec["has_missing"]:
                keep &= frame[spec["name"]].notna()
        if not keep.all():
            log.warning(
                "%s split: %d row(s) with categories or missing values not seen in training left out",
                split,
                int((~keep).sum()),
            )
        return frame.loc[keep].reset_index(drop=True)

    # ------------------------------------------------------------------ setup
    def _split(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        stratify = None
        label = self.target or self.label_column
        if label:
            labels = frame[label].astype(object).where(frame[label].notna(), "__missing__").astype(str)
            stratify = labels if labels.value_counts().min() >= 2 else None
        test_fraction = None if self.test_path else self.test_fraction
        return split_frame(frame, self.val_fraction, test_fraction, self.split_seed, stratify)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        fitted = self.transform is not None
        if not fitted:
            raw = clean_frame(self.load_frame(self.path), self.na_values)
            skip = set(self.categorical) | set(self.drop) | {c for c in (self.target, self.label_column) if c}
            self.numeric_text = [c for c in numeric_text_columns(raw, list(raw.columns)) if c not in skip]
            if self.numeric_text:
                log.info("reading text column(s) as numbers: %s", ", ".join(self.numeric_text))
        frame = self._load_clean(self.path)
        splits = self._split(frame)
        if self.test_path:
            require_file(self.test_path, "data.test_path")
            splits["test"] = self._load_clean(self.test_path)
        labelled_test = None
        if self.label_column:
            if self.classes is None:
                self.classes = label_values(pd.concat([frame, splits["test"]])[self.label_column])
            splits, labelled_test = self._hold_out_classes(splits)
        if not fitted:
            self.transform = TableTransform.fit(
                splits["train"],
                categorical=self._categorical_columns(splits["train"]),
                ids=self.drop,
                max_modes=self.max_modes,
                max_fit_rows=self.max_fit_rows,
                seed=self.split_seed,
                zero_mode_share=self.zero_mode_share,
            )
        if labelled_test is not None:
            # Every test row, labelled; the report's frame keeps the normal ones (what the model learnt).
            labelled_test = self._known_rows(labelled_test, "test")
            splits["test"] = self._normal_rows(labelled_test)
        for name in ("val", "test") if labelled_test is None else ("val",):
            splits[name] = self._known_rows(self._align_labels(splits[name]), name)
        self.frames = splits
        self.datasets = {
            name: TensorBatchDataset(torch.from_numpy(self.transform.transform(splits[name])))
            for name in (STAGES if labelled_test is None else ("train", "val"))
        }
        if labelled_test is not None:
            self.datasets["test"] = TensorBatchDataset(
                torch.from_numpy(self.transform.transform(labelled_test)), self.class_indices(labelled_test)
            )
            log.info(
                "data: %d of %d test rows have %s in %s (held out of training)",
                int(self.excluded_mask(labelled_test).sum()),
                len(labelled_test),
                self.label_column,
                ", ".join(self.exclude_classes),
            )
        log.info(
            "data: %d rows train / %d val / %d test, %d columns -> %d transformed features",
            *(len(self.frames[s]) for s in STAGES),
            len(self.transform.modelled),
            self.transform.output_dim,
        )

    # ------------------------------------------------------------------ held-out classes
    def excluded_mask(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows ``(N,)`` whose label is one of ``exclude_classes`` (bool)."""
        assert self.label_column is not None
        return as_text(frame[self.label_column]).isin(self.exclude_classes).to_numpy(dtype=bool)

    def class_indices(self, frame: pd.DataFrame) -> Tensor:
        """Each row's label as an index into :attr:`classes` ``(N,)`` (-1: missing or unknown)."""
        assert self.label_column is not None and self.classes is not None
        index = {name: i for i, name in enumerate(self.classes)}
        texts = as_text(frame[self.label_column])
        return torch.tensor([index.get(t, -1) if isinstance(t, str) else -1 for t in texts], dtype=torch.long)

    def _hold_out_classes(
        self, splits: dict[str, pd.DataFrame]
    ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        """Training and validation splits of normal rows without the label column; the test split."""
        assert self.label_column is not None and self.classes is not None
        unknown = [c for c in self.exclude_classes if c not in self.classes]
        if unknown:
            raise DataError(
                f"data.exclude_classes: no value {unknown[0]!r} in column {self.label_column!r}; "
                f"its values are: {', '.join(self.classes)}"
            )
        normal = {name: self._normal_rows(splits[name]) for name in ("train", "val")}
        if normal["train"].empty or normal["val"].empty:
            raise DataError(
                f"data.exclude_classes={self.exclude_classes} leaves no training or validation rows: "
                f"keep at least one value of {self.label_column!r}"
            )
        return normal, splits["test"]

    def _normal_rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of classes not held out, without the label column."""
        assert self.label_column is not None
        kept = frame.loc[~self.excluded_mask(frame)]
        return kept.drop(columns=[self.label_column]).reset_index(drop=True)

    def train_dataloader(self) -> DataLoader:
        if self.sampling == "uniform":
            return super().train_dataloader()
        assert self.transform is not None
        data = self.datasets["train"].tensors[0]
        dataset = TrainingBySampling(
            data, self.transform.category_codes(data.numpy()), self.transform.condition_sizes()
        )
        generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
        return train_loader(dataset, self.batch_size, generator, world_size=world(self)[1])

    # ------------------------------------------------------------------ report helpers
    def resolved_positive_label(self) -> str | None:
        """The target label counted as positive: ``positive_label``, else the rarer of two classes."""
        if not self.target:
            return None
        if self.positive_label is not None:
            return self.positive_label
        train = self.frames.get("train")
        if train is None:
            return None
        counts = train[self.target].astype(str).value_counts()
        return str(counts.index[-1]) if len(counts) == 2 else None

    # ------------------------------------------------------------------ data contract
    def data_spec(self) -> DataSpec:
        """The fitted transform (plain data: a task builds its networks and samples with it), the sampling."""
        assert self.transform is not None, "setup() or load_state_dict() first"
        held_out = None
        if self.classes is not None and self.exclude_classes:
            held_out = [i for i, name in enumerate(self.classes) if name in self.exclude_classes]
        return DataSpec(
            task_type="generative",
            modality="table",
            inputs={"data_dim": self.transform.output_dim},
            classes=None if held_out is None else list(self.classes or []),
            anomaly_classes=held_out,
            options={"table": self.transform.state_dict(), "sampling": self.sampling},
        )

    def read_inputs(self, path: str) -> pd.DataFrame:
        """New rows (``lit-dl predict``, ``lit-dl embed``), cleaned as the training rows were.

        Every modelled column must be there; others (ids, a label) are kept as they are.
        """
        assert self.transform is not None, "setup() or load_state_dict() first"
        require_file(path, "input")
        frame = clean_frame(read_table(path, self.column_names, self.na_values), self.na_values)
        modelled = [c["name"] for c in self.transform.modelled]
        require_columns(frame, modelled, "column(s) the model was trained on", path, "add them to the input")
        for col in self.numeric_text:
            if col in frame.columns:
                frame[col] = parse_numbers(frame[col])
        return frame

    def inputs_from_frame(self, frame: pd.DataFrame) -> tuple[TensorBatchDataset, pd.DataFrame]:
        """Transformed rows of :meth:`read_inputs`' frame and the columns passed through: the ids
        (``drop``) and, with ``exclude_classes``, the label, where the input has them."""
        assert self.transform is not None, "setup() or load_state_dict() first"
        rows = torch.from_numpy(self.transform.transform(frame))
        passed = [c for c in [*self.drop, self.label_column] if c and c in frame.columns]
        return TensorBatchDataset(rows), frame[passed].reset_index(drop=True)

    def load_inputs(self, path: str) -> tuple[Dataset, pd.DataFrame]:
        """New rows to score (a tabular VAE's anomaly score): ``(dataset of rows (N, D), id columns)``."""
        return self.inputs_from_frame(self.read_inputs(path))

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """The fitted transform as plain data; Lightning stores it in every checkpoint."""
        if self.transform is None:
            return {}
        state = {"transform": self.transform.state_dict(), "numeric_text": list(self.numeric_text)}
        if self.classes is not None:
            state["classes"] = list(self.classes)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self.transform = TableTransform.from_state_dict(state_dict["transform"])
        self.numeric_text = list(state_dict.get("numeric_text", []))
        if state_dict.get("classes") is not None:
            self.classes = [str(c) for c in state_dict["classes"]]


class ChurnSyntheticDataModule(EmbeddedChurnTable, SyntheticTableDataModule):
    """:class:`SyntheticTableDataModule` over the embedded synthetic churn table (no download).

    Takes ``n_rows`` and ``data_seed`` (see :class:`~lit_dl.data.churn_datamodule.EmbeddedChurnTable`)
    and everything :class:`SyntheticTableDataModule` takes.
    """
