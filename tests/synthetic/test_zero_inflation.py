"""Zero-inflated numbers get a zero mode; the GAN's sampler is calibrated to the real slot rates;
the report gives the unconditioned sample's rates and privacy; older transforms and GANs load as before."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.tree import DecisionTreeClassifier
from torch import Tensor, nn

from lit_dl.data.spec import DataSpec
from lit_dl.data.table_transform import ZERO_MODE_SHARE, TableTransform
from lit_dl.evaluation.synthetic import build_report, summary_lines
from lit_dl.tasks.tabular_gan import TabularGANTask

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True}


def gains_frame(n: int = 500, seed: int = 0) -> pd.DataFrame:
    """A capital gain that is 0 in 80% of rows and spread over thousands otherwise, a category with gaps,
    an income label at 25%."""
    rng = np.random.default_rng(seed)
    gain = np.where(rng.random(n) < 0.8, 0, np.round(rng.lognormal(8.0, 0.8, n))).astype(np.int64)
    job = rng.choice(["clerk", "nurse", "pilot"], n, p=[0.5, 0.3, 0.2]).astype(object)
    job[rng.choice(n, 40, replace=False)] = None  # 8% missing
    return pd.DataFrame(
        {
            "gain": gain,
            "hours": np.round(rng.normal(40.0, 6.0, n), 1),
            "job": job,
            "income": np.where(rng.random(n) < 0.25, ">50K", "<=50K"),
        }
    )


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return gains_frame()


@pytest.fixture(scope="module")
def table(frame: pd.DataFrame) -> TableTransform:
    return TableTransform.fit(frame, max_modes=4, zero_mode_share=ZERO_MODE_SHARE)


def column(table: TableTransform, name: str) -> dict:
    return next(c for c in table.columns if c["name"] == name)


def test_exact_zero_gets_its_own_mode_and_round_trips(frame: pd.DataFrame, table: TableTransform) -> None:
    gain, hours = column(table, "gain"), column(table, "hours")
    assert gain["zero_mode"] and not hours["zero_mode"]  # hours has no zeros
    # The mixture describes the non-zero tail only: no mode sits near zero.
    assert min(gain["means"]) > 500
    assert table.one_hot_size(gain) == 1 + len(gain["means"])
    rows = table.transform(frame)
    start = 0  # gain is the first column: offset, then zero slot, then the tail's modes
    zero = frame["gain"].to_numpy() == 0
    assert np.array_equal(rows[:, start + 1] == 1.0, zero)
    assert np.all(rows[zero, start] == 0.0)  # a zero has no offset
    back = table.inverse_transform(rows)
    pd.testing.assert_frame_equal(back, frame)


def test_the_zero_slot_writes_an_exact_zero_whatever_the_offset(table: TableTransform) -> None:
    gain = column(table, "gain")
    rows = np.zeros((3, table.output_dim), dtype=np.float32)
    rows[:, 0] = [-0.9, 0.0, 0.7]  # offsets a generator might write beside the zero mode
    rows[:, 1] = 1.0  # the zero slot
    start = 1 + table.one_hot_size(gain)
    rows[:, start + 1] = 1.0  # hours: its first mode
    # the other spans: their first slot
    for span_start, _ in table.one_hot_spans()[2:]:
        rows[:, span_start] = 1.0
    back = table.inverse_transform(rows)
    assert back["gain"].tolist() == [0, 0, 0]
    # The tail's modes never invent a small number next to zero: at most down to the smallest real gain.
    rows[:, 1], rows[:, 2] = 0.0, 1.0
    assert (table.inverse_transform(rows)["gain"] >= gain["tail_min"]).all()


def test_columns_count_their_slots_and_give_real_rates(frame: pd.DataFrame, table: TableTransform) -> None:
    rows = table.transform(frame)
    rates = table.slot_rates()
    assert len(rates) == len(table.one_hot_spans())
    for (start, size), rate in zip(table.one_hot_spans(), rates, strict=True):
        np.testing.assert_allclose(rate, rows[:, start : start + size].mean(axis=0), atol=1e-12)
    job = rates[2]
    assert job[-1] == pytest.approx(40 / 500)  # the missing slot


def test_a_transform_saved_before_zero_modes_keeps_its_layout(frame: pd.DataFrame) -> None:
    fitted = TableTransform.fit(frame, max_modes=4)  # the default (no zero mode), as an older release fitted
    state = fitted.state_dict()
    for spec in state["columns"]:
        spec.pop("zero_mode", None)
        if spec["kind"] == "numeric":
            spec.pop("counts", None)
    old = TableTransform.from_state_dict(state)
    assert old.output_dim == fitted.output_dim
    np.testing.assert_array_equal(old.transform(frame), fitted.transform(frame))
    assert old.slot_rates()[0] is None and old.slot_rates()[2] is not None  # numbers: no counts kept
    # The mixture then covers the zeros too, and the inverse gives back what it was given.
    pd.testing.assert_frame_equal(old.inverse_transform(old.transform(frame)), frame)


# ----------------------------------------------------------------------------- the GAN's sampler


class BiasedGenerator(nn.Module):
    """Stands in for a generator whose unconditioned rows over-write every span's last slot."""

    def __init__(self, table: TableTransform, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(4, table.output_dim, generator=generator))
        self.shift = torch.zeros(table.output_dim)
        for start, size in table.one_hot_spans():
            self.shift[start + size - 1] = 2.0

    def forward(self, noise: Tensor, cond: Tensor) -> Tensor:
        return noise[:, :4] @ self.weight + self.shift


