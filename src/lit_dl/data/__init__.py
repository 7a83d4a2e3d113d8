"""LightningDataModules and data preparation."""

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
