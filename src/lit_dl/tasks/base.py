"""The thin base of every supervised task: network from config, optimiser, scheduler, shared step."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

import lit_dl
from lit_dl.errors import ConfigError
from lit_dl.utils import class_path, to_plain

STAGES = ("train", "val", "test")


class BaseTask(L.LightningModule):
    """A LightningModule that builds its network from a config entry.

    The network, optimiser and scheduler arrive as plain config dicts (with
    ``_target_``), so the hyperparameters saved in a checkpoint are plain data and
    ``load_from_checkpoint`` rebuilds the whole model from the checkpoint alone.
    Subclasses set :attr:`task_type`, :meth:`output_size`, :meth:`configure_metrics`,
    :meth:`compute_loss` and :meth:`predictions`.

    Args:
        net: ``_target_`` entry of the network; ``input_spec`` and ``out_features`` are added.
        optimizer: ``_target_`` entry of the optimiser with ``_partial_: true``.
        scheduler: ``_target_`` entry of an LR scheduler with ``_partial_: true``, or None.
        scheduler_monitor: metric a ``ReduceLROnPlateau`` scheduler watches.
        input_spec: input sizes from the datamodule (e.g. ``in_features``).
        train_metrics: also compute metrics on training batches (costs ~0.5 ms a step;
            turn off for the last bit of speed with very small models).
        channels_last: keep image batches and conv weights in channels-last memory
            format (faster convolutions on recent GPUs with mixed precision).
        compile: run the network through ``torch.compile`` (the checkpoint still holds
            the plain network's weights).
    """

    task_type: ClassVar[str] = ""

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        scheduler_monitor: str = "val/loss",
        input_spec: dict[str, Any] | None = None,
        train_metrics: bool = True,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for key, value in list(self.hparams.items()):
            self.hparams[key] = to_plain(value)
        self.net = self.configure_net()
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # The compiled wrapper is kept out of the module tree (object.__setattr__), so state_dict
        # keys stay those of the plain network and checkpoints load with or without compile.
        object.__setattr__(self, "_run_net", torch.compile(self.net) if compile else self.net)
        metrics = self.configure_metrics()
        train_subset = self.train_metric_subset(metrics) if train_metrics else MetricCollection({})
        self.train_metrics = train_subset.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # Epoch means of the loss, summed over every process of a DDP run (see log_step).
        self.loss_means = nn.ModuleDict({f"{stage}_loss": MeanMetric() for stage in STAGES})

    # ------------------------------------------------------------ building
    def output_size(self) -> int:
        raise NotImplementedError

    def net_kwargs(self) -> dict[str, Any]:
        """Sizes handed to the network's constructor besides its config entry."""
        return {**dict(self.hparams.input_spec or {}), "out_features": self.output_size()}

    def configure_net(self) -> nn.Module:
        try:
            return instantiate(self.hparams.net, **self.net_kwargs(), _convert_="all")
        except Exception as err:  # Hydra wraps the real error; name the config entry
            cause = err.__cause__ or err
            raise ConfigError(
                f"cannot build model.net ({self.hparams.net.get('_target_')}): {cause}"
            ) from err

    def configure_metrics(self) -> MetricCollection:
        raise NotImplementedError

    def train_metric_subset(self, metrics: MetricCollection) -> MetricCollection:
        """Metrics tracked during training (cheap ones; override to change)."""
        return metrics

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        return with_scheduler(optimizer, self.hparams.scheduler, self.hparams.scheduler_monitor)

    # ------------------------------------------------------------ steps
    def forward(self, *inputs: Tensor) -> Tensor:
        if self.hparams.channels_last:
            inputs = tuple(
                x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in inputs
            )
        return self._run_net(*inputs)

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def predictions(self, output: Tensor) -> Tensor:
        """What metrics and ``predict`` see: probabilities or values in the target's units."""
        raise NotImplementedError

    def metric_target(self, target: Tensor) -> Tensor:
        """The target as metrics compare it with :meth:`predictions`."""
        return target

    def update_metrics(
        self, metrics: MetricCollection, predictions: Tensor, target: Tensor, inputs: list[Tensor]
    ) -> None:
        """Feed one batch to the stage's metrics (override to give some metrics other predictions)."""
        metrics.update(predictions, self.metric_target(target))

    def metric_collection(self, stage: str) -> MetricCollection:
        return getattr(self, f"{stage}_metrics")

    def shared_step(self, batch: tuple[Tensor, ...], stage: str) -> tuple[Tensor, Tensor]:
        """Loss and predictions of one labelled batch; updates and logs the stage's metrics."""
        *inputs, target = batch
        output = self(*inputs)
        loss = self.compute_loss(output, target)
        predictions = self.predictions(output.detach())
        metrics = self.metric_collection(stage)
        if len(metrics):
            self.update_metrics(metrics, predictions, target, inputs)
        self.log_step(stage, loss, metrics, batch_size=len(target))
        return loss, predictions

    def log_step(
        self,
        stage: str,
        loss: Tensor,
        metrics: MetricCollection,
        batch_size: int,
        metrics_on_bar: bool = False,
    ) -> None:
        """Log the loss (per step in training, per epoch always) and the metric objects (per epoch).

        Epoch values cover every process of a DDP run exactly: the loss goes through a
        :class:`~torchmetrics.MeanMetric` weighted by batch size, and metric objects sum their
        states over the processes. (``self.log(..., sync_dist=True)`` of a tensor would be
        off when processes score unequal numbers of rows: Lightning 2.6 averages its integer
        row count, https://github.com/Lightning-AI/pytorch-lightning/issues/21859.) In
        training the step value stays local; a single process logs the plain tensor there,
        which skips the metric's per-step bookkeeping.
        """
        on_step = stage == "train"
        mean = self.loss_means[f"{stage}_loss"]
        value: Tensor | MeanMetric = loss
        if not on_step:
            mean.update(loss.detach(), batch_size)
            value = mean
        elif self._trainer is not None and self.trainer.world_size > 1:
            mean(loss.detach(), batch_size)  # forward: the step's own value, and the epoch's running mean
            value = mean
        self.log(f"{stage}/loss", value, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=batch_size)
        if len(metrics):
            self.log_dict(
                metrics,
                on_step=False,
                on_epoch=True,
                batch_size=batch_size,
                prog_bar=metrics_on_bar and not on_step,
            )

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self.shared_step(batch, "train")[0]

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        loss, predictions = self.shared_step(batch, "test")
        return {"loss": loss, "predictions": predictions}  # for callbacks such as the plots

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Outputs for an unlabelled batch (every tensor of it is an input), see :meth:`predict_output`."""
        inputs = tuple(batch) if isinstance(batch, tuple | list) else (batch,)
        return self.predict_output(self(*inputs))

    def predict_output(self, output: Tensor) -> Tensor:
        """What ``lit-dl predict`` writes for a batch of network outputs."""
        return self.predictions(output)

    def summarize(self, metrics: dict[str, float]) -> str | None:
        """A sentence about the final metrics printed after the table (e.g. a baseline comparison)."""
        return None

    # ------------------------------------------------------------ checkpoint metadata
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lit_dl"] = checkpoint_meta(self)


def with_scheduler(optimizer: Any, scheduler: dict[str, Any] | None, monitor: str) -> Any:
    """``configure_optimizers``' answer: the optimiser, with the configured epoch-wise scheduler if any."""
    if not scheduler:
        return optimizer
    return {
        "optimizer": optimizer,
        "lr_scheduler": {
            "scheduler": instantiate(scheduler)(optimizer),
            "monitor": monitor,
            "interval": "epoch",
        },
    }


def checkpoint_meta(module: L.LightningModule) -> dict[str, Any]:
    """What ``eval``/``predict``/``sample`` need to rebuild a task and its data from a checkpoint alone."""
    meta: dict[str, Any] = {"version": lit_dl.__version__, "task": class_path(module)}
    datamodule = getattr(module._trainer, "datamodule", None) if module._trainer else None
    if datamodule is not None:
        meta["datamodule"] = class_path(datamodule)
        meta["datamodule_hparams"] = to_plain(dict(datamodule.hparams))
    return meta


def softmax_or_sigmoid(logits: Tensor) -> Tensor:
    """Class probabilities ``(B, K)`` from logits ``(B, 1)`` (binary) or ``(B, K)``."""
    if logits.shape[-1] == 1:
        p = torch.sigmoid(logits.squeeze(-1).float())
        return torch.stack([1 - p, p], dim=-1)
    return torch.softmax(logits.float(), dim=-1)
