"""Serve a table model exported by ``lit-dl export format=onnx`` with numpy, pandas and onnxruntime only.

    lit-dl export ckpt_path=RUN/checkpoints/best.ckpt format=onnx output=model.onnx
    python examples/serve_onnx.py model.onnx new_customers.csv predictions.csv

No lit_dl here: everything the preparation needs is in ``model.onnx.json`` (written beside the
model). The preparation follows lit_dl's: blank and missing-marker cells are missing, numbers
given as text are parsed, missing numbers get the training median, numbers are standardised,
categories are one-hot encoded (or indexed for embeddings) with missing as its own category and
unseen categories as all zeros (index 0). The tests check that this gives the probabilities
``lit-dl predict`` gives (tests/test_export.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pandas as pd


def read_metadata(model_path: str | Path) -> dict[str, Any]:
    """The metadata JSON written beside the model (``model.onnx`` -> ``model.onnx.json``)."""
    metadata = json.loads(Path(f"{model_path}.json").read_text())
    if metadata["metadata_format"] != 1 or metadata["modality"] != "table":
        raise ValueError("this example serves table models (metadata_format 1)")
    return metadata


def read_rows(path: str | Path, metadata: dict[str, Any]) -> pd.DataFrame:
    """Raw rows from a CSV file, the missing-value markers of the training data read as missing."""
    missing = metadata["preprocessing"]["missing_values"]
    return pd.read_csv(path, na_values=missing, keep_default_na=True, skipinitialspace=True)


def clean_text(column: pd.Series, missing_values: list[str]) -> pd.Series:
    """Text cells stripped of blanks; a cell equal to a missing-value marker becomes missing."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column
    text = column.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
    return text.where(~text.isin({m.strip() for m in missing_values}), np.nan)


def as_numbers(column: pd.Series) -> np.ndarray:
    """Numbers (float64), also from text; decimal commas read as points when no cell has a point."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64)
    text = column.astype(object).where(column.notna())
    present = text.dropna().astype(str)
    if len(present) and not present.str.contains(".", regex=False).any():
        text = text.map(lambda v: v.replace(",", ".") if isinstance(v, str) else v)
    return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)


def as_categories(column: pd.Series, missing_category: str) -> np.ndarray:
    """Category text: whole numbers read as floats become integers (1.0 -> "1"), missing cells a category."""

    def text(value: Any) -> str:
        if isinstance(value, float | np.floating) and float(value).is_integer():
            return str(int(value))
        if pd.isna(value):
            return missing_category
        return value.strip() if isinstance(value, str) else str(value)

    return column.astype(object).map(text).to_numpy(dtype=object)


def prepare_table(frame: pd.DataFrame, metadata: dict[str, Any]) -> dict[str, np.ndarray]:
    """Raw rows -> the model's inputs (``x_num``, and ``x_cat`` for category embeddings)."""
    prep = metadata["preprocessing"]
    frame = frame.apply(lambda column: clean_text(column, prep["missing_values"]))
    numeric_parts, onehot_parts, indices = [], [], []
    for column in prep["columns"]:
        values = frame[column["name"]]
        if column["kind"] == "numeric":
            numbers = as_numbers(values)
            numbers = np.where(np.isnan(numbers), column["fill_value"], numbers)
            numeric_parts.append((numbers - column["mean"]) / column["scale"])
            continue
        categories = as_categories(values, prep["missing_category"])
        if prep["categorical_encoding"] == "onehot":  # unseen categories: all zeros
            onehot_parts.append(
                categories[:, None] == np.asarray(column["categories"], dtype=object)[None, :]
            )
        else:  # embedding index: position + 1, and 0 for a category not seen in training
            lookup = {category: i + 1 for i, category in enumerate(column["categories"])}
            indices.append([lookup.get(c, 0) for c in categories])
    parts = [np.stack(numeric_parts, axis=1)] if numeric_parts else []
    parts += [p.astype(np.float64) for p in onehot_parts]
    inputs = {"x_num": np.concatenate(parts, axis=1).astype(np.float32)}
    if any(i["name"] == "x_cat" for i in metadata["inputs"]):
        inputs["x_cat"] = np.asarray(indices, dtype=np.int64).T.reshape(len(frame), -1)
    return inputs


def predict_table(model_path: str | Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Predictions for raw rows: pass-through (id) columns, then ``prob_<class>`` and ``prediction``
    (classifiers; binary ones predict the positive class when its probability exceeds
    ``decision_threshold``),
    or ``prediction`` (regressors)."""
    metadata = read_metadata(model_path)
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    [output] = session.run(None, prepare_table(frame, metadata))
    keep = [c for c in metadata["preprocessing"]["passthrough_columns"] if c in frame.columns]
    result = frame[keep].reset_index(drop=True)
    if "classes" not in metadata:
        result["prediction"] = output.reshape(len(frame))
        return result
    classes = metadata["classes"]
    for i, name in enumerate(classes):
        result[f"prob_{name}"] = output[:, i]
    if "decision_threshold" in metadata:
        positive = output[:, 1] > metadata["decision_threshold"]
        result["prediction"] = np.where(positive, classes[1], classes[0])
    else:
        result["prediction"] = np.asarray(classes, dtype=object)[output.argmax(axis=1)]
    return result


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit("usage: python serve_onnx.py MODEL.onnx ROWS.csv PREDICTIONS.csv")
    model_path, rows_path, output_path = argv
    predictions = predict_table(model_path, read_rows(rows_path, read_metadata(model_path)))
    predictions.to_csv(output_path, index=False)
    print(f"wrote {len(predictions)} predictions to {output_path}")


if __name__ == "__main__":
    main(sys.argv[1:])
