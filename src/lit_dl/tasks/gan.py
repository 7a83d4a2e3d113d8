"""Generative adversarial network for images, with Lightning 2 manual optimisation.

Lightning 2 has no automatic optimisation for several optimisers, so each training
step alternates the two updates itself: ``toggle_optimizer`` (only that network's
parameters take gradients), ``manual_backward`` (loss scaling under 16-mixed),
``optimizer.step()``. Gradient clipping happens in :meth:`on_before_optimizer_step`,
where Lightning has already unscaled the gradients under 16-mixed. Lightning counts every
optimizer step in ``trainer.global_step``, so a batch with both updates counts two steps
(mind ``trainer.max_steps``; ``fast_dev_run=2`` stops after the first batch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lit_dl.compat import allow_unused_parameters
from lit_dl.data.spec import DataSpec
from lit_dl.errors import ConfigError
from lit_dl.tasks.adversarial import (
    clip_gradient_norm,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
)
from lit_dl.tasks.generative import ImageGenerativeTask

LOSSES = ("non_saturating", "hinge", "wgan_gp")


class GANTask(ImageGenerativeTask):
    """A GAN: generator ``z -> image`` and discriminator ``image -> score``, trained adversarially.

    Images are modelled in ``[-1, 1]`` (the generator ends in tanh); :meth:`generate`
    returns them in ``[0, 1]`` like the data.

    Args:
        generator: ``_target_`` entry of the generator (e.g. DCGANGenerator).
        discriminator: ``_target_`` entry of the discriminator (e.g. DCGANDiscriminator).
        optimizer_g: ``_target_`` entry of the generator's optimiser (``_partial_: true``).
        optimizer_d: ``_target_`` entry of the discriminator's optimiser.
        latent_dim: width of ``z``.
        loss: ``non_saturating`` (Goodfellow et al. 2014), ``hinge`` or ``wgan_gp``
            (Gulrajani et al. 2017: Wasserstein critic with gradient penalty).
        n_critic: discriminator updates per generator update (5 is usual for WGAN-GP).
        gp_weight: weight of the gradient penalty (``wgan_gp``).
        ema_decay: keep an exponential moving average of the generator's weights with this
            decay (e.g. 0.999) and sample from it; None: sample from the generator itself.
        conditional: condition both networks on the class label (the data spec's classes);
            ``lit-dl sample condition=...``.
        gradient_clip_val: clip each network's gradient norm to this value (None: no clipping).
        **kwargs: see :class:`~lit_dl.tasks.base.Task` (``data``; no scheduler).
    """

    def __init__(
        self,
        generator: dict[str, Any],
        discriminator: dict[str, Any],
        optimizer_g: dict[str, Any],
        optimizer_d: dict[str, Any],
        latent_dim: int = 64,
        loss: str = "non_saturating",
        n_critic: int = 1,
        gp_weight: float = 10.0,
        ema_decay: float | None = None,
        conditional: bool = False,
        gradient_clip_val: float | None = None,
        **kwargs: Any,
    ) -> None:
        if loss not in LOSSES:
            raise ConfigError(f"model.loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if n_critic < 1 or latent_dim < 1:
            raise ConfigError(
                f"model.n_critic and model.latent_dim must be >= 1, got {n_critic}, {latent_dim}"
            )
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be between 0 and 1 (or null), got {ema_decay}")
        if loss == "wgan_gp" and discriminator.get("norm") == "batch":
            raise ConfigError(
                "model.discriminator.norm=batch is not valid with model.loss=wgan_gp (the gradient penalty "
                "is per image; BatchNorm mixes images): use norm=layer, spectral or none"
            )
        if kwargs.get("scheduler"):
            raise ConfigError("the GAN takes no model.scheduler (set model.scheduler=null)")
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def check_data(self, spec: DataSpec | None) -> None:
        super().check_data(spec)
        assert spec is not None
        if self.hparams.conditional and not spec.classes:
            raise ConfigError("model.conditional=true needs labelled data (classes from the datamodule)")

    @property
    def num_classes(self) -> int:
        """Classes the networks are conditioned on (0: unconditional)."""
        return len(self.classes) if self.hparams.conditional else 0

    def configure_models(self) -> None:
        geometry = self.image_geometry()
        self.generator = self.build_part(
            "generator", **geometry, latent_dim=self.latent_dim, num_classes=self.num_classes
        )
        self.discriminator = self.build_part("discriminator", **geometry, num_classes=self.num_classes)
        self.generator_ema: AveragedModel | None = None
        if self.hparams.ema_decay is not None:
            self.generator_ema = AveragedModel(
                self.generator, multi_avg_fn=get_ema_multi_avg_fn(self.hparams.ema_decay), use_buffers=True
            )
            self.generator_ema.requires_grad_(False)  # never trained: DDP must not wait for its gradients

    # ------------------------------------------------------------ distributed set-up
    def setup(self, stage: str) -> None:
        allow_unused_parameters(self.trainer)

    # ------------------------------------------------------------ training
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            self.build_optimizer("optimizer_g", self.generator.parameters()),
            self.build_optimizer("optimizer_d", self.discriminator.parameters()),
        ]

    def fake_labels(self, real_labels: Tensor | None) -> Tensor | None:
        """Labels for generated images: those of the real batch (same class mix), if conditional."""
        return real_labels if self.hparams.conditional else None

    def gradient_penalty(self, real: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
        """``E[(||grad_x D(x_hat)|| - 1)^2]`` on random points between real and generated images."""
        return gradient_penalty(self.trainer, self.discriminator, real, fake, labels)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        real = batch[0] * 2 - 1  # [0, 1] -> [-1, 1], the generator's range
        labels = batch[1] if self.hparams.conditional and len(batch) > 1 else None
        optimizer_g, optimizer_d = self.optimizers()
        kind = self.hparams.loss

        # Discriminator (critic) update: generated images are detached, the generator is not trained.
        self.toggle_optimizer(optimizer_d)
        with torch.no_grad():
            fake = self.generator(self.latent(len(real)), self.fake_labels(labels))
        d_loss = discriminator_loss(kind, self.discriminator(real, labels), self.discriminator(fake, labels))
        if kind == "wgan_gp":
            penalty = self.gradient_penalty(real, fake, labels)
            self.log_mean("train/gradient_penalty", penalty, len(real), on_step=True)
            d_loss = d_loss + self.hparams.gp_weight * penalty
        optimizer_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        optimizer_d.step()
        self.untoggle_optimizer(optimizer_d)
        self.log_mean("train/d_loss", d_loss, len(real), on_step=True, prog_bar=True)

        # Generator update, once every n_critic batches.
        if (batch_idx + 1) % self.hparams.n_critic:
            return d_loss.detach()  # what FiniteLossGuard checks
        self.toggle_optimizer(optimizer_g)
        fake_labels = self.fake_labels(labels)
        fake = self.generator(self.latent(len(real)), fake_labels)
        g_loss = generator_loss(kind, self.discriminator(fake, fake_labels))
        optimizer_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        optimizer_g.step()
        self.untoggle_optimizer(optimizer_g)
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        self.log_mean("train/g_loss", g_loss, len(real), on_step=True, prog_bar=True)
        return (d_loss + g_loss).detach()  # finite only when both are

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        clip_gradient_norm(self, optimizer, self.hparams.gradient_clip_val)  # unscaled here under 16-mixed

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        """Discriminator scores of held-out real images vs generated ones (sample quality: callback)."""
        real = batch[0] * 2 - 1
        labels = batch[1] if self.hparams.conditional and len(batch) > 1 else None
        fake = self.sampling_generator()(self.latent(len(real)), self.fake_labels(labels))
        real_scores, fake_scores = self.discriminator(real, labels), self.discriminator(fake, labels)
        loss = discriminator_loss(self.hparams.loss, real_scores, fake_scores)
        self.log_mean("val/d_loss", loss, len(real))
        self.log_mean("val/score_gap", (real_scores - fake_scores).float().mean(), len(real))

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        real = batch[0] * 2 - 1
        labels = batch[1] if self.hparams.conditional and len(batch) > 1 else None
        fake = self.sampling_generator()(self.latent(len(real)), self.fake_labels(labels))
        loss = discriminator_loss(
            self.hparams.loss, self.discriminator(real, labels), self.discriminator(fake, labels)
        )
        self.log_mean("test/d_loss", loss, len(real))

    # ------------------------------------------------------------ sampling
    def sampling_generator(self) -> nn.Module:
        """The averaged generator when ``ema_decay`` is set, else the generator."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def generate(self, n: int, *, generator: torch.Generator | None = None, condition: Any = None) -> Tensor:
        """``n`` generated images ``(n, C, H, W)`` in [0, 1].

        ``condition``: a class name or index, or one class index per image ``(n,)``; a conditional
        model without one draws the classes uniformly.
        """
        labels = self.condition_labels(condition, n)
        if self.hparams.conditional and labels is None:
            device = generator.device if generator is not None else "cpu"
            labels = torch.randint(self.num_classes, (n,), generator=generator, device=device)
        if labels is not None:
            labels = labels.to(self.device)
        net = self.sampling_generator()
        was_training = net.training
        net.eval()  # BatchNorm with its running statistics
        images = net(self.latent(n, generator), labels).float()
        net.train(was_training)
        return ((images + 1) / 2).clamp(0, 1)

    def condition_labels(self, condition: Any, n: int) -> Tensor | None:
        if condition is None or (isinstance(condition, str) and not condition):
            return None
        if not self.hparams.conditional:
            raise ConfigError("this GAN is not class-conditional (train with model.conditional=true)")
        if isinstance(condition, Tensor):  # one class index per image
            if condition.shape != (n,):
                raise ConfigError(f"condition: expected {n} class indices, got shape {list(condition.shape)}")
            return condition.long()
        names = self.classes
        text = str(condition)
        if text in names:
            index = names.index(text)
        elif text.isdigit() and int(text) < len(names):
            index = int(text)
        else:
            raise ConfigError(f"condition={text!r} is not a class; the classes are {', '.join(names)}")
        return torch.full((n,), index, dtype=torch.long)
