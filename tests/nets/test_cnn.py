"""CNN and ResNet: output shapes for several image sizes and channel counts, the size check, gradients."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from lit_dl.nets import CNN, ConvBlock, ResNet

pytestmark = pytest.mark.usefixtures("one_thread")


SIZES = [(8, 8), (28, 28), (32, 32), (64, 48)]
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"channels": [8, 16]},
    "two_convs_avg": {"channels": [8, 16], "convs_per_block": 2, "pool": "avg"},
    "three_blocks_max": {"channels": [4, 8, 8], "pool": "max", "dropout": 0.2},
    "stride2_no_pool": {"channels": [4, 8, 8], "stride": 2, "pool": None},
    "stride2_and_pool": {"channels": [8], "stride": 2, "pool": "max", "convs_per_block": 2},
    "no_batch_norm_gelu": {"channels": [6], "batch_norm": False, "activation": "gelu", "kernel_size": 5},
    "no_pool": {"channels": [4, 4], "pool": None, "dropout": 0.1},
    "convs_per_block_list": {"channels": [4, 8, 8], "convs_per_block": [1, 2, 3]},
}


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("config", list(CONFIGS))
def test_cnn_output_shape(config: str, size: tuple[int, int], in_channels: int) -> None:
    torch.manual_seed(0)
    net = CNN(in_channels, 7, image_size=list(size), **CONFIGS[config])
    x = torch.randn(3, in_channels, *size)
    net.train()
    assert net(x).shape == (3, 7)
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    assert torch.equal(out, net(x).detach())  # eval mode: dropout and batch norm are deterministic


@pytest.mark.parametrize(
    ("size", "channels", "kwargs"),
    [
        ((8, 8), [8, 8, 8, 8], {}),  # 8 -> 4 -> 2 -> 1 -> 0
        ((64, 4), [8, 8, 8], {}),  # the narrow side runs out first
        ((8, 8), [4, 4], {"stride": 2}),  # 8 -> 4 -> 2 -> 1 -> 0 (stride, then pool)
        ((28, 28), [4, 4, 4, 4, 4, 4], {"stride": 2, "pool": None}),  # stride alone never reaches 0 ...
    ],
)
def test_too_many_blocks_for_the_image_size(
    size: tuple[int, int], channels: list[int], kwargs: dict[str, Any]
) -> None:
    if kwargs.get("pool", "max") is None:
        net = CNN(1, 3, channels=channels, image_size=size, **kwargs)  # ... it stops at 1x1
        assert net(torch.randn(2, 1, *size)).shape == (2, 3)
        return
    with pytest.raises(ValueError, match="below 1x1"):
        CNN(1, 3, channels=channels, image_size=size, **kwargs)


def test_exactly_one_pixel_left_is_allowed() -> None:
    net = CNN(1, 4, channels=[4, 4, 4], image_size=(8, 8))  # 8 -> 4 -> 2 -> 1
    assert net.features(torch.randn(2, 1, 8, 8)).shape == (2, 4, 1, 1)
    with pytest.raises(ValueError, match="below 1x1"):
        CNN(1, 4, channels=[4, 4, 4], image_size=(8, 7))  # 7 -> 3 -> 1 -> 0


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("pool", ["max", None])
@pytest.mark.parametrize("size", [(5, 9), (11, 6), (16, 16)])
def test_size_check_agrees_with_the_layers(stride: int, pool: str | None, size: tuple[int, int]) -> None:
    """Whenever the check lets a network through, the features really are at least 1x1."""
    for blocks in range(1, 6):
        kwargs = {
            "channels": [2] * blocks,
            "stride": stride,
            "pool": pool,
            "image_size": size,
            "batch_norm": False,
        }
        try:
            net = CNN(1, 2, **kwargs)
        except ValueError:
            with pytest.raises(RuntimeError):  # the check only refuses what cannot run
                CNN(1, 2, **{**kwargs, "image_size": None}).features(torch.randn(1, 1, *size))
            continue
        features = net.features(torch.randn(2, 1, *size))
        assert min(features.shape[-2:]) >= 1


def test_block_layers() -> None:
    block = ConvBlock(3, 8, convs=2, batch_norm=True, pool="avg", dropout=0.3)
    kinds = [type(m) for m in block]
    assert kinds == [
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.AvgPool2d,
        nn.Dropout2d,
    ]
    assert all(m.bias is None for m in block if isinstance(m, nn.Conv2d))  # batch norm has the bias
    plain = ConvBlock(3, 8, batch_norm=False, pool=None)
    assert [type(m) for m in plain] == [nn.Conv2d, nn.ReLU]
    assert plain[0].bias is not None
    assert ConvBlock(3, 8, stride=2, pool=None)(torch.randn(1, 3, 9, 9)).shape == (1, 8, 5, 5)
    with pytest.raises(ValueError, match="pool"):
        ConvBlock(3, 8, pool="median")
    with pytest.raises(ValueError, match="at least one block"):
        CNN(1, 2, channels=[])


def test_convs_per_block_one_count_per_block() -> None:
    net = CNN(1, 3, channels=[4, 8, 8], convs_per_block=[1, 2, 3])
    convs = [sum(isinstance(m, nn.Conv2d) for m in block) for block in net.features]
    assert convs == [1, 2, 3]
    assert [block[0].out_channels for block in net.features] == [4, 8, 8]


def test_convs_per_block_list_keeps_the_checkpoint_layout_of_a_count() -> None:
    """``[2, 2]`` builds the same layers as ``2``: checkpoints of either load into the other."""
    torch.manual_seed(0)
    counted = CNN(1, 3, channels=[4, 8], convs_per_block=2).eval()
    listed = CNN(1, 3, channels=[4, 8], convs_per_block=[2, 2]).eval()
    listed.load_state_dict(counted.state_dict())  # strict: the same names and shapes
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(counted(x), listed(x))


@pytest.mark.parametrize("convs_per_block", [[1, 2], [1, 2, 2, 2], 0, [1, 0, 1], [1, True, 1], [1.5, 1, 1]])
def test_bad_convs_per_block(convs_per_block: Any) -> None:
    with pytest.raises(ValueError, match=r"convs_per_block .* one per block \(3 for channels\)"):
        CNN(1, 3, channels=[4, 8, 8], convs_per_block=convs_per_block)


def test_dropout_before_the_head() -> None:
    assert any(isinstance(m, nn.Dropout) for m in CNN(1, 2, channels=[4], dropout=0.5).head)
    assert not any(isinstance(m, nn.Dropout | nn.Dropout2d) for m in CNN(1, 2, channels=[4]).modules())


@pytest.mark.parametrize("config", ["default", "two_convs_avg", "no_batch_norm_gelu", "stride2_and_pool"])
def test_gradients_reach_every_parameter(config: str) -> None:
    torch.manual_seed(0)
    net = CNN(3, 5, image_size=(16, 16), **{**CONFIGS[config], "dropout": 0.0})
    x = torch.randn(4, 3, 16, 16)
    loss = nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("depth", [18, 34])
@pytest.mark.parametrize("small_input", [True, False])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_resnet_output_shape(depth: int, small_input: bool, in_channels: int) -> None:
    torch.manual_seed(0)
    net = ResNet(in_channels, 10, depth=depth, small_input=small_input, image_size=[32, 32]).eval()
    assert net.model.conv1.in_channels == in_channels
    blocks = sum(len(getattr(net.model, f"layer{i}")) for i in range(1, 5))
    assert blocks == (8 if depth == 18 else 16)
    with torch.no_grad():
        out = net(torch.randn(2, in_channels, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_resnet_small_input_stem_keeps_the_resolution() -> None:
    small = ResNet(1, 3, small_input=True)
    assert small.model.conv1.stride == (1, 1) and small.model.conv1.kernel_size == (3, 3)
    assert isinstance(small.model.maxpool, nn.Identity)
    x = torch.randn(2, 1, 28, 28)
    stem = small.model.maxpool(small.model.relu(small.model.bn1(small.model.conv1(x))))
    assert stem.shape[-2:] == (28, 28)

    imagenet = ResNet(3, 3, small_input=False)
    assert imagenet.model.conv1.stride == (2, 2) and isinstance(imagenet.model.maxpool, nn.MaxPool2d)
    assert ResNet(1, 3, small_input=False).model.conv1.in_channels == 1
    with torch.no_grad():
        assert ResNet(1, 2, small_input=False).eval()(torch.randn(1, 1, 8, 8)).shape == (1, 2)


def test_resnet_bad_depth() -> None:
    with pytest.raises(ValueError, match="18 or 34"):
        ResNet(3, 10, depth=50)
