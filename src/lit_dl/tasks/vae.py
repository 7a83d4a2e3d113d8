"""Variational autoencoder (Kingma & Welling 2014) for images: ELBO training, importance-sampled NLL."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence
from torchmetrics import MeanMetric
from torchmetrics.aggregation import CatMetric
from torchmetrics.functional.classification import binary_auroc

from lit_dl.errors import ConfigError
from lit_dl.tasks.generative import ImageGenerativeTask

LIKELIHOODS = ("bernoulli", "gaussian")


class VAETask(ImageGenerativeTask):
    """A VAE: encoder ``q(z|x)``, standard normal prior, decoder ``p(x|z)``.

    All figures are in nats per image: ``recon`` = ``-E_q[log p(x|z)]``, ``kl`` =
    ``KL(q(z|x) || p(z))``, ``nelbo`` = their sum (an upper bound on ``-log p(x)``), and
    at test time ``nll``, the importance-weighted estimate of ``-log p(x)`` with
    ``nll_samples`` draws from ``q`` (Burda et al. 2016), which tightens towards the true
    value as the number of draws grows. With held-out classes in the data spec
    (``data.exclude_classes``), the test also reports ``test/anomaly_auroc``: how well the
    negative ELBO tells those classes' images from the trained ones.

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
        **kwargs: Any,
    ) -> None:
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"model.likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
        if beta < 0 or kl_warmup_epochs < 0 or nll_samples < 0 or latent_dim < 1:
            raise ConfigError(
                "model.beta, model.kl_warmup_epochs and model.nll_samples must be >= 0, model.latent_dim >= 1"
            )
        super().__init__(optimizer=optimizer, **kwargs)

    def configure_models(self) -> None:
        geometry = self.image_geometry()
        self.encoder = self.build_part("encoder", **geometry, latent_dim=self.latent_dim)
        self.decoder = self.build_part("decoder", **geometry, latent_dim=self.latent_dim)
        # Gaussian likelihood: log standard deviation per channel, learned with the networks.
        self.log_scale = (
            nn.Parameter(torch.zeros(geometry["in_channels"]))
            if self.hparams.likelihood == "gaussian"
            else None
        )

    def configure_metrics(self) -> None:
        # The epoch means of nelbo, recon and kl go through log_mean (device sums, exact under DDP).
        self.test_nll = MeanMetric()
        # Scores and labels of the test images, gathered over processes (anomaly AUROC at epoch end).
        self.anomaly_scores = CatMetric() if self.anomaly_classes else None
        self.anomaly_labels = CatMetric() if self.anomaly_classes else None

    # ------------------------------------------------------------ model
    def encode(self, x: Tensor) -> Normal:
        mean, log_var = self.encoder(x)
        # No argument validation: its checks read back to the host every step (a GPU sync each).
        return Normal(mean.float(), torch.exp(0.5 * log_var.float()), validate_args=False)

    def log_likelihood(self, params: Tensor, x: Tensor) -> Tensor:
        """``log p(x|z)`` per image (summed over pixels, nats), from the decoder's output ``params``."""
        params, x = params.float(), x.float()
        if self.hparams.likelihood == "bernoulli":
            per_pixel = -F.binary_cross_entropy_with_logits(params, x, reduction="none")
        else:
            assert self.log_scale is not None
            scale = self.log_scale.float().exp().view(1, -1, 1, 1).expand_as(params)
            per_pixel = Normal(params, scale, validate_args=False).log_prob(x)
        return per_pixel.flatten(1).sum(dim=1)

    def decode_mean(self, params: Tensor) -> Tensor:
        """The decoder's expected image in [0, 1] (Bernoulli probabilities or the Gaussian mean)."""
        params = params.float()
        return torch.sigmoid(params) if self.hparams.likelihood == "bernoulli" else params.clamp(0, 1)

    def elbo_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image reconstruction term ``-log p(x|z)`` (one reparameterised draw) and KL, in nats."""
        posterior = self.encode(x)
        z = posterior.rsample()  # reparameterisation: z = mean + std * eps, differentiable in both
        recon = -self.log_likelihood(self.decoder(z), x)
        prior = Normal(torch.zeros_like(posterior.loc), torch.ones_like(posterior.scale), validate_args=False)
        kl = kl_divergence(posterior, prior).sum(dim=1)
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
        loss = (recon + self.kl_weight() * kl).mean() if stage == "train" else nelbo.mean()
        self.log_mean(f"{stage}/loss", loss, len(x), on_step=stage == "train", prog_bar=True)
        for name, value in (("nelbo", nelbo), ("recon", recon), ("kl", kl)):
            self.log_mean(f"{stage}/{name}", value.mean(), len(x))
        return loss, nelbo.detach()

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self.shared_step(batch, "train")[0]

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        _, nelbo = self.shared_step(batch, "test")
        x = batch[0]
        if self.hparams.nll_samples:
            self.test_nll.update(self.importance_nll(x, self.hparams.nll_samples))
            self.log_epoch_metrics("test", self.test_nll)
        if self.anomaly_scores is not None and len(batch) > 1:
            anomalous = torch.isin(batch[1], torch.tensor(self.anomaly_classes, device=x.device))
            self.anomaly_scores.update(nelbo.double())
            self.anomaly_labels.update(anomalous.long())

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.anomaly_scores is None or not self.anomaly_scores.update_called:
            return
        scores, labels = self.anomaly_scores.compute(), self.anomaly_labels.compute()
        self.anomaly_scores.reset()
        self.anomaly_labels.reset()
        # torchmetrics reads scores outside [0, 1] as logits and squashes them with a sigmoid, which
        # ties every negative ELBO of tens of nats at 1.0; rescaling to [0, 1] keeps the ranking exact.
        span = (scores.max() - scores.min()).clamp_min(1e-12)
        auroc = binary_auroc((scores - scores.min()) / span, labels.long())
        self.log("test/anomaly_auroc", auroc.float(), sync_dist=False)  # the same on every process

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """``lit-dl predict``: the negative ELBO of each image (nats), an anomaly score."""
        x = batch[0] if isinstance(batch, tuple | list) else batch
        recon, kl = self.elbo_terms(x)
        return (recon + kl).unsqueeze(-1)

    def prediction_columns(self, outputs: Tensor) -> dict[str, Any]:
        """``lit-dl predict``'s column: the negative ELBO in nats (higher: less like the training data)."""
        return {"negative_elbo": outputs[:, 0].float().numpy()}

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
        return text
