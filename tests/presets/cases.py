"""Small builds of every preset, for the flow-level suites.

``PRESETS`` maps a case id to a builder; every class in :attr:`invertible.Flow.registry`
must appear in at least one case (checked by the suite), so a new preset cannot skip it.
Builders return a flow whose parameters are perturbed away from the identity start, so
that every test sees a non-trivial map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import invertible as inv
from invertible.nn import MADE

D = 5
IMAGE_SHAPE = (1, 4, 4)
T = 12  # sequence length of the sequence flows


def perturbed(flow: inv.Flow, scale: float = 0.1, seed: int = 0) -> inv.Flow:
    """Add small Gaussian noise to every parameter (the presets start at the identity) and
    mark every ActNorm initialised, as training would: the result stands for a trained flow."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise)
    for module in flow.modules():
        if isinstance(module, inv.ActNorm):
            module.initialized.fill_(True)
    return flow


PRESETS: dict[str, Callable[[], inv.Flow]] = {
    "GaussianAR": lambda: inv.GaussianAR(D, hidden_features=(64, 64)),
    "GaussianAR-3-masks": lambda: inv.GaussianAR(D, hidden_features=(64, 64), num_masks=3),
    "MADEMoG": lambda: inv.MADEMoG(D, components=3, hidden_features=(64, 64)),
    "MAF": lambda: inv.MAF(D, num_layers=2, hidden_features=(64, 64)),
    "MAF-data-shift-random-start": lambda: inv.MAF(
        D, num_layers=2, hidden_features=(64, 64), affine_shift="data", identity_init=False
    ),
    "MAF-mog": lambda: inv.MAF(D, num_layers=2, hidden_features=(64, 64), mog_components=3),
    "MAF-residual": lambda: inv.MAF(
        D, num_layers=2, hidden_features=(32,), num_blocks=1, batch_norm=False
    ),
    "IAF": lambda: inv.IAF(D, num_layers=2, hidden_features=(64, 64)),
    "IAF-gated": lambda: inv.IAF(D, num_layers=2, hidden_features=(64, 64), gated=True),
    "NICE": lambda: inv.NICE(D + 1, num_layers=2, hidden_features=(32,)),
    "RealNVP": lambda: inv.RealNVP(D + 1, num_layers=2, hidden_features=(32,)),
    "RealNVP-identity-start": lambda: inv.RealNVP(
        D + 1, num_layers=2, hidden_features=(32,), identity_init=True, affine_shift="data"
    ),
    "RealNVPImage": lambda: inv.RealNVPImage(
        IMAGE_SHAPE, blocks_per_scale=1, channels=8, couplings_per_scale=2, final_couplings=2
    ),
    "NICEImage": lambda: inv.NICEImage(IMAGE_SHAPE, num_layers=2, hidden_features=(16,)),
    "WaveNetMAF": lambda: inv.WaveNetMAF(
        residual_channels=8, skip_channels=8, dilations=[1, 2, 4], length=T
    ),
    "WaveNetMAF-logistic-linear": lambda: inv.WaveNetMAF(
        base="logistic",
        residual_channels=8,
        skip_channels=8,
        dilations=[1, 2],
        linear_order=3,
        length=T,
    ),
    "WaveNetIAF": lambda: inv.WaveNetIAF(
        num_flows=2, residual_channels=8, skip_channels=8, dilations=[1, 2], length=T
    ),
    "WaveNetIAF-logistic-linear": lambda: inv.WaveNetIAF(
        num_flows=2,
        base="logistic",
        residual_channels=8,
        skip_channels=8,
        dilations=[1, 2],
        linear_order=3,
        length=T,
    ),
    "LinearPredictionAR": lambda: inv.LinearPredictionAR(order=3, length=T),
    "LinearPredictionAR-laplace": lambda: inv.LinearPredictionAR(order=3, base="laplace", length=T),
}


def build(case: str, dtype: torch.dtype = torch.float32) -> inv.Flow:
    """The perturbed flow of ``case`` in ``dtype``, in eval mode."""
    torch.manual_seed(0)
    return perturbed(PRESETS[case]().to(dtype)).eval()


def data(flow: inv.Flow, batch: int, seed: int = 1) -> torch.Tensor:
    """Inputs the flow accepts: images in (0, 1), vectors from a standard normal."""
    generator = torch.Generator().manual_seed(seed)
    dtype = next(flow.parameters()).dtype
    shape = (batch, *flow.event_shape)
    if len(flow.event_shape) == 3:
        return torch.rand(shape, generator=generator, dtype=dtype) * 0.9 + 0.05
    return torch.randn(shape, generator=generator, dtype=dtype)


def is_autoregressive(flow: inv.Flow) -> bool:
    return any(isinstance(m, MADE) for m in flow.modules())


def is_sequence(flow: inv.Flow) -> bool:
    return isinstance(flow, inv.SequenceFlow)


def has_batch_statistics(flow: inv.Flow) -> bool:
    return any(
        isinstance(m, (inv.BatchNorm, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))
        for m in flow.modules()
    )


def set_block_groups(flow: inv.Flow, groups: int | None) -> None:
    """Force the MADEs' product: 1 dense, > 1 block-sparse, ``None`` chosen by size."""
    for module in flow.modules():
        if isinstance(module, MADE):
            module.block_groups = groups
