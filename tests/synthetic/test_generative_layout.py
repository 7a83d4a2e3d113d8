"""The networks' output layout against the transform: decoding, conditions, model-selection score."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from lit_dl.callbacks.table_fidelity import TableFidelity
from lit_dl.data.spec import DataSpec
from lit_dl.data.synthetic_tables import TrainingBySampling
from lit_dl.data.table_transform import TableTransform
from lit_dl.errors import ConfigError
from lit_dl.nets.tabular_generative import activate
from lit_dl.tasks.tabular_gan import TabularGANTask
from lit_dl.tasks.tabular_vae import TabularVAETask

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True}


def linked_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Columns that hang together: a two-mode number, a band and a label that follow it, a free category."""
    rng = np.random.default_rng(seed)
    high = rng.random(n) < 0.35
    income = np.round(np.where(high, rng.normal(90.0, 8.0, n), rng.normal(30.0, 4.0, n)), 1)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2]).astype(object)
    plan[rng.choice(n, 20, replace=False)] = None
    return pd.DataFrame(
        {
            "income": income,
            "band": np.where(high, "top", "bottom"),
            "age": rng.integers(18, 80, n),
            "plan": plan,
            "label": np.where(high, "rich", "other"),
        }
    )


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return linked_frame()


@pytest.fixture(scope="module")
def table(frame: pd.DataFrame) -> TableTransform:
    return TableTransform.fit(frame, max_modes=4)


def table_spec(table: TableTransform, sampling: str = "uniform") -> DataSpec:
    """What the synthetic-table datamodule tells a task: the fitted transform and how rows are drawn."""
    return DataSpec(
        task_type="generative",
        modality="table",
        inputs={"data_dim": table.output_dim},
        options={"table": table.state_dict(), "sampling": sampling},
    )


def gan_task(table: TableTransform) -> TabularGANTask:
    net = {
        "_target_": "lit_dl.nets.tabular_generative.TabularGAN",
        "noise_dim": 4,
        "generator_sizes": [8],
        "discriminator_sizes": [8],
        "pac": 1,
    }
    return TabularGANTask(net=net, optimizer=ADAM, data=table_spec(table, sampling="conditional"))


def vae_task(table: TableTransform, categories: str = "draw") -> TabularVAETask:
    net = {
        "_target_": "lit_dl.nets.tabular_generative.TabularVAE",
        "latent_dim": 4,
        "encoder_sizes": [8],
        "decoder_sizes": [8],
    }
    return TabularVAETask(net=net, optimizer=ADAM, data=table_spec(table), categories=categories)


def raw_outputs(table: TableTransform, rows: np.ndarray) -> Tensor:
    """Raw network outputs that the output activations turn back into ``rows`` (sharp one-hot logits)."""
    raw = torch.as_tensor(rows, dtype=torch.float32).clone()
    start = 0
    for kind, size in table.spans:
        chunk = raw[:, start : start + size]
        raw[:, start : start + size] = (
            torch.atanh(chunk.clamp(-0.999999, 0.999999)) if kind == "tanh" else chunk * 60 - 30
        )
        start += size
    return raw


class FixedOutputs(nn.Module):
    """Stands in for a generator or decoder: returns the first ``len(input)`` of fixed raw outputs."""

    def __init__(self, raw: Tensor) -> None:
        super().__init__()
        self.raw = raw

    def forward(self, first: Tensor, *rest: Tensor) -> Tensor:
        return self.raw[: len(first)]


def test_output_activations_round_trip_through_the_transform(
    frame: pd.DataFrame, table: TableTransform
) -> None:
    rows = table.transform(frame)
    raw = raw_outputs(table, rows)
    expected = table.inverse_transform(rows)
    for tau in (None, 0.2):  # plain softmax (TVAE) and Gumbel-softmax at CTGAN's temperature
        pd.testing.assert_frame_equal(
            table.inverse_transform(activate(raw, *table.span_index(), tau).numpy()), expected
        )


def test_gan_samples_decode_the_generators_layout(frame: pd.DataFrame, table: TableTransform) -> None:
    task = gan_task(table)
    rows = table.transform(frame)
    task.net.generator = FixedOutputs(raw_outputs(table, rows))
    sampled = task.generate(len(rows), generator=torch.Generator().manual_seed(0))
    pd.testing.assert_frame_equal(table.inverse_transform(sampled), table.inverse_transform(rows))


@pytest.mark.parametrize("categories", ["draw", "argmax"])
def test_vae_samples_decode_the_decoders_layout(
    frame: pd.DataFrame, table: TableTransform, categories: str
) -> None:
    task = vae_task(table, categories)
    rows = table.transform(frame)
    task.net.decoder = FixedOutputs(raw_outputs(table, rows))
    task.net.sigma.data.zero_()  # no noise on the offsets: the numbers come back exactly
    sampled = task.generate(len(rows), generator=torch.Generator().manual_seed(0))
    pd.testing.assert_frame_equal(table.inverse_transform(sampled), table.inverse_transform(rows))


def test_vae_draws_categories_at_the_decoders_rate(frame: pd.DataFrame, table: TableTransform) -> None:
    """A decoder 70/30 unsure of the label: drawing keeps 30% "rich"; argmax (TVAE's code) writes none."""
    (start, _), column = next(
        (s, c) for s, c in zip(table.discrete_spans(), table.discrete, strict=True) if c["name"] == "label"
    )
    rich = column["categories"].index("rich")
    raw = torch.zeros(4000, table.output_dim)
    raw[:, start + rich] = float(np.log(0.3 / 0.7))
    shares = {}
    for categories in ("draw", "argmax"):
        task = vae_task(table, categories)
        task.net.decoder = FixedOutputs(raw)
        sampled = table.inverse_transform(task.generate(len(raw), generator=torch.Generator().manual_seed(0)))
        shares[categories] = (sampled["label"] == "rich").mean()
    assert shares["draw"] == pytest.approx(0.3, abs=0.03)
    assert shares["argmax"] == 0.0


