"""Conditional tabular GAN (CTGAN, Xu et al., 2019): WGAN-GP, PacGAN, training-by-sampling."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor
from torchmetrics import MetricCollection

from lit_dl.data.table_transform import TableTransform, draw_rows
from lit_dl.errors import ConfigError
from lit_dl.nets.tabular_generative import activate
from lit_dl.tasks.base import BaseTask
from lit_dl.tasks.gan import allow_unused_parameters_under_ddp, input_gradients
from lit_dl.tasks.table_fidelity import TableFidelity
from lit_dl.tasks.tabular_vae import check_rows


class TabularGANTask(TableFidelity, BaseTask):
    """A conditional Wasserstein GAN with gradient penalty over transformed rows.

    Each training batch comes from training-by-sampling (the datamodule draws a categorical
    column, a category by log-frequency, and a real row with it), so rare categories are
    learned. The generator gets noise and that condition; its loss adds the cross-entropy
    between the conditioned span and the asked category. The critic judges ``pac`` rows at a
    time (PacGAN). Manual optimisation: one critic step (or ``discriminator_steps``) then one
    generator step per batch, so ``trainer.global_step`` counts both optimiser steps.
    ``val/fidelity`` compares a fixed sample with the validation rows: the mean of the column-shape
    and the column-pair similarities (higher is better). Column shapes alone are no guide for
    model selection: a GAN matches them within a few epochs, long before its rows hang together.

    Args:
        net: ``_target_`` entry of :class:`~lit_dl.nets.tabular_generative.TabularGAN`.
        optimizer: the generator's optimiser (``_partial_: true``).
        discriminator_optimizer: the critic's optimiser (``_partial_: true``).
        transform: the fitted transform as plain data (from the datamodule; kept in the checkpoint).
        gp_weight: weight of the gradient penalty.
        gumbel_tau: temperature of the Gumbel-softmax of generated one-hot spans.
        discriminator_steps: critic steps per generator step.
        gradient_clip_val: clip each network's gradient norm to this (None: no clipping).
        fidelity_rows: rows generated each validation epoch for ``val/fidelity``.
        **kwargs: see :class:`~lit_dl.tasks.base.BaseTask` (no scheduler).
    """

    task_type = "tabular_generative"
    training_by_sampling: ClassVar[bool] = True

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        transform: dict[str, Any],
        discriminator_optimizer: dict[str, Any] | None = None,
        gp_weight: float = 10.0,
        gumbel_tau: float = 0.2,
        discriminator_steps: int = 1,
        gradient_clip_val: float | None = None,
        fidelity_rows: int = 2000,
        **kwargs: Any,
    ) -> None:
        self.table = TableTransform.from_state_dict(transform)
        self.spans = self.table.spans
        self.cond_spans = self.table.discrete_spans()
        self.cond_sizes = [size for _, size in self.cond_spans]
        if kwargs.get("scheduler"):
            raise ConfigError("the tabular GAN takes no model.scheduler (set model.scheduler=null)")
        kwargs["train_metrics"] = False  # no per-batch metrics: fidelity is measured per epoch
        super().__init__(net, optimizer, **kwargs)
        self.automatic_optimization = False
        # Conditions when sampling: a column uniformly, its category at its real frequency (CTGAN).
        self.cond_probs = [np.asarray(c["counts"], float) / sum(c["counts"]) for c in self.table.discrete]

    # ------------------------------------------------------------ building
    @property
    def cond_dim(self) -> int:
        return sum(self.cond_sizes)

    def net_kwargs(self) -> dict[str, Any]:
        return {"data_dim": self.table.output_dim, "cond_dim": self.cond_dim}

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({})

    def configure_optimizers(self) -> Any:
        generator = instantiate(self.hparams.optimizer)(params=self.net.generator.parameters())
        critic_cfg = self.hparams.discriminator_optimizer or self.hparams.optimizer
        critic = instantiate(critic_cfg)(params=self.net.discriminator.parameters())
        return [generator, critic]

    # ------------------------------------------------------------ training
    def _critic_input(self, rows: Tensor, cond: Tensor) -> Tensor:
        return torch.cat([rows, cond.to(rows.dtype)], dim=1)

    def gradient_penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        """WGAN-GP on points between real and fake packs; one mixing weight per pack of ``pac`` rows."""
        pac = self.net.pac
        alpha = torch.rand(len(real) // pac, 1, 1, device=real.device).expand(-1, pac, real.shape[1])
        mixed = (
            alpha.reshape(-1, real.shape[1]) * real + (1 - alpha.reshape(-1, real.shape[1])) * fake
        ).detach()
        mixed.requires_grad_(True)
        grads = input_gradients(self.trainer, self.net.discriminator(mixed), mixed)
        return ((grads.reshape(-1, pac * real.shape[1]).norm(2, dim=1) - 1) ** 2).mean()

    def condition_loss(self, raw: Tensor, cond: Tensor) -> Tensor:
        """Cross-entropy between each conditioned span of the generator's output and its asked category."""
        if not self.cond_spans:
            return raw.new_zeros((), dtype=torch.float32)
        loss = raw.new_zeros(len(raw), dtype=torch.float32)
        offset = 0
        for start, size in self.cond_spans:
            target = cond[:, offset : offset + size].float()
            logp = F.log_softmax(raw[:, start : start + size].float(), dim=1)
            loss = loss - (target * logp).sum(dim=1)  # zero for rows conditioned on another column
            offset += size
        return loss.mean()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        allow_unused_parameters_under_ddp(self.trainer)

    def _step(self, optimizer: Any, loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Here, not before optimizer.step(): under 16-mixed Lightning has unscaled the gradients by now.
        if self.hparams.gradient_clip_val:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=float(self.hparams.gradient_clip_val),
                gradient_clip_algorithm="norm",
            )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        real, cond = batch
        usable = len(real) // self.net.pac * self.net.pac  # whole packs only
        if usable == 0:
            return None
        real, cond = real[:usable], cond[:usable]
        # The generator gets the conditions of other real rows (CTGAN's permutation): the critic
        # sees (real row, its condition) and (fake row, the condition it was made for).
        fake_cond = cond[torch.randperm(usable, device=cond.device)]
        opt_g, opt_d = self.optimizers()
        noise_dim = self.net.noise_dim

        for _ in range(int(self.hparams.discriminator_steps)):
            self.toggle_optimizer(opt_d)
            noise = torch.randn(usable, noise_dim, device=real.device)
            with torch.no_grad():
                fake = activate(self.net.generator(noise, fake_cond), self.spans, self.hparams.gumbel_tau)
            real_in, fake_in = (
                self._critic_input(real, cond),
                self._critic_input(fake.to(real.dtype), fake_cond),
            )
            wasserstein = (
                self.net.discriminator(fake_in).float().mean()
                - self.net.discriminator(real_in).float().mean()
            )
            penalty = self.gradient_penalty(real_in, fake_in)
            d_loss = wasserstein + self.hparams.gp_weight * penalty
            self._step(opt_d, d_loss)
            self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        noise = torch.randn(usable, noise_dim, device=real.device)
        raw = self.net.generator(noise, fake_cond)
        fake = activate(raw, self.spans, self.hparams.gumbel_tau)
        adversarial = -self.net.discriminator(self._critic_input(fake, fake_cond)).float().mean()
        cond_loss = self.condition_loss(raw, fake_cond)
        g_loss = adversarial + cond_loss
        self._step(opt_g, g_loss)
        self.untoggle_optimizer(opt_g)

        self.log_dict(
            {
                "train/loss": g_loss.detach(),
                "train/d_loss": d_loss.detach(),
                "train/cond_loss": cond_loss.detach(),
            },
            on_step=True,
            on_epoch=True,
            batch_size=usable,
        )
        return g_loss.detach()

    # ------------------------------------------------------------ validation: fidelity of a fixed sample
    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.keep_rows(batch[0])

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    # ------------------------------------------------------------ sampling
    def _conditions(self, n: int, slot: tuple[int, int] | None, generator: torch.Generator | None) -> Tensor:
        """Conditions ``(n, cond_dim)``: the asked category, or a column and a category at its real rate."""
        cond = torch.zeros(n, self.cond_dim)
        if not self.cond_sizes:
            return cond
        offsets = np.concatenate([[0], np.cumsum(self.cond_sizes)[:-1]])
        if slot is not None:
            cond[:, int(offsets[slot[0]]) + slot[1]] = 1.0
            return cond
        # Conditions are drawn on the CPU, seeded from the caller's generator (on any device).
        device = generator.device if generator is not None else None
        cpu = torch.Generator().manual_seed(
            int(torch.randint(2**62, (1,), generator=generator, device=device))
        )
        columns = torch.randint(len(self.cond_sizes), (n,), generator=cpu)
        for j, probs in enumerate(self.cond_probs):
            rows = (columns == j).nonzero().squeeze(1)
            if len(rows):
                picks = torch.multinomial(torch.as_tensor(probs), len(rows), replacement=True, generator=cpu)
                cond[rows, int(offsets[j]) + picks] = 1.0
        return cond

    @torch.no_grad()
    def generate(
        self, n: int, generator: torch.Generator | None = None, slot: tuple[int, int] | None = None
    ) -> np.ndarray:
        """``n`` transformed rows ``(n, D)``; one-hot spans drawn from the generator's softmax."""
        training = self.training
        self.eval()
        try:
            cond = self._conditions(n, slot, generator).to(self.device)
            noise = torch.randn(n, self.net.noise_dim, generator=generator, device=self.device)
            raw = self.net.generator(noise, cond).float()
            rows, start = [], 0
            for kind, size in self.spans:
                chunk = raw[:, start : start + size]
                if kind == "tanh":
                    rows.append(torch.tanh(chunk))
                else:  # a category drawn at the generator's probabilities (as argmax of a Gumbel-softmax)
                    pick = torch.multinomial(torch.softmax(chunk, dim=1), 1, generator=generator)
                    rows.append(F.one_hot(pick.squeeze(1), size).float())
                start += size
        finally:
            self.train(training)
        return torch.cat(rows, dim=1).cpu().numpy()

    def sample(
        self, n: int = 1000, condition: str | None = None, generator: torch.Generator | None = None
    ) -> pd.DataFrame:
        """``n`` synthetic rows with the original columns, order and dtypes.

        ``condition="column=value"`` (e.g. ``churn=Yes``) feeds that category to the generator as
        its condition and keeps only rows that have it.
        """
        n = check_rows(n)
        slot = self.table.condition_slot(condition) if condition else None
        rows = draw_rows(lambda size: self.generate(size, generator, slot), self.table, n, slot)
        return self.table.inverse_transform(rows)
