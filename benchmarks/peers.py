"""Builders for the peer libraries (zuko, nflows, normflows) with identical architectures.

Each builder takes ``(kind, dim)`` and returns a :class:`~benchmarks.adapter.FlowAdapter`:

- ``"maf"``: :data:`~benchmarks.adapter.MAF_LAYERS` affine MADE layers
  D -> 512 -> 512 -> 2D (ReLU), feature order reversed between consecutive layers,
  no batch norm, standard normal base. ``log_prob`` is one MADE pass per layer,
  ``sample`` is D passes per layer.
- ``"coupling"``: :data:`~benchmarks.adapter.COUPLING_LAYERS` affine coupling layers,
  conditioner MLP 2 x 256 (ReLU), the conditioning half alternating between layers,
  standard normal base. Both directions are one pass per layer.

The peer packages are imported lazily, so the harness still runs when one is missing
(see :func:`available_peers`). Install them with
``pip install --no-deps -r requirements-peers.txt`` so that pip never touches torch.

Direction pitfalls handled here:

- zuko and nflows: the transform's forward is data -> noise; ``log_prob`` runs it and
  sampling inverts it. Used as documented.
- normflows: a flow layer's ``forward`` is noise -> data and ``NormalizingFlow.log_prob``
  runs every layer's ``inverse``. ``nf.flows.MaskedAffineAutoregressive`` keeps nflows'
  convention (its ``forward`` is the one-pass MADE direction), so used as in normflows'
  examples it has *IAF* costs: D passes per layer in ``log_prob``, one in ``sample``.
  To compare MAF with MAF we wrap each layer in ``nf.flows.Reverse``, which swaps the two
  directions; set ``normflows_iaf_costs=True`` in :func:`build_normflows` for the
  as-in-the-examples variant.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from benchmarks.adapter import AdapterBuilder, FlowAdapter, TorchFlowAdapter, architecture

__all__ = [
    "PEER_BUILDERS",
    "VARIANT_BUILDERS",
    "available_peers",
    "build_nflows",
    "build_normflows",
    "build_normflows_iaf_costs",
    "build_zuko",
    "peer_versions",
]


def _equal_widths(library: str, widths: Sequence[int]) -> None:
    if len(set(widths)) != 1:
        raise ValueError(f"{library}' MADE needs equal hidden widths, got {tuple(widths)}")


def _check(kind: str, dim: int) -> None:
    if kind not in ("maf", "coupling"):
        raise ValueError(f"unknown model kind {kind!r}; expected 'maf' or 'coupling'")
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")


# --------------------------------------------------------------------------------------
# zuko 1.6
# --------------------------------------------------------------------------------------


def build_zuko(
    kind: str, dim: int, *, layers: int | None = None, hidden: Sequence[int] | None = None
) -> FlowAdapter:
    """zuko 1.6: ``zuko.flows.MAF`` / ``zuko.flows.RealNVP`` presets.

    zuko's MAF alternates ascending/descending orders (= reversal between layers);
    ``RealNVP`` (alias of ``NICE`` with affine transforms) alternates checkered masks.
    The affine log-scale is soft-clipped by ``MonotonicAffineTransform`` (slope >= 1e-3).
    ``flow()`` builds the distribution; ``log_prob`` runs the data -> noise direction.
    """
    _check(kind, dim)
    import zuko

    n_layers, widths = architecture(kind, layers, hidden)
    flow: torch.nn.Module
    if kind == "maf":
        flow = zuko.flows.MAF(dim, transforms=n_layers, hidden_features=widths)
    else:
        flow = zuko.flows.RealNVP(dim, transforms=n_layers, hidden_features=widths)

    def log_prob(x: Tensor) -> Tensor:
        return flow().log_prob(x)

    def sample(n: int) -> Tensor:
        return flow().sample((n,))

    return TorchFlowAdapter("zuko", flow, log_prob, sample)


# --------------------------------------------------------------------------------------
# nflows 0.14
# --------------------------------------------------------------------------------------


class _IgnoreContext(torch.nn.Module):
    """Lets an nflows ``MLP`` (``forward(inputs)``) serve as a coupling conditioner.

    ``CouplingTransform`` calls ``transform_net(inputs, context)``, which only nflows'
    ``ResidualNet`` accepts; the plain ``MLP`` raises ``TypeError``.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        """Apply the wrapped network to ``inputs``; ``context`` must be ``None``."""
        if context is not None:
            raise ValueError("unconditional conditioner got a context")
        return self.net(inputs)


