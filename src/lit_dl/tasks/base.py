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

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lit_dl.builder import build, build_partial
from lit_dl.compat import trainer_or_none
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
        # Collects the arguments of the whole __init__ chain (subclasses' too); the spec is left out.
        self.save_hyperparameters(ignore=["data"])
        for key, value in list(self.hparams.items()):
            self.hparams[key] = to_plain(value)
        self.data_spec = DataSpec.coerce(data)
        self.check_data(self.data_spec)
        # MeanMetric per logged epoch mean (log_mean), made on first use.
        self.epoch_means = nn.ModuleDict()
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

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

    def build_optimizer(self, key: str, params: Iterable[Any]) -> torch.optim.Optimizer:
        """The optimiser of the ``_partial_`` entry ``model.<key>`` over ``params``."""
        node = self.hparams.get(key)
        if not node:
            raise ConfigError(
                f"model.{key} is not set: give an optimiser, e.g. model.{key}._target_=torch.optim.Adam"
            )
        return build_partial(node, f"model.{key}", params=params)

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
    def log_mean(
        self, name: str, value: Tensor, batch_size: int, on_step: bool = False, prog_bar: bool = False
    ) -> None:
        """Log ``value`` per step (optionally) and as its batch-size-weighted mean over the epoch.

        The epoch mean goes through a :class:`~torchmetrics.MeanMetric`, so under DDP it covers
        every process exactly even when they see unequal numbers of rows
        (``self.log(..., sync_dist=True)`` of a tensor does not: Lightning 2.6 averages its
        integer row count, https://github.com/Lightning-AI/pytorch-lightning/issues/21859).
        A single process logging a training step skips the metric's bookkeeping.
        """
        value = value.detach().float()
        trainer = trainer_or_none(self)
        if on_step and (trainer is None or trainer.world_size == 1) and name.startswith("train/"):
            self.log(name, value, on_step=True, on_epoch=True, prog_bar=prog_bar, batch_size=batch_size)
            return
        key = name.replace("/", "_")
        if key not in self.epoch_means:
            self.epoch_means[key] = MeanMetric().to(self.device)
        mean = self.epoch_means[key]
        if on_step:
            mean(value, batch_size)  # forward: this step's value, and the running mean
        else:
            mean.update(value, batch_size)
        self.log(
            name,
            mean,
            on_step=on_step,
            on_epoch=True,
            prog_bar=prog_bar,
            batch_size=batch_size,
            metric_attribute=f"epoch_means.{key}",  # made after Lightning listed the metric attributes
        )

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
