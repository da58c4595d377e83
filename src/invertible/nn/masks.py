r"""Orderings, degrees and connectivity masks of MADE (Germain et al., ICML 2015).

Every input coordinate gets its position p(i) in 1..D in an ordering, every hidden unit a
degree m. A connection from a unit of degree a to a unit of degree b is allowed when
b ≥ a (hidden layers) or b > a (the output layer), which makes output i depend only on
inputs of position < p(i). Degrees are assigned *sorted*, so every mask is
block-triangular: this is what the block-sparse product (:mod:`invertible.nn.blocksparse`)
and the incremental sequential pass of :class:`~invertible.nn.MADE` exploit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["Ordering", "connectivity_mask", "even_degrees", "made_ordering", "random_degrees"]

Ordering = str | Sequence[int] | Tensor


def made_ordering(
    features: int, ordering: Ordering = "natural", *, generator: torch.Generator | None = None
) -> Tensor:
    """The ordering as a permutation: ``order[t]`` is the coordinate at position ``t + 1``.

    Args:
        features: number of coordinates D.
        ordering: ``"natural"`` (0, 1, ..., D-1), ``"reversed"``, ``"random"`` (drawn from
            ``generator``), or an explicit permutation of ``range(features)``.
        generator: source of the random ordering.

    Returns:
        A ``long`` tensor of shape ``[features]``.

    Example:
        >>> made_ordering(4, "reversed")
        tensor([3, 2, 1, 0])
    """
    if isinstance(ordering, str):
        if ordering == "natural":
            return torch.arange(features)
        if ordering in ("reversed", "reverse"):
            return torch.arange(features - 1, -1, -1)
        if ordering == "random":
            return torch.randperm(features, generator=generator)
        raise ValueError(
            f"ordering: unknown ordering {ordering!r}; choose 'natural', 'reversed', 'random' "
            "or give a permutation"
        )
    order = torch.as_tensor(ordering, dtype=torch.long).flatten()
    if order.numel() != features or not torch.equal(order.sort().values, torch.arange(features)):
        raise ValueError(f"ordering: expected a permutation of range({features}), got {ordering}")
    return order


def even_degrees(width: int, low: int, features: int) -> Tensor:
    """``width`` sorted degrees spread evenly over ``[low, features - 1]`` (0 when D = 1).

    Example:
        >>> even_degrees(4, 1, 3)
        tensor([1, 1, 2, 2])
    """
    if features == 1:
        return torch.zeros(width, dtype=torch.long)
    return low + torch.arange(width) * (features - low) // width


def random_degrees(width: int, low: int, features: int, generator: torch.Generator) -> Tensor:
    """``width`` degrees drawn uniformly from ``[low, features - 1]`` (MADE eq. 11), sorted.

    Example:
        >>> degrees = random_degrees(5, 1, 4, torch.Generator().manual_seed(0))
        >>> bool((degrees >= 1).all() and (degrees <= 3).all())
        True
    """
    if features == 1:
        return torch.zeros(width, dtype=torch.long)
    return torch.randint(low, features, (width,), generator=generator).sort().values


def connectivity_mask(out_degrees: Tensor, in_degrees: Tensor, *, strict: bool) -> Tensor:
    """Boolean mask ``[out, in]``: unit k sees input j iff ``out[k] ≥ in[j]`` (``>`` if strict).

    Args:
        out_degrees: degrees of the receiving units (positions for the output layer).
        in_degrees: degrees of the sending units (positions for the input layer).
        strict: ``True`` for the output layer, whose unit i must not see position p(i).

    Example:
        >>> connectivity_mask(torch.tensor([1, 2]), torch.tensor([1, 2]), strict=True)
        tensor([[False, False],
                [ True, False]])
    """
    if strict:
        return out_degrees[:, None] > in_degrees[None, :]
    return out_degrees[:, None] >= in_degrees[None, :]
