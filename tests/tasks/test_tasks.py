"""ClassificationTask and RegressionTask trained for a few epochs on tiny tensors, checkpoints, guards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import FSDPPrecision, MixedPrecision, Precision
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy
from omegaconf import OmegaConf

from lit_dl.callbacks import FiniteLossGuard
from lit_dl.data import TensorBatchDataset, batch_loader
from lit_dl.data.spec import DataSpec
from lit_dl.errors import ConfigError, TrainingError
from lit_dl.tasks import ClassificationTask, RegressionTask
from lit_dl.tasks.base import fuses_by_default

N_FEATURES = 4
NET = {"_target_": "lit_dl.nets.TabularMLP", "hidden_sizes": [16]}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.02}
SPEC = {"in_features": N_FEATURES, "cat_cardinalities": []}
CLASSIFICATION_METRICS = ["accuracy", "auroc", "f1", "precision", "recall", "average_precision"]
REGRESSION_METRICS = ["mse", "rmse", "mae", "r2"]


def table_spec(task_type: str = "classification", **fields: Any) -> DataSpec:
    return DataSpec(task_type=task_type, modality="table", inputs=SPEC, **fields)


def classifier(
    num_classes: int = 2, class_counts: list[int] | None = None, **kwargs: Any
) -> ClassificationTask:
    kwargs.setdefault("net", NET)
    kwargs.setdefault("optimizer", ADAM)
    classes = [f"c{i}" for i in range(num_classes)]
    return ClassificationTask(data=table_spec(classes=classes, class_counts=class_counts), **kwargs)


def regressor(target_mean: float = 0.0, target_std: float = 1.0, **kwargs: Any) -> RegressionTask:
    kwargs.setdefault("net", NET)
    kwargs.setdefault("optimizer", ADAM)
    return RegressionTask(
        data=table_spec("regression", target_mean=target_mean, target_std=target_std), **kwargs
    )


def dataset(x_num: torch.Tensor, y: torch.Tensor) -> TensorBatchDataset:
    return TensorBatchDataset(x_num, torch.zeros(len(x_num), 0, dtype=torch.long), y)


def classification_data(num_classes: int, n: int = 256, seed: int = 0) -> TensorBatchDataset:
    """Classes are a fixed linear function of the features (the same rule for every seed): learnable."""
    weights = torch.tensor([[1.0, 0.0, -1.0], [0.5, -1.0, 0.5], [0.0, 0.3, 0.0], [0.0, 0.0, 0.2]])
    x = torch.randn(n, N_FEATURES, generator=torch.Generator().manual_seed(seed))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() if num_classes == 2 else (x @ weights).argmax(dim=1)
    return dataset(x, y)


def regression_data(n: int = 256, seed: int = 0) -> tuple[TensorBatchDataset, torch.Tensor, float, float]:
    """Raw targets around 100 (std about 18) and a dataset of standardised targets (as the datamodule)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=gen)
    raw = 100.0 + 15.0 * x[:, 0] - 10.0 * x[:, 1] + 2.0 * torch.randn(n, generator=gen)
    mean, std = raw.mean().item(), raw.std(unbiased=False).item()
    return dataset(x, (raw - mean) / std), raw, mean, std


