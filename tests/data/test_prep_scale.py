"""The vectorised table preparation equals a straightforward scikit-learn pipeline, bit for bit.

Each test builds a small table with the dirt the fast paths must get right (missing cells, blanks
and NA markers, numbers stored as text, categories unseen in training, integer-valued float
categories next to the same codes as text) and compares with value-by-value conversion and
scikit-learn's SimpleImputer, StandardScaler, OneHotEncoder, OrdinalEncoder and train_test_split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from lit_dl.data import TabularDataModule
from lit_dl.data.preprocessing import (
    MISSING_CATEGORY,
    TabularPreprocessor,
    as_text,
    fit_number_columns,
    median,
)
from lit_dl.data.tables import (
    class_index,
    clean_frame,
    looks_like_id,
    numeric_text_columns,
    parse_numbers,
    split_positions,
    split_rows,
)
from lit_dl.errors import DataError

NA_MARKERS = {"", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"}


# ---------------------------------------------------------------------------- references, value by value
def reference_text(value: Any) -> Any:
    """A cell as category text: 1.0 and 1 read "1", text stripped, missing stays missing."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value.strip()
    return value if pd.isna(value) else str(value)


def reference_categories(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Category texts as an object array, missing cells as their own category."""
    cells = [[reference_text(v) for v in frame[c].astype(object)] for c in columns]
    return np.array([[MISSING_CATEGORY if pd.isna(v) else v for v in col] for col in cells], dtype=object).T


def reference_numbers(series: pd.Series) -> np.ndarray:
    """Cells as float64: numbers as they are, text parsed (blank or not a number -> NaN)."""

    def number(value: Any) -> float:
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                return np.nan
        return np.nan if pd.isna(value) else float(value)

    return np.array([number(v) for v in series.astype(object)], dtype=np.float64)


def reference_transform(
    train: pd.DataFrame, frames: list[pd.DataFrame], numeric: list[str], categorical: list[str], encoding: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn fitted on ``train``, applied to each frame: ``(x_num, x_cat)`` as the preprocessor's."""
    train_numbers = np.column_stack([reference_numbers(train[c]) for c in numeric])
    imputer = SimpleImputer(strategy="median").fit(train_numbers)
    scaler = StandardScaler().fit(imputer.transform(train_numbers))
    if encoding == "onehot":
        encoder: Any = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
    else:
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, dtype=np.int64)
    encoder.fit(reference_categories(train, categorical))
    out = []
    for frame in frames:
        numbers = np.column_stack([reference_numbers(frame[c]) for c in numeric])
        x_num = scaler.transform(imputer.transform(numbers)).astype(np.float32)
        encoded = encoder.transform(reference_categories(frame, categorical))
        if encoding == "onehot":
            x_num, x_cat = np.concatenate([x_num, encoded], axis=1), np.zeros((len(frame), 0), np.int64)
        else:
            x_cat = encoded.astype(np.int64) + 1
        out.append((torch.from_numpy(np.ascontiguousarray(x_num)), torch.from_numpy(x_cat)))
    return out


