"""A table whose target is several yes/no columns, each a label of its own."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import Tensor

from lit_dl.data import TabularDataModule

POSITIVE = ("yes", "true", "1", "1.0")


class MultiLabelTable(TabularDataModule):
    """:class:`~lit_dl.data.TabularDataModule` with ``target`` a list of yes/no columns.

    Everything but the target (reading, cleaning, features, splits, checkpoint state, loaders)
    is the parent's; the five target methods below say how labels are read. A cell counts as
    positive when it reads yes/true/1 (any case); anything else (no, "No internet service") is 0.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def resolve_task(self, targets: pd.DataFrame) -> str:
        return "multilabel"

    def fit_target(self, targets: pd.DataFrame) -> None:
        self.classes = [str(c) for c in targets.columns]  # the label names

    def fit_target_statistics(self, train_targets: pd.DataFrame) -> None:
        self.class_counts = self.encode_target(train_targets).sum(dim=0).long().tolist()  # positives

    def stratify_labels(self, targets: pd.DataFrame) -> pd.Series | None:
        return None  # a plain random split: combinations of labels may be too rare to stratify

    def encode_target(self, targets: pd.DataFrame) -> Tensor:
        """``(rows, labels)`` of 0/1 floats."""
        positive = targets.astype(str).apply(lambda column: column.str.strip().str.lower().isin(POSITIVE))
        return torch.tensor(positive.to_numpy(dtype="float32"))
