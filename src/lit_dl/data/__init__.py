"""LightningDataModules and data preparation.

The names below are imported on first use (PEP 562 ``__getattr__``): ``lit_dl.data.churn`` and
``lit_dl.data.activity``, the generators behind ``scripts/make_*.py``, need only numpy and pandas,
and a script that imports them should not pay for torch and Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lit_dl.data.batching import TensorBatchDataset, batch_loader
    from lit_dl.data.churn_datamodule import ChurnDataModule
    from lit_dl.data.forecast import ForecastDataModule
    from lit_dl.data.images import (
        DigitsDataModule,
        ImageDataModule,
        ImageFolderDataModule,
        InMemoryImageDataset,
        TorchvisionDataModule,
    )
    from lit_dl.data.preprocessing import TabularPreprocessor
    from lit_dl.data.sequences import ActivitySequenceDataModule, PaddedSequenceDataset, SequenceDataModule
    from lit_dl.data.tables import read_table
    from lit_dl.data.tabular import TabularDataModule
    from lit_dl.data.text import CharTextDataModule

# public name -> the module that defines it
_SOURCES = {
    "ActivitySequenceDataModule": "sequences",
    "CharTextDataModule": "text",
    "ChurnDataModule": "churn_datamodule",
    "DigitsDataModule": "images",
    "ForecastDataModule": "forecast",
    "ImageDataModule": "images",
    "ImageFolderDataModule": "images",
    "InMemoryImageDataset": "images",
    "PaddedSequenceDataset": "sequences",
    "SequenceDataModule": "sequences",
    "TabularDataModule": "tabular",
    "TabularPreprocessor": "preprocessing",
    "TensorBatchDataset": "batching",
    "TorchvisionDataModule": "images",
    "batch_loader": "batching",
    "read_table": "tables",
}
__all__ = [
    "ActivitySequenceDataModule",
    "CharTextDataModule",
    "ChurnDataModule",
    "DigitsDataModule",
    "ForecastDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "InMemoryImageDataset",
    "PaddedSequenceDataset",
    "SequenceDataModule",
    "TabularDataModule",
    "TabularPreprocessor",
    "TensorBatchDataset",
    "TorchvisionDataModule",
    "batch_loader",
    "read_table",
]


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'lit_dl.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lit_dl.data.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES])
