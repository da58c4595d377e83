"""Networks that parameterise transforms (conditioners)."""

from invertible.nn.made import MADE, made_ordering
from invertible.nn.mlp import MLP
from invertible.nn.resnet import ResidualBlock, ResNet
from invertible.nn.wavenet import CausalWaveNet, wavenet_dilations

__all__ = [
    "MADE",
    "MLP",
    "CausalWaveNet",
    "ResNet",
    "ResidualBlock",
    "made_ordering",
    "wavenet_dilations",
]
