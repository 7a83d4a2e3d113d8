"""Networks: plain ``nn.Module``s with typed arguments; no Lightning, Hydra or W&B in here."""

from lit_dl.nets.cnn import CNN, ConvBlock, ResNet
from lit_dl.nets.generative import (
    ConvDecoder,
    ConvEncoder,
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDecoder,
    MLPDiscriminator,
    MLPEncoder,
    MLPGenerator,
)
from lit_dl.nets.mlp import MLP, TabularMLP
from lit_dl.nets.rnn import CharRNN, RecurrentClassifier, RecurrentEncoder, RecurrentForecaster

__all__ = [
    "CNN",
    "MLP",
    "CharRNN",
    "ConvBlock",
    "ConvDecoder",
    "ConvEncoder",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MLPDecoder",
    "MLPDiscriminator",
    "MLPEncoder",
    "MLPGenerator",
    "RecurrentClassifier",
    "RecurrentEncoder",
    "RecurrentForecaster",
    "ResNet",
    "TabularMLP",
]