def build_nflows(
    kind: str, dim: int, *, layers: int | None = None, hidden: Sequence[int] | None = None
) -> FlowAdapter:
    """nflows 0.14: ``Flow(CompositeTransform([...]), StandardNormal([D]))``.

    MAF: ``MaskedAffineAutoregressiveTransform(num_blocks=1, use_residual_blocks=False)``
    is exactly D -> 512 -> 512 -> 2D (the initial masked layer, one feed-forward block,
    the output layer; the default ``num_blocks=2`` with residual blocks would be deeper),
    with ``ReversePermutation`` between layers. Scale = softplus(.) + 1e-3.

    Coupling: ``AffineCouplingTransform`` with a plain ``nflows.nn.nets.MLP`` conditioner
    (the library's own RealNVP preset uses a ``ResidualNet``; the plain MLP needs a
    wrapper that drops the ``context`` argument), checkered masks alternating.
    Scale = sigmoid(. + 2) + 1e-3, i.e. at most 1.001 in the density direction.
    """
    _check(kind, dim)
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.nn.nets import MLP
    from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
    from nflows.transforms.base import CompositeTransform, Transform
    from nflows.transforms.coupling import AffineCouplingTransform
    from nflows.transforms.permutations import ReversePermutation

    n_layers, widths = architecture(kind, layers, hidden)
    transforms: list[Transform] = []
    if kind == "maf":
        _equal_widths("nflows", widths)
        for i in range(n_layers):
            if i > 0:
                transforms.append(ReversePermutation(features=dim))
            transforms.append(
                MaskedAffineAutoregressiveTransform(
                    features=dim,
                    hidden_features=widths[0],
                    num_blocks=len(widths) - 1,
                    use_residual_blocks=False,
                )
            )
    else:

        def conditioner(in_features: int, out_features: int) -> torch.nn.Module:
            mlp = MLP((in_features,), (out_features,), hidden_sizes=list(widths))
            return _IgnoreContext(mlp)

        for i in range(n_layers):
            # mask > 0: transformed; <= 0: conditioning (passed through).
            mask = (torch.arange(dim) + i) % 2
            transforms.append(AffineCouplingTransform(mask, conditioner))

    flow = Flow(CompositeTransform(transforms), StandardNormal([dim]))
    return TorchFlowAdapter("nflows", flow, flow.log_prob, flow.sample)


# --------------------------------------------------------------------------------------
# normflows 1.7.3
# --------------------------------------------------------------------------------------


