"""The embedded default data: synthetic customer churn, no download needed."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lit_dl.data.churn import make_churn_frame
from lit_dl.data.tabular import TabularDataModule


class EmbeddedChurnTable:
    """Mixin for a table datamodule: the seeded synthetic churn table instead of a file.

    Also an example of extending lit_dl: a new data source is one ``load_frame`` override.
    Put it before the datamodule class: ``class MyChurn(EmbeddedChurnTable, TabularDataModule)``.

    Args:
        n_rows: customers to generate.
        data_seed: seed of the generator (the table is the same for the same seed).
        **kwargs: everything the datamodule takes; with ``path`` set, that file is read
            instead (a churn table of your own with the same columns).
    """

    def __init__(self, n_rows: int = 10000, data_seed: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("target", "churn")
        kwargs.setdefault("drop", ["customer_id"])
        super().__init__(**kwargs)
        self.n_rows = int(n_rows)
        self.data_seed = int(data_seed)

    def load_frame(self, path: str | None) -> pd.DataFrame:
        if path:
            return super().load_frame(path)  # type: ignore[misc]
        return make_churn_frame(self.n_rows, self.data_seed)


class ChurnDataModule(EmbeddedChurnTable, TabularDataModule):
    """:class:`TabularDataModule` over the seeded synthetic churn table (see :class:`EmbeddedChurnTable`)."""
