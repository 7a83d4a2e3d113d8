"""Convolutional networks for image classification."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_dl.nets.mlp import activation_layer


class ConvBlock(nn.Sequential):
    """``[Conv -> (BatchNorm) -> activation] * convs -> (pool) -> (Dropout)``.

    Shape ``(B, C_in, H, W) -> (B, C_out, H', W')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        convs: int = 1,
        batch_norm: bool = True,
        activation: str = "relu",
        pool: str | None = "max",
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        for i in range(convs):
            layers.append(
                nn.Conv2d(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    kernel_size,
                    stride=stride if i == 0 else 1,
                    padding=kernel_size // 2,
                    bias=not batch_norm,
                )
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(activation_layer(activation))
        if pool == "max":
            layers.append(nn.MaxPool2d(2))
        elif pool == "avg":
            layers.append(nn.AvgPool2d(2))
        elif pool is not None:
            raise ValueError(f"pool must be 'max', 'avg' or null, got {pool!r}")
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class CNN(nn.Module):
    """Convolutional blocks, global average pooling and a linear head.

    Input ``(B, in_channels, H, W)`` of any size the blocks do not shrink below 1x1;
    output ``(B, out_features)``.

    Args:
        in_channels: channels of the input images (from the datamodule).
        out_features: number of outputs (1 for binary, else the number of classes).
        channels: output channels of each block.
        convs_per_block: convolutions in each block: one count for all, or one per block (e.g.
            ``[1, 2, 2]``: a single conv at full resolution, where a conv costs the most, and two
            in the smaller blocks after it).
        kernel_size, stride, batch_norm, activation, pool: per block, see :class:`ConvBlock`.
        dropout: dropout in the blocks (channel-wise) and before the head.
        image_size: ``(H, W)`` of the inputs, used to check the blocks do not shrink them to nothing.
    """

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 3,
        stride: int = 1,
        convs_per_block: int | Sequence[int] = 1,
        batch_norm: bool = True,
        activation: str = "relu",
        pool: str | None = "max",
        dropout: float = 0.0,
        image_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("CNN needs at least one block (channels)")
        convs = block_convs(convs_per_block, len(channels))
        if image_size is not None:
            height, width = image_size
            for _ in channels:
                height, width = -(-height // stride), -(-width // stride)
                if pool is not None:
                    height, width = height // 2, width // 2
            if min(height, width) < 1:
                raise ValueError(
                    f"{len(channels)} blocks shrink {list(image_size)} images below 1x1; "
                    "use fewer blocks, stride 1 or pool=null"
                )
        blocks, width_in = [], in_channels
        for width_out, block_conv_count in zip(channels, convs, strict=True):
            blocks.append(
                ConvBlock(
                    width_in,
                    width_out,
                    kernel_size,
                    stride,
                    block_conv_count,
                    batch_norm,
                    activation,
                    pool,
                    dropout,
                )
            )
            width_in = width_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(width_in, out_features),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, out_features)``."""
        return self.head(self.pool(self.features(x)))


def block_convs(convs_per_block: int | Sequence[int], blocks: int) -> list[int]:
    """Convolutions of each of ``blocks`` blocks: ``convs_per_block`` repeated, or checked against them."""
    counts = [convs_per_block] * blocks if isinstance(convs_per_block, int) else list(convs_per_block)
    if len(counts) != blocks or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts
    ):
        raise ValueError(
            f"convs_per_block must be a whole number >= 1 or one per block ({blocks} for channels), "
            f"got {convs_per_block!r}"
        )
    return counts


class ResNet(nn.Module):
    """torchvision's ResNet-18/34 (random init), adapted to small images and any channel count.

    For small images (``small_input``, e.g. 28x28 or 32x32) the 7x7 stride-2 stem and
    its max-pool, made for 224x224 ImageNet photos, become one 3x3 stride-1 conv, as
    is usual for CIFAR.

    Args:
        in_channels: input channels.
        out_features: outputs.
        depth: 18 or 34.
        small_input: replace the ImageNet stem (see above).
        image_size: unused; accepted so the datamodule's input spec can be passed as is.
    """

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        depth: int = 18,
        small_input: bool = True,
        image_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        from torchvision.models import resnet18, resnet34

        builders = {18: resnet18, 34: resnet34}
        if depth not in builders:
            raise ValueError(f"depth must be 18 or 34, got {depth}")
        self.model = builders[depth](weights=None, num_classes=out_features)
        if small_input:
            self.model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.model.maxpool = nn.Identity()
        elif in_channels != 3:
            self.model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, out_features)``."""
        return self.model(x)
