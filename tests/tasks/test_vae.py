"""The VAE's likelihood code: ELBO by hand, KL, reparameterisation, importance-sampled NLL on PPCA."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace
from unittest.mock import PropertyMock, patch

import pytest
import torch
from torch import nn

from lit_dl.data.spec import DataSpec
from lit_dl.errors import ConfigError
from lit_dl.tasks import VAETask

pytestmark = pytest.mark.usefixtures("one_thread")

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def image_spec(pixels: int, anomaly_classes: list[int] | None = None) -> DataSpec:
    """Unit-scale images of shape (1, 1, pixels) in two classes."""
    return DataSpec(
        task_type="classification",
        modality="images",
        inputs={"in_channels": 1, "image_size": [1, pixels]},
        classes=["0", "1"],
        scale="unit",
        anomaly_classes=anomaly_classes,
    )


def linear_vae(pixels: int, latent: int, likelihood: str) -> VAETask:
    """A VAE with linear encoder and decoder on images of shape (1, 1, pixels)."""
    return VAETask(
        encoder={"_target_": "lit_dl.nets.MLPEncoder", "hidden_sizes": []},
        decoder={"_target_": "lit_dl.nets.MLPDecoder", "hidden_sizes": []},
        optimizer=ADAM,
        latent_dim=latent,
        likelihood=likelihood,
        data=image_spec(pixels),
    )


def set_linear(layer: nn.Linear, weight: list[list[float]], bias: list[float]) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))


def test_elbo_terms_equal_torch_distributions() -> None:
    # elbo_terms writes the reparameterised draw and the KL to N(0, I) out by hand (speed); the
    # figures, and the random draw itself, must be those of torch.distributions' Normal.
    torch.manual_seed(0)
    vae = linear_vae(pixels=6, latent=3, likelihood="bernoulli")
    x = torch.rand(5, 1, 1, 6).bernoulli()
    torch.manual_seed(1)
    recon, kl = vae.elbo_terms(x)
    posterior = vae.encode(x)
    prior = torch.distributions.Normal(torch.zeros_like(posterior.loc), torch.ones_like(posterior.scale))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(posterior, prior).sum(dim=1))
    torch.manual_seed(1)
    expected = -vae.log_likelihood(vae.decoder(posterior.rsample()), x)
    torch.testing.assert_close(recon, expected)


def test_elbo_matches_a_case_computed_by_hand() -> None:
    # One latent dimension, two binary pixels. Encoder: mean = 0.5*x1 - 0.5*x2 + 0.1, log-variance
    # fixed at -40 (std ~2e-9, so the one reparameterised draw is the mean). Decoder: logits = (2z, -z).
    vae = linear_vae(pixels=2, latent=1, likelihood="bernoulli")
    set_linear(vae.encoder.net.layers[0], [[0.5, -0.5], [0.0, 0.0]], [0.1, -40.0])
    set_linear(vae.decoder.net.layers[0], [[2.0], [-1.0]], [0.0, 0.0])
    x = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])
    recon, kl = vae.elbo_terms(x)

    def by_hand(x1: float, x2: float) -> tuple[float, float]:
        mu = 0.5 * x1 - 0.5 * x2 + 0.1
        log_p = 0.0
        for value, logit in ((x1, 2 * mu), (x2, -mu)):
            p = 1 / (1 + math.exp(-logit))
            log_p += math.log(p) if value == 1 else math.log(1 - p)
        kl_hand = 0.5 * (mu**2 + math.exp(-40.0) - 1 - (-40.0))
        return -log_p, kl_hand

    expected = torch.tensor([by_hand(1, 0), by_hand(0, 1)])
    torch.testing.assert_close(recon, expected[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kl, expected[:, 1], atol=1e-5, rtol=1e-5)


def test_kl_term_is_the_closed_form_and_agrees_with_monte_carlo() -> None:
    torch.manual_seed(0)
    vae = linear_vae(pixels=4, latent=3, likelihood="bernoulli")
    x = torch.rand(5, 1, 1, 4).round()
    posterior = vae.encode(x)
    _, kl = vae.elbo_terms(x)
    mu, var = posterior.loc, posterior.scale**2
    closed = 0.5 * (mu**2 + var - 1 - var.log()).sum(dim=1)
    torch.testing.assert_close(kl, closed.detach(), rtol=1e-5, atol=1e-6)
    z = posterior.sample((20000,))
    prior = torch.distributions.Normal(0.0, 1.0)
    monte_carlo = (posterior.log_prob(z) - prior.log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(monte_carlo, kl.detach(), atol=0.05, rtol=0.02)


def test_reconstruction_gradients_reach_the_encoder_through_the_sample() -> None:
    # With the reparameterisation z = mean + std * eps, the reconstruction term alone gives the
    # encoder a gradient; a plain (non-reparameterised) sample would give it none.
    torch.manual_seed(1)
    vae = linear_vae(pixels=6, latent=2, likelihood="bernoulli")
    x = torch.rand(8, 1, 1, 6).round()
    recon, _ = vae.elbo_terms(x)
    recon.sum().backward()
    weight = vae.encoder.net.layers[0].weight
    assert weight.grad is not None
    assert weight.grad[:2].abs().sum() > 0  # rows of the mean
    assert weight.grad[2:].abs().sum() > 0  # rows of the log-variance (through std * eps)


def test_importance_sampled_nll_approaches_the_exact_ppca_likelihood_from_above() -> None:
    # Probabilistic PCA: z ~ N(0, I_2), x = W z + b + N(0, sigma^2 I_5). Exactly
    # x ~ N(b, W W^T + sigma^2 I), so -log p(x) is known. A linear VAE with that decoder and an
    # encoder that is close to (not equal to) the true posterior estimates it by importance sampling.
    torch.manual_seed(0)
    pixels, latent, sigma = 5, 2, 0.5
    weight = torch.randn(pixels, latent)
    bias = torch.randn(pixels) * 0.3
    vae = linear_vae(pixels=pixels, latent=latent, likelihood="gaussian")
    set_linear(vae.decoder.net.layers[0], weight.tolist(), bias.tolist())
    with torch.no_grad():
        vae.log_scale.fill_(math.log(sigma))
    # True posterior: cov = (I + W^T W / sigma^2)^-1, mean = cov W^T (x - b) / sigma^2.
    cov = torch.linalg.inv(torch.eye(latent) + weight.T @ weight / sigma**2)
    gain = cov @ weight.T / sigma**2
    encoder = vae.encoder.net.layers[0]
    perturbed_gain = gain * 0.8  # a deliberately imperfect encoder, so K matters
    log_var = torch.log(torch.diagonal(cov) * 1.5)
    set_linear(
        encoder,
        torch.cat([perturbed_gain, torch.zeros(latent, pixels)]).tolist(),
        torch.cat([-perturbed_gain @ bias, log_var]).tolist(),
    )
    x = (torch.randn(400, latent) @ weight.T + bias + sigma * torch.randn(400, pixels)).view(
        400, 1, 1, pixels
    )
    exact = -torch.distributions.MultivariateNormal(
        bias, weight @ weight.T + sigma**2 * torch.eye(pixels)
    ).log_prob(x.view(400, pixels))
    with torch.no_grad():
        recon, kl = vae.elbo_terms(x)
        estimates = {k: vae.importance_nll(x, samples=k).mean().item() for k in (1, 10, 100, 1000)}
    exact_mean = exact.mean().item()
    nelbo = (recon + kl).mean().item()
    gaps = [estimates[k] - exact_mean for k in (1, 10, 100, 1000)]
    assert nelbo > exact_mean + 0.05  # the imperfect encoder leaves a real gap to close
    assert all(gap > -0.02 for gap in gaps), gaps  # never below the exact value (beyond MC noise)
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3], gaps  # tighter as K grows
    assert gaps[3] < 0.1 * gaps[0] and gaps[3] < 0.02, gaps


def test_kl_warmup_rises_to_beta_step_by_step() -> None:
    vae = linear_vae(pixels=4, latent=2, likelihood="bernoulli")
    vae.hparams.kl_warmup_epochs = 2
    vae.hparams.beta = 0.5
    trainer = SimpleNamespace(num_training_batches=10)
    weights = []
    with (
        patch.object(VAETask, "trainer", new_callable=PropertyMock, return_value=trainer),
        patch.object(VAETask, "global_step", new_callable=PropertyMock) as global_step,
    ):
        for step in (0, 9, 19, 50):
            global_step.return_value = step
            weights.append(vae.kl_weight())
    assert weights == pytest.approx([0.5 / 20, 0.5 * 10 / 20, 0.5, 0.5])


def test_anomaly_auroc_ranks_negative_elbos_of_tens_of_nats() -> None:
    # Scores far outside [0, 1] (negative ELBOs of 100+ nats): held-out class 1 scores higher on
    # every image, so the AUROC is exactly 1 (a sigmoid-squashed score would tie them all at 0.5).
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    vae = VAETask(
        encoder={"_target_": "lit_dl.nets.MLPEncoder", "hidden_sizes": []},
        decoder={"_target_": "lit_dl.nets.MLPDecoder", "hidden_sizes": []},
        optimizer=ADAM,
        latent_dim=2,
        nll_samples=0,
        data=image_spec(4, anomaly_classes=[1]),
    )
    labels = torch.tensor([0, 1, 0, 1, 0, 0, 1, 0])
    images = torch.zeros(8, 1, 1, 4)
    images[:, 0, 0, 0] = labels.float() * 3 + torch.arange(8) * 0.1  # anomalies: larger first pixel

    def fake_terms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 100.0 + 10.0 * x.flatten(1)[:, 0], torch.zeros(len(x))

    vae.elbo_terms = fake_terms  # type: ignore[method-assign]
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(vae, DataLoader(TensorDataset(images, labels), batch_size=3), verbose=False)
    assert trainer.callback_metrics["test/anomaly_auroc"].item() == pytest.approx(1.0)


def test_image_models_refuse_standardised_pixels_and_tables() -> None:
    nets = {
        "encoder": {"_target_": "lit_dl.nets.MLPEncoder"},
        "decoder": {"_target_": "lit_dl.nets.MLPDecoder"},
    }
    standardised = dataclasses.replace(image_spec(4), scale="standardize")
    with pytest.raises(ConfigError, match=r"set data\.scale=unit \(the generative experiments do\)$"):
        VAETask(**nets, optimizer=ADAM, data=standardised)
    table = DataSpec(task_type="generative", modality="table", inputs={"data_dim": 4})
    with pytest.raises(ConfigError, match="needs images data"):
        VAETask(**nets, optimizer=ADAM, data=table)
