"""Property-test cases for the image transforms and the preprocessing layers.

The suite feeds inputs of the same event shape to both directions, so the shape-changing
layers (Squeeze, Reshape) are checked sandwiched around a coupling, back to the input shape
(their exactness is tested in ``test_image.py``). Image sizes are tiny (4×4) so the
autograd Jacobian check stays fast. Logit only accepts x ∈ (0, 1) in its normalizing
direction, while the suite feeds standard normal inputs to both directions; so the logit
cases are wrapped as ``Compose([..., Logit(λ), Inverse(Logit(λ))])``, ℝ → (0, 1) → ℝ in both
directions. This checks that the two directions' log-dets are consistent at corresponding
points; their absolute values are checked against autograd on (0, 1) in
``test_preprocessing.py``.
"""

from __future__ import annotations

import invertible as inv
from tests.transforms.cases import Case

_NET = {"hidden_channels": 4, "num_blocks": 1}


def _through_unit_interval(transform: inv.Transform) -> inv.Transform:
    return inv.Compose([transform, inv.Logit(0.05), inv.Inverse(inv.Logit(0.05))])


CASES: list[Case] = [
    Case(
        "squeeze-coupling-unsqueeze",
        lambda: inv.Compose(
            [inv.Squeeze(), inv.CheckerboardCoupling(1, **_NET), inv.Inverse(inv.Squeeze())]
        ),
        (4, 2, 2),
    ),
    Case(
        "unsqueeze-coupling-squeeze",
        lambda: inv.Compose(
            [inv.Inverse(inv.Squeeze()), inv.ChannelCoupling(8, **_NET), inv.Squeeze()]
        ),
        (2, 4, 4),
    ),
    Case(
        "reshape-coupling-flatten",
        lambda: inv.Compose(
            [
                inv.Reshape((16,), (1, 4, 4)),
                inv.CheckerboardCoupling(1, parity=1, **_NET),
                inv.Reshape((1, 4, 4), (16,)),
            ]
        ),
        (16,),
    ),
    *(
        Case(
            f"checkerboard-coupling-{norm}-p{parity}",
            lambda parity=parity, norm=norm: inv.CheckerboardCoupling(
                1, parity=parity, normalization=norm, **_NET
            ),
            (1, 4, 4),
        )
        for parity in (0, 1)
        for norm in ("batch", "weight")
    ),
    Case(
        "checkerboard-coupling-clamp-2ch",
        lambda: inv.CheckerboardCoupling(
            2, log_scale="clamp", log_scale_bound=2.0, normalization="none", **_NET
        ),
        (2, 4, 4),
    ),
    Case(
        "checkerboard-coupling-additive",
        lambda: inv.CheckerboardCoupling(2, parity=1, elementwise=inv.Additive(), **_NET),
        (2, 4, 4),
    ),
    *(
        Case(
            f"channel-coupling-p{parity}",
            lambda parity=parity: inv.ChannelCoupling(2, parity=parity, **_NET),
            (2, 4, 4),
        )
        for parity in (0, 1)
    ),
    Case(
        "channel-coupling-odd-clamp",
        lambda: inv.ChannelCoupling(3, parity=1, log_scale="clamp", **_NET),
        (3, 2, 2),
    ),
    Case("factor-out", lambda: inv.FactorOut(inv.ChannelCoupling(2, **_NET), 2), (4, 2, 2)),
    Case(
        "multiscale-1x4x4-weightnorm-actnorm",
        lambda: inv.MultiScale(
            (1, 4, 4),
            couplings_per_scale=1,
            final_couplings=1,
            normalization="weight",
            flow_norm="actnorm",
            **_NET,
        ),
        (1, 4, 4),
    ),
    Case(
        "multiscale-1x8x4-3-scales",
        lambda: inv.MultiScale(
            (1, 8, 4),
            num_scales=3,
            couplings_per_scale=1,
            final_couplings=1,
            normalization="weight",
            flow_norm="actnorm",
            hidden_channels=2,
            num_blocks=1,
        ),
        (1, 8, 4),
    ),
    Case("logit", lambda: _through_unit_interval(inv.ActNorm(1)), (1, 4, 4)),
    Case("to-unit-interval", lambda: inv.ToUnitInterval(256), (2, 2, 2)),
    # The preset's model (multi-scale couplings, batch norm in the ResNets and as flow layers);
    # the whole flow, logit included, is checked on (0, 1) data in tests/presets/test_image.py
    # (in float32, logit(sigmoid(y)) cannot round-trip the large |y| that randomly perturbed
    # weights produce).
    Case(
        "realnvp-image-model",
        lambda: inv.RealNVPImage(
            (1, 4, 4), blocks_per_scale=1, channels=4, couplings_per_scale=1, final_couplings=1
        ).transform[0],
        (1, 4, 4),
    ),
    Case(
        "nice-image-transform",
        lambda: inv.NICEImage((1, 2, 2), num_layers=2, hidden_features=(8,)).transform,
        (1, 2, 2),
    ),
]
