"""``invertible`` in the speed harness (:mod:`benchmarks.harness`).

The same two architectures as the peers (constants from :mod:`benchmarks.adapter`):

- ``"maf"``: ``invertible.MAF(D, num_layers=5, hidden_features=(512, 512),
  batch_norm=False)``; the ordering alternates natural / reversed between layers (order
  reversal), standard normal base. ``log_prob`` is one MADE pass per layer; ``sample`` is
  the exact incremental sequential pass (each hidden unit computed once, in D steps).
- ``"coupling"``: ``invertible.RealNVP(D, num_layers=10, hidden_features=(256, 256),
  batch_norm=False)``: affine couplings, alternating (even/odd) masks, MLP conditioners
  ``ceil(D/2) or floor(D/2) -> 256 -> 256 -> 2 * (the other half)``, standard normal base.

Parameter counts are dense (masked-out MADE weights included), like the peers';
``python -m benchmarks.invertible_adapter`` prints them next to the peers'.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import invertible
from benchmarks.adapter import AdapterBuilder, FlowAdapter, TorchFlowAdapter, architecture
from invertible.training import adam

__all__ = ["ADAPTERS", "build_invertible"]


def build_invertible(
    kind: str,
    dim: int,
    *,
    layers: int | None = None,
    hidden: Sequence[int] | None = None,
    batch_norm: bool = False,
) -> FlowAdapter:
    """``invertible``'s MAF / RealNVP presets with the benchmark architectures (or ``layers``
    and ``hidden`` widths; ``batch_norm`` between layers, the presets' default, is off)."""
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    n_layers, widths = architecture(kind, layers, hidden)
    flow: invertible.Flow
    if kind == "maf":
        flow = invertible.MAF(
            dim,
            num_layers=n_layers,
            hidden_features=widths,
            batch_norm=batch_norm,
            ordering="alternate",
        )
    else:
        flow = invertible.RealNVP(
            dim, num_layers=n_layers, hidden_features=widths, batch_norm=batch_norm
        )

    def log_prob(x: Tensor) -> Tensor:
        return flow.log_prob(x)

    def sample(n: int) -> Tensor:
        return flow.sample(n)

    # Trained with the optimizer ``invertible.fit`` uses (fused Adam where torch has it).
    name = "invertible-bn" if batch_norm else "invertible"
    return TorchFlowAdapter(name, flow, log_prob, sample, optimizer_fn=adam)


ADAPTERS: dict[str, AdapterBuilder] = {"invertible": build_invertible}
"""Our library's builders, keyed by the column name used in the result tables."""


def _main() -> None:
    """Print our parameter counts next to the peers'."""
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
