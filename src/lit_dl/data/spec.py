"""The data contract: what a datamodule tells a task, and what a datamodule must offer.

Data flows one way. A datamodule prepares its data and describes it with a :class:`DataSpec`;
the train verb hands that spec to the task, which sizes its networks, losses and metrics from
it. A task never reads the trainer's datamodule, and a datamodule never reads the task.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import pandas as pd
from torch.utils.data import Dataset

from lit_dl.errors import ConfigError

TaskType = Literal[
    "classification", "multilabel", "regression", "forecasting", "language_model", "generative"
]
Modality = Literal["table", "images", "sequences", "series", "text"]


@dataclass(frozen=True)
class DataSpec:
    """What a task needs to know about its data, as plain values.

    Args:
        task_type: the problem the data poses: ``classification``, ``multilabel``,
            ``regression``, ``forecasting``, ``language_model`` or ``generative`` (no labels
            to predict; a generative model learns the inputs).
        modality: ``table``, ``images``, ``sequences``, ``series`` or ``text``.
        inputs: sizes handed to the network's constructor, e.g. ``in_features`` and
            ``cat_cardinalities`` (tables), ``in_channels`` and ``image_size`` (images),
            ``vocab_size`` (text).
        classes: class names in index order (classification), or label names (multilabel).
        class_counts: training rows per class (for ``balanced`` class weights).
        target_mean, target_std: training statistics of a numeric target (the network sees
            the standardised target; metrics are in the target's units).
        scale: value scale of images: ``unit`` (pixels in [0, 1]) or ``standard``.
        anomaly_classes: class indices kept out of training (``data.exclude_classes``).
        options: what one family needs besides (forecast ``horizon``/``log_target``, text
            ``vocabulary``, the fitted ``table`` transform of a synthetic table, its
            ``sampling``).
    """

    task_type: TaskType
    modality: Modality
    inputs: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | None = None
    class_counts: list[int] | None = None
    target_mean: float = 0.0
    target_std: float = 1.0
    scale: str | None = None
    anomaly_classes: list[int] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes or [])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown data spec field(s): {', '.join(unknown)}")
        return cls(**dict(values))

    @classmethod
    def coerce(cls, value: DataSpec | Mapping[str, Any] | None) -> DataSpec | None:
        if value is None or isinstance(value, DataSpec):
            return value
        return cls.from_dict(value)


@runtime_checkable
class DataSource(Protocol):
    """What every lit_dl datamodule offers besides Lightning's loaders.

    - :meth:`data_spec`: the spec of the prepared data (after ``setup`` or ``load_state_dict``);
    - ``state_dict``/``load_state_dict``: the fitted preparation (scalers, vocabularies,
      encoders) as plain data, which Lightning stores in every checkpoint, so ``eval``,
      ``predict`` and ``sample`` rebuild the data from a checkpoint alone.
    """

    def data_spec(self) -> DataSpec: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class PredictionSource(Protocol):
    """A datamodule whose models ``lit-dl predict`` can run on new files.

    :meth:`load_inputs` reads unlabelled inputs with the fitted preparation and returns them
    with the columns passed through to the output (ids, file names, time stamps).
    """

    def load_inputs(self, path: str) -> tuple[Dataset, pd.DataFrame]: ...
