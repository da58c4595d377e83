"""Property-suite cases for the autoregressive layers (MAF, IAF) and their presets."""

from __future__ import annotations

import torch

import invertible as inv
from tests.transforms.cases import Case


def _seed() -> int:
    """A seed drawn from torch's RNG: differently seeded builds get different masks."""
    return int(torch.randint(10_000, ()))


def _agnostic(mode: str) -> inv.Transform:
    layer = inv.AffineAutoregressive(
        4, hidden_features=(12, 12), mode=mode, num_masks=3, seed=_seed()
    )
    layer.set_mask(2)
    return layer


def _block_sparse(mode: str) -> inv.Transform:
    """A layer whose MADE always takes the block-sparse product (test sizes are too small
    for the automatic choice to pick it)."""
    layer = inv.AffineAutoregressive(
        6, hidden_features=(24, 24), mode=mode, ordering="random", seed=_seed()
    )
    layer.made.block_groups = 3
    return layer


CASES: list[Case] = [
    Case("maf-natural", lambda: inv.AffineAutoregressive(4, hidden_features=(8, 8)), (4,)),
    Case(
        "maf-random-start",
        lambda: inv.AffineAutoregressive(4, hidden_features=(8,), identity_init=False),
        (4,),
    ),
    Case(
        "iaf-data-shift",
        lambda: inv.AffineAutoregressive(
            4, hidden_features=(8,), mode="iaf", elementwise=inv.Affine(shift="data")
        ),
        (4,),
    ),
    Case(
        "maf-reversed",
        lambda: inv.AffineAutoregressive(5, hidden_features=(16,), ordering="reversed"),
        (5,),
    ),
    Case(
        "maf-random-context",
        lambda: inv.AffineAutoregressive(
            5, hidden_features=(12, 10), ordering="random", context_features=2, seed=_seed()
        ),
        (5,),
        context_features=2,
    ),
    Case(
        "maf-explicit-ordering-residual",
        lambda: inv.AffineAutoregressive(
            4, hidden_features=(12,), ordering=[2, 0, 3, 1], num_blocks=2
        ),
        (4,),
    ),
    Case("maf-agnostic", lambda: _agnostic("maf"), (4,)),
    Case(
        "maf-naive-sequential",
        lambda: inv.AffineAutoregressive(3, hidden_features=(8,), sequential="naive"),
        (3,),
    ),
    Case(
        "iaf-natural",
        lambda: inv.AffineAutoregressive(4, hidden_features=(8, 8), mode="iaf"),
        (4,),
    ),
    Case(
        "iaf-random-context-residual",
        lambda: inv.AffineAutoregressive(
            5,
            hidden_features=(16,),
            mode="iaf",
            ordering="random",
            context_features=3,
            num_blocks=1,
            seed=_seed(),
        ),
        (5,),
        context_features=3,
    ),
    Case(
        "iaf-gated",
        lambda: inv.AffineAutoregressive(
            4, hidden_features=(8,), mode="iaf", elementwise=inv.Gated(), ordering="reversed"
        ),
        (4,),
    ),
    Case("iaf-agnostic", lambda: _agnostic("iaf"), (4,)),
    Case("maf-block-sparse", lambda: _block_sparse("maf"), (6,)),
    Case("iaf-block-sparse", lambda: _block_sparse("iaf"), (6,)),
    Case(
        "gaussian-ar-transform",
        lambda: inv.GaussianAR(4, hidden_features=(12,), ordering="random", seed=_seed()).transform,
        (4,),
    ),
    Case(
        "maf-transform",
        lambda: inv.MAF(4, num_layers=3, hidden_features=(8,), seed=_seed()).transform,
        (4,),
    ),
    Case(
        "maf-transform-context",
        lambda: (
            inv.MAF(
                3, num_layers=2, hidden_features=(8,), context_features=2, batch_norm=False
            ).transform
        ),
        (3,),
        context_features=2,
    ),
    Case(
        "iaf-transform",
        lambda: inv.IAF(4, num_layers=3, hidden_features=(8,), gated=True).transform,
        (4,),
    ),
]
