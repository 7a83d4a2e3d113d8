"""What a consumer of an exported model needs besides the graph: ``lit-dl export``'s metadata JSON.

Everything here is read from the fitted state a checkpoint restores (the datamodule's
preprocessing, the task's data spec), never re-derived, and written as plain JSON so that a
program without lit_dl (numpy, pandas and onnxruntime; see ``examples/serve_onnx.py``) can
turn raw rows, images or long-format sequences into the model's inputs and read its outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lit_dl import __version__
from lit_dl.data.images import ImageDataModule
from lit_dl.data.preprocessing import MISSING_CATEGORY, TabularPreprocessor
from lit_dl.data.sequences import SequenceDataModule
from lit_dl.data.tables import DEFAULT_NA_VALUES
from lit_dl.data.tabular import TabularDataModule

# Version of the JSON layout below; a consumer can refuse a layout it does not know.
METADATA_FORMAT = 1

# How lit_dl reads a raw cell, in words, for the consumer who re-implements it.
TEXT_RULES = {
    "cells": (
        "text cells are stripped of surrounding blanks; a cell equal to a missing_values entry is missing"
    ),
    "numbers": (
        "a numeric column given as text is parsed as numbers (cells that are not numbers become missing); "
        "a column with decimal commas and no decimal point anywhere reads the commas as points"
    ),
    "categories": (
        "a category is compared as text: a whole number stored as a float reads as the integer (1.0 -> '1'), "
        f"a missing cell is the category {MISSING_CATEGORY!r}"
    ),
}


def column_preprocessing(prep: TabularPreprocessor) -> dict[str, Any]:
    """The fitted preparation of table columns, per column and in the order the network reads them.

    Numeric columns: missing cells get ``fill_value`` (the training median), then
    ``(value - mean) / scale``. Categorical columns: ``onehot`` appends one indicator per
    category (all zero for a category not seen in training) after the numeric columns;
    ``embedding`` gives ``index`` ``categories.index(value) + 1`` (``0``: unseen) in ``x_cat``.
    """
    numeric = [
        {"name": name, "kind": "numeric", "fill_value": median, "mean": mean, "scale": scale}
        for name, median, mean, scale in zip(prep.numeric, prep.medians, prep.means, prep.scales, strict=True)
    ]
    categorical = [
        {"name": name, "kind": "categorical", "categories": list(categories)}
        for name, categories in zip(prep.categorical, prep.categories, strict=True)
    ]
    if prep.encoding == "onehot":
        inputs = {"x_num": prep.feature_names}
    else:
        inputs = {"x_num": list(prep.numeric), "x_cat": list(prep.categorical)}
    return {
        "columns": numeric + categorical,
        "categorical_encoding": prep.encoding,
        "missing_category": MISSING_CATEGORY,
        "input_columns": inputs,
    }


def table_metadata(datamodule: TabularDataModule) -> dict[str, Any]:
    """Raw table rows -> ``x_num`` (and ``x_cat``): columns, fill values, scaling, category mappings."""
    assert datamodule.preprocessor is not None, "setup() or load_state_dict() first"
    return {
        **column_preprocessing(datamodule.preprocessor),
        "missing_values": list(datamodule.na_values),
        "passthrough_columns": list(datamodule.drop),
        "target": datamodule.target,
        "rules": TEXT_RULES,
    }


def sequence_metadata(datamodule: SequenceDataModule) -> dict[str, Any]:
    """Long-format rows -> ``x (batch, time, features)`` and ``lengths``: the step features and the layout."""
    assert datamodule.preprocessor is not None, "setup() or load_state_dict() first"
    return {
        **column_preprocessing(datamodule.preprocessor),
        "missing_values": list(DEFAULT_NA_VALUES),
        "id_column": datamodule.id_column,
        "time_column": datamodule.time_column,
        "max_length": datamodule.max_length,
        "target": datamodule.target,
        "layout": (
            "one sequence per id: its rows sorted by time_column (numbers, else dates), each row prepared "
            "like a table row into input_columns.x_num features; only the last max_length steps are kept "
            "(null: all); x is (batch, time, features) float32, zero-padded after each sequence's end to "
            "the longest in the batch; lengths (batch,) int64 holds each sequence's number of steps"
        ),
        "rules": TEXT_RULES,
    }


def image_metadata(datamodule: ImageDataModule) -> dict[str, Any]:
    """Image files -> ``image (batch, C, H, W)``: size, colour mode and per-channel normalisation."""
    assert datamodule.image_shape is not None, "setup() or load_state_dict() first"
    channels, height, width = datamodule.image_shape
    return {
        "channels": channels,
        "height": height,
        "width": width,
        "colour_mode": "L (greyscale)" if channels == 1 else "RGB",
        "resize": "bilinear (PIL) to width x height when the image has another size",
        "binarize": datamodule.binarize,
        "mean": list(datamodule.mean),
        "std": list(datamodule.std),
        "layout": (
            "decode to uint8 (height, width[, channels]) in colour_mode, resize, channels first; "
            "binarize 'threshold': pixels >= 128 become 255, others 0 ('stochastic': each pixel is 255 with "
            "probability pixel / 255); then pixel / 255, "
            "minus mean[c], divided by std[c] per channel c; image is (batch, C, H, W) float32"
        ),
    }


def preprocessing_metadata(datamodule: Any) -> dict[str, Any]:
    """The preparation of a supported datamodule (tables, image classes, sequences), as plain data."""
    if isinstance(datamodule, TabularDataModule):
        return table_metadata(datamodule)
    if isinstance(datamodule, SequenceDataModule):
        return sequence_metadata(datamodule)
    if isinstance(datamodule, ImageDataModule):
        return image_metadata(datamodule)
    raise TypeError(f"no export metadata for {type(datamodule).__name__}")


def decision_threshold(task: Any) -> float:
    """The binary classifier's threshold on the positive-class probability, above which it predicts the
    positive class (the task's ``decision_threshold`` buffer; 0.5 for tasks without one)."""
    threshold = getattr(task, "decision_threshold", None)
    return 0.5 if threshold is None else float(threshold)


def export_metadata(
    task: Any,
    datamodule: Any,
    *,
    model_format: str,
    inputs: Sequence[dict[str, Any]],
    outputs: Sequence[dict[str, Any]],
    checkpoint: dict[str, Any],
) -> dict[str, Any]:
    """The whole metadata document written beside an exported model.

    Args:
        task: the restored task (its data spec names the classes and the problem).
        datamodule: the restored datamodule (its fitted preparation).
        model_format: ``onnx`` or ``torchscript``.
        inputs, outputs: name, dtype and shape (names for dynamic axes) of each graph input/output.
        checkpoint: where the model came from: ``path``, ``sha256`` and the checkpoint's own lit_dl
            version, task and datamodule classes.
    """
    spec = task.data_spec
    document: dict[str, Any] = {
        "metadata_format": METADATA_FORMAT,
        "lit_dl_version": __version__,
        "format": model_format,
        "checkpoint": checkpoint,
        "task_type": spec.task_type,
        "modality": spec.modality,
        "inputs": list(inputs),
        "outputs": list(outputs),
        "preprocessing": preprocessing_metadata(datamodule),
    }
    if spec.task_type in ("classification", "multilabel"):
        document["classes"] = list(spec.classes or [])
    if spec.task_type == "classification" and spec.num_classes == 2:
        document["positive_class"] = spec.classes[1]
        document["decision_threshold"] = decision_threshold(task)
        document["decision_rule"] = (
            "prediction is positive_class when probabilities[:, 1] > decision_threshold, else classes[0]"
        )
    return document


__all__ = ["METADATA_FORMAT", "column_preprocessing", "decision_threshold", "export_metadata"]
