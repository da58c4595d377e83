"""Networks that parameterise transforms (conditioners)."""

from invertible.nn.made import MADE, made_ordering
from invertible.nn.mlp import MLP
from invertible.nn.resnet import ResidualBlock, ResNet

__all__ = ["MADE", "MLP", "ResNet", "ResidualBlock", "made_ordering"]

from invertible.nn.wavenet import CausalWaveNet, wavenet_dilations

__all__ += ["CausalWaveNet", "wavenet_dilations"]
