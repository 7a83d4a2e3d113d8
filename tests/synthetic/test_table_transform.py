"""The reversible table transform: exact round trips, plain state, layout, conditions."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from lit_dl.data.table_transform import TableTransform, draw_rows
from lit_dl.errors import ConfigError, DataError


def mixed_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Every kind of column the transform must give back: ints, decimals, gaps, text, bools, codes, ids."""
    rng = np.random.default_rng(seed)
    income = np.round(np.concatenate([rng.normal(30.0, 3.0, n // 2), rng.normal(90.0, 10.0, n - n // 2)]), 2)
    visits = rng.poisson(3, n).astype(float)
    visits[rng.choice(n, 25, replace=False)] = np.nan  # whole numbers with gaps: pandas reads float64
    plan = rng.choice(["basic", "plus", "pro"], n).astype(object)
    plan[rng.choice(n, 30, replace=False)] = None
    return pd.DataFrame(
        {
            "id": [f"C{i:04d}" for i in range(n)],
            "age": rng.integers(18, 90, n),
            "income": income,
            "visits": visits,
            "plan": pd.Series(plan).astype("str"),
            "active": rng.random(n) < 0.3,
            "tier": pd.Categorical(rng.choice(["gold", "silver"], n), categories=["silver", "gold"]),
            "churned": rng.integers(0, 2, n),
        }
    )


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return mixed_frame()


@pytest.fixture(scope="module")
def fitted(frame: pd.DataFrame) -> TableTransform:
    return TableTransform.fit(frame, categorical=["churned"], ids=["id"], max_modes=5)


def test_round_trip_is_exact(frame: pd.DataFrame, fitted: TableTransform) -> None:
    back = fitted.inverse_transform(fitted.transform(frame))
    assert list(back.columns) == list(frame.columns)
    assert (back.dtypes == frame.dtypes).all(), back.dtypes
    pd.testing.assert_frame_equal(
        back.drop(columns="id"), frame.drop(columns="id"), check_exact=False, rtol=1e-9
    )
    assert back["tier"].cat.categories.tolist() == ["silver", "gold"]
    assert back["visits"].isna().sum() == 25 and back["plan"].isna().sum() == 30
    # Identifiers are not modelled: fresh ones, never the real ones.
    assert not set(back["id"]) & set(frame["id"])


def test_layout_one_offset_and_a_mode_span_per_number(fitted: TableTransform) -> None:
    kinds = {c["name"]: c["kind"] for c in fitted.columns}
    assert kinds == {
        "id": "id",
        "age": "numeric",
        "income": "numeric",
        "visits": "numeric",
        "plan": "categorical",
        "active": "categorical",
        "tier": "categorical",
        "churned": "categorical",
    }
    income = next(c for c in fitted.columns if c["name"] == "income")
    assert len(income["means"]) >= 2  # two clusters -> at least two modes
    visits = next(c for c in fitted.columns if c["name"] == "visits")
    assert visits["integer"] and visits["has_missing"]
    spans = fitted.spans
    assert spans[0] == ("tanh", 1) and spans[1][0] == "softmax"
    assert fitted.output_dim == sum(size for _, size in spans)
    # The categorical spans come last here (plan: 3 values + missing, active 2, tier 2, churned 2).
    assert [size for _, size in fitted.discrete_spans()] == [4, 2, 2, 2]


def test_span_helpers_agree_with_the_layout(fitted: TableTransform) -> None:
    """Offsets, one-hot spans, their padded index and the condition layout, all read off ``spans``."""
    offsets, spans = fitted.offset_columns(), fitted.one_hot_spans()
    assert len(offsets) + len(spans) == len(fitted.spans)
    covered = sorted(offsets + [s + i for s, k in spans for i in range(k)])
    assert covered == list(range(fitted.output_dim))  # every column once
    assert set(fitted.discrete_spans()) <= set(spans)
    assert fitted.condition_sizes() == [k for _, k in fitted.discrete_spans()]
    assert sum(fitted.column_width(c) for c in fitted.modelled) == fitted.output_dim
    offset_index, span_index = fitted.span_index()
    assert offset_index.tolist() == offsets
    assert span_index.shape == (len(spans), max(k for _, k in spans))
    for row, (start, size) in zip(span_index.tolist(), spans, strict=True):
        assert row == list(range(start, start + size)) + [fitted.output_dim] * (len(row) - size)


def test_state_is_plain_data(fitted: TableTransform, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    rebuilt = TableTransform.from_state_dict(state)
    np.testing.assert_array_equal(rebuilt.transform(frame.head(50)), fitted.transform(frame.head(50)))


def test_inverse_keeps_ranges_integers_and_missing_slots(fitted: TableTransform) -> None:
    rng = np.random.default_rng(1)
    rows = rng.normal(0.0, 3.0, (200, fitted.output_dim))  # far outside anything seen
    out = fitted.inverse_transform(rows)
    age = next(c for c in fitted.columns if c["name"] == "age")
    assert out["age"].between(age["min"], age["max"]).all() and out["age"].dtype == np.int64
    present = out["visits"].dropna()
    assert (present == present.round()).all()
    assert set(out["plan"].dropna()) <= {"basic", "plus", "pro"}
    assert out["churned"].isin([0, 1]).all()
    # A one-hot vector on the missing slot comes back as a missing cell.
    start, size = fitted.discrete_spans()[0]
    rows[:, start : start + size] = 0.0
    rows[:, start + size - 1] = 1.0
    assert fitted.inverse_transform(rows)["plan"].isna().all()


def test_unseen_category_and_new_gaps_are_errors(fitted: TableTransform, frame: pd.DataFrame) -> None:
    bad = frame.head(5).copy()
    bad.loc[0, "plan"] = "enterprise"
    with pytest.raises(DataError, match="enterprise"):
        fitted.transform(bad)
    gap = frame.head(5).copy()
    gap["age"] = gap["age"].astype(float)
    gap.loc[0, "age"] = np.nan
    with pytest.raises(DataError, match="missing"):
        fitted.transform(gap)


def test_conditions_name_a_column_and_one_of_its_values(fitted: TableTransform) -> None:
    assert fitted.condition_slot("churned=1") == (3, 1)
    assert fitted.condition_slot("plan=pro") == (0, 2)
    assert fitted.condition_slot("active=true") == (1, 1)
    with pytest.raises(ConfigError, match="plan, active, tier, churned"):
        fitted.condition_slot("income=3")
    with pytest.raises(ConfigError, match="basic, plus, pro"):
        fitted.condition_slot("plan=gold")


def test_draw_rows_keeps_only_the_asked_category(fitted: TableTransform) -> None:
    rng = np.random.default_rng(2)
    slot = fitted.condition_slot("churned=1")
    rows = draw_rows(
        lambda size: rng.normal(0, 1, (size, fitted.output_dim)), fitted, 300, slot, batch_size=64
    )
    assert len(rows) == 300
    assert (fitted.inverse_transform(rows)["churned"] == 1).all()
    with pytest.raises(DataError, match="train the model longer"):
        draw_rows(
            lambda size: np.zeros((size, fitted.output_dim)), fitted, 10, slot, batch_size=8, max_batches=3
        )
