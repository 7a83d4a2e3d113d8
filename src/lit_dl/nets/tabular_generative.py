"""Generative networks for transformed tables (TVAE and CTGAN, Xu et al., 2019).

Rows arrive as float vectors laid out in *spans* (see ``lit_dl.data.table_transform``):
``("tanh", 1)`` for a numeric mode offset and ``("softmax", k)`` for a one-hot span.
The networks output raw values; :func:`activate` turns them into rows, given the span
layout as index tensors (``TableTransform.span_index()``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def activate(raw: Tensor, offsets: Tensor, index: Tensor, gumbel_tau: float | None = None) -> Tensor:
    """Rows ``(B, D)`` from raw outputs ``(B, D)``: tanh on offsets, softmax (or Gumbel-softmax) on spans.

    Args:
        raw: the network's outputs ``(B, D)``.
        offsets: columns of the mode offsets ``(T,)``.
        index: columns of the one-hot spans ``(S, K_max)``, short spans padded with ``D``
            (both from :meth:`lit_dl.data.table_transform.TableTransform.span_index`).
        gumbel_tau: with a temperature, the one-hot spans are Gumbel-softmax draws (differentiable,
            nearly one-hot: what a GAN discriminator should see); None: a plain softmax.
    """
    offsets, index = offsets.to(raw.device), index.to(raw.device)
    logits = torch.cat([raw.float(), raw.new_full((len(raw), 1), -torch.inf, dtype=torch.float32)], dim=1)
    logits = logits[:, index]  # (B, S, K_max), padding at -inf
    if gumbel_tau is not None:
        uniform = torch.rand_like(logits).clamp_(1e-10, 1.0)
        logits = (logits - torch.log(-torch.log(uniform))) / gumbel_tau
    probs = torch.softmax(logits, dim=2)
    out = raw.new_zeros(len(raw), raw.shape[1] + 1, dtype=torch.float32)
    out[:, index.reshape(-1)] = probs.reshape(len(raw), -1)
    out[:, offsets] = torch.tanh(raw[:, offsets].float())
    return out[:, :-1].to(raw.dtype)


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """``Linear -> ReLU`` for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for width_in, width_out in itertools.pairwise(sizes):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers)


class TabularVAE(nn.Module):
    """TVAE: an MLP encoder to a Gaussian latent and an MLP decoder back to the row layout.

    Args:
        data_dim: width ``D`` of a transformed row.
        latent_dim: width of the latent code.
        encoder_sizes: hidden widths of the encoder.
        decoder_sizes: hidden widths of the decoder.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 128,
        encoder_sizes: Sequence[int] = (128, 128),
        decoder_sizes: Sequence[int] = (128, 128),
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = mlp([data_dim, *encoder_sizes])
        last = encoder_sizes[-1] if encoder_sizes else data_dim
        self.mu = nn.Linear(last, latent_dim)
        self.logvar = nn.Linear(last, latent_dim)
        self.decoder = nn.Sequential(
            mlp([latent_dim, *decoder_sizes]),
            nn.Linear(decoder_sizes[-1] if decoder_sizes else latent_dim, data_dim),
        )
        # Per-dimension noise scale of the offsets' Gaussian likelihood, learned (TVAE).
        self.sigma = nn.Parameter(torch.full((data_dim,), 0.1))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance ``(B, latent_dim)`` of the posterior of rows ``(B, D)``."""
        hidden = self.encoder(x)
        return self.mu(hidden), self.logvar(hidden)

    def decode(self, z: Tensor) -> Tensor:
        """Raw outputs ``(B, D)`` of latent codes ``(B, latent_dim)``."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction (raw) ``(B, D)``, mean and log-variance ``(B, latent_dim)``."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


class Residual(nn.Module):
    """``Linear -> BatchNorm -> ReLU`` whose output is concatenated to its input (CTGAN generator block)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([F.relu(self.bn(self.fc(x))), x], dim=1)


class TabularGenerator(nn.Module):
    """CTGAN generator: noise and condition ``(B, noise_dim + cond_dim)`` -> raw rows ``(B, D)``."""

    def __init__(
        self, noise_dim: int, cond_dim: int, data_dim: int, sizes: Sequence[int] = (256, 256)
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = noise_dim + cond_dim
        for size in sizes:
            blocks.append(Residual(width, size))
            width += size
        self.body = nn.Sequential(*blocks, nn.Linear(width, data_dim))

    def forward(self, noise: Tensor, cond: Tensor) -> Tensor:
        return self.body(torch.cat([noise, cond], dim=1))


class TabularDiscriminator(nn.Module):
    """CTGAN critic with PacGAN: ``pac`` rows (and their conditions) are judged together.

    Input ``(B, D + cond_dim)`` with ``B`` a multiple of ``pac``; output ``(B / pac,)`` scores.
    """

    def __init__(
        self, in_features: int, sizes: Sequence[int] = (256, 256), pac: int = 10, dropout: float = 0.5
    ):
        super().__init__()
        self.pac = pac
        layers: list[nn.Module] = []
        width = in_features * pac
        for size in sizes:
            layers += [nn.Linear(width, size), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            width = size
        self.body = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, rows: Tensor) -> Tensor:
        return self.body(rows.reshape(-1, rows.shape[1] * self.pac)).squeeze(-1)


class TabularGAN(nn.Module):
    """Generator and critic of a conditional tabular GAN, kept together so one config builds both.

    Args:
        data_dim: width ``D`` of a transformed row.
        cond_dim: width of the conditional vector (one slot per category of every categorical column).
        noise_dim: width of the generator's noise input.
        generator_sizes: widths of the generator's residual blocks.
        discriminator_sizes: hidden widths of the critic.
        pac: rows the critic judges together (PacGAN; fights mode collapse).
        dropout: dropout of the critic's hidden layers.
    """

    def __init__(
        self,
        data_dim: int,
        cond_dim: int,
        noise_dim: int = 128,
        generator_sizes: Sequence[int] = (256, 256),
        discriminator_sizes: Sequence[int] = (256, 256),
        pac: int = 10,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.pac = pac
        self.generator = TabularGenerator(noise_dim, cond_dim, data_dim, generator_sizes)
        self.discriminator = TabularDiscriminator(data_dim + cond_dim, discriminator_sizes, pac, dropout)

    def forward(self, noise: Tensor, cond: Tensor) -> Tensor:
        """Raw generated rows ``(B, D)``."""
        return self.generator(noise, cond)