def build_normflows(
    kind: str,
    dim: int,
    *,
    normflows_iaf_costs: bool = False,
    layers: int | None = None,
    hidden: Sequence[int] | None = None,
) -> FlowAdapter:
    """normflows 1.7.3: ``nf.NormalizingFlow(DiagGaussian(D, trainable=False), flows)``.

    ``flows`` is listed noise -> data. MAF: ``MaskedAffineAutoregressive(num_blocks=1,
    use_residual_blocks=False)`` (the same MADE code as nflows; scale = sigmoid(. + 2)
    + 1e-3) wrapped in ``nf.flows.Reverse`` so that ``log_prob`` is the one-pass direction
    (see the module docstring), and a ``Permute`` whose permutation is set to the reversal
    between layers. Coupling: ``AffineCouplingBlock`` with an ``nf.nets.MLP`` conditioner
    and ``split_mode`` alternating ``"channel"``/``"channel_inv"`` (first/second half
    conditions); the scale map is ``exp`` (unbounded).

    Args:
        kind: ``"maf"`` or ``"coupling"``.
        dim: Number of features D.
        normflows_iaf_costs: Skip the ``Reverse`` wrapper (the layer as normflows'
            examples use it): D passes per layer in ``log_prob``, one in ``sample``.
    """
    _check(kind, dim)
    import normflows as nf

    n_layers, widths = architecture(kind, layers, hidden)
    flows: list[torch.nn.Module] = []
    if kind == "maf":
        _equal_widths("normflows", widths)
        for i in range(n_layers):
            if i > 0:
                reverse = nf.flows.Permute(dim, mode="shuffle")
                with torch.no_grad():
                    reverse.perm.copy_(torch.arange(dim - 1, -1, -1))
                    reverse.inv_perm.copy_(torch.arange(dim - 1, -1, -1))
                flows.append(reverse)
            made = nf.flows.MaskedAffineAutoregressive(
                dim,
                widths[0],
                num_blocks=len(widths) - 1,
                use_residual_blocks=False,
            )
            flows.append(made if normflows_iaf_costs else nf.flows.Reverse(made))
    else:
        first = (dim + 1) // 2  # torch.chunk(2) puts the larger half first
        for i in range(n_layers):
            if i % 2 == 0:
                n_cond, n_trans, mode = first, dim - first, "channel"
            else:
                n_cond, n_trans, mode = dim - first, first, "channel_inv"
            param_map = nf.nets.MLP([n_cond, *widths, 2 * n_trans])
            flows.append(nf.flows.AffineCouplingBlock(param_map, scale_map="exp", split_mode=mode))

    base = nf.distributions.DiagGaussian(dim, trainable=False)
    model = nf.NormalizingFlow(q0=base, flows=flows)

    def sample(n: int) -> Tensor:
        x, _ = model.sample(n)
        return x

    name = "normflows-iaf-costs" if normflows_iaf_costs else "normflows"
    return TorchFlowAdapter(name, model, model.log_prob, sample)


# --------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------

_MODULES = {"zuko": "zuko", "nflows": "nflows", "normflows": "normflows"}

PEER_BUILDERS: dict[str, AdapterBuilder] = {
    "zuko": build_zuko,
    "nflows": build_nflows,
    "normflows": build_normflows,
}
"""All peer builders, keyed by library name (importable or not)."""


def build_normflows_iaf_costs(kind: str, dim: int) -> FlowAdapter:
    """normflows' MAF layer used as in its examples (no ``Reverse``): IAF costs.

    Not a default library; select it explicitly (``--libs normflows-iaf-costs``) to show
    what the direction pitfall costs. Coupling flows are the same as ``normflows``.
    """
    return build_normflows(kind, dim, normflows_iaf_costs=True)


VARIANT_BUILDERS: dict[str, AdapterBuilder] = {"normflows-iaf-costs": build_normflows_iaf_costs}
"""Opt-in variants of peers (measured only when named explicitly)."""
_VARIANT_MODULES = {"normflows-iaf-costs": "normflows"}


def available_peers(*, variants: bool = False) -> dict[str, AdapterBuilder]:
    """The subset of :data:`PEER_BUILDERS` (and, if ``variants``, of
    :data:`VARIANT_BUILDERS`) whose package is importable."""
    builders = dict(PEER_BUILDERS, **(VARIANT_BUILDERS if variants else {}))
    modules = {**_MODULES, **_VARIANT_MODULES}
    return {
        name: builder
        for name, builder in builders.items()
        if importlib.util.find_spec(modules[name]) is not None
    }


def peer_versions() -> dict[str, str]:
    """Installed version of each importable peer package (``importlib.metadata``)."""
    from importlib import metadata

    versions: dict[str, str] = {}
    for name in available_peers():
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - importable, no metadata
            versions[name] = "unknown"
    return versions


def _main() -> None:
    """Print the parameter counts of every peer configuration (``python -m benchmarks.peers``)."""
    builders: dict[str, Callable[[str, int], FlowAdapter]] = available_peers()
    for kind in ("maf", "coupling"):
        for dim in (2, 8, 63, 784):
            counts = {name: build(kind, dim).num_params() for name, build in builders.items()}
            ref = sorted(counts.values())[len(counts) // 2]
            cells = ", ".join(f"{n}={c:,} ({c / ref - 1:+.1%})" for n, c in counts.items())
            print(f"{kind:8s} D={dim:<4d} {cells}")


if __name__ == "__main__":
    _main()
