"""Networks: plain ``nn.Module``s with typed arguments; no Lightning, Hydra or W&B in here."""

from lit_dl.nets.cnn import CNN, ConvBlock, ResNet
from lit_dl.nets.mlp import MLP, TabularMLP

__all__ = ["CNN", "MLP", "ConvBlock", "ResNet", "TabularMLP"]
