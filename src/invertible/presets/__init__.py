"""Presets: the lecture's models assembled from transforms, networks and base distributions."""

from invertible.presets.coupling import NICE, RealNVP

__all__ = ["NICE", "RealNVP"]
