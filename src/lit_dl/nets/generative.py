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
