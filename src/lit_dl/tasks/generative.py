"""The shared base of the image generative pairs (VAE, GAN): parts from config, sampling, checkpoints."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import lightning as L
import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lit_dl.errors import ConfigError
from lit_dl.tasks.base import checkpoint_meta
from lit_dl.utils import to_plain

log = logging.getLogger(__name__)


class GenerativeTask(L.LightningModule):
    """A LightningModule made of several networks that learns the data's distribution.

    Subclasses build their networks with :meth:`build_part` from plain config entries
    (saved as hyperparameters, so a checkpoint rebuilds the model alone) and implement
    :meth:`generate`. ``lit-dl sample`` calls :meth:`sample`.
    """

    task_type: ClassVar[str] = "generative"
    data_modality: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.epoch_means = nn.ModuleDict()  # MeanMetric per logged loss, made on first use (log_mean)

    def plain_hparams(self) -> None:
        """Make the saved hyperparameters plain data (checkpoints load with ``weights_only=True``)."""
        for key, value in list(self.hparams.items()):
            self.hparams[key] = to_plain(value)

    def build_part(self, key: str, **kwargs: Any) -> nn.Module:
        """Instantiate the network ``model.<key>`` with sizes from the data; one line naming it on failure."""
        node = self.hparams[key]
        try:
            return instantiate(node, **kwargs, _convert_="all")
        except Exception as err:  # Hydra wraps the real error; name the config entry
            cause = err.__cause__ or err
            raise ConfigError(f"cannot build model.{key} ({node.get('_target_')}): {cause}") from err

    def build_optimizer(self, key: str, params: Any) -> torch.optim.Optimizer:
        try:
            return instantiate(self.hparams[key])(params=params)
        except Exception as err:
            raise ConfigError(f"cannot build model.{key}: {err.__cause__ or err}") from err

    # ------------------------------------------------------------ logging
    def log_mean(
        self, name: str, value: Tensor, batch_size: int, on_step: bool = False, prog_bar: bool = False
    ) -> None:
        """Log ``value`` per step (optionally) and as its batch-size-weighted mean over the epoch.

        The epoch mean goes through a :class:`~torchmetrics.MeanMetric`, so under DDP it covers
        every process exactly even when they see unequal numbers of images
        (``self.log(..., sync_dist=True)`` of a tensor does not: Lightning issue #21859).
        """
        key = name.replace("/", "_")
        if key not in self.epoch_means:
            self.epoch_means[key] = MeanMetric().to(self.device)
        mean = self.epoch_means[key]
        if on_step:
            mean(value.detach().float(), batch_size)  # forward: this step's value, and the running mean
        else:
            mean.update(value.detach().float(), batch_size)
        self.log(
            name,
            mean,
            on_step=on_step,
            on_epoch=True,
            prog_bar=prog_bar,
            batch_size=batch_size,
            metric_attribute=f"epoch_means.{key}",  # made after Lightning listed the metric attributes
        )

    # ------------------------------------------------------------ sampling
    def generate(
        self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """``n`` new samples (images ``(n, C, H, W)`` with pixels in [0, 1]) on the module's device."""
        raise NotImplementedError

    def latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws of the standard normal latent variable (seeded by ``generator``)."""
        noise = torch.randn(n, self.hparams.latent_dim, generator=generator, device="cpu")
        return noise.to(self.device)

    # ------------------------------------------------------------ checkpoint metadata
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lit_dl"] = checkpoint_meta(self)

    def summarize(self, metrics: dict[str, float]) -> str | None:
        """A sentence about the final metrics printed after the table."""
        return None


class ImageGenerativeTask(GenerativeTask):
    """Base of the image VAE and GAN: pixels in [0, 1], image geometry and classes from the datamodule.

    Args:
        input_spec: ``in_channels`` and ``image_size`` from the datamodule.
        class_names: the data's classes (conditional models and the sample grid's labels).
        class_counts: training images per class (unused; accepted from the datamodule).
        anomaly_classes: classes kept out of training (``data.exclude_classes``): the test
            reports how well the model tells them apart (VAE: AUROC of the negative ELBO).
    """

    data_modality = "images"

    def image_geometry(self) -> dict[str, Any]:
        spec = dict(self.hparams.input_spec or {})
        if "in_channels" not in spec or "image_size" not in spec:
            raise ConfigError("this model needs image data (e.g. data=digits, data=fashion_mnist)")
        return {"in_channels": int(spec["in_channels"]), "image_size": list(spec["image_size"])}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and getattr(datamodule, "scale", "unit") != "unit":
            raise ConfigError(
                f"model={type(self).__name__} models pixels in [0, 1] but the data is standardised; "
                "set data.scale=unit (the generative experiments do)"
            )

    def sample(self, generator: torch.Generator, n: int = 64, condition: Any = None) -> Tensor:
        """``lit-dl sample``: ``n`` images in [0, 1]; ``condition``: a class name or index (conditional)."""
        labels = self.condition_labels(condition, n)
        images = [
            self.generate(len(chunk), generator=generator, labels=None if labels is None else labels[chunk])
            for chunk in torch.arange(n).split(1024)
        ]
        return torch.cat(images).cpu()

    def condition_labels(self, condition: Any, n: int) -> Tensor | None:
        if condition is None or condition == "":
            return None
        raise ConfigError(f"{type(self).__name__} cannot sample a given class; leave condition unset")
