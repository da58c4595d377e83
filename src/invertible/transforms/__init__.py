"""Transforms: invertible maps with their log-determinants (the flow's building blocks)."""

from invertible.transforms.coupling import AdditiveCoupling, AffineCoupling, Coupling, coupling_mask
from invertible.transforms.elementwise import Additive, Affine, ElementwiseMap, Gated, soft_clamp
from invertible.transforms.normalization import ActNorm, BatchNorm, Rescaling
from invertible.transforms.permutation import Permutation, RandomPermutation, Reverse

__all__ = [
    "ActNorm",
    "Additive",
    "AdditiveCoupling",
    "Affine",
    "AffineCoupling",
    "BatchNorm",
    "Coupling",
    "ElementwiseMap",
    "Gated",
    "Permutation",
    "RandomPermutation",
    "Rescaling",
    "Reverse",
    "coupling_mask",
    "soft_clamp",
]