def trainer(max_epochs: int, **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def loader(ds: TensorBatchDataset, shuffle: bool = False) -> torch.utils.data.DataLoader:
    return batch_loader(ds, batch_size=64, shuffle=shuffle, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def full_loss(task: L.LightningModule, ds: TensorBatchDataset) -> float:
    task.eval()
    x_num, x_cat, y = ds.tensors
    return task.compute_loss(task(x_num, x_cat), y).item()


def is_plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


# ---------------------------------------------------------------------------- classification


@pytest.mark.parametrize("num_classes", [2, 3])
def test_classifier_learns_and_reports_test_metrics(num_classes):
    L.seed_everything(0, verbose=False)
    train, test = classification_data(num_classes, seed=0), classification_data(num_classes, n=128, seed=1)
    task = classifier(num_classes)
    assert task.net(torch.zeros(2, N_FEATURES)).shape == (2, 1 if num_classes == 2 else 3)

    before = full_loss(task, train)
    fit = trainer(max_epochs=25, check_val_every_n_epoch=25)
    fit.fit(task, train_dataloaders=loader(train, shuffle=True), val_dataloaders=loader(test))
    after = full_loss(task, train)
    assert after < 0.5 * before
    # Validation ran and logged under its own prefix.
    assert {"val/loss", "val/accuracy", "val/auroc", "train/loss_epoch", "train/f1"} <= set(
        fit.callback_metrics
    )
    assert "train/auroc" not in fit.callback_metrics  # costly metrics are not tracked in training

    (results,) = fit.test(task, dataloaders=loader(test), verbose=False)
    assert {f"test/{m}" for m in CLASSIFICATION_METRICS} | {"test/loss"} <= set(results)
    assert results["test/accuracy"] > 0.8
    assert results["test/auroc"] > 0.9
    for metric in CLASSIFICATION_METRICS:
        assert 0.0 <= results[f"test/{metric}"] <= 1.0


@pytest.mark.parametrize("mode, expected", [("sampled", [0, 2, 5]), ("none", []), ("all", list(range(8)))])
def test_training_predictions_are_made_only_for_the_steps_whose_metrics_are_updated(mode, expected):
    # train_metrics=sampled updates the training metrics on the epoch's first step and the steps the
    # loggers write (Lightning counts steps from 1: global steps 2 and 5 with log_every_n_steps=3); the
    # other steps skip the predictions (softmax) as well: nothing reads them.
    task = classifier(train_metrics=mode)
    steps: list[int] = []
    predictions = task.predictions

    def counted(output: torch.Tensor) -> torch.Tensor:
        if task.trainer.training:
            steps.append(task.trainer.global_step)
        return predictions(output)

    task.predictions = counted
    trainer(1, log_every_n_steps=3, limit_val_batches=0).fit(task, loader(classification_data(2, n=512)))
    assert steps == expected
    assert ("train/accuracy" in task.trainer.callback_metrics) == (mode != "none")


def test_classifier_predict_gives_class_probabilities():
    task = classifier(2)
    ds = classification_data(2, n=40)
    unlabelled = TensorBatchDataset(*ds.tensors[:2])
    batches = trainer(max_epochs=1).predict(task, dataloaders=loader(unlabelled))
    probs = torch.cat(batches)
    assert probs.shape == (40, 2)
    torch.testing.assert_close(probs.sum(1), torch.ones(40))
    with torch.no_grad():
        expected = torch.sigmoid(task(*ds.tensors[:2]).squeeze(-1))
    torch.testing.assert_close(probs[:, 1], expected)


def test_balanced_class_weights_set_bce_pos_weight():
    task = classifier(2, class_counts=[30, 10], class_weights="balanced")
    assert task.criterion.pos_weight is not None
    torch.testing.assert_close(task.criterion.pos_weight, torch.tensor([30 / 10]))
    assert classifier(2, class_counts=[30, 10]).criterion.pos_weight is None


def test_balanced_class_weights_multiclass():
    task = classifier(3, class_counts=[60, 30, 10], class_weights="balanced")
    torch.testing.assert_close(task.criterion.weight, torch.tensor([100 / 180, 100 / 90, 100 / 30]))


def test_explicit_class_weights():
    task = classifier(3, class_weights=[1.0, 2.0, 4.0])
    torch.testing.assert_close(task.criterion.weight, torch.tensor([1.0, 2.0, 4.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_weights": "balanced"}, "class counts"),
        ({"class_weights": [1.0, 2.0, 3.0]}, "class_weights"),
        ({"class_weights": "inverse"}, "class_weights"),
    ],
)
def test_bad_class_weights_raise(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        classifier(2, **kwargs)


def test_single_class_raises():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        ClassificationTask(net=NET, optimizer=ADAM, data=table_spec(classes=["only"]))


# ---------------------------------------------------------------------------- regression


def test_regressor_learns_and_reports_metrics_in_target_units():
    L.seed_everything(0, verbose=False)
    train, _, mean, std = regression_data(seed=0)
    test, raw_test, _, _ = regression_data(n=128, seed=1)
    # The test targets are standardised with the *training* statistics.
    test = dataset(test.tensors[0], (raw_test - mean) / std)
    task = regressor(target_mean=mean, target_std=std)

    before = full_loss(task, train)
    fit = trainer(max_epochs=25)
    fit.fit(task, train_dataloaders=loader(train, shuffle=True))
    assert full_loss(task, train) < 0.3 * before

    (results,) = fit.test(task, dataloaders=loader(test), verbose=False)
    assert {f"test/{m}" for m in REGRESSION_METRICS} | {"test/loss"} <= set(results)
    with torch.no_grad():
        task.eval()
        predicted = task(*test.tensors[:2]).squeeze(-1) * std + mean
    error = predicted.double() - raw_test.double()
    assert results["test/mse"] == pytest.approx(error.pow(2).mean().item(), rel=1e-4)
    assert results["test/rmse"] == pytest.approx(error.pow(2).mean().sqrt().item(), rel=1e-4)
    assert results["test/mae"] == pytest.approx(error.abs().mean().item(), rel=1e-4)
    # The loss is on the standardised target: the MSE in target units is std**2 times larger.
    assert results["test/mse"] == pytest.approx(results["test/loss"] * std**2, rel=1e-3)
    assert results["test/r2"] > 0.8


def test_regression_predictions_are_unscaled():
    task = regressor(target_mean=50.0, target_std=4.0)
    output = torch.tensor([[0.0], [1.0], [-2.5]])
    torch.testing.assert_close(task.predictions(output), torch.tensor([50.0, 54.0, 40.0]))
    torch.testing.assert_close(task.metric_target(torch.tensor([0.5, -1.0])), torch.tensor([52.0, 46.0]))


@pytest.mark.parametrize(
    ("loss", "cls"),
    [
        ("mse", torch.nn.MSELoss),
        ("l1", torch.nn.L1Loss),
        ({"_target_": "torch.nn.HuberLoss", "delta": 0.5}, torch.nn.HuberLoss),
    ],
)
def test_regression_loss_choice(loss, cls):
    assert isinstance(regressor(loss=loss).criterion, cls)


def test_loss_entry_outside_the_allowed_packages_is_refused():
    with pytest.raises(ConfigError, match=r"model\.loss\._target_=numpy\.savetxt is not allowed"):
        regressor(loss={"_target_": "numpy.savetxt", "fname": "x"})


def test_unknown_regression_loss_raises():
    with pytest.raises(ConfigError, match=r"model\.loss"):
        regressor(loss="cosine")


# ---------------------------------------------------------------------------- hyperparameters and checkpoints


def test_hyperparameters_are_plain_data():
    task = classifier(
        2,
        net=OmegaConf.create(NET),
        optimizer=OmegaConf.create(ADAM),
        class_counts=[3, 1],
    )
    hparams = dict(task.hparams)
    assert is_plain(hparams)
    assert hparams["net"] == NET
    # The data's description is not a hyperparameter: the checkpoint's datamodule state gives it back.
    assert "data" not in hparams and "class_names" not in hparams
    assert task.data_spec.classes == ["c0", "c1"]


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_checkpoint_loads_weights_only_and_rebuilds_model(kind, tmp_path: Path):
    L.seed_everything(0, verbose=False)
    if kind == "regression":
        ds, _, mean, std = regression_data(n=64)
        task: L.LightningModule = regressor(target_mean=mean, target_std=std)
        cls: type[L.LightningModule] = RegressionTask
    else:
        num_classes = 2 if kind == "binary" else 3
        ds = classification_data(num_classes, n=64)
        counts = torch.bincount(ds.tensors[2], minlength=num_classes).tolist()
        task = classifier(num_classes, class_counts=counts, class_weights="balanced")
        cls = ClassificationTask
    fit = trainer(max_epochs=2)
    fit.fit(task, train_dataloaders=loader(ds, shuffle=True))
    path = tmp_path / "model.ckpt"
    fit.save_checkpoint(path)

    checkpoint = torch.load(path, weights_only=True)
    assert is_plain(checkpoint["hyper_parameters"])

    restored = cls.load_from_checkpoint(path, map_location="cpu", data=task.data_spec)
    assert type(restored) is cls
    task.eval()
    restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(*ds.tensors[:2]), task(*ds.tensors[:2]), rtol=0, atol=0)
        torch.testing.assert_close(
            restored.compute_loss(restored(*ds.tensors[:2]), ds.tensors[2]),
            task.compute_loss(task(*ds.tensors[:2]), ds.tensors[2]),
        )
    if kind == "regression":
        assert restored.data_spec == task.data_spec


# ---------------------------------------------------------------------------- bad configs and divergence


@pytest.mark.parametrize(
    "net",
    [
        {"_target_": "lit_dl.nets.NoSuchNet"},
        {"_target_": "lit_dl.nets.TabularMLP", "hidden_sizes": [8], "activation": "swishy"},
        {"_target_": "lit_dl.nets.TabularMLP", "hidden_size": [8]},
    ],
)
def test_bad_net_config_raises_config_error(net):
    with pytest.raises(ConfigError, match=r"model\.net"):
        classifier(2, net=net)


def test_finite_loss_guard_stops_on_nan_inputs():
    ds = classification_data(2, n=64)
    x = ds.tensors[0].clone()
    x[::3, 0] = float("nan")
    fit = trainer(max_epochs=1, callbacks=[FiniteLossGuard()])
    with pytest.raises(TrainingError, match="training loss became nan"):
        fit.fit(classifier(2), train_dataloaders=loader(dataset(x, ds.tensors[2])))


def test_finite_loss_guard_stops_on_divergence():
    L.seed_everything(0, verbose=False)
    ds, _, _, _ = regression_data(n=64)
    task = regressor(
        net={"_target_": "lit_dl.nets.TabularMLP", "hidden_sizes": []},
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1e30},
    )
    fit = trainer(max_epochs=10, callbacks=[FiniteLossGuard()])
    with pytest.raises(TrainingError, match=r"lower model\.optimizer\.lr"):
        fit.fit(task, train_dataloaders=loader(ds, shuffle=True))
    assert fit.global_step <= 3  # one batch per epoch: stopped within the first few of 10 epochs


def test_finite_loss_guard_deferred_check_still_stops_before_the_epoch_ends():
    # The accelerator mode (no host sync per step): the first NaN is recorded on the device and looked
    # at later, here at the end of the epoch (before any checkpoint), naming the step it appeared at.
    ds = classification_data(2, n=64)
    x = ds.tensors[0].clone()
    x[0, 0] = float("nan")
    fit = trainer(max_epochs=1, callbacks=[FiniteLossGuard(check_every_n_steps=1000, defer=True)])
    with pytest.raises(TrainingError, match=r"became nan at epoch 0, step 1;"):
        fit.fit(classifier(2), train_dataloaders=loader(dataset(x, ds.tensors[2])))
    assert fit.global_step == 1  # one batch of 64 rows: the check came at the epoch end


def test_fused_optimizer_left_out_when_mixed_precision_clips_gradients():
    # Lightning's MixedPrecision.clip_gradients raises for a fused optimiser: lit_dl does not fuse then.
    ds = classification_data(2, n=128)
    fit = trainer(max_epochs=1, precision="bf16-mixed", gradient_clip_val=1.0)
    task = classifier(2)
    fit.fit(task, train_dataloaders=loader(ds, shuffle=True))
    assert not fit.optimizers[0].defaults["fused"]


def test_optimizer_is_fused_by_default_and_as_configured_otherwise():
    # Fused: one kernel for all parameters (torch's default on the CPU loops over them one by one).
    assert classifier(2).configure_optimizers().defaults["fused"] is True
    for setting in ({"fused": False}, {"foreach": True}):
        task = classifier(2, optimizer={**ADAM, **setting})
        assert not task.configure_optimizers().defaults["fused"]  # the user's choice stands
    # LBFGS has no fused kernel: built as configured.
    lbfgs = classifier(2, optimizer={"_target_": "torch.optim.LBFGS", "_partial_": True})
    assert isinstance(lbfgs.configure_optimizers(), torch.optim.LBFGS)


@pytest.mark.parametrize(
    ("strategy", "precision", "clips", "fused"),
    [
        (SingleDeviceStrategy("cpu"), "32-true", True, True),
        (SingleDeviceStrategy("cpu"), "bf16-mixed", False, True),
        # Mixed precision and clipping: Lightning refuses to clip for an optimiser that unscales itself.
        (SingleDeviceStrategy("cpu"), "bf16-mixed", True, False),
        (DDPStrategy(), "32-true", False, True),
        (FSDPStrategy(), "32-true", False, False),  # sharded parameters: torch's default
    ],
)
def test_fused_optimizer_only_where_the_strategy_and_precision_allow_it(strategy, precision, clips, fused):
    if isinstance(strategy, FSDPStrategy):
        strategy.precision_plugin = FSDPPrecision(precision)
    else:
        strategy.precision_plugin = (
            MixedPrecision(precision, "cpu") if precision.endswith("mixed") else Precision()
        )
    params = list(classifier(2).parameters())
    assert fuses_by_default(ADAM, params, strategy, clips) is fused
    assert not fuses_by_default(ADAM, [torch.zeros(2, dtype=torch.long)], None)  # not floating


def test_fused_optimizer_trains_and_resumes_an_unfused_checkpoint(tmp_path: Path):
    # A checkpoint of an earlier release (optimiser state unfused) resumes under the fused default.
    ds = classification_data(2, n=128)
    unfused = classifier(2, optimizer={**ADAM, "fused": False})
    first = trainer(max_epochs=2, default_root_dir=tmp_path)
    first.fit(unfused, train_dataloaders=loader(ds, shuffle=True))
    first.save_checkpoint(tmp_path / "unfused.ckpt")
    resumed = classifier(2)
    second = trainer(max_epochs=4, default_root_dir=tmp_path)
    second.fit(resumed, train_dataloaders=loader(ds, shuffle=True), ckpt_path=tmp_path / "unfused.ckpt")
    assert second.global_step == 2 * first.global_step
    assert all(torch.isfinite(p).all() for p in resumed.parameters())


class CSVRows(L.Callback):
    """The metrics Lightning hands its loggers, per call (what a CSV or W&B logger would write)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        rows = self.rows

        class Logger(L.pytorch.loggers.logger.DummyLogger):
            def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
                rows.append({**metrics, "step": step})

        trainer.loggers = [Logger()]


def test_lean_logging_step_scalars_every_n_steps_and_exact_epoch_means():
    ds = classification_data(2, n=256)
    rows = CSVRows()
    fit = trainer(max_epochs=2, log_every_n_steps=2, callbacks=[rows])
    model = classifier(2)
    losses: list[float] = []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            losses.append(float(outputs["loss"]))

    fit.callbacks.append(Losses())
    fit.fit(model, train_dataloaders=loader(ds, shuffle=True), val_dataloaders=loader(ds))
    step_rows = [r for r in rows.rows if "train/loss_step" in r]
    assert [r["step"] for r in step_rows] == [1, 3, 5, 7]  # 4 batches an epoch, every 2nd step written
    assert [r["train/loss_step"] for r in step_rows] == pytest.approx(losses[1::2], rel=1e-6)
    epoch_means = [r["train/loss_epoch"] for r in rows.rows if "train/loss_epoch" in r]
    assert epoch_means == pytest.approx([sum(losses[:4]) / 4, sum(losses[4:]) / 4], rel=1e-6)  # equal batches
    assert "train/accuracy" in fit.callback_metrics and "val/auroc" in fit.callback_metrics
    assert fit.callback_metrics["train/loss"] == pytest.approx(epoch_means[-1])  # for monitor=train/loss


@pytest.mark.parametrize("stop", ["max_steps", "stop_request_held_by_min_epochs"])
def test_epoch_mean_logged_once_over_the_batches_the_epoch_ran(stop: str):
    # The training epoch's mean is logged after the batch that ends it: the last, the one max_steps
    # ends at, or the one a stop request ends it at, but not while min_epochs keeps training going.
    ds = classification_data(2, n=256)  # 4 batches an epoch
    rows = CSVRows()
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            losses.append(float(outputs["loss"]))
            if stop != "max_steps" and batch_idx == 1 and trainer.current_epoch == 0:
                trainer.should_stop = True  # e.g. early stopping; min_epochs=2 holds training

    if stop == "max_steps":
        fit = trainer(max_epochs=2, max_steps=6, callbacks=[rows, Record()])
    else:
        fit = trainer(max_epochs=2, min_epochs=2, callbacks=[rows, Record()])
    fit.fit(classifier(2), train_dataloaders=loader(ds, shuffle=True))
    epoch_means = [r["train/loss_epoch"] for r in rows.rows if "train/loss_epoch" in r]
    if stop == "max_steps":  # epoch 1 ends after its 2nd batch
        assert len(losses) == 6
        assert epoch_means == pytest.approx([sum(losses[:4]) / 4, sum(losses[4:]) / 2], rel=1e-6)
    else:  # the stop is held until min_epochs: epoch 0 runs to its end, epoch 1 stops after one batch
        assert epoch_means[0] == pytest.approx(sum(losses[:4]) / 4, rel=1e-6)
        assert len(epoch_means) == 2
