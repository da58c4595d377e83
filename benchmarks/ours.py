"""``invertible`` in the speed harness (imported by :mod:`benchmarks.harness` if present).

The same two architectures as the peers (constants from :mod:`benchmarks.adapter`):

- ``"maf"``: ``invertible.MAF(D, num_layers=5, hidden_features=(512, 512),
  batch_norm=False)``; the ordering alternates natural / reversed between layers (order
  reversal), standard normal base. ``log_prob`` is one MADE pass per layer; ``sample`` is
  the exact incremental sequential pass (each hidden unit computed once, in D steps).
- ``"coupling"``: ``invertible.RealNVP(D, num_layers=10, hidden_features=(256, 256),
  batch_norm=False)``: affine couplings, alternating (even/odd) masks, MLP conditioners
  ``ceil(D/2) or floor(D/2) -> 256 -> 256 -> 2 * (the other half)``, standard normal base.

Parameter counts are dense (masked-out MADE weights included), like the peers';
``python -m benchmarks.ours`` prints them next to the peers'.
"""

from __future__ import annotations

import torch
from torch import Tensor

import invertible
from benchmarks.adapter import (
    COUPLING_HIDDEN,
    COUPLING_LAYERS,
    MAF_HIDDEN,
    MAF_LAYERS,
    AdapterBuilder,
    FlowAdapter,
    TorchFlowAdapter,
)
from invertible.training import adam

__all__ = ["ADAPTERS", "build_invertible"]


def build_invertible(kind: str, dim: int) -> FlowAdapter:
    """``invertible``'s MAF / RealNVP presets with the issue-6 architectures."""
    if kind not in ("maf", "coupling"):
        raise ValueError(f"unknown model kind {kind!r}; expected 'maf' or 'coupling'")
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    flow: invertible.Flow
    if kind == "maf":
        flow = invertible.MAF(
            dim,
            num_layers=MAF_LAYERS,
            hidden_features=MAF_HIDDEN,
            batch_norm=False,
            ordering="alternate",
        )
    else:
        flow = invertible.RealNVP(
            dim, num_layers=COUPLING_LAYERS, hidden_features=COUPLING_HIDDEN, batch_norm=False
        )

    def log_prob(x: Tensor) -> Tensor:
        return flow.log_prob(x)

    def sample(n: int) -> Tensor:
        return flow.sample(n)

    # Trained with the optimizer ``invertible.fit`` uses (fused Adam where torch has it).
    return TorchFlowAdapter("invertible", flow, log_prob, sample, optimizer_fn=adam)


ADAPTERS: dict[str, AdapterBuilder] = {"invertible": build_invertible}
"""Our library's builders, keyed by the column name used in the result tables."""


def _main() -> None:
    """Print our parameter counts next to the peers' (``python -m benchmarks.ours``)."""
    from benchmarks.harness import check_param_parity
    from benchmarks.peers import available_peers

    builders = {**available_peers(), **ADAPTERS}
    for kind in ("maf", "coupling"):
        for dim in (2, 8, 63, 784):
            torch.manual_seed(0)
            counts = {name: build(kind, dim).num_params() for name, build in builders.items()}
            parity = check_param_parity(counts, tuple(ADAPTERS))
            cells = ", ".join(
                f"{n}={c:,} ({parity['deviation'][n]:+.1%})" for n, c in counts.items()
            )
            flag = "ok" if parity["ok"] else "OUTSIDE 5%: " + ", ".join(parity["offenders"])
            print(f"{kind:8s} D={dim:<4d} {cells}  [{flag}]")


if __name__ == "__main__":
    _main()
