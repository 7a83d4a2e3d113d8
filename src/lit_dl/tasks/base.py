"""``Task``: the one base of every lit_dl LightningModule.

A task owns what every model family shares: plain hyperparameters (so a checkpoint rebuilds
it), the :class:`~lit_dl.data.spec.DataSpec` of its data, building its parts from config
entries through :func:`lit_dl.builder.build`, optimiser and scheduler, and epoch means that
are exact under DDP. Families add their own steps on top:
:class:`~lit_dl.tasks.supervised.SupervisedTask` (classification, regression, forecasting,
language models) and :class:`~lit_dl.tasks.generative.GenerativeTask` (VAEs, GANs, for
images and tables).

Extension points are named methods called from ``__init__`` after the hyperparameters are
saved, so a subclass reads everything from ``self.hparams`` and ``self.data_spec`` and never
needs to set attributes before ``super().__init__()``:

- :meth:`check_data`: refuse data the task cannot model (one line naming the fix);
- :meth:`configure_models`: build the networks (``self.build_part("net", ...)``);
- :meth:`configure_losses`: build the loss(es);
- :meth:`configure_metrics`: build the metric collections.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from hydra.utils import get_class
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from lit_dl.builder import build, build_partial
from lit_dl.compat import (
    deterministic_bincount_without_a_mesh,
    epoch_ends_after_batch,
    logs_this_step,
    skip_noop_result_moves,
    trainer_or_none,
)
from lit_dl.data.spec import DataSpec
from lit_dl.errors import CheckpointError, ConfigError
from lit_dl.utils import to_plain

STAGES = ("train", "val", "test")
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# A model for each kind of problem, named in the error when a task meets data it cannot model.
EXAMPLE_MODEL = {
    "classification": "mlp_classifier",
    "regression": "mlp_regressor",
    "forecasting": "lstm_forecaster",
    "language_model": "char_lstm",
    "generative": "tvae (tables) or vae_conv (images)",
}


def fuses_by_default(
    node: Mapping[str, Any], params: list[Any], strategy: Any = None, clips: bool = False
) -> bool:
    """Whether lit_dl builds the optimiser of ``node`` with ``fused=True`` (one kernel for every
    parameter's update instead of a dozen small ops per parameter tensor).

    On the CPU torch's default Adam updates one parameter tensor at a time: 0.8 ms a step over the
    digits VAE's parameters against 0.36 ms fused (measured on 2 cores). So lit_dl fuses when the
    optimiser class offers it, the entry sets neither ``fused`` nor ``foreach``
    (``model.optimizer.fused=false`` turns it off), every parameter is a floating
    tensor on a device with fused kernels, the strategy is a single device or DDP (FSDP's and
    DeepSpeed's sharded parameters keep torch's default), and under mixed precision the gradients
    are not clipped (``clips``: Lightning refuses to clip for an optimiser that unscales itself).
    """
    if not isinstance(node, Mapping) or "fused" in node or "foreach" in node:
        return False
    target = node.get("_target_")
    if not isinstance(target, str):
        return False
    try:
        cls = get_class(target)
        accepts = "fused" in inspect.signature(cls).parameters
    except Exception:  # an unimportable target fails later, with build_partial's message
        return False
    if not accepts or not params:
        return False
    if strategy is not None:
        precision = str(getattr(strategy.precision_plugin, "precision", "32-true"))
        plain = isinstance(strategy, (SingleDeviceStrategy, DDPStrategy)) and not isinstance(
            strategy, DeepSpeedStrategy
        )
        if not plain or (clips and precision.endswith("-mixed")):
            return False
    return all(
        isinstance(p, Tensor) and p.is_floating_point() and p.device.type in _fused_devices() for p in params
    )


def _fused_devices() -> tuple[str, ...]:
    """Device types with torch's fused optimiser kernels (torch's private list, or cpu and cuda)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return tuple(_get_fused_kernels_supported_devices())
    except ImportError:  # pragma: no cover - older or newer torch without the helper
        return ("cpu", "cuda")