def dirty_table(n_rows: int, seed: int) -> pd.DataFrame:
    """Numbers with gaps, numbers as text, padded and NA-marker text, float codes, a yes/no target."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.0, 1.0, n_rows)
    amount[rng.random(n_rows) < 0.1] = np.nan
    charges = np.array([f"{v:.2f}" for v in rng.normal(60.0, 25.0, n_rows)], dtype=object)
    charges[rng.random(n_rows) < 0.08] = " "  # blank: missing
    plan = rng.choice(np.array(["basic", " basic", "pro ", "team", "NA", "?", None], dtype=object), n_rows)
    region = rng.choice(np.array([f"r{i}" for i in range(12)], dtype=object), n_rows)
    code = rng.integers(1, 5, n_rows).astype(np.float64)  # 1.0 .. 4.0: categories "1" .. "4"
    code[rng.random(n_rows) < 0.05] = np.nan
    logit = 0.02 * (np.nan_to_num(amount, nan=20.0) - 20.0) + np.where(plan == "team", 1.0, -0.5)
    return pd.DataFrame(
        {
            "amount": amount,
            "tenure": rng.integers(0, 72, n_rows),
            "charges": pd.Series(charges, dtype="str"),
            "plan": pd.Series(plan, dtype="str"),
            "region": region,  # object dtype
            "code": code,
            "label": np.where(rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit)), "yes", "no"),
        }
    )


class FrameTabular(TabularDataModule):
    """The datamodule over a DataFrame in memory (``path`` unset); a file for ``test_path``."""

    def __init__(self, frame: pd.DataFrame, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.frame = frame

    def load_frame(self, path: str | None) -> pd.DataFrame:
        return self.frame if path is None else super().load_frame(path)


# ---------------------------------------------------------------------------- the preprocessor alone
MIXED = np.array([1, 1.0, True, "1", " x", None, 2.5], dtype=object)  # converted cell by cell


@pytest.fixture(params=[1, 3], ids=["1 thread", "3 threads"])
def small_blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Blocks of 16 rows and 1 or 3 threads: 400 rows make 3 row ranges of 144, 144 and 112 rows."""
    monkeypatch.setattr("lit_dl.data.preprocessing.ROWS_PER_BLOCK", 16)
    monkeypatch.setattr("lit_dl.data.preprocessing.prep_threads", lambda: request.param)
    return request.param


@pytest.mark.parametrize("encoding", ["onehot", "embedding"])
def test_transform_equals_sklearn_with_missing_and_unseen_categories(
    encoding: str, small_blocks: int
) -> None:
    train = dirty_table(400, seed=0)
    other = dirty_table(150, seed=1)
    other.loc[:9, "region"] = "never seen"
    other.loc[10:19, "plan"] = "brand new"
    train["mixed"], other["mixed"] = MIXED[np.arange(400) % 7], MIXED[np.arange(150) % 5]
    numeric, categorical = ["amount", "tenure"], ["plan", "region", "code", "mixed"]
    train_clean, other_clean = clean_frame(train), clean_frame(other)
    prep = TabularPreprocessor.fit(train_clean, numeric, categorical, encoding)
    expected = reference_transform(train_clean, [train_clean, other_clean], numeric, categorical, encoding)
    for frame, (x_num, x_cat) in zip([train_clean, other_clean], expected, strict=True):
        got_num, got_cat = prep.transform(frame)
        assert got_num.dtype == torch.float32 and got_num.is_contiguous()
        assert torch.equal(got_num, x_num)
        assert got_cat.dtype == torch.int64 and torch.equal(got_cat, x_cat)
    if encoding == "onehot":  # unseen categories: every indicator of that column off
        start = 2 + len(prep.categories[0])
        assert prep.transform(other_clean)[0][:10, start : start + len(prep.categories[1])].sum() == 0


@pytest.mark.parametrize("encoding", ["onehot", "embedding"])
def test_transform_of_rows_by_position_equals_the_transform_of_those_rows_copied(
    encoding: str, small_blocks: int
) -> None:
    """A split is row positions: the rows are read in the frame's order and written in theirs."""
    frame = dirty_table(300, seed=5)
    frame["mixed"] = MIXED[np.arange(300) % 7]
    frame = clean_frame(frame, as_category=["plan", "region"])  # Categorical codes and object columns
    numeric, categorical = ["amount", "tenure"], ["plan", "region", "code", "mixed"]
    prep = TabularPreprocessor.fit(frame.iloc[:150], numeric, categorical, encoding)
    rows = np.random.default_rng(0).permutation(300)[:111]  # rows 150+ hold values unseen in fitting
    for positions in (rows, rows[:0], np.array([299, 0, 299])):  # shuffled, none, repeated
        got = prep.transform(frame, positions)
        expected = prep.transform(frame.take(positions).reset_index(drop=True))
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_fitting_on_rows_by_position_equals_fitting_on_those_rows_copied() -> None:
    frame = clean_frame(dirty_table(400, seed=6), as_category=["plan"])
    rows = np.random.default_rng(1).permutation(400)[:250]
    numeric = ["amount", "tenure"]
    copied = frame.take(rows)
    assert fit_number_columns(frame, numeric, rows) == fit_number_columns(copied, numeric)
    frame["empty"] = np.where(np.isin(np.arange(400), rows), np.nan, 1.0)  # numbers only outside `rows`
    assert fit_number_columns(frame, ["empty", "amount"], rows)[0] is None


