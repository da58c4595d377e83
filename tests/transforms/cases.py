"""Property-test cases for the core transforms.

A case builds a fresh transform; the shared suite (``test_properties.py``) checks every
case for the same mathematical and engineering properties. Other modules add their own
lists in ``tests/transforms/cases_*.py`` (each exporting ``CASES``); the suite collects them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import invertible as inv


@dataclass(frozen=True)
class Case:
    """One transform to check.

    Attributes:
        name: test id.
        build: returns a fresh transform (the suite seeds the RNG before calling it).
        event_shape: shape of one input event.
        context_features: width of the context the transform takes (0: none).
        meta: whether the transform can run on the ``meta`` device (device-move check).
    """

    name: str
    build: Callable[[], inv.Transform]
    event_shape: tuple[int, ...]
    context_features: int = 0
    meta: bool = True


CASES: list[Case] = [
    Case("rescaling", lambda: inv.Rescaling(3), (3,)),
    Case("rescaling-image", lambda: inv.Rescaling(2), (2, 2, 2)),
    Case("actnorm", lambda: inv.ActNorm(3), (3,)),
    Case("actnorm-image", lambda: inv.ActNorm(2), (2, 2, 2)),
    Case("batchnorm", lambda: inv.BatchNorm(3), (3,)),
    Case("batchnorm-image", lambda: inv.BatchNorm(2), (2, 2, 2)),
    Case("reverse", lambda: inv.Reverse(4), (4,)),
    Case("random-permutation", lambda: inv.RandomPermutation(5), (5,)),
    Case("additive-coupling", lambda: inv.AdditiveCoupling(4, hidden_features=(8, 8)), (4,)),
    Case(
        "additive-coupling-odd-context",
        lambda: inv.AdditiveCoupling(5, parity=1, hidden_features=(8,), context_features=2),
        (5,),
        context_features=2,
    ),
    Case("affine-coupling", lambda: inv.AffineCoupling(4, hidden_features=(8, 8)), (4,)),
    Case(
        "affine-coupling-random-mask-context",
        lambda: inv.AffineCoupling(
            5,
            mask="random",
            seed=int(torch.randint(100, ())),
            hidden_features=(8,),
            context_features=3,
        ),
        (5,),
        context_features=3,
    ),
    Case(
        "affine-coupling-data-shift-random-start",
        lambda: inv.AffineCoupling(4, hidden_features=(8,), shift="data", identity_init=False),
        (4,),
    ),
    Case(
        "affine-coupling-half-unbounded",
        lambda: inv.AffineCoupling(3, mask="half", hidden_features=(8,), log_scale_bound=None),
        (3,),
    ),
    Case(
        "gated-coupling",
        lambda: inv.Coupling(inv.coupling_mask(4), inv.Gated(), hidden_features=(8,)),
        (4,),
    ),
    Case(
        "compose",
        lambda: inv.Compose(
            [inv.AffineCoupling(4, hidden_features=(8,)), inv.BatchNorm(4), inv.Reverse(4)]
        ),
        (4,),
    ),
    Case(
        "inverse-of-coupling",
        lambda: inv.Inverse(inv.AffineCoupling(4, parity=1, hidden_features=(8,))),
        (4,),
    ),
    Case("nice-transform", lambda: inv.NICE(4, num_layers=3, hidden_features=(8,)).transform, (4,)),
    Case(
        "realnvp-transform",
        lambda: inv.RealNVP(4, num_layers=3, hidden_features=(8,)).transform,
        (4,),
    ),
]
