"""Permutations of the features (or channels): volume preserving, log|det| = 0."""

from __future__ import annotations

import torch
from torch import Tensor

from invertible.core import Transform

__all__ = ["Permutation", "RandomPermutation", "Reverse"]


class Permutation(Transform):
    """Reorder dimension 1: ``forward(z)[:, i] = z[:, perm[i]]``; log|det| = 0.

    Both directions are one parallel pass (a gather). The permutation is a buffer, so it
    is saved and restored exactly.

    Args:
        permutation: a permutation of ``range(features)``.

    Example:
        >>> import torch
        >>> Permutation(torch.tensor([2, 0, 1]))(torch.tensor([[10.0, 11.0, 12.0]]))[0]
        tensor([[12., 10., 11.]])
    """

    def __init__(self, permutation: Tensor) -> None:
        super().__init__()
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        features = permutation.numel()
        if not torch.equal(permutation.sort().values, torch.arange(features)):
            raise ValueError(f"permutation: expected a permutation of range({features})")
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        return z.index_select(1, self.permutation), z.new_zeros(z.shape[0])

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        return x.index_select(1, self.inverse_permutation), x.new_zeros(x.shape[0])


class Reverse(Permutation):
    """Reverse the order of the features (between MAF layers, as in the paper).

    Example:
        >>> import torch
        >>> Reverse(3)(torch.tensor([[1.0, 2.0, 3.0]]))[0]
        tensor([[3., 2., 1.]])
    """

    def __init__(self, features: int) -> None:
        super().__init__(torch.arange(features - 1, -1, -1))


class RandomPermutation(Permutation):
    """A random permutation of the features, drawn once from ``seed`` and then fixed.

    Example:
        >>> RandomPermutation(4, seed=0).permutation
        tensor([0, 1, 3, 2])
    """

    def __init__(self, features: int, *, seed: int | None = None) -> None:
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        super().__init__(torch.randperm(features, generator=generator))
