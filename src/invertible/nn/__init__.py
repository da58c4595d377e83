"""Networks that parameterise transforms (conditioners)."""

from invertible.nn.mlp import MLP

__all__ = ["MLP"]