class Task(L.LightningModule):
    """Base of every lit_dl task (a LightningModule).

    Args:
        data: the data's :class:`~lit_dl.data.spec.DataSpec` (or its dict). Handed over by the
            train verb from the datamodule; not saved with the hyperparameters, since the
            checkpoint holds the datamodule's fitted state, which gives the spec back.
        optimizer: ``_target_`` entry of the optimiser with ``_partial_: true``.
        scheduler: ``_target_`` entry of an epoch-wise LR scheduler with ``_partial_: true``.
        scheduler_monitor: the metric a ``ReduceLROnPlateau`` scheduler watches.

    Class attributes a subclass sets:
        task_type: the :attr:`DataSpec.task_type` it models ("" for any).
        modalities: the :attr:`DataSpec.modality` values it models (empty for any).
    """

    task_type: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        data: DataSpec | Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        scheduler_monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        skip_noop_result_moves()  # self.log without Lightning's re-move of its state (compat)
        deterministic_bincount_without_a_mesh()  # trainer.deterministic=true without torchmetrics' table
        # Collects the arguments of the whole __init__ chain (subclasses' too); the spec is left out.
        self.save_hyperparameters(ignore=["data"])
        for key, value in list(self.hparams.items()):
            self.hparams[key] = to_plain(value)
        self.data_spec = DataSpec.coerce(data)
        self.check_data(self.data_spec)
        # Epoch sums of log_mean and metrics of log_epoch_metrics, per stage (see "logging" below).
        self._epoch_sums: dict[str, dict[str, list[Any]]] = {}
        self._epoch_metrics: dict[str, dict[int, tuple[Metric | MetricCollection, bool]]] = {}
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` twice around every hook it calls: 44 times a training
        # step in a cProfile of a bare Lightning MLP run. nn.Module.__setattr__ looks through
        # parameters, buffers and submodules each time; it is a plain attribute: set it directly.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # ------------------------------------------------------------ extension points
    def check_data(self, spec: DataSpec | None) -> None:
        """Refuse data this task cannot model, in one line that names the fix."""
        name = type(self).__name__
        if spec is None:
            raise ConfigError(
                f"{name} needs the data's spec (data=datamodule.data_spec()); `lit-dl train` passes it"
            )
        if self.task_type and spec.task_type != self.task_type:
            hint = EXAMPLE_MODEL.get(spec.task_type, "...")
            raise ConfigError(
                f"the data is a {spec.task_type} problem but model={name} does {self.task_type}; "
                f"pick a {spec.task_type} model (e.g. model={hint})"
                + (" or set data.task" if spec.task_type in ("classification", "regression") else "")
            )
        if self.modalities and spec.modality not in self.modalities:
            raise ConfigError(
                f"model={name} needs {' or '.join(self.modalities)} data, the data is {spec.modality} "
                "(e.g. data=digits for images, data=churn_synthetic for tables)"
            )

    def configure_models(self) -> None:
        """Build the networks (``self.net = self.build_part("net", **sizes)``)."""

    def configure_losses(self) -> None:
        """Build the loss modules."""

    def configure_metrics(self) -> None:
        """Build the metric collections (torchmetrics objects, logged as objects)."""

    # ------------------------------------------------------------ building from config
    def build_part(self, key: str, **kwargs: Any) -> Any:
        """Build the config entry ``model.<key>`` with extra arguments (sizes from the data)."""
        return build(self.hparams[key], f"model.{key}", **kwargs)

    def build_optimizer(
        self, key: str, params: Iterable[Any], fused: bool | None = None
    ) -> torch.optim.Optimizer:
        """The optimiser of the ``_partial_`` entry ``model.<key>`` over ``params``.

        ``fused``: None uses torch's fused kernel when :func:`fuses_by_default` allows it (the
        entry sets neither ``fused`` nor ``foreach``); False builds the optimiser as configured.
        """
        node = self.hparams.get(key)
        if not node:
            raise ConfigError(
                f"model.{key} is not set: give an optimiser, e.g. model.{key}._target_=torch.optim.Adam"
            )
        params = list(params)
        if fused is None:
            trainer = trainer_or_none(self)
            clips = bool(self.hparams.get("gradient_clip_val")) or bool(
                trainer is not None and trainer.gradient_clip_val
            )
            fused = fuses_by_default(node, params, None if trainer is None else trainer.strategy, clips)
        extra = {"fused": True} if fused else {}
        return build_partial(node, f"model.{key}", params=params, **extra)

    def with_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """``configure_optimizers``' answer: the optimiser and the configured epoch-wise scheduler, if any."""
        node = self.hparams.get("scheduler")
        if not node:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": build_partial(node, "model.scheduler", optimizer),
                "monitor": self.hparams.get("scheduler_monitor", "val/loss"),
                "interval": "epoch",
            },
        }

    def configure_optimizers(self) -> Any:
        return self.with_scheduler(self.build_optimizer("optimizer", self.parameters()))

    # ------------------------------------------------------------ checks Lightning calls
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Refuse a training batch of one row when the network has batch norm (it cannot train on one)."""
        if (
            batch_idx == 0
            and batch_rows(batch) == 1
            and any(isinstance(m, BATCH_NORMS) for m in self.modules())
        ):
            raise ConfigError(
                "a training batch of 1 row: the network's batch norm needs at least 2; set data.batch_size "
                "to 2 or more (or use a network without batch norm)"
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, in one line, weights that do not fit this task (``ckpt_path=`` of another model).

        Lightning calls this before it loads the weights when a run resumes.
        """
        check_weights(self, checkpoint)

    # ------------------------------------------------------------ logging
    # The lean hot path. Lightning's ``self.log`` costs tens of microseconds a call and a logged
    # metric object is computed by Lightning's machinery every step; with a small model that is
    # as much as the step itself. So a step only adds to sums kept on the device (no host
    # synchronisation): step scalars are handed to Lightning on the steps its loggers write
    # (``trainer.log_every_n_steps``), and epoch means and metric collections are computed once
    # per epoch (summed over the processes under DDP). Subclasses that override
    # ``on_train_batch_end`` or the ``on_*_epoch_end`` hooks call ``super()``.

    def log_mean(
        self, name: str, value: Tensor, batch_size: int, on_step: bool = False, prog_bar: bool = False
    ) -> None:
        """Log the batch-size-weighted mean of ``value`` over the epoch as ``name`` (``<name>_epoch``
        when also logged per step), and with ``on_step`` this step's value as ``<name>_step``.

        The epoch mean is exact under DDP even when processes see unequal numbers of rows
        (``self.log(..., sync_dist=True)`` of a tensor is not: Lightning 2.6 averages its integer row
        count, https://github.com/Lightning-AI/pytorch-lightning/issues/21859).
        """
        value = value.detach().float()
        stage = name.partition("/")[0]
        sums = self._epoch_sums.setdefault(stage, {})
        entry = sums.get(name)
        if entry is None:  # [weighted sum on the device, rows (a host number), on_step, prog_bar]
            entry = sums[name] = [torch.zeros((), device=value.device), 0, on_step, prog_bar]
        entry[0].add_(value, alpha=batch_size)
        entry[1] += batch_size
        if on_step and self._logs_this_step():
            self.log(
                f"{name}_step", value, on_step=True, on_epoch=False, prog_bar=prog_bar, batch_size=batch_size
            )

    def log_epoch_metrics(
        self, stage: str, metrics: Metric | MetricCollection, prog_bar: bool = False
    ) -> None:
        """Log ``metrics`` (updated by the caller this step) once, computed at the end of the ``stage`` epoch.

        Metric collections are logged under their own (prefixed) names, a single metric under
        ``stage/<attribute name>`` unless given through a collection.
        """
        self._epoch_metrics.setdefault(stage, {})[id(metrics)] = (metrics, prog_bar)

    def _logs_this_step(self) -> bool:
        trainer = trainer_or_none(self)
        return trainer is None or logs_this_step(trainer)

    def _log_epoch(self, stage: str) -> None:
        """Log the ``stage`` epoch's means and metrics, then start the next epoch from zero."""
        sums = self._epoch_sums.pop(stage, {})
        if sums:
            names = sorted(sums)
            rows = torch.tensor([float(sums[n][1]) for n in names], device=sums[names[0]][0].device)
            totals = torch.stack([torch.stack([sums[n][0] for n in names]), rows], dim=1)
            trainer = trainer_or_none(self)
            if trainer is not None and trainer.world_size > 1:
                totals = trainer.strategy.reduce(totals, reduce_op="sum")
            for name, (total, rows) in zip(names, totals, strict=True):
                on_step, prog_bar = sums[name][2], sums[name][3]
                mean = total / rows.clamp_min(1)
                if on_step:  # as Lightning names a metric logged per step and per epoch
                    self.log(f"{name}_epoch", mean, on_step=False, on_epoch=True)
                # (also) the plain name, which callbacks such as ModelCheckpoint(monitor=...) read
                self.log(name, mean, on_step=False, on_epoch=True, prog_bar=prog_bar, logger=not on_step)
        for metrics, prog_bar in self._epoch_metrics.pop(stage, {}).values():
            values = metrics.compute()  # every process takes part (torchmetrics syncs the states)
            if not isinstance(values, dict):
                values = {metrics_name(self, metrics, stage): values}
            values = {k: v.float() for k, v in values.items()}
            self.log_dict(values, on_step=False, on_epoch=True, prog_bar=prog_bar)
            metrics.reset()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the epoch's last training batch (or the one a stop request ends it at), log the epoch.

        Logged here rather than in ``on_train_epoch_end``, which Lightning calls after validation and
        after the callbacks' own ``on_train_epoch_end`` (the epoch line of the progress bar reads them).
        """
        trainer = trainer_or_none(self)
        if trainer is not None and epoch_ends_after_batch(trainer, batch_idx):
            self._log_epoch("train")

    def on_train_epoch_start(self) -> None:
        self._epoch_sums.pop("train", None)
        self._epoch_metrics.pop("train", None)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # ------------------------------------------------------------ reporting
    def summarize(self, metrics: dict[str, float]) -> str | None:
        """A sentence about the final metrics printed after the table (e.g. a baseline comparison)."""
        return None


def batch_rows(batch: Any) -> int | None:
    """Rows of a batch: the length of its first tensor (None when it has none)."""
    first = batch
    while isinstance(first, list | tuple | Mapping) and len(first):
        first = next(iter(first.values())) if isinstance(first, Mapping) else first[0]
    return len(first) if isinstance(first, Tensor) and first.ndim else None


def check_weights(task: L.LightningModule, checkpoint: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` when a checkpoint's weights lack, add or resize ``task``'s tensors."""
    stored = checkpoint.get("state_dict") or {}
    own = task.state_dict()
    resized = [k for k in own if k in stored and tuple(getattr(stored[k], "shape", ())) != own[k].shape]
    missing = [k for k in own if k not in stored] if task.strict_loading else []
    extra = [k for k in stored if k not in own] if task.strict_loading else []
    if not (resized or missing or extra):
        return
    name = type(task).__name__
    meta = checkpoint.get("lit_dl")
    stored_task = str(meta.get("task", "")).rpartition(".")[2] if isinstance(meta, Mapping) else ""
    if stored_task and stored_task != name:
        raise CheckpointError(
            f"the checkpoint holds a {stored_task}, this run builds a {name}: resume (ckpt_path=) only with "
            "the model and data config the checkpoint was trained with, or leave ckpt_path unset"
        )
    if resized:
        k = resized[0]
        detail = f"{k} is {list(getattr(stored[k], 'shape', ()))} there, {list(own[k].shape)} here"
    else:
        detail = f"it lacks {missing[0]}" if missing else f"it has an unknown {extra[0]}"
    raise CheckpointError(
        f"the checkpoint's weights do not fit this {name} ({detail}): resume with the model config it "
        "was trained with (its run's config.yaml), or leave ckpt_path unset"
    )


def softmax_or_sigmoid(logits: Tensor) -> Tensor:
    """Class probabilities ``(B, K)`` from logits ``(B, 1)`` (binary) or ``(B, K)``."""
    if logits.shape[-1] == 1:
        p = torch.sigmoid(logits.squeeze(-1).float())
        return torch.stack([1 - p, p], dim=-1)
    return torch.softmax(logits.float(), dim=-1)


def metrics_name(module: nn.Module, metric: Metric, stage: str) -> str:
    """``stage/<attribute>`` of a single metric logged through :meth:`Task.log_epoch_metrics`."""
    for name, child in module.named_modules():
        if child is metric:
            attribute = name.rpartition(".")[2]
            return f"{stage}/{attribute.removeprefix(stage + '_')}"
    return f"{stage}/{type(metric).__name__.lower()}"
