"""Transforms: invertible maps with their log-determinants (the flow's building blocks)."""

from invertible.transforms.autoregressive import AffineAutoregressive
from invertible.transforms.coupling import AdditiveCoupling, AffineCoupling, Coupling, coupling_mask
from invertible.transforms.elementwise import Additive, Affine, ElementwiseMap, Gated, soft_clamp
from invertible.transforms.image import (
    ChannelCoupling,
    CheckerboardCoupling,
    FactorOut,
    ImageCoupling,
    MultiScale,
    Reshape,
    Squeeze,
    channel_mask,
    checkerboard_mask,
)
from invertible.transforms.normalization import (
    ActNorm,
    BatchNorm,
    Rescaling,
    SyncActNorm,
    SyncBatchNorm,
)
from invertible.transforms.permutation import Permutation, RandomPermutation, Reverse
from invertible.transforms.preprocessing import Logit, ToUnitInterval, bits_per_dim, dequantize
from invertible.transforms.sequence import WaveNetAutoregressive

__all__ = [
    "ActNorm",
    "Additive",
    "AdditiveCoupling",
    "Affine",
    "AffineAutoregressive",
    "AffineCoupling",
    "BatchNorm",
    "ChannelCoupling",
    "CheckerboardCoupling",
    "Coupling",
    "ElementwiseMap",
    "FactorOut",
    "Gated",
    "ImageCoupling",
    "Logit",
    "MultiScale",
    "Permutation",
    "RandomPermutation",
    "Rescaling",
    "Reshape",
    "Reverse",
    "Squeeze",
    "SyncActNorm",
    "SyncBatchNorm",
    "ToUnitInterval",
    "WaveNetAutoregressive",
    "bits_per_dim",
    "channel_mask",
    "checkerboard_mask",
    "coupling_mask",
    "dequantize",
    "soft_clamp",
]
