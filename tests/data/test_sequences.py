"""SequenceDataModule: grouping, sorting, padding and packing, splits by sequence, preparation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lit_dl.data import ActivitySequenceDataModule, SequenceDataModule
from lit_dl.data.activity import make_activity_frame
from lit_dl.errors import DataError


def long_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """``n`` sequences of 3-8 steps; label 'up' when the value rises over the sequence."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(3, 9))
        rising = i % 2 == 0
        values = np.arange(length) * (1.0 if rising else -1.0) + rng.normal(0, 0.1, length)
        for t in range(length):
            rows.append(
                {
                    "sid": f"s{i:03d}",
                    "t": t,
                    "value": values[t],
                    "kind": "a" if t % 2 else "b",
                    "label": "up" if rising else "down",
                }
            )
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows arrive shuffled


def prepared(path: Path, **kwargs) -> SequenceDataModule:
    dm = SequenceDataModule(
        path=str(path), id_column="sid", time_column="t", target="label", batch_size=8, **kwargs
    )
    dm.setup("fit")
    return dm


@pytest.fixture
def sequences_csv(tmp_path: Path) -> Path:
    path = tmp_path / "seq.csv"
    long_frame().to_csv(path, index=False)
    return path


def test_sequences_are_grouped_sorted_and_padded(sequences_csv: Path) -> None:
    frame = pd.read_csv(sequences_csv)
    dm = prepared(sequences_csv)
    ds = dm.datasets["train"]
    lengths = frame.groupby("sid").size()
    prepared_lengths = torch.cat([d.lengths for d in dm.datasets.values()])
    assert sorted(prepared_lengths.tolist()) == sorted(lengths.tolist())
    # Padding after each sequence is zero; inside, steps follow the time order (rising or falling value).
    value = dm.preprocessor.numeric.index("value")
    for x, length, y in zip(ds.x, ds.lengths, ds.y, strict=True):
        assert torch.all(x[length:] == 0)
        steps = x[:length, value]
        diffs = steps[1:] - steps[:-1]
        assert (diffs > 0).all() if dm.classes[y] == "up" else (diffs < 0).all()
    assert "kind=a" in dm.preprocessor.feature_names  # text step features one-hot encoded


def test_batches_are_trimmed_to_their_longest_sequence(sequences_csv: Path) -> None:
    dm = prepared(sequences_csv)
    for x, lengths, y in dm.val_dataloader():
        assert x.shape[1] == int(lengths.max())
        assert len(x) == len(lengths) == len(y)


def test_split_is_by_sequence_stratified_and_statistics_from_train_only(sequences_csv: Path) -> None:
    dm = prepared(sequences_csv)
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sum(sizes.values()) == 60 and min(sizes.values()) >= 8
    for ds in dm.datasets.values():
        share = ds.y.float().mean().item()
        assert 0.3 <= share <= 0.7  # half the sequences rise
    # The scaler centres exactly the training sequences' steps (statistics from train only).
    train = dm.datasets["train"]
    j = dm.preprocessor.numeric.index("value")
    scaled = torch.cat([x[:n, j] for x, n in zip(train.x, train.lengths, strict=True)])
    assert scaled.mean().item() == pytest.approx(0.0, abs=1e-5)
    everything = torch.cat(
        [x[:n, j] for d in dm.datasets.values() for x, n in zip(d.x, d.lengths, strict=True)]
    )
    assert everything.mean().abs().item() > 1e-4  # all steps together are not centred: val/test were left out


def test_max_length_keeps_the_last_steps(sequences_csv: Path) -> None:
    dm = prepared(sequences_csv, max_length=3)
    assert int(dm.datasets["train"].lengths.max()) == 3
    assert dm.datasets["train"].x.shape[1] == 3


def test_state_round_trip_and_predict_inputs(sequences_csv: Path, tmp_path: Path) -> None:
    dm = prepared(sequences_csv)
    state = dm.state_dict()
    path = tmp_path / "state.pt"
    torch.save(state, path)
    restored = SequenceDataModule(path=str(sequences_csv), id_column="sid", time_column="t", target="label")
    restored.load_state_dict(torch.load(path, weights_only=True))
    restored.setup("test")
    assert torch.equal(restored.datasets["test"].x, dm.datasets["test"].x)
    unlabelled = long_frame(5, seed=3).drop(columns="label")
    unlabelled.to_csv(tmp_path / "new.csv", index=False)
    dataset, ids = restored.load_inputs(str(tmp_path / "new.csv"))
    assert sorted(ids["sid"]) == sorted(unlabelled["sid"].unique())
    _, lengths = dataset.__getitems__(list(range(len(dataset))))
    assert lengths.tolist() == unlabelled.groupby("sid", sort=False).size().loc[ids["sid"]].tolist()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"time_column": "when"}, "time column"),
        ({"id_column": "who"}, "id column"),
        ({"target": "y"}, "target column"),
    ],
)
def test_missing_columns_are_named(sequences_csv: Path, change: dict, message: str) -> None:
    args = {"path": str(sequences_csv), "id_column": "sid", "time_column": "t", "target": "label", **change}
    with pytest.raises(DataError, match=message):
        SequenceDataModule(**args).setup("fit")


