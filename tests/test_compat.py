"""Each shim of :mod:`lit_dl.compat` against the Lightning installed: these fail when Lightning changes
the private API a shim wraps, so an upgrade breaks here and by name."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils.data import DistributedSampler

from lit_dl import compat


def cpu_trainer(**kwargs: Any) -> L.Trainer:
    settings = {"accelerator": "cpu", "devices": 1, "logger": False}
    return L.Trainer(**{**settings, **kwargs}, enable_progress_bar=False, enable_model_summary=False)


class StatefulDataModule(BoringDataModule):
    """A datamodule with fitted state, as lit_dl's datamodules keep theirs."""

    def state_dict(self) -> dict[str, Any]:
        return {"classes": ["no", "yes"], "mean": 1.5}


def test_datamodule_state_finds_what_lightning_saved(tmp_path) -> None:
    trainer = cpu_trainer(max_steps=1, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(BoringModel(), datamodule=StatefulDataModule())
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert compat.datamodule_state(checkpoint, StatefulDataModule) == {"classes": ["no", "yes"], "mean": 1.5}
    assert compat.datamodule_state(checkpoint, BoringDataModule) == {}


def test_trainer_or_none() -> None:
    model = BoringModel()
    assert compat.trainer_or_none(model) is None
    trainer = cpu_trainer()
    model.trainer = trainer  # the public setter Lightning uses when it attaches a module
    assert compat.trainer_or_none(model) is trainer


def test_launcher_kinds() -> None:
    ddp = cpu_trainer(devices=2, strategy="ddp")
    assert compat.script_launch_processes(ddp) == 2
    assert not compat.spawns_processes(ddp)
    spawn = cpu_trainer(devices=2, strategy="ddp_spawn")
    assert compat.spawns_processes(spawn)
    assert compat.script_launch_processes(spawn) == 0
    single = cpu_trainer()
    assert not compat.spawns_processes(single)
    assert compat.script_launch_processes(single) == 0


def test_unrepeated_sampler_shares_rows_without_padding() -> None:
    dataset = list(range(5))
    shares = [list(compat.unrepeated_sampler(dataset, num_replicas=2, rank=r)) for r in (0, 1)]
    assert shares == [[0, 2, 4], [1, 3]]
    # Lightning keeps a sampler that already is a DistributedSampler rather than replacing it.
    assert isinstance(compat.unrepeated_sampler(dataset, 2, 0), DistributedSampler)


def test_amp_grad_scaler() -> None:
    scaler = torch.amp.GradScaler("cpu")
    trainer = cpu_trainer(plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert compat.amp_grad_scaler(trainer) is scaler
    assert compat.amp_grad_scaler(cpu_trainer()) is None
    assert compat.amp_grad_scaler(None) is None


def test_allow_unused_parameters_sets_the_ddp_flag() -> None:
    ddp = cpu_trainer(devices=2, strategy="ddp")
    compat.allow_unused_parameters(ddp)
    assert ddp.strategy._ddp_kwargs["find_unused_parameters"] is True
    single = cpu_trainer()
    compat.allow_unused_parameters(single)  # other strategies are left alone


def test_logs_this_step_follows_log_every_n_steps() -> None:
    seen: list[tuple[int, bool]] = []

    class Recorder(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            seen.append((trainer.global_step, compat.logs_this_step(trainer)))

    trainer = cpu_trainer(max_steps=7, log_every_n_steps=3, limit_val_batches=0, callbacks=[Recorder()])
    trainer.fit(BoringModel())
    # Lightning writes step metrics after steps 3 and 6 (global_step 2 and 5 at the batch's start).
    assert [step for step, logs in seen if logs] == [2, 5]


def test_skipped_noop_batch_hooks_are_not_called_and_overridden_ones_are() -> None:
    calls: list[str] = []

    class Counting(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            calls.append("end")

    callback, model = Counting(), BoringModel()
    assert "on_train_batch_end" not in compat.skip_noop_batch_hooks(callback)
    assert "on_before_backward" in compat.skip_noop_batch_hooks(callback)
    assert "on_after_backward" in compat.skip_noop_batch_hooks(model)
    profiled: list[str] = []

    class Names(L.pytorch.profilers.PassThroughProfiler):
        def start(self, action_name: str) -> None:
            profiled.append(action_name)

    trainer = cpu_trainer(max_steps=2, limit_val_batches=0, callbacks=[callback], profiler=Names())
    trainer.fit(model)  # Lightning skips a hook that is None instead of calling it
    assert calls == ["end", "end"]
    assert not any("Counting.on_before_backward" in name for name in profiled)
    assert any("Counting.on_train_batch_end" in name for name in profiled)
    assert not any("BoringModel.on_after_backward" in name for name in profiled)


@pytest.mark.skipif(not torch.backends.cuda.is_built(), reason="a CPU build of torch never probes NVML")
def test_skip_repeated_cuda_probe_stops_adam_counting_gpus_each_step(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = []
    device_count = torch.cuda.device_count

    def counting() -> int:
        counted.append(1)
        return device_count()

    monkeypatch.setattr(torch.cuda, "device_count", counting)
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([weight])
    weight.grad = torch.ones(3)

    # With a GPU in sight the variable stays as Lightning set it.
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    with monkeypatch.context() as gpu:
        gpu.setattr(torch.cuda, "device_count", lambda: 1)
        assert not compat.skip_repeated_cuda_probe()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
    if device_count() > 0:
        return  # (on a GPU machine the rest does not apply)
    counted.clear()
    optimizer.step()
    assert counted, "torch's Adam no longer asks for the GPU count each step: drop skip_repeated_cuda_probe"
    assert compat.skip_repeated_cuda_probe()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "0"
    counted.clear()
    optimizer.step()
    assert not counted and not torch.cuda.is_available()


def test_a_checkpoint_callback_that_saves_at_epoch_ends_only_skips_its_batch_hook(tmp_path: Path) -> None:
    at_epoch_ends = ModelCheckpoint(dirpath=tmp_path / "epochs", save_top_k=-1)
    every_step = ModelCheckpoint(dirpath=tmp_path / "steps", every_n_train_steps=2, save_top_k=-1)
    every_minute = ModelCheckpoint(dirpath=tmp_path / "time", train_time_interval=timedelta(minutes=1))
    assert "on_train_batch_end" in compat.skip_noop_batch_hooks(at_epoch_ends)
    assert "on_train_batch_end" not in compat.skip_noop_batch_hooks(every_step)
    assert "on_train_batch_end" not in compat.skip_noop_batch_hooks(every_minute)
    trainer = cpu_trainer(
        max_epochs=2, limit_train_batches=4, limit_val_batches=0, callbacks=[at_epoch_ends, every_step]
    )
    trainer.fit(BoringModel())
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == [
        "epoch=0-step=4.ckpt",
        "epoch=1-step=8.ckpt",
    ]
    assert len(list((tmp_path / "steps").iterdir())) == 4  # steps 2, 4, 6 and 8


def test_a_learning_rate_monitor_logging_per_epoch_skips_its_batch_hook_and_still_logs(
    tmp_path: Path,
) -> None:
    per_epoch, per_step = LearningRateMonitor(logging_interval="epoch"), LearningRateMonitor()
    assert "on_train_batch_start" in compat.skip_noop_batch_hooks(per_epoch)
    assert "on_train_batch_start" not in compat.skip_noop_batch_hooks(per_step)
    logger = CSVLogger(tmp_path, name="", version="")
    trainer = cpu_trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=0, log_every_n_steps=1, logger=logger,
        callbacks=[per_epoch], enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(BoringModel())
    header, *rows = (tmp_path / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("lr-SGD")
    assert sum(1 for row in rows if row.split(",")[column]) == 2  # logged once an epoch, as before


def test_skip_noop_result_moves_logs_the_same_figures_without_remaking_the_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection, _ResultMetric

    assert compat.skip_noop_result_moves()
    patched = _ResultMetric.to
    assert compat.skip_noop_result_moves() and _ResultMetric.to is patched  # idempotent
    figures, metas = {}, {}
    for name, moves in (("stock", patched.__wrapped__), ("patched", patched)):
        monkeypatch.setattr(_ResultMetric, "to", moves)
        collection = _ResultCollection(training=True)
        metas[name] = []
        for rows, number in ((1, 1.0), (2, 3.0), (3, 2.0)):
            value = torch.tensor(number)
            collection.log("training_step", "train/loss", value, on_step=True, batch_size=rows)
            collection.log("training_step", "train/top", value, reduce_fx="max", batch_size=rows)
            metas[name].append(collection["training_step.train/loss"].meta)
        figures[name] = {key: float(v) for key, v in collection.metrics(on_step=False)["callback"].items()}
    assert figures["patched"] == figures["stock"]
    assert figures["patched"]["train/loss_epoch"] == pytest.approx((1 * 1.0 + 2 * 3.0 + 3 * 2.0) / 6)
    assert figures["patched"]["train/top"] == 3.0
    # Lightning's own move deep-copies the metadata on every call; the skipped one leaves it be
    assert metas["stock"][0] is not metas["stock"][1]
    assert metas["patched"][0] is metas["patched"][1] is metas["patched"][2]


def test_skip_noop_result_moves_still_moves_state_to_another_device() -> None:
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection

    compat.skip_noop_result_moves()
    collection = _ResultCollection(training=True)
    collection.log("training_step", "train/loss", torch.tensor(1.0), batch_size=2)
    metric = collection["training_step.train/loss"]
    assert metric.value.device.type == "cpu"
    # a value on another device (the meta device stands in for a GPU) moves the state over, as before
    collection.log("training_step", "train/loss", torch.tensor(2.0, device="meta"), batch_size=2)
    assert metric.value.device.type == "meta" and metric.cumulated_batch_size.device.type == "meta"
    assert all(t.device.type == "meta" for t in metric._defaults.values())


def test_the_on_device_walk_reaches_what_apply_to_collection_reaches() -> None:
    from dataclasses import dataclass

    from torchmetrics import MeanMetric

    @dataclass
    class Holder:
        tensor: torch.Tensor

    class Text(str):
        pass

    cpu = torch.device("cpu")
    nested = {"a": [1, "x", (torch.zeros(1),)], "b": Holder(torch.zeros(1)), "c": Text("t")}
    assert compat._all_tensors_on(nested, cpu)
    assert not compat._all_tensors_on({**nested, "d": Holder(torch.zeros(1, device="meta"))}, cpu)
    assert not compat._all_tensors_on([torch.nn.Parameter(torch.zeros(1, device="meta"))], cpu)
    # a Metric moves itself, and a cycle is left to Lightning's own walk: neither counts as "all there"
    assert not compat._all_tensors_on({"metric": MeanMetric()}, cpu)
    cyclic: list[Any] = [torch.zeros(1)]
    cyclic.append(cyclic)
    assert not compat._all_tensors_on(cyclic, cpu)


def test_deterministic_bincount_counts_as_bincount_and_the_curve_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    from torchmetrics.classification import BinaryPrecisionRecallCurve
    from torchmetrics.utilities import data

    curve_module = "torchmetrics.functional.classification.precision_recall_curve"
    precision_recall_curve = importlib.import_module(curve_module)

    assert compat.deterministic_bincount_without_a_mesh()
    assert compat.deterministic_bincount_without_a_mesh()  # idempotent
    assert precision_recall_curve._bincount is data._bincount
    assert data._bincount.__wrapped__ is not data._bincount
    x = torch.randint(0, 50, (1000,))
    # the sorted count (deterministic off the CPU) is torch.bincount's, minlength below or above the values
    assert torch.equal(compat.sorted_bincount(x, 60), torch.bincount(x, minlength=60))
    assert torch.equal(compat.sorted_bincount(x, 10), torch.bincount(x, minlength=10))
    assert torch.equal(compat.sorted_bincount(x), torch.bincount(x))
    assert compat.sorted_bincount(torch.zeros(0, dtype=torch.long), 3).tolist() == [0, 0, 0]

    # 40 rows x 1,001 thresholds: torchmetrics' counting path (the one below 50,000 pairs)
    preds, target = torch.rand(40, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 2
    curves = []
    for deterministic in (False, True):
        torch.use_deterministic_algorithms(deterministic)
        if deterministic:  # torchmetrics' table is torch.arange(bins).repeat(pairs, 1): not built
            monkeypatch.setattr(torch.Tensor, "repeat", lambda *args: pytest.fail("the table was built"))
        try:
            # lit_dl's decision-threshold curve: with deterministic algorithms torchmetrics' own count
            # compares 160 million pairs here (4 bins x 1,001 thresholds x 40 rows x 1,001)
            metric = BinaryPrecisionRecallCurve(thresholds=1001)
            metric.update(preds, target)
            curves.append(metric.compute())
        finally:
            torch.use_deterministic_algorithms(False)
            monkeypatch.undo()
    for plain, deterministic in zip(*curves, strict=True):  # (precision is NaN where nothing is predicted)
        torch.testing.assert_close(deterministic, plain, rtol=0, atol=0, equal_nan=True)
