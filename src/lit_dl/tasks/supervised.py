"""``SupervisedTask``: a network from config, a loss from config, metrics per stage, one shared step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from lit_dl.builder import build
from lit_dl.errors import ConfigError
from lit_dl.losses import loss_node
from lit_dl.tasks.base import STAGES, Task


class SupervisedTask(Task):
    """Learn a mapping from inputs to targets with one network.

    A batch is a tuple of tensors; :meth:`split_batch` says which are the inputs (handed to
    ``forward`` and the network, in order) and which is the target (default: the last tensor
    is the target). The loss is the config entry ``model.loss`` (any ``nn.Module`` taking
    ``(output, target)``, e.g. ``model.loss._target_=lit_dl.losses.FocalLoss``) or the task's
    :meth:`default_loss`; the metrics are ``model.metrics`` (a mapping of names to torchmetrics
    entries) or the task's :meth:`default_metrics`, cloned per stage with a ``train/``, ``val/``
    or ``test/`` prefix and logged as objects.

    Subclasses say how big the output is (:meth:`output_size`) and how outputs read
    (:meth:`predictions`); everything else has a default that a subclass may override.

    Args:
        net: ``_target_`` entry of the network; the data spec's ``inputs`` and ``out_features``
            are added.
        optimizer: ``_target_`` entry of the optimiser with ``_partial_: true``.
        loss: ``_target_`` entry of the loss, a short name (``mse``, ``l1``, ``huber``, ...:
            :data:`lit_dl.losses.LOSS_NAMES`), or None for the task's default.
        metrics: ``{name: _target_ entry}`` of torchmetrics, or None for the task's default.
        train_metrics: metrics on training batches too (the cheap ones, see
            :meth:`train_metric_names`): ``sampled`` (or true; default) on the batches of the steps
            whose scalars are logged (every ``trainer.log_every_n_steps``-th) and each epoch's
            first, an estimate over a sample of the epoch's batches at a tenth of the cost;
            ``all`` on every batch; ``none`` (or false).
        channels_last: keep image batches and conv weights in channels-last memory format.
        compile: run the network through ``torch.compile`` (checkpoints hold the plain weights).
        **kwargs: see :class:`~lit_dl.tasks.base.Task` (``data``, ``scheduler``, ...).
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        loss: Mapping[str, Any] | str | None = None,
        metrics: Mapping[str, Any] | None = None,
        train_metrics: bool | str = "sampled",
        channels_last: bool = False,
        compile: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, **kwargs)

    # ------------------------------------------------------------ building
    def output_size(self) -> int:
        """Width of the network's output (``out_features``)."""
        raise NotImplementedError(f"{type(self).__name__} must say its output_size()")

    def net_kwargs(self) -> dict[str, Any]:
        """Sizes handed to the network's constructor besides its config entry."""
        assert self.data_spec is not None
        return {**self.data_spec.inputs, "out_features": self.output_size()}

    def configure_models(self) -> None:
        self.net = self.build_part("net", **self.net_kwargs())
        if self.hparams.get("channels_last"):
            self.net = self.net.to(memory_format=torch.channels_last)
        # The compiled wrapper is kept out of the module tree (object.__setattr__), so state_dict
        # keys stay those of the plain network and checkpoints load with or without compile.
        object.__setattr__(
            self, "_run_net", torch.compile(self.net) if self.hparams.get("compile") else self.net
        )

    def default_loss(self) -> nn.Module:
        """The loss when ``model.loss`` is not set."""
        raise NotImplementedError(f"{type(self).__name__} has no default loss: set model.loss")

    def configure_losses(self) -> None:
        node = loss_node(self.hparams.get("loss"))
        self.criterion = build(node, "model.loss") if node else self.default_loss()

    def default_metrics(self) -> MetricCollection:
        """The metrics when ``model.metrics`` is not set."""
        return MetricCollection({})

    def train_metric_names(self, metrics: MetricCollection) -> list[str]:
        """Names of the metrics also tracked on training batches (the cheap ones; default: all)."""
        return list(metrics.keys(keep_base=True))

    def configure_metrics(self) -> None:
        nodes = self.hparams.get("metrics")
        if nodes:
            if not isinstance(nodes, Mapping):
                raise ConfigError(
                    "model.metrics must map names to torchmetrics entries, e.g. {f1: {_target_: ...}}"
                )
            metrics = MetricCollection(
                {name: build(node, f"model.metrics.{name}") for name, node in nodes.items()}
            )
        else:
            metrics = self.default_metrics()
        self.train_metrics_mode = train_metrics_mode(self.hparams.get("train_metrics", True))
        names = self.train_metric_names(metrics) if self.train_metrics_mode != "none" else []
        self._train_metrics_sampled = False  # this epoch
        self.train_metrics = MetricCollection({n: metrics[n] for n in names}).clone(prefix="train/")
        for metric in self.train_metrics.values():
            # The checks of the inputs read tensors back to the host every step (a GPU sync); the
            # same inputs are checked in validation, which keeps them.
            if hasattr(metric, "validate_args"):
                metric.validate_args = False
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def metric_collection(self, stage: str) -> MetricCollection:
        return getattr(self, f"{stage}_metrics")

    # ------------------------------------------------------------ steps
    def split_batch(self, batch: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], Tensor]:
        """``(inputs, target)`` of a labelled batch: by default every tensor but the last is an input."""
        *inputs, target = batch
        return tuple(inputs), target

    def forward(self, *inputs: Tensor) -> Tensor:
        """The network's output for a batch's inputs (as :meth:`split_batch` gives them)."""
        if self.hparams.get("channels_last"):
            inputs = tuple(
                x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in inputs
            )
        return self._run_net(*inputs)

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The loss of one batch (default: ``criterion(output, target)``)."""
        return self.criterion(output, target)

    def predictions(self, output: Tensor) -> Tensor:
        """What metrics see: probabilities, or values in the target's units."""
        return output

    def metric_target(self, target: Tensor) -> Tensor:
        """The target as metrics compare it with :meth:`predictions`."""
        return target

    def update_metrics(
        self, metrics: MetricCollection, predictions: Tensor, target: Tensor, inputs: tuple[Tensor, ...]
    ) -> None:
        """Feed one batch to the stage's metrics (override to give some metrics other predictions)."""
        metrics.update(predictions, self.metric_target(target))

    def shared_step(self, batch: tuple[Tensor, ...], stage: str) -> tuple[Tensor, Tensor | None]:
        """Loss and predictions of one labelled batch; updates and logs the stage's metrics.

        A training step whose metrics are not updated (``train_metrics: sampled`` between logged
        steps, or ``none``) computes no predictions (None): nothing reads them.
        """
        inputs, target = self.split_batch(batch)
        output = self(*inputs)
        loss = self.compute_loss(output, target)
        metrics = self.metric_collection(stage)
        updates = bool(len(metrics)) and self.updates_metrics(stage)
        predictions = self.predictions(output.detach()) if updates or stage != "train" else None
        if updates:
            self.update_metrics(metrics, predictions, target, inputs)
        self.log_step(stage, loss, metrics, batch_size=len(target))
        return loss, predictions

    def updates_metrics(self, stage: str) -> bool:
        """Whether this batch updates the stage's metrics (training: see ``train_metrics``)."""
        if stage != "train" or self.train_metrics_mode == "all":
            return True
        if self._train_metrics_sampled and not self._logs_this_step():
            return False
        self._train_metrics_sampled = True
        return True

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._train_metrics_sampled = False

    def log_step(
        self,
        stage: str,
        loss: Tensor,
        metrics: MetricCollection,
        batch_size: int,
        metrics_on_bar: bool = False,
    ) -> None:
        """Log the loss (per step in training, per epoch always) and the metrics (per epoch)."""
        self.log_mean(f"{stage}/loss", loss, batch_size, on_step=stage == "train", prog_bar=True)
        if len(metrics):
            self.log_epoch_metrics(stage, metrics, prog_bar=metrics_on_bar and stage != "train")

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self.shared_step(batch, "train")[0]

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        loss, predictions = self.shared_step(batch, "test")
        return {"loss": loss, "predictions": predictions}  # for callbacks such as the plots

    # ------------------------------------------------------------ prediction
    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Outputs for an unlabelled batch (every tensor of it is an input), see :meth:`predict_output`."""
        inputs = tuple(batch) if isinstance(batch, tuple | list) else (batch,)
        return self.predict_output(self(*inputs))

    def predict_output(self, output: Tensor) -> Tensor:
        """What ``lit-dl predict`` collects for a batch of network outputs."""
        return self.predictions(output)

    def prediction_columns(self, outputs: Tensor) -> dict[str, np.ndarray | list[Any]]:
        """``lit-dl predict``'s columns for the collected outputs (one row per input row)."""
        values = outputs.float().cpu()
        if values.ndim == 1 or values.shape[-1] == 1:
            return {"prediction": values.reshape(len(values)).numpy()}
        names = (self.data_spec.classes if self.data_spec else None) or [
            str(i) for i in range(values.shape[-1])
        ]
        return {f"prediction_{name}": values[:, i].numpy() for i, name in enumerate(names)}


TRAIN_METRICS = ("sampled", "all", "none")


def train_metrics_mode(value: bool | str) -> str:
    """``model.train_metrics`` checked: ``sampled`` (true), ``all`` or ``none`` (false)."""
    if isinstance(value, bool):
        return "sampled" if value else "none"
    if value not in TRAIN_METRICS:
        raise ConfigError(f"model.train_metrics must be sampled, all or none (or true/false), got {value!r}")
    return str(value)


__all__ = ["STAGES", "SupervisedTask"]