def test_dates_order_the_steps(tmp_path: Path) -> None:
    frame = long_frame(40)
    frame["t"] = pd.to_datetime("2024-01-01") + pd.to_timedelta(frame["t"] * 31, unit="D")
    frame["t"] = frame["t"].dt.strftime("%Y-%m-%d")
    frame.to_csv(tmp_path / "dated.csv", index=False)
    dm = prepared(tmp_path / "dated.csv")
    value = dm.preprocessor.numeric.index("value")
    x, n, y = dm.datasets["train"].x[0], dm.datasets["train"].lengths[0], dm.datasets["train"].y[0]
    diffs = x[1:n, value] - x[: n - 1, value]
    assert (diffs > 0).all() if dm.classes[y] == "up" else (diffs < 0).all()


def test_activity_generator_patterns_drive_churn() -> None:
    frame = make_activity_frame(400, 36, seed=1)
    assert frame.equals(make_activity_frame(400, 36, seed=1))
    per_customer = frame.groupby("customer_id")
    burst = per_customer["support_calls"].max() >= 6
    churn = per_customer["churn"].last() == "Yes"
    assert churn[burst].mean() > churn[~burst].mean() + 0.2
    lengths = per_customer.size()
    assert lengths.min() >= 12 and lengths.max() <= 36


def test_activity_datamodule_feeds_a_recurrent_classifier() -> None:
    dm = ActivitySequenceDataModule(n_customers=80, max_months=20, batch_size=16)
    dm.setup("fit")
    spec = dm.data_spec()
    assert spec.inputs == {"in_features": 4} and spec.classes == ["No", "Yes"]
    assert (spec.task_type, spec.modality) == ("classification", "sequences")
    from lit_dl.nets import RecurrentClassifier

    x, lengths, y = next(iter(dm.train_dataloader()))
    assert RecurrentClassifier(4, 1, hidden_size=8)(x, lengths).shape == (len(y), 1)


def test_label_on_the_last_row_only_keeps_every_step(tmp_path: Path) -> None:
    frame = long_frame(40).sort_values(["sid", "t"])
    last = frame.groupby("sid")["t"].transform("max") == frame["t"]
    frame.loc[~last, "label"] = None  # the label only on each sequence's last row
    frame.to_csv(tmp_path / "last.csv", index=False)
    dm = prepared(tmp_path / "last.csv")
    lengths = torch.cat([d.lengths for d in dm.datasets.values()])
    assert sorted(lengths.tolist()) == sorted(frame.groupby("sid").size().tolist())


def test_continuous_target_is_refused(sequences_csv: Path) -> None:
    with pytest.raises(DataError, match="looks continuous"):
        SequenceDataModule(path=str(sequences_csv), id_column="sid", time_column="t", target="value").setup(
            "fit"
        )


def split_ids(dm: SequenceDataModule, frame: pd.DataFrame, split: str) -> list[str]:
    """The ids of a split's sequences, found through each sequence's first (unique) value."""
    j = dm.preprocessor.numeric.index("value")
    first = (
        dm.datasets[split].x[:, 0, j].double().numpy() * dm.preprocessor.scales[j] + dm.preprocessor.means[j]
    )
    starts = frame.sort_values(["sid", "t"]).groupby("sid")["value"].first()
    found = [starts.index[int(np.abs(starts.to_numpy() - v).argmin())] for v in first]
    np.testing.assert_allclose(starts.loc[found].to_numpy(), first, atol=1e-4)
    return found


def test_cv_folds_test_every_id_once_stratified(sequences_csv: Path) -> None:
    frame = pd.read_csv(sequences_csv)
    tested: list[str] = []
    for fold in range(3):
        dm = prepared(sequences_csv, cv_folds=3, cv_fold=fold)
        parts = {s: split_ids(dm, frame, s) for s in ("train", "val", "test")}
        every = [i for part in parts.values() for i in part]
        assert sorted(every) == sorted(frame["sid"].unique())  # disjoint, all ids
        assert len(parts["test"]) == 20
        for split, ds in dm.datasets.items():
            assert ds.y.float().mean().item() == pytest.approx(0.5, abs=0.1), (fold, split)
        tested += parts["test"]
    assert sorted(tested) == sorted(frame["sid"].unique())  # every id in exactly one test fold


def test_without_cv_the_sequence_split_is_the_ordinary_one(sequences_csv: Path) -> None:
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(sequences_csv)
    dm = prepared(sequences_csv, split_seed=3)
    labels = frame.sort_values(["sid", "t"]).groupby("sid", sort=False)["label"].last()
    # The split before cross-validation existed: test first, then validation from the rest.
    y = (labels == "up").astype(int).to_numpy()
    rest, test = train_test_split(np.arange(len(y)), test_size=0.15, random_state=3, stratify=y)
    train, val = train_test_split(rest, test_size=0.15 / 0.85, random_state=3, stratify=y[rest])
    for split, index in (("train", train), ("val", val), ("test", test)):
        assert sorted(split_ids(dm, frame, split)) == sorted(labels.index[index]), split


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"cv_folds": 1, "cv_fold": 0}, "at least 2"), ({"cv_folds": 4, "cv_fold": 4}, "0 .. 3")],
)
def test_bad_cv_settings_raise(sequences_csv: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        prepared(sequences_csv, **kwargs)