def gan_task(table: TableTransform, calibrate: bool = True) -> TabularGANTask:
    net = {
        "_target_": "lit_dl.nets.tabular_generative.TabularGAN",
        "noise_dim": 4,
        "generator_sizes": [8],
        "discriminator_sizes": [8],
        "pac": 1,
    }
    spec = DataSpec(
        task_type="generative",
        modality="table",
        inputs={"data_dim": table.output_dim},
        options={"table": table.state_dict(), "sampling": "conditional"},
    )
    task = TabularGANTask(
        net=net, optimizer=ADAM, data=spec, calibrate_marginals=calibrate, calibration_rows=4000
    )
    task.net.generator = BiasedGenerator(table)
    return task


def slot_shares(table: TableTransform, rows: np.ndarray) -> list[np.ndarray]:
    return [rows[:, start : start + size].mean(axis=0) for start, size in table.one_hot_spans()]


def test_calibration_brings_every_slot_to_its_training_rate(table: TableTransform) -> None:
    task = gan_task(table)
    generator = torch.Generator().manual_seed(1)
    before = slot_shares(table, task.generate(4000, generator=generator))
    task.calibrate_marginals(4000)
    after = slot_shares(table, task.generate(4000, generator=torch.Generator().manual_seed(1)))
    for rate, old, new in zip(table.slot_rates(), before, after, strict=True):
        assert np.abs(old - rate).max() > 0.1  # the stand-in generator is far off
        np.testing.assert_allclose(new, rate, atol=0.03)  # sampling noise of 4000 rows
    sample = task.sample(4000, generator=torch.Generator().manual_seed(2))
    assert (sample["gain"] == 0).mean() == pytest.approx(0.8, abs=0.03)
    assert sample["job"].isna().mean() == pytest.approx(0.08, abs=0.02)


def test_calibration_runs_before_each_validation_only_when_asked(table: TableTransform) -> None:
    on, off = gan_task(table, calibrate=True), gan_task(table, calibrate=False)
    for task in (on, off):
        task.on_validation_epoch_start()
    assert on.sample_bias.abs().sum() > 0
    assert off.sample_bias.abs().sum() == 0


def test_a_gan_saved_before_the_sampler_offsets_samples_as_before(table: TableTransform) -> None:
    task = gan_task(table)
    task.calibrate_marginals(2000)
    state = {k: v for k, v in task.state_dict().items() if k != "sample_bias"}
    old = gan_task(table)
    old.load_state_dict(state)  # strict: the missing buffer is filled in, with zeros
    assert old.sample_bias.abs().sum() == 0
    checkpoint = {"state_dict": dict(state)}
    old.on_load_checkpoint(checkpoint)  # a resumed run's check of the weights passes too
    assert "sample_bias" in checkpoint["state_dict"]


# ----------------------------------------------------------------------------- the report


def test_report_gives_the_unconditioned_samples_rates_and_privacy(frame: pd.DataFrame) -> None:
    train, holdout = frame.iloc[:300].reset_index(drop=True), frame.iloc[300:].reset_index(drop=True)
    rng = np.random.default_rng(3)
    unconditioned = holdout.sample(200, random_state=1).reset_index(drop=True)
    unconditioned.loc[rng.choice(200, 100, replace=False), "gain"] = 7  # half the zeros lost
    unconditioned["income"] = "<=50K"
    report = build_report(
        train,
        holdout.iloc[:150].reset_index(drop=True),
        holdout=holdout,
        target="income",
        unconditioned=unconditioned,
        classifiers={"tree": DecisionTreeClassifier(max_depth=2, random_state=0)},
    )
    assert report["target_rate"]["label"] == ">50K"
    assert report["target_rate"]["real"] == pytest.approx((train["income"] == ">50K").mean())
    assert report["target_rate"]["unconditioned"] == 0.0
    assert set(report["zero_share"]) == {"gain"}
    share = report["zero_share"]["gain"]
    assert share["real"] == pytest.approx((train["gain"] == 0).mean())
    assert share["unconditioned"] == pytest.approx((unconditioned["gain"] == 0).mean())
    assert report["missing_rate"]["job"]["unconditioned"] == pytest.approx(unconditioned["job"].isna().mean())
    assert "privacy_unconditioned" in report and "ml_efficacy_unconditioned" in report
    line = summary_lines(report)[-1]
    assert line.startswith("unconditioned sample: `>50K` in 0.0% of rows") and "exact zeros" in line


@pytest.mark.parametrize("share", [None, 0.05])
def test_the_datamodule_fits_a_zero_mode_only_when_asked(tmp_path, share: float | None) -> None:
    from lit_dl.data.synthetic_tables import SyntheticTableDataModule

    path = tmp_path / "gains.csv"
    gains_frame().to_csv(path, index=False)
    dm = SyntheticTableDataModule(path=str(path), target="income", max_modes=4, zero_mode_share=share)
    dm.setup("fit")
    assert column(dm.transform, "gain")["zero_mode"] is (share is not None)


def test_a_zero_mode_share_outside_0_1_is_refused(tmp_path) -> None:
    from lit_dl.data.synthetic_tables import SyntheticTableDataModule
    from lit_dl.errors import DataError

    with pytest.raises(DataError, match=r"data\.zero_mode_share"):
        SyntheticTableDataModule(path=str(tmp_path / "x.csv"), zero_mode_share=1.5)
