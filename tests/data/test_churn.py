"""The synthetic churn table and its datamodule."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch

from lit_dl.data import ChurnDataModule
from lit_dl.data.churn import CONTRACTS, make_churn_frame


@pytest.fixture(scope="module")
def churn() -> pd.DataFrame:
    return make_churn_frame(n_rows=6000, seed=0)


def test_same_seed_same_table_other_seed_other_table():
    a = make_churn_frame(n_rows=200, seed=3)
    pd.testing.assert_frame_equal(a, make_churn_frame(n_rows=200, seed=3))
    b = make_churn_frame(n_rows=200, seed=4)
    assert not a.drop(columns="customer_id").equals(b.drop(columns="customer_id"))


def test_shape_ids_and_labels(churn):
    assert len(churn) == 6000
    assert churn["customer_id"].is_unique
    assert set(churn["churn"]) == {"Yes", "No"}
    assert set(churn["contract"]) == set(CONTRACTS)


def test_has_dirty_cells(churn):
    total = churn["total_charges"]
    assert total.map(type).eq(str).all()  # numbers stored as text
    assert (total.str.strip() == "").any()  # blanks where nothing was billed yet
    assert (total[churn["tenure_months"] == 0].str.strip() == "").all()
    assert pd.to_numeric(total[total.str.strip() != ""]).notna().all()
    for col in ("payment_method", "internet_service", "age"):
        assert churn[col].isna().any(), col


def test_churn_rate_is_plausible(churn):
    rate = (churn["churn"] == "Yes").mean()
    assert 0.10 <= rate <= 0.45


def test_label_depends_on_features(churn):
    churned = churn["churn"] == "Yes"
    by_contract = churned.groupby(churn["contract"]).mean()
    assert by_contract["Month-to-month"] > by_contract["Two year"] + 0.15
    assert by_contract["Month-to-month"] > by_contract["One year"]
    # More support calls and shorter tenure go with more churn.
    assert churned[churn["support_calls"] >= 3].mean() > churned[churn["support_calls"] == 0].mean()
    assert churn.loc[churned, "tenure_months"].mean() < churn.loc[~churned, "tenure_months"].mean()


def test_too_few_rows_raise():
    with pytest.raises(ValueError, match="at least 20"):
        make_churn_frame(n_rows=10)


def test_churn_datamodule_prepares_the_table():
    dm = ChurnDataModule(n_rows=400, data_seed=1, batch_size=64)
    dm.setup("fit")
    assert dm.classes == ["No", "Yes"]
    assert "customer_id" not in dm.preprocessor.numeric + dm.preprocessor.categorical
    assert "total_charges" in dm.preprocessor.numeric
    assert sum(len(ds) for ds in dm.datasets.values()) == 400
    for ds in dm.datasets.values():
        assert torch.isfinite(ds.tensors[0]).all()


def test_the_generator_scripts_import_neither_torch_nor_lightning() -> None:
    """``scripts/make_churn_csv.py`` and ``make_activity_csv.py`` start in a second, not after torch."""
    code = (
        "import sys, lit_dl.data.churn, lit_dl.data.activity; "
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    from lit_dl.data import batch_loader  # the package's names still import on use

    assert ChurnDataModule.__module__ == "lit_dl.data.churn_datamodule" and callable(batch_loader)
