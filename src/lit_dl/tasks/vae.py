"""Variational autoencoder (Kingma & Welling 2014) for images: ELBO training, importance-sampled NLL."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torch.distributions import Normal
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.aggregation import CatMetric

from lit_dl.compat import trainer_or_none
from lit_dl.errors import ConfigError
from lit_dl.nets.generative import LocalPixelModel
from lit_dl.tasks.generative import ImageGenerativeTask, ranking_auroc

LIKELIHOODS = ("bernoulli", "gaussian")
# The anomaly scores of the test images: negative ELBO, importance-sampled NLL, corrected score.
ANOMALY_SCORES = ("elbo", "nll", "corrected")
# Buffers added after release 0.1 (checkpoints without them load with these defaults: no background
# model, so no corrected score, and a complexity weight of 1; no reference codes, so the corrected score
# is that of the importance-sampled NLL, with the weight the checkpoint was fitted for).
BACKGROUND_STATS = "background.stats"
COMPLEXITY_WEIGHT = "complexity_weight"
REFERENCE_CODES = "reference_codes"
REFERENCE_COUNT = "reference_count"


class VAETask(ImageGenerativeTask):
    """A VAE: encoder ``q(z|x)``, standard normal prior, decoder ``p(x|z)``.

    All figures are in nats per image: ``recon`` = ``-E_q[log p(x|z)]``, ``kl`` =
    ``KL(q(z|x) || p(z))``, ``nelbo`` = their sum (an upper bound on ``-log p(x)``), and
    at test time ``nll``, the importance-weighted estimate of ``-log p(x)`` with
    ``nll_samples`` draws from ``q`` (Burda et al. 2016), which tightens towards the true
    value as the number of draws grows. With held-out classes in the data spec
    (``data.exclude_classes``), the test also reports ``test/anomaly_auroc``: how well the
    negative ELBO tells those classes' images from the trained ones.

    Likelihoods favour simple inputs (a held-out ``1`` has fewer edges than any trained digit and
    scores as more normal than they do), so the test also reports
    ``test/anomaly_auroc_corrected``: the score ``reference_nll - w * background_nll``.

    * ``reference_nll`` is ``-log (1/N sum_j p(x | z_j))``: the image's likelihood under the decoder
      with the prior replaced by the posterior means ``z_j`` of ``N = reference_images`` training
      images (an empirical aggregate posterior). The standard normal prior also gives mass to the
      space between the trained digits, where an image the model never saw is still decoded well;
      the training codes do not.
    * the background (:class:`~lit_dl.nets.generative.LocalPixelModel`, counted on the training
      images as they are served) prices each pixel from its neighbours alone: its cost is the
      image's complexity (Serra et al. 2020); with ``w = 1`` the score is the likelihood ratio of
      Ren et al. (2019).
    * ``w`` is the least-squares slope of the score on the background's cost over the validation
      images (clipped to [0, 1]), refitted at each validation of training and saved with the
      weights: the share of the likelihood that complexity explains on normal images.

    The reference images are the first ``N`` served in the epoch that counts the background; their
    codes are recomputed at every validation and checkpoint (under FSDP and DeepSpeed at validations
    only) and saved (``N x latent_dim`` numbers), the images are not; under DDP all processes use rank
    0's. With ``reference_images=0`` (and in checkpoints from before the reference
    codes) the corrected score is ``nll - w * background_nll``, ``nll`` the importance-sampled
    estimate (the negative ELBO when ``nll_samples=0``) and ``w`` fitted on the negative ELBO.
    ``test/anomaly_auroc_nll`` is the importance-sampled NLL's own, uncorrected AUROC.

    Args:
        encoder: ``_target_`` entry of a network ``x -> (mean, log_variance)`` (e.g. ConvEncoder).
        decoder: ``_target_`` entry of a network ``z -> (B, C, H, W)`` likelihood parameters.
        optimizer: ``_target_`` entry of the optimiser (``_partial_: true``).
        latent_dim: width of ``z``.
        likelihood: ``bernoulli`` (binary pixels; decoder gives logits) or ``gaussian``
            (decoder gives the mean; one learned scale per channel).
        beta: weight of the KL term in the training loss (1: the ELBO; >1: beta-VAE).
        kl_warmup_epochs: the KL weight rises linearly from 0 to ``beta`` over these epochs
            (validation and test always report the true ELBO).
        nll_samples: importance samples per test image for ``test/nll`` (0: skip).
        reference_images: training images whose codes make the corrected anomaly score's prior
            (0: score the importance-sampled NLL instead).
        **kwargs: see :class:`~lit_dl.tasks.base.Task` (``data``, ``scheduler``, ``scheduler_monitor``).
    """

    def __init__(
        self,
        encoder: dict[str, Any],
        decoder: dict[str, Any],
        optimizer: dict[str, Any],
        latent_dim: int = 32,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        kl_warmup_epochs: int = 0,
        nll_samples: int = 100,
        reference_images: int = 1024,
        **kwargs: Any,
    ) -> None:
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"model.likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
        if beta < 0 or kl_warmup_epochs < 0 or nll_samples < 0 or reference_images < 0 or latent_dim < 1:
            raise ConfigError(
                "model.beta, model.kl_warmup_epochs, model.nll_samples and model.reference_images must be "
                ">= 0, model.latent_dim >= 1"
            )
        super().__init__(optimizer=optimizer, **kwargs)

    def configure_models(self) -> None:
        geometry = self.image_geometry()
        self.encoder = self.build_part("encoder", **geometry, latent_dim=self.latent_dim)
        self.decoder = self.build_part("decoder", **geometry, latent_dim=self.latent_dim)
        # The complexity (background) model of the corrected anomaly score and its weight.
        self.background = LocalPixelModel(geometry["in_channels"], self.hparams.likelihood)
        self.register_buffer(COMPLEXITY_WEIGHT, torch.tensor(1.0))
        # The reference codes of the corrected score (saved); the images they encode stay in memory only.
        references = int(self.hparams.reference_images)
        self.register_buffer(REFERENCE_CODES, torch.zeros(references, self.latent_dim))
        self.register_buffer(REFERENCE_COUNT, torch.tensor(0))
        self.reference_pixels: list[Tensor] = []  # filled in the background epoch
        # The background epoch's counts, added to the background's buffer at its first validation (or
        # its end): DDP copies rank 0's buffers over the others' at every forward, so each process counts
        # its shard apart, and the sums of all processes are added at once.
        self.pending_counts: Tensor | None = None
        self.codes_step: int | None = None  # the global step the codes were computed at
        self._references: int | None = 0  # reference_count without reading the device; None: look
        self._reference_params: tuple[Any, list[Tensor]] | None = None  # decoded codes (reference_params)
        # Validation sums for the weight's least squares: n, sum b, sum s, sum b^2, sum b*s (float64, made
        # on the module's device each validation epoch; not a buffer, which bf16-true would cast).
        self.complexity_sums = torch.zeros(5, dtype=torch.float64)
        self.register_load_state_dict_pre_hook(_fill_missing_buffers)
        # Gaussian likelihood: log standard deviation per channel, learned with the networks.
        self.log_scale = (
            nn.Parameter(torch.zeros(geometry["in_channels"]))
            if self.hparams.likelihood == "gaussian"
            else None
        )

    def configure_metrics(self) -> None:
        # The epoch means of nelbo, recon and kl go through log_mean (device sums, exact under DDP).
        self.test_nll = MeanMetric()
        # Scores and labels of the test images, gathered over processes (anomaly AUROCs at epoch end):
        # negative ELBO, importance-sampled NLL, corrected score.
        self.anomaly_scores = (
            MetricCollection({name: CatMetric() for name in ANOMALY_SCORES}, compute_groups=False)
            if self.anomaly_classes
            else None
        )
        self.anomaly_labels = CatMetric() if self.anomaly_classes else None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before the background model existed resume without one."""
        if isinstance(checkpoint.get("state_dict"), dict):
            _fill_missing_buffers(self, checkpoint["state_dict"], "")
        super().on_load_checkpoint(checkpoint)

    # ------------------------------------------------------------ model
    def encode(self, x: Tensor) -> Normal:
        mean, log_var = self.encoder(x)
        # No argument validation: its checks read back to the host every step (a GPU sync each).
        return Normal(mean.float(), torch.exp(0.5 * log_var.float()), validate_args=False)

    def log_likelihood(self, params: Tensor, x: Tensor) -> Tensor:
        """``log p(x|z)`` per image (summed over pixels, nats), from the decoder's output ``params``."""
        return -self.reconstruction_cost(params, x)

    def reconstruction_cost(self, params: Tensor, x: Tensor) -> Tensor:
        """``-log p(x|z)`` per image (summed over pixels, nats), from the decoder's output ``params``."""
        params, x = params.float(), x.float()
        if self.hparams.likelihood == "bernoulli":
            per_pixel = F.binary_cross_entropy_with_logits(params, x, reduction="none")
        else:
            assert self.log_scale is not None
            scale = self.log_scale.float().exp().view(1, -1, 1, 1).expand_as(params)
            per_pixel = -Normal(params, scale, validate_args=False).log_prob(x)
        return per_pixel.flatten(1).sum(dim=1)

    def decode_mean(self, params: Tensor) -> Tensor:
        """The decoder's expected image in [0, 1] (Bernoulli probabilities or the Gaussian mean)."""
        params = params.float()
        return torch.sigmoid(params) if self.hparams.likelihood == "bernoulli" else params.clamp(0, 1)

    def elbo_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image reconstruction term ``-log p(x|z)`` (one reparameterised draw) and KL, in nats."""
        # Written out rather than through torch.distributions (``encode``, ``rsample``, ``kl_divergence``
        # against a Normal(0, 1) prior): the same figures, without building three distribution
        # objects and the KL registry lookup on every step, 0.3 ms of a 3-4 ms digits VAE step on 2 cores.
        mean, log_var = self.encoder(x)
        mean, log_var = mean.float(), log_var.float()
        # reparameterisation: z = mean + eps * std, differentiable in both (eps drawn as rsample draws it)
        z = mean + torch.empty_like(mean).normal_() * torch.exp(0.5 * log_var)
        recon = self.reconstruction_cost(self.decoder(z), x)
        kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(dim=1)  # KL(q(z|x) || N(0, I))
        return recon, kl

    def importance_nll(self, x: Tensor, samples: int, chunk: int = 64) -> Tensor:
        """``-log p(x)`` per image by importance sampling with ``samples`` draws from ``q(z|x)``.

        ``log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K``; an
        estimate of a lower bound on ``log p(x)`` that tightens as K grows (Burda et al. 2016).
        """
        posterior = self.encode(x)
        prior = Normal(torch.zeros_like(posterior.loc), torch.ones_like(posterior.scale), validate_args=False)
        log_weights = []
        for start in range(0, samples, chunk):
            k = min(chunk, samples - start)
            z = posterior.sample((k,))  # (k, B, L)
            params = self.decoder(z.flatten(0, 1))
            log_px_z = self.log_likelihood(params, x.repeat(k, *([1] * (x.ndim - 1)))).view(k, len(x))
            log_weights.append(log_px_z + prior.log_prob(z).sum(-1) - posterior.log_prob(z).sum(-1))
        return -(torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(samples))

    @property
    def references(self) -> int:
        """How many reference codes the corrected score uses (0: it scores the NLL instead)."""
        if self._references is None:
            self._references = int(self.reference_count)
        return self._references

    @torch.no_grad()
    def reference_nll(self, x: Tensor, chunk: int = 256) -> Tensor:
        """``-log (1/N sum_j p(x | z_j))`` per image ``(B,)`` over the ``N`` reference codes, nats."""
        # Out of autocast: an image's log-likelihood under one code is hundreds of nats for 28x28 pixels,
        # beyond what 16-bit floats resolve to a nat (binary cross-entropy stays float32 under autocast).
        with torch.autocast(x.device.type, enabled=False):
            return self._reference_nll(x.flatten(1).float(), chunk)

    def _reference_nll(self, pixels: Tensor, chunk: int) -> Tensor:
        log_px = []
        for params in self.reference_params(chunk):  # (n, D) each
            if self.hparams.likelihood == "bernoulli":
                # log p(x|z) of binary cross-entropy with logits is linear in x: two products give all pairs
                log_px.append(pixels @ F.logsigmoid(params).T + (1 - pixels) @ F.logsigmoid(-params).T)
            else:
                assert self.log_scale is not None
                scale = self.log_scale.float().exp().repeat_interleave(pixels.shape[1] // len(self.log_scale))
                distance = torch.cdist(pixels / scale, params / scale).square()  # (B, n)
                constant = scale.log().sum() + 0.5 * pixels.shape[1] * math.log(2 * math.pi)
                log_px.append(-0.5 * distance - constant)
        return -(torch.logsumexp(torch.cat(log_px, dim=1), dim=1) - math.log(self.references))

    @torch.no_grad()
    def reference_params(self, chunk: int = 256) -> list[Tensor]:
        """The decoder's flattened likelihood parameters of the reference codes, in chunks of ``chunk``.

        Kept until the codes or the decoder's weights change (a tensor's version counter moves on every
        in-place update, an optimiser step and ``load_state_dict`` included; a move or cast makes new
        tensors), or the decoder's mode: an evaluation decodes them once, not once per batch.
        """
        codes = self.reference_codes
        tensors = (*self.decoder.parameters(), *self.decoder.buffers())
        weights = tuple((t._version, t.data_ptr()) for t in tensors)
        state = (codes._version, codes.data_ptr(), codes.dtype, self.decoder.training)
        key = (self.references, chunk, state, weights)
        if self._reference_params is None or self._reference_params[0] != key:
            codes = codes[: self.references]
            with torch.autocast(codes.device.type, enabled=False):
                params = [
                    self.decoder(codes[start : start + chunk]).float().flatten(1)
                    for start in range(0, len(codes), chunk)
                ]
            self._reference_params = (key, params)
        return self._reference_params[1]

    def collect_references(self, x: Tensor) -> None:
        """Keep training images until there are ``reference_images`` (the background epoch's first)."""
        wanted = int(self.hparams.reference_images) - sum(len(p) for p in self.reference_pixels)
        if wanted > 0:
            self.reference_pixels.append(x[:wanted].detach().clone())

    @torch.no_grad()
    def refresh_reference_codes(self) -> None:
        """Encode the reference images with the current weights into ``reference_codes`` (the encoder in
        eval mode; once per global step)."""
        if not self.reference_pixels or self.codes_step == self.global_step:
            return
        training = self.encoder.training
        self.encoder.eval()
        try:
            images = torch.cat(self.reference_pixels).to(self.device)
            codes = torch.cat([self.encoder(images[i : i + 256])[0] for i in range(0, len(images), 256)])
        finally:
            self.encoder.train(training)
        self.reference_codes[: len(codes)] = codes.to(self.reference_codes.dtype)
        self.reference_count.fill_(len(codes))
        self._references, self.codes_step = len(codes), self.global_step

    def anomaly_score(self, x: Tensor, nll: Tensor) -> Tensor:
        """The score the complexity weight is fitted for: the reference NLL, or ``nll`` without codes."""
        return self.reference_nll(x) if self.references else nll

    def corrected_score(self, x: Tensor, nll: Tensor) -> Tensor:
        """The complexity-corrected anomaly score ``score - w * background_nll`` per image ``(B,)``, nats
        (``score``: the reference NLL, or ``nll`` without reference codes)."""
        score = self.anomaly_score(x, nll).float()
        return score - self.complexity_weight.float() * self.background.nll(x).to(score.device)

    def kl_weight(self) -> float:
        """The KL weight of the training loss: rises step by step to ``beta`` over the warm-up epochs."""
        beta = float(self.hparams.beta)
        if not self.hparams.kl_warmup_epochs:
            return beta
        warmup_steps = self.hparams.kl_warmup_epochs * max(1, int(self.trainer.num_training_batches))
        return beta * min(1.0, (self.global_step + 1) / warmup_steps)

    # ------------------------------------------------------------ steps
    def shared_step(self, batch: tuple[Tensor, ...], stage: str) -> tuple[Tensor, Tensor]:
        x = batch[0]
        recon, kl = self.elbo_terms(x)
        nelbo = recon + kl
        weight = self.kl_weight() if stage == "train" else 1.0
        loss = (nelbo if weight == 1.0 else recon + weight * kl).mean()  # (x * 1.0 is x: one node less)
        self.log_mean(f"{stage}/loss", loss, len(x), on_step=stage == "train", prog_bar=True)
        self.log_mean(f"{stage}/nelbo", loss if weight == 1.0 else nelbo.mean(), len(x))
        for name, value in (("recon", recon), ("kl", kl)):
            self.log_mean(f"{stage}/{name}", value.mean(), len(x))
        return loss, nelbo.detach()

    def on_train_start(self) -> None:
        self.background_epoch = self.current_epoch  # the background counts this run's first epoch
        self.reference_pixels, self.codes_step = [], None  # and the references are taken from it
        self.pending_counts = None

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        if self.current_epoch == getattr(self, "background_epoch", self.current_epoch):
            # the training images as served (0/1 draws, augmented)
            if self.pending_counts is None:
                self.pending_counts = torch.zeros_like(self.background.stats)
            self.background.update(batch[0], out=self.pending_counts)
            self.collect_references(batch[0])
        return self.shared_step(batch, "train")[0]

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.add_background_counts()  # (an epoch without validation)

    def add_background_counts(self) -> None:
        """Add the background epoch's counts, summed over the processes, to the background model, and
        give every process rank 0's reference images (the ones its checkpoints hold the codes of)."""
        if self.pending_counts is None:
            return
        counts, self.pending_counts = self.pending_counts, None
        trainer = trainer_or_none(self)
        if trainer is not None and trainer.world_size > 1:  # every process counted its shard
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
            pixels = torch.cat(self.reference_pixels).cpu() if self.reference_pixels else None
            pixels = trainer.strategy.broadcast(pixels, src=0)  # (pickled: sent from the CPU)
            self.reference_pixels = [] if pixels is None else [pixels.to(self.device)]
            self.codes_step = None
        self.background.add(counts)

    def fitting_weight(self) -> bool:
        """Whether this validation fits the complexity weight: during training only. A later
        ``validate`` of a checkpoint (``lit-dl train`` validates the best one) keeps the checkpoint's
        weight, so the test and ``lit-dl predict`` use the same one (a refit would differ by the noise
        of the one-draw ELBO)."""
        trainer = trainer_or_none(self)
        fitting = trainer is None or (trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking)
        return fitting and self.background.fitted

    def on_validation_epoch_start(self) -> None:
        self.complexity_sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        trainer = trainer_or_none(self)
        if trainer is None or not trainer.sanity_checking:
            self.add_background_counts()  # (the first validation of the background epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The saved reference codes are those of the saved weights (a checkpoint between validations)."""
        super().on_save_checkpoint(checkpoint)
        state = checkpoint.get("state_dict")
        trainer = trainer_or_none(self)
        if trainer is not None and isinstance(trainer.strategy, FSDPStrategy | DeepSpeedStrategy):
            return  # sharded weights outside a forward: the codes stay those of the last validation
        if self.reference_pixels and self.codes_step != self.global_step and isinstance(state, dict):
            self.refresh_reference_codes()
            for key in (REFERENCE_CODES, REFERENCE_COUNT):
                if key in state:
                    state[key] = self.get_buffer(key).detach().clone().to(state[key].device)

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        _, nelbo = self.shared_step(batch, "val")
        if self.fitting_weight():
            # In a step, not an epoch hook: under FSDP the encoder's weights are whole only in a forward.
            self.refresh_reference_codes()
            b, score = self.background.nll(batch[0]).double(), self.anomaly_score(batch[0], nelbo).double()
            self.complexity_sums += torch.stack(
                [torch.ones_like(b).sum(), b.sum(), score.sum(), (b * b).sum(), (b * score).sum()]
            )

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self.fitting_weight():
            return
        sums = self.complexity_sums
        trainer = trainer_or_none(self)
        if trainer is not None and trainer.world_size > 1:
            sums = trainer.strategy.reduce(sums, reduce_op="sum")
        n, b, score, bb, bs = sums.tolist()
        variance = bb - b * b / n if n > 1 else 0.0
        if variance > 1e-9 * max(bb, 1.0):  # least-squares slope of the negative ELBO on the complexity
            self.complexity_weight.fill_(min(max((bs - b * score / n) / variance, 0.0), 1.0))

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        _, nelbo = self.shared_step(batch, "test")
        x = batch[0]
        nll = None
        if self.hparams.nll_samples:
            nll = self.importance_nll(x, self.hparams.nll_samples)
            self.test_nll.update(nll)
            self.log_epoch_metrics("test", self.test_nll)
        if self.anomaly_scores is not None and len(batch) > 1:
            anomalous = torch.isin(batch[1], torch.tensor(self.anomaly_classes, device=x.device))
            nll = nelbo if nll is None else nll
            self.anomaly_scores["elbo"].update(nelbo.double())
            self.anomaly_scores["nll"].update(nll.double())
            self.anomaly_scores["corrected"].update(self.corrected_score(x, nll).double())
            self.anomaly_labels.update(anomalous.long())

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.anomaly_scores is None or not self.anomaly_labels.update_called:
            return
        scores, labels = self.anomaly_scores.compute(), self.anomaly_labels.compute().long()
        self.anomaly_scores.reset()
        self.anomaly_labels.reset()
        if labels.min() == labels.max():
            return  # one kind of image only (as the tabular VAE): no ranking to judge
        names = {"elbo": "test/anomaly_auroc", "nll": "test/anomaly_auroc_nll"}
        if self.background.fitted:  # (not in checkpoints from before it existed)
            names["corrected"] = "test/anomaly_auroc_corrected"
            self.log("test/complexity_weight", self.complexity_weight.float(), sync_dist=False)
        for key, name in names.items():
            self.log(name, ranking_auroc(scores[key], labels), sync_dist=False)  # the same on every process

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """``lit-dl predict``: per image ``(B, 1)`` the negative ELBO (nats), and with a fitted
        background model ``(B, 2)``: the corrected anomaly score beside it (importance samples only
        for a checkpoint without reference codes)."""
        x = batch[0] if isinstance(batch, tuple | list) else batch
        recon, kl = self.elbo_terms(x)
        nelbo = recon + kl
        if not self.background.fitted:  # no corrected score: skip its importance samples too
            return nelbo.float().unsqueeze(-1)
        nll = nelbo
        if self.hparams.nll_samples and not self.references:
            nll = self.importance_nll(x, self.hparams.nll_samples)
        return torch.stack([nelbo.float(), self.corrected_score(x, nll)], dim=-1)

    def prediction_columns(self, outputs: Tensor) -> dict[str, Any]:
        """``lit-dl predict``'s columns (higher: less like the training data): ``negative_elbo`` in nats
        and, with a fitted background model, ``anomaly_score_corrected`` (see the class docstring)."""
        columns = {"negative_elbo": outputs[:, 0].float().numpy()}
        if self.background.fitted and outputs.shape[1] > 1:
            columns["anomaly_score_corrected"] = outputs[:, 1].float().numpy()
        return columns

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, n: int, *, generator: torch.Generator | None = None, condition: Any = None) -> Tensor:
        """Decoded means of ``n`` draws from the prior ``(n, C, H, W)``, pixels in [0, 1] (no condition)."""
        self.condition_labels(condition, n)  # refuses one
        return self.decode_mean(self.decoder(self.latent(n, generator)))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoded posterior means of ``x``, pixels in [0, 1]."""
        return self.decode_mean(self.decoder(self.encode(x).loc))

    @torch.no_grad()
    def interpolate(self, start: Tensor, end: Tensor, steps: int = 8) -> Tensor:
        """Decoded points between the posterior means of ``start`` and ``end``: ``(B * steps, C, H, W)``."""
        z0, z1 = self.encode(start).loc, self.encode(end).loc
        weights = torch.linspace(0, 1, steps, device=z0.device).view(1, steps, 1)
        path = z0.unsqueeze(1) * (1 - weights) + z1.unsqueeze(1) * weights  # (B, steps, L)
        return self.decode_mean(self.decoder(path.flatten(0, 1)))

    def summarize(self, metrics: dict[str, float]) -> str | None:
        if "test/nelbo" not in metrics:
            return None
        text = f"test negative ELBO {metrics['test/nelbo']:.2f} nats per image"
        if "test/nll" in metrics:
            text += f", importance-sampled NLL ({self.hparams.nll_samples} samples) {metrics['test/nll']:.2f}"
        if "test/anomaly_auroc" in metrics:
            text += f"; anomaly AUROC of held-out classes {metrics['test/anomaly_auroc']:.3f}"
            if "test/anomaly_auroc_corrected" in metrics:
                text += f" ({metrics['test/anomaly_auroc_corrected']:.3f} corrected for complexity)"
        return text


def _fill_missing_buffers(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: weights saved before the background model existed get an empty one."""
    for key in (BACKGROUND_STATS, COMPLEXITY_WEIGHT, REFERENCE_CODES, REFERENCE_COUNT):
        if prefix + key not in state_dict:
            state_dict[prefix + key] = module.get_buffer(key).detach().clone().zero_()
            if key == COMPLEXITY_WEIGHT:
                state_dict[prefix + key].fill_(1.0)
    if isinstance(module, VAETask):  # (the hook is only registered on one; this also tells the type checker)
        module._references = None  # read from the loaded buffer when first needed