def test_median_is_numpys() -> None:
    rng = np.random.default_rng(2)
    for size in [1, 2, 3, 4, 7, 10, 101, 1000]:
        for values in (rng.normal(size=size) * 1e3, rng.integers(-3, 3, size).astype(float)):
            assert median(values.copy()) == float(np.median(values))


def test_class_index_is_numpys_unique() -> None:
    rng = np.random.default_rng(3)
    for labels in (
        rng.integers(0, 3, 500),
        rng.integers(2, 9, 300).astype(np.uint8),  # classes 0 and 1 absent
        rng.integers(0, 300, 1000),  # more than 256 classes
        rng.integers(-2, 2, 100),  # negative: np.unique itself
        rng.choice(["a", "b"], 100),
    ):
        expected = np.unique(labels, return_inverse=True, return_counts=True)
        for got, want in zip(class_index(labels), expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_ids_in_a_categorical_column_are_found_as_in_plain_text() -> None:
    ids = pd.Series([f"customer-{i}" for i in range(200)] + [None] * 5, dtype="str")
    repeated = pd.Series([f"plan-{i % 3}" for i in range(205)], dtype="str")
    for column in (ids, repeated):
        assert looks_like_id(column.astype("category"), categorical=True) == looks_like_id(
            column, categorical=True
        )
    assert looks_like_id(ids.astype("category"), categorical=True)


def test_fitted_state_is_sklearns_statistics() -> None:
    train = clean_frame(dirty_table(500, seed=2))
    prep = TabularPreprocessor.fit(train, ["amount", "tenure"], ["plan", "region", "code"])
    values = train[["amount", "tenure"]].to_numpy(dtype=np.float64)
    imputer = SimpleImputer(strategy="median").fit(values)
    scaler = StandardScaler().fit(imputer.transform(values))
    assert prep.medians == imputer.statistics_.tolist()
    assert prep.means == scaler.mean_.tolist()
    assert prep.scales == scaler.scale_.tolist()
    encoder = OneHotEncoder().fit(reference_categories(train, ["plan", "region", "code"]))
    assert prep.categories == [c.tolist() for c in encoder.categories_]
    assert prep.categories[2] == ["1", "2", "3", "4", MISSING_CATEGORY]  # 1.0 is "1"; NaN is a category


def test_float_codes_and_the_same_codes_as_text_are_one_category() -> None:
    train = pd.DataFrame({"code": [1.0, 2.0, np.nan, 3.0, 1.0]})
    prep = TabularPreprocessor.fit(train, [], ["code"])
    as_strings = pd.DataFrame({"code": pd.Series([" 1", "2", None, "3", "7"], dtype="str")})
    as_ints = pd.DataFrame({"code": pd.array([1, 2, None, 3, 7], dtype="Int64")})
    expected = prep.transform(train.iloc[[0, 1, 2, 3, 3]])[0]
    expected[4] = 0.0  # "7" was never seen
    assert torch.equal(prep.transform(as_strings)[0], expected)
    assert torch.equal(prep.transform(as_ints)[0], expected)


def test_unused_categories_of_a_categorical_column_are_not_fitted() -> None:
    column = pd.Categorical(["b", "a", None, "b"], categories=["a", "b", "c", "unused"])
    prep = TabularPreprocessor.fit(pd.DataFrame({"kind": column}), [], ["kind"])
    assert prep.categories == [["__missing__", "a", "b"]]


def test_state_of_an_older_release_loads_and_transforms_the_same() -> None:
    """The state dict format is unchanged: plain lists, as checkpoints of earlier releases hold it."""
    state = {
        "numeric": ["x"],
        "categorical": ["c"],
        "medians": [1.0],
        "means": [2.0],
        "scales": [0.5],
        "categories": [["__missing__", "1", "a"]],
        "encoding": "onehot",
    }
    prep = TabularPreprocessor.from_state_dict(state)
    assert prep.state_dict() == state
    frame = pd.DataFrame({"x": [3.0, np.nan, 2.0], "c": pd.Series(["a", None, "zzz"], dtype=object)})
    x_num, x_cat = prep.transform(frame)
    expected = [[2.0, 0.0, 0.0, 1.0], [-2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    assert torch.equal(x_num, torch.tensor(expected)) and x_cat.shape == (3, 0)


def test_infinite_numbers_are_a_one_line_error() -> None:
    frame = pd.DataFrame({"x": [1.0, np.inf, 2.0]})
    with pytest.raises(DataError, match="'x' holds infinite values"):
        TabularPreprocessor.fit(frame, ["x"], [])
    prep = TabularPreprocessor.fit(pd.DataFrame({"x": [1.0, 2.0]}), ["x"], [])
    with pytest.raises(DataError, match="'x' holds infinite values"):
        prep.transform(frame)


# ---------------------------------------------------------------------------- text and numbers
COLUMNS = {
    "str": pd.Series([" a", "b", None, "a", "NA", "b "], dtype="str"),
    "object text": pd.Series([" a", "b", None, "a", np.nan, "b "], dtype=object),
    "mixed objects": pd.Series([1, 1.0, True, "1", None, 2.5], dtype=object),
    "float codes": pd.Series([1.0, 2.0, np.nan, 1.0, -0.0, 2.5]),
    "ints": pd.Series([3, 1, 2, 3, 1, 2]),
    "bools": pd.Series([True, False, True, True, False, False]),
    "nullable ints": pd.Series([1, None, 2, 1, 2, 2], dtype="Int64"),
    "category": pd.Series(pd.Categorical(["x", None, "y", "x", "y", "x"], categories=["y", "x", "z"])),
    "text numbers": pd.Series(["1.5", " 2", None, "x", "3", "4.25"], dtype="str"),
    "decimal commas": pd.Series(["1,5", "2", None, "3,25", "4", "5"], dtype="str"),
}


@pytest.mark.parametrize("name", list(COLUMNS))
def test_as_text_equals_value_by_value_conversion(name: str) -> None:
    series = COLUMNS[name]
    expected = series.astype(object).map(reference_text)
    pd.testing.assert_series_equal(as_text(series), expected)


@pytest.mark.parametrize("name", list(COLUMNS))
def test_parse_numbers_equals_value_by_value_parsing(name: str) -> None:
    series = COLUMNS[name]
    text = series.astype(object).where(series.notna())
    present = text.dropna().astype(str)
    if not pd.api.types.is_numeric_dtype(series) and not present.str.contains(".", regex=False).any():
        text = text.map(lambda v: v.replace(",", ".") if isinstance(v, str) else v)
    expected = (
        series.astype("float64") if series.dtype.kind in "iuf" else pd.to_numeric(text, errors="coerce")
    )
    pd.testing.assert_series_equal(parse_numbers(series), expected)


def test_numbers_stored_as_text_are_found_by_their_share_of_rows() -> None:
    mostly = pd.Series(["1"] * 95 + ["n/a"] * 5, dtype="str")  # 95% numbers: a numeric column
    fewer = pd.Series(["1"] * 94 + ["n/a"] * 6, dtype="str")
    frame = pd.DataFrame({"mostly": mostly, "fewer": fewer, "as_category": mostly.astype("category")})
    assert numeric_text_columns(frame, list(frame.columns)) == ["mostly", "as_category"]


def test_clean_frame_equals_value_by_value_cleaning_and_leaves_its_input_alone() -> None:
    frame = pd.DataFrame({name: column for name, column in COLUMNS.items()})
    before = frame.copy()
    cleaned = clean_frame(frame)
    pd.testing.assert_frame_equal(frame, before)
    for name in ("str", "text numbers", "decimal commas"):
        text = frame[name].str.strip()
        pd.testing.assert_series_equal(cleaned[name], text.where(~text.isin(NA_MARKERS), np.nan))
    as_category = clean_frame(frame, as_category=["str"])["str"]
    assert isinstance(as_category.dtype, pd.CategoricalDtype)
    assert as_category.astype(object).tolist() == cleaned["str"].astype(object).tolist()


# ---------------------------------------------------------------------------- split and the whole datamodule
@pytest.mark.parametrize("stratified", [True, False])
@pytest.mark.parametrize("n_rows,test_size,seed", [(50, 0.15, 0), (333, 0.3, 7), (1000, 0.5, 42)])
def test_split_positions_are_train_test_splits(
    stratified: bool, n_rows: int, test_size: float, seed: int
) -> None:
    labels = np.random.default_rng(seed).choice(["a", "b", "c"], n_rows, p=[0.6, 0.3, 0.1])
    stratify = pd.Series(labels) if stratified else None
    expected = train_test_split(np.arange(n_rows), test_size=test_size, random_state=seed, stratify=stratify)
    for got, want in zip(split_positions(n_rows, test_size, seed, stratify), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_split_positions_give_sklearns_error_for_a_class_of_one_row() -> None:
    labels = pd.Series(["a"] * 9 + ["b"])
    with pytest.raises(ValueError) as expected:
        train_test_split(np.arange(10), test_size=0.3, random_state=0, stratify=labels)
    with pytest.raises(ValueError, match="least populated class") as got:
        split_positions(10, 0.3, 0, labels)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("encoding", ["onehot", "embedding"])
def test_datamodule_tensors_equal_a_plain_sklearn_pipeline(encoding: str, tmp_path: Any) -> None:
    frame = dirty_table(600, seed=3)
    later = dirty_table(120, seed=4)
    later["code"] = later["code"].map(
        lambda v: v if pd.isna(v) else f"{int(v)}"
    )  # "1" where training had 1.0
    later.loc[:5, "region"] = "elsewhere"
    later.to_parquet(tmp_path / "later.parquet", index=False)
    dm = FrameTabular(
        frame,
        target="label",
        categorical=["code"],
        categorical_encoding=encoding,
        test_path=str(tmp_path / "later.parquet"),
        on_device=False,
    )
    dm.setup("fit")
    prep = dm.preprocessor
    assert (prep.numeric, prep.categorical) == (["amount", "tenure", "charges"], ["plan", "region", "code"])

    # The reference: value-by-value cleaning, sklearn's split of the frame itself, sklearn's transformers.
    def clean(table: pd.DataFrame) -> pd.DataFrame:
        stripped = table.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
        return stripped.mask(stripped.isin(NA_MARKERS))

    data = clean(frame)
    labels = (data["label"] == "yes").astype(int)
    train, val = train_test_split(data, test_size=0.15, random_state=42, stratify=labels)  # test: later
    splits = {"train": train, "val": val, "test": clean(later)}
    expected = reference_transform(train, list(splits.values()), prep.numeric, prep.categorical, encoding)
    for name, (x_num, x_cat) in zip(splits, expected, strict=True):
        got_num, got_cat, got_y = dm.datasets[name].tensors
        assert torch.equal(got_num, x_num), name
        assert torch.equal(got_cat, x_cat), name
        assert torch.equal(got_y, torch.from_numpy((splits[name]["label"] == "yes").to_numpy(np.int64))), name


def test_numbers_with_decimal_commas_are_read_by_the_training_rows_own_writing() -> None:
    """The training rows write "3,5"; a few other rows write "2.5". The column stays a number column,
    fitted on the training rows' own values (each split's cells are read as that split writes them)."""
    n_rows = 400
    rng = np.random.default_rng(0)
    labels = rng.choice(["a", "b"], n_rows)
    comma = np.array([f"{i % 7},5" for i in range(n_rows)], dtype=object)
    parts = split_rows(n_rows, 0.15, 0.15, 42, (labels == "b").astype(np.int64))  # the datamodule's split
    comma[parts["val"][:5]] = "2.5"  # points, only outside the training rows
    frame = pd.DataFrame({"dec": comma, "x": rng.normal(size=n_rows), "label": labels})
    dm = FrameTabular(frame, target="label", on_device=False)
    dm.setup("fit")
    assert dm.preprocessor.numeric == ["dec", "x"]
    assert dm.preprocessor.medians[0] == 3.5  # "0,5" .. "6,5": the training rows' own numbers
    assert len(dm.datasets["train"]) == len(parts["train"])


def test_transform_refuses_rows_that_are_not_positions() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    prep = TabularPreprocessor.fit(frame, ["x"], [])
    with pytest.raises(TypeError, match="positions"):
        prep.transform(frame, np.array([True, False, True]))
