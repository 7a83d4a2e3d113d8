"""TabularDataModule: cleaning, encoding, leakage-free fitting, splits, plain-data state, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from lit_dl.data import TabularDataModule
from lit_dl.data.preprocessing import MISSING_CATEGORY
from lit_dl.data.tables import split_frame
from lit_dl.errors import DataError

NUMERIC = ["tenure", "monthly_charges", "total_charges", "age"]
CATEGORICAL = ["gender", "partner", "contract", "payment_method"]


def make_dm(path: Path | str, **kwargs: Any) -> TabularDataModule:
    kwargs.setdefault("target", "churn")
    kwargs.setdefault("drop", ["customer_id"])
    kwargs.setdefault("batch_size", 64)
    return TabularDataModule(path=str(path), **kwargs)


def prepared(path: Path | str, **kwargs: Any) -> TabularDataModule:
    dm = make_dm(path, **kwargs)
    dm.setup("fit")
    return dm


def numbers(frame: pd.DataFrame, col: str) -> pd.Series:
    """A column of the raw frame as numbers (text with blanks -> NaN)."""
    return pd.to_numeric(frame[col].astype(str).str.strip().replace("", np.nan), errors="coerce")


def split_row_ids(dm: TabularDataModule, frame: pd.DataFrame, split: str) -> np.ndarray:
    """Raw row positions of a split, found through the unique ``monthly_charges`` values."""
    prep = dm.preprocessor
    j = prep.numeric.index("monthly_charges")
    scaled = dm.datasets[split].tensors[0][:, j].double().numpy()
    raw = scaled * prep.scales[j] + prep.means[j]
    values = frame["monthly_charges"].to_numpy()
    ids = np.abs(raw[:, None] - values[None, :]).argmin(axis=1)
    np.testing.assert_allclose(values[ids], raw, atol=1e-3)  # every tensor row matched one raw row
    assert len(set(ids.tolist())) == len(ids)
    return ids


def expected_numeric_stats(train: pd.DataFrame, columns: list[str]) -> dict[str, tuple[float, float, float]]:
    """(median, mean after imputation, population std) per column, from the given rows only."""
    stats = {}
    for col in columns:
        values = numbers(train, col)
        median = float(values.median())
        imputed = values.fillna(median)
        stats[col] = (median, float(imputed.mean()), float(imputed.std(ddof=0)))
    return stats


def is_plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def all_labels(dm: TabularDataModule) -> torch.Tensor:
    return torch.cat([dm.datasets[s].tensors[2] for s in ("train", "val", "test")])


# ---------------------------------------------------------------------------- cleaning and encoding


def test_fixture_stores_total_charges_as_text(messy_csv):
    # Guards the tests below: the coercion path is only exercised if the file really holds text.
    from lit_dl.data import read_table

    raw = read_table(messy_csv)
    assert not pd.api.types.is_numeric_dtype(raw["total_charges"])
    assert (raw["total_charges"].astype(str).str.strip() == "").any()


def test_text_numbers_with_blanks_become_imputed_numeric_feature(messy_csv, messy_frame):
    dm = prepared(messy_csv)
    prep = dm.preprocessor
    assert prep.numeric == NUMERIC
    assert prep.categorical == CATEGORICAL
    assert "customer_id" not in prep.numeric + prep.categorical

    j = prep.numeric.index("total_charges")
    train_ids = split_row_ids(dm, messy_frame, "train")
    train = messy_frame.iloc[train_ids]
    median = float(numbers(train, "total_charges").median())
    assert prep.medians[j] == pytest.approx(median)

    blank_rows = messy_frame[messy_frame["total_charges"].str.strip() == ""]
    assert len(blank_rows) > 0
    x_num, _ = dm.transform_features(blank_rows)
    expected = (median - prep.means[j]) / prep.scales[j]
    torch.testing.assert_close(x_num[:, j], torch.full((len(blank_rows),), expected, dtype=torch.float32))


def test_no_missing_values_in_any_tensor(messy_csv):
    dm = prepared(messy_csv)
    for split, ds in dm.datasets.items():
        x_num, x_cat, y = ds.tensors
        assert x_num.dtype == torch.float32
        assert torch.isfinite(x_num).all(), split
        assert x_cat.shape == (len(y), 0)  # one-hot: categories live in x_num
        assert x_num.shape[1] == dm.preprocessor.num_features


def test_onehot_block_has_one_indicator_per_categorical_column(messy_csv):
    dm = prepared(messy_csv)
    prep = dm.preprocessor
    x_num = dm.datasets["train"].tensors[0]
    start = len(prep.numeric)
    for cats in prep.categories:
        block = x_num[:, start : start + len(cats)]
        torch.testing.assert_close(block.sum(dim=1), torch.ones(len(x_num)))
        start += len(cats)
    assert start == x_num.shape[1]
    # Missing cells are a category of their own.
    assert MISSING_CATEGORY in prep.categories[prep.categorical.index("contract")]


# ---------------------------------------------------------------------------- no leakage


def test_fitted_statistics_come_from_training_rows(messy_csv, messy_frame):
    dm = prepared(messy_csv)
    prep = dm.preprocessor
    train = messy_frame.iloc[split_row_ids(dm, messy_frame, "train")]
    assert len(train) == len(dm.datasets["train"])
    for j, (median, mean, std) in enumerate(expected_numeric_stats(train, prep.numeric).values()):
        assert prep.medians[j] == pytest.approx(median, rel=1e-9)
        assert prep.means[j] == pytest.approx(mean, rel=1e-9)
        assert prep.scales[j] == pytest.approx(std, rel=1e-9)
    # Standardised training features have mean 0 and std 1.
    x = dm.datasets["train"].tensors[0][:, : len(prep.numeric)].double()
    torch.testing.assert_close(
        x.mean(0), torch.zeros(len(prep.numeric), dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(len(prep.numeric), dtype=torch.float64))


def test_extreme_values_outside_training_split_do_not_change_fitted_state(
    messy_csv, messy_frame, write_table
):
    dm = prepared(messy_csv)
    train_ids = split_row_ids(dm, messy_frame, "train")
    others = np.setdiff1d(np.arange(len(messy_frame)), train_ids)

    poisoned = messy_frame.copy()
    poisoned.loc[others, "age"] = 1e6
    poisoned.loc[others, "tenure"] = 10_000
    poisoned.loc[others, "total_charges"] = "99999999.00"
    poisoned.loc[others, "monthly_charges"] = 50_000.0 + np.arange(len(others))
    poisoned.loc[others, "contract"] = "Alien contract"
    dm2 = prepared(write_table(poisoned, "poisoned.csv"))

    assert sorted(split_row_ids(dm2, poisoned, "train")) == sorted(train_ids)
    before, after = dm.preprocessor.state_dict(), dm2.preprocessor.state_dict()
    for key in ("medians", "means", "scales"):
        assert after[key] == pytest.approx(before[key], rel=1e-12), key
    assert after["categories"] == before["categories"]
    assert "Alien contract" not in after["categories"][after["categorical"].index("contract")]
    assert dm2.class_counts == dm.class_counts


# ---------------------------------------------------------------------------- splits


def test_splits_are_stratified(messy_csv, messy_frame):
    dm = prepared(messy_csv)
    overall = float((messy_frame["churn"] == "Yes").mean())
    sizes = {s: len(dm.datasets[s]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == len(messy_frame)
    assert sizes["val"] == pytest.approx(0.15 * len(messy_frame), abs=1)
    assert sizes["test"] == pytest.approx(0.15 * len(messy_frame), abs=1)
    for split in ("train", "val", "test"):
        rate = dm.datasets[split].tensors[2].float().mean().item()
        assert rate == pytest.approx(overall, abs=0.03), split


def test_split_is_reproducible_per_split_seed(messy_csv, messy_frame):
    a = prepared(messy_csv, split_seed=3)
    b = prepared(messy_csv, split_seed=3)
    c = prepared(messy_csv, split_seed=4)
    for split in ("train", "val", "test"):
        for ta, tb in zip(a.datasets[split].tensors, b.datasets[split].tensors, strict=True):
            assert torch.equal(ta, tb)
    ids_a = set(split_row_ids(a, messy_frame, "test").tolist())
    ids_c = set(split_row_ids(c, messy_frame, "test").tolist())
    assert ids_a != ids_c


# ---------------------------------------------------------------------------- plain-data state


def test_state_dict_is_plain_data_and_loads_with_weights_only(messy_csv, tmp_path):
    dm = prepared(messy_csv)
    state = dm.state_dict()
    assert set(state) >= {"preprocessor", "task_type", "classes", "class_counts", "target_mean", "target_std"}
    assert is_plain(state)
    torch.save(state, tmp_path / "dm.pt")
    assert torch.load(tmp_path / "dm.pt", weights_only=True) == state


def test_unfitted_state_dict_is_empty(messy_csv):
    assert make_dm(messy_csv).state_dict() == {}


def test_restored_preprocessing_gives_identical_tensors(messy_csv, messy_frame, tmp_path):
    dm = prepared(messy_csv)
    torch.save(dm.state_dict(), tmp_path / "dm.pt")
    state = torch.load(tmp_path / "dm.pt", weights_only=True)

    restored = make_dm(messy_csv)
    restored.load_state_dict(state)
    restored.setup("test")
    for a, b in zip(dm.datasets["test"].tensors, restored.datasets["test"].tensors, strict=True):
        assert a.dtype == b.dtype
        assert torch.equal(a, b)
    assert restored.classes == dm.classes
    assert restored.data_spec() == dm.data_spec()


def test_restored_preprocessing_is_not_refitted(messy_csv, messy_frame):
    dm = prepared(messy_csv)
    other = make_dm(messy_csv, split_seed=dm.split_seed + 1)  # another training split: would fit other stats
    other.load_state_dict(dm.state_dict())
    other.setup("fit")
    assert other.preprocessor.state_dict() == dm.preprocessor.state_dict()
    assert other.class_counts == dm.class_counts
    a, _ = dm.transform_features(messy_frame)
    b, _ = other.transform_features(messy_frame)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------- targets and task


def test_string_target_becomes_class_indices(messy_csv, messy_frame):
    dm = prepared(messy_csv)
    assert dm.task_type == "classification"
    assert dm.classes == ["No", "Yes"]
    y = all_labels(dm)
    assert y.dtype == torch.long
    assert int(y.sum()) == int((messy_frame["churn"] == "Yes").sum())
    train_y = dm.datasets["train"].tensors[2]
    assert dm.class_counts == [int((train_y == 0).sum()), int((train_y == 1).sum())]
    assert dm.data_spec().classes == ["No", "Yes"]


def test_positive_label_override(messy_csv, messy_frame):
    dm = prepared(messy_csv, positive_label="No")
    assert dm.classes == ["Yes", "No"]
    assert int(all_labels(dm).sum()) == int((messy_frame["churn"] == "No").sum())


def test_positive_label_not_a_class_raises(messy_csv):
    with pytest.raises(DataError, match="positive_label"):
        prepared(messy_csv, positive_label="Maybe")


def test_auto_task_detection_classification_and_regression(messy_csv, regression_csv, regression_frame):
    assert prepared(messy_csv).task_type == "classification"

    dm = prepared(regression_csv, target="y", drop=[])
    assert dm.task_type == "regression"
    assert dm.classes is None
    y_train = dm.datasets["train"].tensors[2]
    assert y_train.dtype == torch.float32
    # The target is standardised with training statistics, kept for the task to undo.
    assert y_train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert y_train.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    assert dm.target_mean == pytest.approx(regression_frame["y"].mean(), abs=0.5)
    spec = dm.data_spec()
    assert (spec.task_type, spec.target_mean, spec.target_std) == (
        "regression",
        dm.target_mean,
        dm.target_std,
    )
    assert dm.preprocessor.numeric == ["x1", "x2"]
    assert dm.preprocessor.categorical == ["group"]


def test_few_integer_target_values_are_classes(regression_frame, write_table):
    frame = regression_frame.assign(level=np.arange(len(regression_frame)) % 3)
    dm = prepared(write_table(frame, "levels.csv"), target="level", drop=["y"])
    assert dm.task_type == "classification"
    assert dm.classes == ["0", "1", "2"]


def test_explicit_task_overrides_auto(regression_frame, write_table):
    frame = regression_frame.assign(level=np.arange(len(regression_frame)) % 3)
    dm = prepared(write_table(frame, "levels.csv"), target="level", drop=["y"], task="regression")
    assert dm.task_type == "regression"
    assert dm.datasets["train"].tensors[2].dtype == torch.float32


def test_numeric_classes_match_across_files_with_missing_target_cell(messy_frame, write_table):
    frame = messy_frame.assign(label=(messy_frame["churn"] == "Yes").astype(float)).drop(columns="churn")
    train = frame.iloc[:240].copy()
    train.loc[3, "label"] = np.nan  # dropped row; makes the column float
    test = frame.iloc[240:].copy()
    test["label"] = test["label"].astype(int)
    dm = prepared(
        write_table(train, "train.csv"), target="label", test_path=str(write_table(test, "test.csv"))
    )
    assert len(dm.classes) == 2
    assert torch.equal(dm.datasets["test"].tensors[2], torch.tensor(test["label"].to_numpy()))


# ---------------------------------------------------------------------------- file formats


def test_headerless_file_with_column_names(messy_csv, messy_frame, write_table):
    headerless = write_table(messy_frame, "noheader.csv", header=False)
    dm = prepared(headerless, column_names=list(messy_frame.columns))
    reference = prepared(messy_csv)
    assert dm.preprocessor.state_dict() == reference.preprocessor.state_dict()
    for a, b in zip(dm.datasets["test"].tensors, reference.datasets["test"].tensors, strict=True):
        assert torch.equal(a, b)


def test_question_mark_cells_are_missing(messy_frame, write_table):
    frame = messy_frame.copy()
    frame["age"] = frame["age"].astype(object)
    frame.loc[[0, 1, 2, 3], "age"] = "?"
    frame.loc[[4, 5, 6], "partner"] = "?"
    frame.loc[[7, 8], "total_charges"] = "?"
    dm = prepared(write_table(frame, "questions.csv"))
    prep = dm.preprocessor
    assert prep.numeric == NUMERIC
    assert all("?" not in cats for cats in prep.categories)
    assert MISSING_CATEGORY in prep.categories[prep.categorical.index("partner")]
    for ds in dm.datasets.values():
        assert torch.isfinite(ds.tensors[0]).all()
    dataset, ids = dm.load_inputs(str(write_table(frame, "questions_again.csv")))
    assert list(ids.columns) == ["customer_id"]  # only the id (drop) columns come back
    j = prep.numeric.index("age")
    imputed = (prep.medians[j] - prep.means[j]) / prep.scales[j]
    torch.testing.assert_close(dataset.tensors[0][:4, j], torch.full((4,), imputed, dtype=torch.float32))


def test_parquet_input_matches_csv(messy_csv, messy_frame, write_table):
    pq = write_table(messy_frame, "customers.parquet")
    dm = prepared(pq)
    reference = prepared(messy_csv)
    assert dm.preprocessor.numeric == NUMERIC
    assert dm.classes == reference.classes
    for split in ("train", "val", "test"):
        for a, b in zip(dm.datasets[split].tensors, reference.datasets[split].tensors, strict=True):
            torch.testing.assert_close(a, b)


def test_test_path_labels_with_trailing_period(messy_frame, write_table):
    frame = messy_frame.assign(income=np.where(messy_frame["churn"] == "Yes", ">50K", "<=50K")).drop(
        columns="churn"
    )
    train, test = frame.iloc[:240].copy(), frame.iloc[240:].copy()
    test["income"] = test["income"] + "."
    dm = prepared(
        write_table(train, "adult.data.csv"),
        target="income",
        test_path=str(write_table(test, "adult.test.csv")),
    )
    assert dm.classes == ["<=50K", ">50K"]
    assert len(dm.datasets["test"]) == 60
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 240
    expected = torch.tensor((test["income"] == ">50K.").to_numpy().astype(np.int64))
    assert torch.equal(dm.datasets["test"].tensors[2], expected)


def test_test_path_with_unknown_label_raises(messy_frame, write_table):
    train, test = messy_frame.iloc[:240], messy_frame.iloc[240:].copy()
    test.loc[test.index[0], "churn"] = "Perhaps"
    dm = make_dm(write_table(train, "train.csv"), test_path=str(write_table(test, "test.csv")))
    with pytest.raises(DataError, match="Perhaps"):
        dm.setup("fit")


# ---------------------------------------------------------------------------- embedding encoding


def test_embedding_encoding_gives_long_indices(messy_csv, messy_frame):
    dm = prepared(messy_csv, categorical_encoding="embedding")
    prep = dm.preprocessor
    x_num, x_cat, _ = dm.datasets["train"].tensors
    assert x_cat.dtype == torch.long
    assert x_cat.shape == (len(x_num), len(CATEGORICAL))
    assert x_num.shape[1] == len(NUMERIC) == prep.num_features
    assert prep.cardinalities == [len(c) + 1 for c in prep.categories]
    assert dm.data_spec().inputs == {
        "in_features": len(NUMERIC),
        "cat_cardinalities": prep.cardinalities,
    }
    # Every training category is known: indices 1..k, 0 is reserved for unseen.
    assert (x_cat >= 1).all()
    assert (x_cat < torch.tensor(prep.cardinalities)).all()

    rows = messy_frame.iloc[:4].copy()
    rows.loc[rows.index[1], "contract"] = "Quantum contract"
    _, cat = dm.transform_features(rows)
    c = prep.categorical.index("contract")
    assert cat[1, c].item() == 0
    assert (cat[[0, 2, 3], c] >= 1).all()
    expected = prep.categories[c].index(str(rows["contract"].iloc[0])) + 1
    assert cat[0, c].item() == expected


# ---------------------------------------------------------------------------- predict inputs


def new_customers(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame.drop(columns="churn").iloc[:3].copy().reset_index(drop=True)
    rows["customer_id"] = ["NEW-1", "NEW-2", "NEW-3"]
    rows.loc[0, "contract"] = "Satellite plan"  # never seen in training
    rows.loc[1, "total_charges"] = " "
    rows.loc[1, "age"] = np.nan
    rows.loc[2, "partner"] = None
    return rows


def test_load_inputs_with_unseen_category_and_missing_values(messy_csv, messy_frame, write_table):
    dm = prepared(messy_csv)
    prep = dm.preprocessor
    dataset, ids = dm.load_inputs(str(write_table(new_customers(messy_frame), "new.csv")))
    assert len(dataset.tensors) == 2  # no target
    x_num, x_cat = dataset.tensors
    assert x_num.shape == (3, prep.num_features)
    assert x_cat.shape == (3, 0)
    assert torch.isfinite(x_num).all()
    assert ids["customer_id"].tolist() == ["NEW-1", "NEW-2", "NEW-3"]

    names = prep.feature_names
    contract_cols = [k for k, n in enumerate(names) if n.startswith("contract=")]
    assert x_num[0, contract_cols].sum().item() == 0.0  # unseen: no indicator set
    assert x_num[1, contract_cols].sum().item() == 1.0
    j_total, j_age = prep.numeric.index("total_charges"), prep.numeric.index("age")
    assert x_num[1, j_total].item() == pytest.approx(
        (prep.medians[j_total] - prep.means[j_total]) / prep.scales[j_total]
    )
    assert x_num[1, j_age].item() == pytest.approx(
        (prep.medians[j_age] - prep.means[j_age]) / prep.scales[j_age]
    )
    assert x_num[2, names.index(f"partner={MISSING_CATEGORY}")].item() == 1.0


def test_load_inputs_embedding_marks_unseen_category_zero(messy_csv, messy_frame, write_table):
    dm = prepared(messy_csv, categorical_encoding="embedding")
    dataset, _ = dm.load_inputs(str(write_table(new_customers(messy_frame), "new.csv")))
    x_num, x_cat = dataset.tensors
    c = dm.preprocessor.categorical.index("contract")
    assert x_cat[0, c].item() == 0
    assert (x_cat[1:] >= 1).all()
    assert torch.isfinite(x_num).all()


def test_load_inputs_missing_feature_column_raises(messy_csv, messy_frame, write_table):
    dm = prepared(messy_csv)
    rows = new_customers(messy_frame).drop(columns="tenure")
    with pytest.raises(DataError, match="tenure"):
        dm.load_inputs(str(write_table(rows, "new.csv")))


def test_forced_categorical_integer_codes_match_across_files(messy_frame, write_table):
    frame = messy_frame.assign(plan=(np.arange(len(messy_frame)) % 3 + 1).astype(float))
    frame.loc[[1, 5, 9], "plan"] = np.nan
    dm = prepared(write_table(frame, "plans.csv"), categorical=["plan"])
    rows = frame.drop(columns="churn").iloc[20:23].copy()
    rows["plan"] = [1, 2, 3]
    dataset, _ = dm.load_inputs(str(write_table(rows, "new.csv")))
    names = dm.preprocessor.feature_names
    plan_cols = [k for k, n in enumerate(names) if n.startswith("plan=")]
    torch.testing.assert_close(dataset.tensors[0][:, plan_cols].sum(1), torch.ones(3))


# ---------------------------------------------------------------------------- bad inputs


def test_missing_file_raises(tmp_path):
    with pytest.raises(DataError, match="not found"):
        prepared(tmp_path / "nope.csv")


def test_empty_file_raises(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        prepared(empty)


def test_header_only_file_raises(tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text("customer_id,tenure,churn\n")
    with pytest.raises(DataError, match="no rows"):
        prepared(header_only)


def test_path_not_set_raises():
    dm = TabularDataModule(path=None, target="churn")
    with pytest.raises(DataError, match=r"data\.path is not set"):
        dm.setup("fit")


def test_missing_target_column_raises(messy_csv):
    with pytest.raises(DataError, match="target column 'cancelled'") as err:
        prepared(messy_csv, target="cancelled")
    assert "churn" in str(err.value)  # lists the columns there are


def test_missing_feature_column_raises(messy_csv):
    with pytest.raises(DataError, match="shoe_size"):
        prepared(messy_csv, features=["tenure", "shoe_size"])


def test_single_class_target_raises(messy_frame, write_table):
    frame = messy_frame.assign(churn="No")
    with pytest.raises(DataError, match="single class"):
        prepared(write_table(frame, "one_class.csv"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": None}, "target is not set"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.45}, "under 10%"),
        ({"batch_size": 0}, "batch_size"),
        ({"task": "ranking"}, "task"),
        ({"categorical_encoding": "hashing"}, "categorical_encoding"),
    ],
)
def test_bad_settings_raise(messy_csv, kwargs, match):
    with pytest.raises(DataError, match=match):
        make_dm(messy_csv, **kwargs)


# ---------------------------------------------------------------------------- cross-validation folds


def test_cv_folds_test_every_row_once_keep_the_class_ratio_and_fit_on_training_rows(messy_csv, messy_frame):
    folds, n = 3, len(messy_frame)
    overall = float((messy_frame["churn"] == "Yes").mean())
    tested: list[int] = []
    for fold in range(folds):
        dm = prepared(messy_csv, cv_folds=folds, cv_fold=fold)
        parts = {s: set(split_row_ids(dm, messy_frame, s).tolist()) for s in ("train", "val", "test")}
        assert parts["train"] | parts["val"] | parts["test"] == set(range(n))
        assert sum(len(p) for p in parts.values()) == n  # disjoint
        assert len(parts["test"]) == pytest.approx(n / folds, abs=1)
        assert len(parts["val"]) == pytest.approx(0.15 * n, abs=1)  # val_fraction of all rows, from the rest
        for split in ("train", "val", "test"):
            rate = dm.datasets[split].tensors[2].float().mean().item()
            assert rate == pytest.approx(overall, abs=0.03), (fold, split)
        j = dm.preprocessor.numeric.index("monthly_charges")
        train_rows = messy_frame.iloc[sorted(parts["train"])]
        assert dm.preprocessor.means[j] == pytest.approx(train_rows["monthly_charges"].mean())
        tested += sorted(parts["test"])
    assert sorted(tested) == list(range(n))  # every row in exactly one test fold


def test_cv_folds_of_a_regression_table_cover_every_target_once(regression_csv, regression_frame):
    tested = []
    for fold in range(3):
        dm = prepared(regression_csv, target="y", drop=[], cv_folds=3, cv_fold=fold)
        assert dm.task_type == "regression"
        tested.append(dm.datasets["test"].tensors[2].double().numpy() * dm.target_std + dm.target_mean)
    np.testing.assert_allclose(np.sort(np.concatenate(tested)), np.sort(regression_frame["y"]), atol=1e-3)


def test_without_cv_the_split_is_the_ordinary_seeded_split(messy_csv, messy_frame):
    dm = prepared(messy_csv, split_seed=5)
    expected = split_frame(messy_frame, 0.15, 0.15, 5, messy_frame["churn"])
    for split in ("train", "val", "test"):
        rows = messy_frame.index[messy_frame["monthly_charges"].isin(expected[split]["monthly_charges"])]
        assert sorted(split_row_ids(dm, messy_frame, split).tolist()) == rows.tolist(), split


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cv_folds": 1, "cv_fold": 0}, "cv_folds must be at least 2"),
        ({"cv_folds": 3, "cv_fold": 3}, r"cv_fold must be one of 0 \.\. 2"),
        ({"cv_folds": 3}, "cv_fold must be one of"),
        ({"cv_fold": 1}, "needs data.cv_folds"),
        ({"cv_folds": "three", "cv_fold": 0}, "must be integers"),
        ({"cv_folds": 3, "cv_fold": 0, "test_path": "other.csv"}, "test_path"),
    ],
)
def test_bad_cv_settings_raise(messy_csv, kwargs, match):
    with pytest.raises(DataError, match=match):
        make_dm(messy_csv, **kwargs)


def test_more_folds_than_rows_of_a_class_is_one_line(messy_frame, write_table):
    small = write_table(messy_frame.head(12), "small.csv")
    with pytest.raises(DataError, match=r"cannot split 12 rows into 10 folds"):
        prepared(small, cv_folds=10, cv_fold=0)
