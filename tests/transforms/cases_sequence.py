"""Property-suite cases for the sequence flows (causal WaveNet conditioner, MAF/IAF modes)."""

from __future__ import annotations

import invertible as inv
from tests.transforms.cases import Case


def _layer(mode: str, **kwargs) -> inv.Transform:
    """A tiny layer: the suite checks the math, not the capacity."""
    options = {"residual_channels": 4, "skip_channels": 3, "dilations": [1, 2]}
    return inv.WaveNetAutoregressive(mode=mode, **{**options, **kwargs})


def _student() -> inv.Transform:
    return inv.WaveNetIAF(
        num_flows=2, residual_channels=3, skip_channels=3, dilations=[1, 2], length=7
    ).transform


CASES: list[Case] = [
    Case("wavenet-maf", lambda: _layer("maf"), (7,)),
    Case("wavenet-iaf", lambda: _layer("iaf"), (7,)),
    Case("wavenet-maf-k3-linear", lambda: _layer("maf", kernel_size=3, linear_order=3), (6,)),
    Case("wavenet-iaf-gated", lambda: _layer("iaf", elementwise=inv.Gated()), (6,)),
    Case("wavenet-maf-naive", lambda: _layer("maf", sequential="naive"), (5,)),
    Case("wavenet-iaf-naive", lambda: _layer("iaf", sequential="naive"), (5,)),
    Case("wavenet-student-2-flows", _student, (7,)),
    Case("linear-prediction-ar", lambda: inv.LinearPredictionAR(3, length=6).transform, (6,)),
]
