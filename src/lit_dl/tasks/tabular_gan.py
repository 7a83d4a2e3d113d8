"""Conditional tabular GAN (CTGAN, Xu et al., 2019): WGAN-GP, PacGAN, training-by-sampling."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_dl.compat import allow_unused_parameters
from lit_dl.errors import ConfigError
from lit_dl.nets.tabular_generative import activate
from lit_dl.tasks.adversarial import clip_gradient_norm, discriminator_loss, generator_loss, gradient_penalty
from lit_dl.tasks.generative import TableGenerativeTask

SAMPLE_BIAS = "sample_bias"
# Largest correction of a slot's logit (a factor of e^5 ~ 150 on its odds): a slot the generator
# never writes is not forced into every row.
MAX_SAMPLE_BIAS = 5.0


class TabularGANTask(TableGenerativeTask):
    """A conditional Wasserstein GAN with gradient penalty over transformed rows.

    Each training batch comes from training-by-sampling (``data.sampling=conditional``: the
    datamodule draws a categorical column, a category by log-frequency, and a real row with it),
    so rare categories are learned. The generator gets noise and that condition; its loss adds the
    cross-entropy between the conditioned span and the asked category. The critic judges ``pac``
    rows at a time (PacGAN). Manual optimisation: one critic step (or ``discriminator_steps``) then
    one generator step per batch, so ``trainer.global_step`` counts both optimiser steps.
    The fidelity of samples (``val/fidelity``, the model-selection score) is measured by the
    :class:`~lit_dl.callbacks.table_fidelity.TableFidelity` callback.

    Marginal calibration (``calibrate_marginals``): a generator trained by sampling sees rare
    categories far more often than they occur, and its unconditioned rows keep some of that
    (too few ``>50K`` rows on UCI Adult, too many missing occupations). Before each validation
    the task draws ``calibration_rows`` unconditioned rows from a fixed seed and fits one logit
    offset per one-hot slot (:attr:`sample_bias`) so that the rows' expected share in every slot
    (categories, missing cells, numeric modes and exact zeros) is its share of the training rows,
    the prior-shift correction of Saerens et al. (2002). Sampling adds the offsets to the
    generator's logits before drawing; training never sees them. The offsets are a buffer, saved
    with the weights they were fitted to; checkpoints without them sample as before.

    Args:
        net: ``_target_`` entry of :class:`~lit_dl.nets.tabular_generative.TabularGAN`
            (``data_dim`` and ``cond_dim`` are added).
        optimizer: the generator's optimiser (``_partial_: true``).
        optimizer_d: the critic's optimiser (``_partial_: true``; None: as the generator's).
        gp_weight: weight of the gradient penalty.
        gumbel_tau: temperature of the Gumbel-softmax of generated one-hot spans.
        discriminator_steps: critic steps per generator step.
        gradient_clip_val: clip each network's gradient norm to this (None: no clipping).
        calibrate_marginals: fit the sampler's per-slot offsets before each validation (above).
        calibration_rows: unconditioned rows drawn to fit them.
        **kwargs: see :class:`~lit_dl.tasks.base.Task` (``data``; no scheduler).
    """

    data_sampling = "conditional"

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        optimizer_d: dict[str, Any] | None = None,
        gp_weight: float = 10.0,
        gumbel_tau: float = 0.2,
        discriminator_steps: int = 1,
        gradient_clip_val: float | None = None,
        calibrate_marginals: bool = False,
        calibration_rows: int = 20000,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("scheduler"):
            raise ConfigError("the tabular GAN takes no model.scheduler (set model.scheduler=null)")
        if int(calibration_rows) < 1:
            raise ConfigError(f"model.calibration_rows must be at least 1, got {calibration_rows}")
        super().__init__(optimizer=optimizer, **kwargs)
        self.automatic_optimization = False

    # ------------------------------------------------------------ building
    def configure_models(self) -> None:
        super().configure_models()
        # The condition vector: one slot per category of every categorical column.
        self.cond_sizes = self.table.condition_sizes()
        self.cond_spans = self.table.discrete_spans()
        # Conditions when sampling: a column uniformly, its category at its real frequency (CTGAN).
        self.cond_probs = [np.asarray(c["counts"], float) / sum(c["counts"]) for c in self.table.discrete]
        self.net = self.build_part("net", data_dim=self.table.output_dim, cond_dim=self.cond_dim)
        # Logit offsets added when sampling (zero: the generator's own rates; see calibrate_marginals).
        self.register_buffer(SAMPLE_BIAS, torch.zeros(self.table.output_dim))
        self.register_load_state_dict_pre_hook(_fill_missing_bias)

    @property
    def cond_dim(self) -> int:
        return sum(self.cond_sizes)

    @property
    def latent_dim(self) -> int:
        return int(self.net.noise_dim)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        critic_key = "optimizer_d" if self.hparams.get("optimizer_d") else "optimizer"
        return [
            self.build_optimizer("optimizer", self.net.generator.parameters()),
            self.build_optimizer(critic_key, self.net.discriminator.parameters()),
        ]

    def setup(self, stage: str) -> None:
        allow_unused_parameters(self.trainer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before the sampler's offsets existed resume with none."""
        if isinstance(checkpoint.get("state_dict"), dict):
            _fill_missing_bias(self, checkpoint["state_dict"], "")
        super().on_load_checkpoint(checkpoint)

    # ------------------------------------------------------------ training
    def _critic_input(self, rows: Tensor, cond: Tensor) -> Tensor:
        return torch.cat([rows, cond.to(rows.dtype)], dim=1)

    def activate(self, raw: Tensor) -> Tensor:
        """Generated rows ``(B, D)`` as the critic sees them: tanh offsets, Gumbel-softmax categories."""
        return activate(raw, self.offset_index, self.span_index, self.hparams.gumbel_tau)

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

    def _step(self, optimizer: Any, loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        clip_gradient_norm(self, optimizer, self.hparams.gradient_clip_val)  # unscaled here under 16-mixed

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
        critic = self.net.discriminator

        for _ in range(int(self.hparams.discriminator_steps)):
            self.toggle_optimizer(opt_d)
            noise = torch.randn(usable, self.latent_dim, device=real.device)
            with torch.no_grad():
                fake = self.activate(self.net.generator(noise, fake_cond))
            real_in = self._critic_input(real, cond)
            fake_in = self._critic_input(fake.to(real.dtype), fake_cond)
            fake_scores = critic(fake_in)  # (before the real rows': the critic's dropout draws in this order)
            real_scores = critic(real_in)
            penalty = gradient_penalty(self.trainer, critic, real_in, fake_in, pac=self.net.pac)
            d_loss = discriminator_loss("wgan", real_scores, fake_scores) + self.hparams.gp_weight * penalty
            self._step(opt_d, d_loss)
            self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        noise = torch.randn(usable, self.latent_dim, device=real.device)
        raw = self.net.generator(noise, fake_cond)
        fake = self.activate(raw)
        adversarial = generator_loss("wgan", critic(self._critic_input(fake, fake_cond)))
        cond_loss = self.condition_loss(raw, fake_cond)
        g_loss = adversarial + cond_loss
        self._step(opt_g, g_loss)
        self.untoggle_optimizer(opt_g)

        self.log_mean("train/loss", g_loss, usable, on_step=True, prog_bar=True)
        self.log_mean("train/d_loss", d_loss, usable, on_step=True, prog_bar=True)
        self.log_mean("train/cond_loss", cond_loss, usable, on_step=True)
        return g_loss.detach()

    def on_validation_epoch_start(self) -> None:
        # Before the fidelity callback samples (at the epoch's end), and before the checkpoint of
        # these weights is written: the offsets travel with the weights they were fitted to.
        # (Not in the sanity check: nothing is scored there, and the weights are untrained.)
        sanity = self._trainer is not None and self._trainer.sanity_checking
        if self.hparams.calibrate_marginals and not sanity:
            self.calibrate_marginals(int(self.hparams.calibration_rows))

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        """Nothing per batch: the fidelity callback scores a sample against the validation rows."""

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        """Nothing per batch: the fidelity callback scores a sample against the test rows."""

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
    def calibrate_marginals(self, rows: int, seed: int = 0, iterations: int = 100) -> None:
        """Fit :attr:`sample_bias` so that unconditioned rows fill each one-hot slot at its training rate.

        ``rows`` rows are drawn once (noise and conditions from ``seed``); per span, the offsets ``b``
        are updated ``b += log(rate / mean_rows softmax(logits + b))`` until the expected shares
        match (Saerens et al. 2002). Spans without stored rates (transforms from before they were
        kept) get none.
        """
        training = self.training
        self.eval()
        try:
            generator = torch.Generator(device=self.device).manual_seed(seed)
            cond = self._conditions(rows, None, generator).to(self.device)
            raw = self.net.generator(self.latent(rows, generator), cond).float()
        finally:
            self.train(training)
        bias = torch.zeros_like(self.sample_bias)
        floor = 0.1 / rows  # a slot with no training row: pushed down, not to minus infinity
        for (start, size), rate in zip(self.table.one_hot_spans(), self.table.slot_rates(), strict=True):
            if rate is None:
                continue
            target = torch.as_tensor(rate, dtype=torch.float32, device=raw.device).clamp_min(floor)
            logits, offset = raw[:, start : start + size], raw.new_zeros(size)
            for _ in range(iterations):
                share = torch.softmax(logits + offset, dim=1).mean(dim=0).clamp_min(floor)
                step = torch.log(target / share)
                offset = offset + step
                offset = (offset - offset.mean()).clamp(-MAX_SAMPLE_BIAS, MAX_SAMPLE_BIAS)  # (shift-free)
                free = offset.abs() < MAX_SAMPLE_BIAS - 1e-3  # (slots at the bound cannot move further)
                if not bool((step.abs() > 1e-3)[free].any()):  # every share within 0.1% of its rate
                    break
            bias[start : start + size] = offset
        self.sample_bias.copy_(bias)

    def generate_batch(
        self, n: int, generator: torch.Generator | None, slot: tuple[int, int] | None
    ) -> np.ndarray:
        """``n`` transformed rows ``(n, D)``; one-hot spans drawn from the generator's softmax.

        The generator is given the asked category (``slot``) as its condition, or conditions drawn
        at the real rates; :meth:`generate` keeps the rows that have the asked category. The
        sampler's offsets (:attr:`sample_bias`) are added to the logits first.
        """
        cond = self._conditions(n, slot, generator).to(self.device)
        raw = self.net.generator(self.latent(n, generator), cond).float() + self.sample_bias
        # A category drawn at the generator's probabilities (as argmax of a Gumbel-softmax).
        return self.rows_from_outputs(raw, generator).cpu().numpy()


def _fill_missing_bias(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: weights saved before the sampler's offsets existed get zeros (none)."""
    key = prefix + SAMPLE_BIAS
    if key not in state_dict:
        state_dict[key] = torch.zeros_like(getattr(module, SAMPLE_BIAS))
