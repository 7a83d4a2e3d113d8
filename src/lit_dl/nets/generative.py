"""Networks of the generative pairs: VAE encoders/decoders, GAN generators/discriminators.

Every network takes the image geometry (``in_channels``, ``image_size``) and the
latent width from the task, so the same config entry fits 8x8 digits and 32x32
colour images. Encoders return ``(mean, log_variance)`` of ``q(z|x)``; decoders and
generators return one value per pixel (decoder: the likelihood's parameter, e.g.
Bernoulli logits; generator: an image in ``[-1, 1]``); discriminators return one
score per image. Conditional variants take class labels (``num_classes > 0``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lit_dl.nets.mlp import MLP, activation_layer

NORMS = ("none", "batch", "layer", "spectral")


def _size(image_size: Sequence[int] | int) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = (int(v) for v in image_size)
    return height, width


def _norm_2d(norm: str, channels: int) -> nn.Module | None:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":  # layer norm over (C, H, W) of each image: safe with a gradient penalty
        return nn.GroupNorm(1, channels)
    if norm in ("none", "spectral"):
        return None
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


class ConvDownsampler(nn.Module):
    """``[Conv 4x4 stride 2 -> (norm) -> activation] * len(channels) -> flatten``.

    Halves height and width per layer; ``(B, C, H, W) -> (B, out_features)``.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: Sequence[int] | int,
        channels: Sequence[int] = (32, 64),
        norm: str = "none",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        height, breadth = _size(image_size)
        for out in channels:
            conv = nn.Conv2d(
                width, out, kernel_size=4, stride=2, padding=1, bias=norm in ("none", "spectral")
            )
            layers.append(nn.utils.parametrizations.spectral_norm(conv) if norm == "spectral" else conv)
            if (norm_layer := _norm_2d(norm, out)) is not None:
                layers.append(norm_layer)
            # DCGAN's slope 0.2 (torch's LeakyReLU default is 0.01)
            layers.append(nn.LeakyReLU(0.2) if activation == "leaky_relu" else activation_layer(activation))
            width, height, breadth = out, height // 2, breadth // 2
        if height < 1 or breadth < 1:
            raise ValueError(
                f"{len(channels)} stride-2 layers shrink a {_size(image_size)} image below 1x1; "
                "use fewer channels"
            )
        self.layers = nn.Sequential(*layers, nn.Flatten())
        self.out_features = width * height * breadth

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ConvUpsampler(nn.Module):
    """``Linear -> [ConvTranspose 4x4 stride 2 -> (norm) -> activation] * n -> Conv 3x3``, cropped.

    Starts at ``ceil(size / 2**n)`` and doubles per layer, then crops the centre to
    ``image_size``; ``(B, in_features) -> (B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_features: int,
        out_channels: int,
        image_size: Sequence[int] | int,
        channels: Sequence[int] = (64, 32),
        norm: str = "none",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("ConvUpsampler needs at least one entry in channels")
        self.image_size = _size(image_size)
        scale = 2 ** len(channels)
        self.start = (math.ceil(self.image_size[0] / scale), math.ceil(self.image_size[1] / scale))
        self.project = nn.Linear(in_features, channels[0] * self.start[0] * self.start[1])
        layers: list[nn.Module] = []
        first_norm = _norm_2d("batch" if norm == "batch" else "none", channels[0])
        if first_norm is not None:
            layers.append(first_norm)
        layers.append(activation_layer(activation))
        widths = [*channels, channels[-1]]
        for width, out in itertools.pairwise(widths):
            layers.append(
                nn.ConvTranspose2d(width, out, kernel_size=4, stride=2, padding=1, bias=norm != "batch")
            )
            if norm == "batch":
                layers.append(nn.BatchNorm2d(out))
            layers.append(activation_layer(activation))
        layers.append(nn.Conv2d(widths[-1], out_channels, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*layers)
        self.channels0 = channels[0]

    def forward(self, h: Tensor) -> Tensor:
        x = self.project(h).view(len(h), self.channels0, *self.start)
        x = self.layers(x)
        top = (x.shape[-2] - self.image_size[0]) // 2
        left = (x.shape[-1] - self.image_size[1]) // 2
        return x[..., top : top + self.image_size[0], left : left + self.image_size[1]]


# ----------------------------------------------------------------------------- VAE


class MLPEncoder(nn.Module):
    """Flattened image -> MLP -> ``(mean, log_variance)`` of a diagonal Gaussian ``q(z|x)``.

    With ``hidden_sizes: []`` the encoder is linear (the probabilistic-PCA case).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: Sequence[int] | int,
        latent_dim: int,
        hidden_sizes: Sequence[int] = (512, 256),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        height, width = _size(image_size)
        self.net = MLP(in_channels * height * width, 2 * latent_dim, hidden_sizes, activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.net(x.flatten(1)).chunk(2, dim=-1)
        return mean, log_var


class MLPDecoder(nn.Module):
    """``z`` -> MLP -> one likelihood parameter per pixel ``(B, C, H, W)`` (e.g. Bernoulli logits)."""

    def __init__(
        self,
        in_channels: int,
        image_size: Sequence[int] | int,
        latent_dim: int,
        hidden_sizes: Sequence[int] = (256, 512),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.shape = (in_channels, *_size(image_size))
        self.net = MLP(latent_dim, math.prod(self.shape), hidden_sizes, activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(len(z), *self.shape)


class ConvEncoder(nn.Module):
    """Stride-2 convolutions -> linear -> ``(mean, log_variance)`` of ``q(z|x)``."""

    def __init__(
        self,
        in_channels: int,
        image_size: Sequence[int] | int,
        latent_dim: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.features = ConvDownsampler(in_channels, image_size, channels, "none", activation)
        self.head = MLP(self.features.out_features, 2 * latent_dim, [hidden] if hidden else [], activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.head(self.features(x)).chunk(2, dim=-1)
        return mean, log_var


class ConvDecoder(nn.Module):
    """``z`` -> linear -> transposed convolutions -> one likelihood parameter per pixel."""

    def __init__(
        self,
        in_channels: int,
        image_size: Sequence[int] | int,
        latent_dim: int,
        channels: Sequence[int] = (64, 32),
        hidden: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        if hidden:
            layers += [nn.Linear(latent_dim, hidden), activation_layer(activation)]
            width = hidden
        self.hidden = nn.Sequential(*layers)
        self.upsample = ConvUpsampler(width, in_channels, image_size, channels, "none", activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.upsample(self.hidden(z))


class LocalPixelModel(nn.Module):
    """A background model of images: each pixel given its four causal neighbours, alike at every position.

    Neighbours west, north-west, north and north-east (zero outside the image), per channel; the
    same conditional everywhere, so it knows strokes and texture but not where a digit's parts go.
    Its negative log-likelihood measures an image's complexity (an image with more edges costs more),
    which a likelihood model's score shares: the difference is the likelihood ratio of Ren et al.
    (2019) and the input-complexity correction of Serra et al. (2020), with a fitted compressor.
    Fitted by counting (:meth:`update` on training images; the statistics are buffers, so the fit
    travels in checkpoints):

    * ``bernoulli`` (0/1 pixels): ``p(x = 1 | context)`` for each of the 16 neighbour patterns,
      counts with one pseudo-count per outcome.
    * ``gaussian`` (grey pixels): ``x ~ N(w . neighbours + b, s^2)``, least squares from the summed
      outer products of ``[neighbours, 1, x]``.

    Args:
        channels: image channels.
        likelihood: ``bernoulli`` or ``gaussian``.
    """

    NEIGHBOURS = 4

    def __init__(self, channels: int, likelihood: str = "bernoulli") -> None:
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be bernoulli or gaussian, got {likelihood!r}")
        self.likelihood = likelihood
        if likelihood == "bernoulli":
            # (C, contexts, [pixels, ones]) counted in float64 (sums over many epochs of images)
            stats = torch.zeros(channels, 2**self.NEIGHBOURS, 2, dtype=torch.float64)
        else:
            # (C, F, F): sums of outer products of f = [neighbours, 1, x] (the last row gives x's terms)
            width = self.NEIGHBOURS + 2
            stats = torch.zeros(channels, width, width, dtype=torch.float64)
        self.register_buffer("stats", stats)
        self._fitted: bool | None = False  # known without reading the device; None: look

    @property
    def fitted(self) -> bool:
        """Whether any image has been counted."""
        if self._fitted is None:
            self._fitted = bool(self.stats.abs().sum() > 0)
        return self._fitted

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._fitted = None

    def _apply(self, fn: Any, recurse: bool = True) -> LocalPixelModel:
        # The counts stay float64 when the module is cast (trainer.precision=bf16-true, .half()): in
        # bf16 a count above 256 no longer grows by one. Moves to another device still apply.
        stats = self.stats
        super()._apply(fn, recurse)
        if self.stats.dtype != torch.float64:
            self.stats = stats.to(self.stats.device)
        return self

    def neighbours(self, x: Tensor) -> Tensor:
        """Causal neighbours ``(B, C, H, W, 4)`` of images ``(B, C, H, W)``: W, NW, N and NE."""
        height, width = x.shape[-2:]
        padded = nn.functional.pad(x, (1, 1, 1, 0))  # a column left and right, a row on top
        west = padded[..., 1:, 0:width]
        north_west = padded[..., :height, 0:width]
        north = padded[..., :height, 1 : width + 1]
        north_east = padded[..., :height, 2 : width + 2]
        return torch.stack([west, north_west, north, north_east], dim=-1)

    def _contexts(self, x: Tensor) -> Tensor:
        weights = 2 ** torch.arange(self.NEIGHBOURS, device=x.device)
        return ((self.neighbours(x) > 0.5).long() * weights).sum(-1)  # (B, C, H, W) in [0, 16)

    def _features(self, x: Tensor) -> Tensor:
        near = self.neighbours(x)
        return torch.cat([near, torch.ones_like(near[..., :1]), x.unsqueeze(-1)], dim=-1)  # (B, C, H, W, 6)

    @torch.no_grad()
    def update(self, x: Tensor, out: Tensor | None = None) -> None:
        """Count images ``(B, C, H, W)`` (pixels in [0, 1]; binary ones for ``bernoulli``), or add their
        counts to ``out`` (zeros shaped like :attr:`stats`, for :meth:`add` later) instead."""
        x = x.detach().to(torch.float64)
        stats = self.stats if out is None else out
        if out is None:
            self._fitted = True
        if self.likelihood == "bernoulli":
            contexts = self._contexts(x).transpose(0, 1).flatten(1)  # (C, B*H*W)
            ones = (x > 0.5).to(torch.float64).transpose(0, 1).flatten(1)
            stats[..., 0].scatter_add_(1, contexts, torch.ones_like(ones))
            stats[..., 1].scatter_add_(1, contexts, ones)
        else:
            features = self._features(x).transpose(0, 1).flatten(1, 3)  # (C, B*H*W, 6)
            stats += features.transpose(1, 2) @ features

    @torch.no_grad()
    def add(self, counts: Tensor) -> None:
        """Add counts gathered with ``update(x, out=counts)`` (summed over processes, say)."""
        self.stats += counts.to(self.stats)
        self._fitted = True

    def nll(self, x: Tensor) -> Tensor:
        """``-log p(x)`` per image ``(B,)`` in nats (a density per pixel for ``gaussian``)."""
        x = x.to(torch.float64)
        if self.likelihood == "bernoulli":
            # One pseudo-count per outcome: a context never seen gives 1/2.
            p_one = (self.stats[..., 1] + 1.0) / (self.stats[..., 0] + 2.0)  # (C, 16)
            contexts = self._contexts(x)  # (B, C, H, W)
            channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1).expand_as(contexts)
            p = p_one[channel, contexts].clamp(1e-6, 1 - 1e-6)
            ones = (x > 0.5).to(torch.float64)
            per_pixel = -(ones * p.log() + (1 - ones) * (1 - p).log())
        else:
            gram = self.stats[:, :-1, :-1]  # (C, 5, 5)
            cross = self.stats[:, :-1, -1]  # (C, 5)
            count = self.stats[:, -2, -2].clamp_min(1.0)  # the constant feature's own sum: pixels counted
            ridge = 1e-6 * torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
            w = torch.linalg.solve(gram + ridge, cross)  # (C, 5)
            residual_sum = self.stats[:, -1, -1] - (w * cross).sum(-1)  # sum of squared residuals
            variance = (residual_sum / count).clamp_min(1e-6).view(1, -1, 1, 1)
            features = self._features(x)[..., :-1]
            mean = (features * w.view(1, -1, 1, 1, w.shape[-1])).sum(-1)
            per_pixel = 0.5 * (torch.log(2 * math.pi * variance) + (x - mean) ** 2 / variance)
        return per_pixel.flatten(1).sum(dim=1).to(torch.float32)


# ----------------------------------------------------------------------------- GAN


class _LabelInput(nn.Module):
    """Concatenates a learned class embedding to the latent vector (conditional generators)."""

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes > 0 else None

    @property
    def extra(self) -> int:
        return self.embed.embedding_dim if self.embed is not None else 0

    def forward(self, z: Tensor, labels: Tensor | None) -> Tensor:
        if self.embed is None:
            return z
        if labels is None:
            raise ValueError("this generator is class-conditional: pass labels")
        return torch.cat([z, self.embed(labels)], dim=-1)


class _ProjectionHead(nn.Module):
    """Score ``w.h + b``, plus ``<embed(y), h>`` when conditional (projection, Miyato & Koyama 2018)."""

    def __init__(self, in_features: int, num_classes: int, spectral: bool) -> None:
        super().__init__()
        linear = nn.Linear(in_features, 1)
        self.linear = nn.utils.parametrizations.spectral_norm(linear) if spectral else linear
        self.embed = nn.Embedding(num_classes, in_features) if num_classes > 0 else None

    def forward(self, h: Tensor, labels: Tensor | None) -> Tensor:
        score = self.linear(h).squeeze(-1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass labels")
            score = score + (self.embed(labels) * h).sum(dim=-1)
        return score


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al. 2016): ``z`` (+ class) -> transposed convs with BatchNorm -> tanh."""

    def __init__(
        self,
        in_channels: int,
        image_size: Sequence[int] | int,
        latent_dim: int,
        channels: Sequence[int] = (128, 64),
        num_classes: int = 0,
        embed_dim: int = 32,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.label_input = _LabelInput(num_classes, embed_dim)
        self.upsample = ConvUpsampler(
            latent_dim + self.label_input.extra, in_channels, image_size, channels, "batch", "relu"
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return torch.tanh(self.upsample(self.label_input(z, labels)))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: stride-2 convs with LeakyReLU -> one score per image.

    ``norm``: ``batch`` (DCGAN), ``layer`` or ``spectral`` (both fine with WGAN-GP, whose
    gradient penalty is per sample and so must not mix samples through BatchNorm), or ``none``.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: Sequence[int] | int,
        channels: Sequence[int] = (64, 128),
        norm: str = "spectral",
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.features = ConvDownsampler(in_channels, image_size, channels, norm, "leaky_relu")
        self.head = _ProjectionHead(self.features.out_features, num_classes, norm == "spectral")

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.head(self.features(x), labels)


class MLPGenerator(nn.Module):
    """``z`` (+ class) -> MLP -> tanh image ``(B, C, H, W)``."""

    def __init__(
        self,
        in_channels: int,
        image_size: Sequence[int] | int,
        latent_dim: int,
        hidden_sizes: Sequence[int] = (256, 512),
        num_classes: int = 0,
        embed_dim: int = 32,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.shape = (in_channels, *_size(image_size))
        self.label_input = _LabelInput(num_classes, embed_dim)
        self.net = MLP(
            latent_dim + self.label_input.extra, math.prod(self.shape), hidden_sizes, "relu", batch_norm=True
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return torch.tanh(self.net(self.label_input(z, labels))).view(len(z), *self.shape)


class MLPDiscriminator(nn.Module):
    """Flattened image -> MLP with LeakyReLU -> one score per image (projection head when conditional)."""

    def __init__(
        self,
        in_channels: int,
        image_size: Sequence[int] | int,
        hidden_sizes: Sequence[int] = (512, 256),
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        height, width = _size(image_size)
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_channels * height * width
        for hidden in hidden_sizes:
            layers += [nn.Linear(size, hidden), nn.LeakyReLU(0.2)]
            size = hidden
        self.features = nn.Sequential(*layers)
        self.head = _ProjectionHead(size, num_classes, spectral=False)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.head(self.features(x), labels)