def test_training_rows_have_their_condition_in_the_generators_layout(
    table: TableTransform, frame: pd.DataFrame
) -> None:
    """Each real row served with a condition vector has that category in the span the condition loss reads."""
    data = torch.from_numpy(table.transform(frame))
    dataset = TrainingBySampling(data, table.category_codes(data.numpy()), table.condition_sizes())
    rows, cond = dataset.__getitems__(list(range(len(data))))
    task = gan_task(table)
    assert task.cond_dim == cond.shape[1]
    # The condition loss of the real rows' own one-hot spans (as logits) against their conditions: ~0.
    assert task.condition_loss(rows * 60 - 30, cond).item() < 1e-6
    # ... and large against shuffled conditions (a row paired with another row's condition).
    assert task.condition_loss(rows * 60 - 30, cond[torch.randperm(len(cond))]).item() > 5


def logged_fidelity(task: Any, real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """What the fidelity callback logs after a validation epoch of ``real`` rows, for generated ``fake``."""
    logged: dict[str, float] = {}
    task.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    task.generate = lambda n, generator=None, condition=None: fake[:n]
    callback, trainer = TableFidelity(rows=600), SimpleNamespace(sanity_checking=False)
    callback.setup(trainer, task, "fit")
    callback.on_validation_epoch_start(trainer, task)
    callback.on_validation_batch_end(trainer, task, None, (torch.as_tensor(real),), 0)
    callback.on_validation_epoch_end(trainer, task)
    return logged


@pytest.mark.parametrize("make_task", [gan_task, vae_task])
def test_validation_fidelity_punishes_rows_that_do_not_hang_together(
    frame: pd.DataFrame, table: TableTransform, make_task: Any
) -> None:
    """Model selection must see broken rows: every column right but drawn independently scores lower.

    (With column shapes alone, CTGAN's checkpoint was picked in its first epochs on Adult, before
    its rows hung together: ML-efficacy F1 0.10 instead of about 0.6.)
    """
    real = table.transform(frame)
    fresh = table.transform(linked_frame(seed=1))
    rng = np.random.default_rng(0)
    shuffled = fresh.copy()
    start = 0
    for column in table.modelled:  # permute each column's block of the layout on its own
        width = table.column_width(column)
        shuffled[:, start : start + width] = shuffled[rng.permutation(len(shuffled)), start : start + width]
        start += width
    task = make_task(table)
    good, broken = logged_fidelity(task, real, fresh), logged_fidelity(task, real, shuffled)
    assert broken["val/column_shapes"] == pytest.approx(good["val/column_shapes"])  # columns unchanged
    assert broken["val/column_pairs"] < good["val/column_pairs"] - 0.05
    assert broken["val/fidelity"] < good["val/fidelity"] - 0.025


def test_tasks_check_the_data_when_built(table: TableTransform) -> None:
    """Each tabular task names the data option it needs; neither takes data without a fitted transform."""
    with pytest.raises(ConfigError, match=r"set data\.sampling=conditional$"):
        TabularGANTask(net={"_target_": "lit_dl.nets.tabular_generative.TabularGAN"}, optimizer=ADAM,
                       data=table_spec(table, sampling="uniform"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"set data\.sampling=uniform$"):
        TabularVAETask(net={"_target_": "lit_dl.nets.tabular_generative.TabularVAE"}, optimizer=ADAM,
                       data=table_spec(table, sampling="conditional"))  # fmt: skip
    classification = DataSpec(task_type="classification", modality="table", inputs={"in_features": 3})
    with pytest.raises(ConfigError, match="data=churn_synthetic"):
        TabularVAETask(net={"_target_": "lit_dl.nets.tabular_generative.TabularVAE"}, optimizer=ADAM,
                       data=classification)  # fmt: skip


@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*")
def test_fidelity_callback_feeds_checkpoint_selection_and_grids_skip_tables(
    frame: pd.DataFrame, table: TableTransform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ModelCheckpoint monitors the callback's val/fidelity; the image grid callback skips a table."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_dl.callbacks import SampleGrid
    from lit_dl.data.batching import TensorBatchDataset, batch_loader

    torch.manual_seed(0)
    rows = torch.from_numpy(table.transform(frame))
    train = batch_loader(TensorBatchDataset(rows[:400]), 100, shuffle=True)
    val = batch_loader(TensorBatchDataset(rows[400:]), 100, shuffle=False)
    fidelity = TableFidelity(rows=150)
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/fidelity", mode="max")
    trainer = L.Trainer(
        max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[fidelity, best, SampleGrid(dirpath=str(tmp_path / "grids"))],
    )  # fmt: skip
    with caplog.at_level("INFO", logger="lit_dl.callbacks.samples"):
        trainer.fit(vae_task(table), train_dataloaders=train, val_dataloaders=val)
    assert 0.0 < float(best.best_model_score) <= 1.0 and best.best_model_path
    assert {"val/fidelity", "val/column_shapes", "val/column_pairs"} <= set(trainer.callback_metrics)
    assert sum("not images" in record.getMessage() for record in caplog.records) == 1  # said once
    assert not (tmp_path / "grids").exists()
