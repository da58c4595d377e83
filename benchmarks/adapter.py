"""The uniform interface every benchmarked flow library is wrapped in.

Each library (the peers in :mod:`benchmarks.peers`, ``invertible`` itself in
:mod:`benchmarks.invertible_adapter`) provides *builders*:
``builder(kind, dim) -> FlowAdapter`` for the two benchmark architectures. The
architecture constants below are the single source of truth, so that every builder
constructs the same network.

Directions: ``log_prob`` is the density (data -> noise, "normalizing") direction and
``sample`` the generative (noise -> data) direction, whatever the wrapped library calls
them. For a MAF the former must be the one-pass direction and the latter the D-pass one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "COUPLING_HIDDEN",
    "COUPLING_LAYERS",
    "KINDS",
    "MAF_HIDDEN",
    "MAF_LAYERS",
    "AdapterBuilder",
    "FlowAdapter",
    "ModelKind",
    "TorchFlowAdapter",
    "count_parameters",
]

ModelKind = Literal["maf", "coupling"]
"""The two architectures compared in the speed benchmark."""

KINDS: tuple[ModelKind, ...] = ("maf", "coupling")

MAF_LAYERS = 5
"""MAF: number of MADE layers (order reversed between consecutive layers, no batch norm)."""

MAF_HIDDEN = (512, 512)
"""MAF: hidden widths of each MADE, D -> 512 -> 512 -> 2D (shift and log-scale), ReLU."""

COUPLING_LAYERS = 10
"""Coupling (RealNVP-style): number of affine coupling layers, masks alternating."""

COUPLING_HIDDEN = (256, 256)
"""Coupling: hidden widths of each conditioner MLP, ReLU."""


@runtime_checkable
class FlowAdapter(Protocol):
    """What the harness needs from a flow, independent of the library.

    Attributes:
        name: Library name, e.g. ``"zuko"``; used as the column of the result tables.
        module: The ``torch.nn.Module`` holding all trainable parameters (given to Adam).
    """

    name: str
    module: torch.nn.Module

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of a batch ``x`` of shape ``[batch, D]``; returns shape ``[batch]``."""
        ...

    def sample(self, n: int) -> Tensor:
        """``n`` samples from the flow, shape ``[n, D]``."""
        ...

    def num_params(self) -> int:
        """Number of trainable scalars (dense count: masked-out MADE weights included)."""
        ...


def architecture(
    kind: str, layers: int | None = None, hidden: Sequence[int] | None = None
) -> tuple[int, tuple[int, ...]]:
    """``(layers, hidden widths)`` of ``kind``: the given values, else the speed-benchmark
    defaults (:data:`MAF_LAYERS`/:data:`MAF_HIDDEN`, :data:`COUPLING_LAYERS`/
    :data:`COUPLING_HIDDEN`). Builders take both as keywords, so that the quality
    benchmark can build the same architectures at another size."""
    if kind == "maf":
        default_layers, default_hidden = MAF_LAYERS, MAF_HIDDEN
    elif kind == "coupling":
        default_layers, default_hidden = COUPLING_LAYERS, COUPLING_HIDDEN
    else:
        raise ValueError(f"unknown model kind {kind!r}; expected 'maf' or 'coupling'")
    return layers or default_layers, tuple(hidden or default_hidden)


def make_optimizer(adapter: FlowAdapter) -> torch.optim.Optimizer:
    """The adapter's own optimizer if it has one (``make_optimizer()``), else
    ``torch.optim.Adam(module.parameters(), lr=1e-3)``."""
    own = getattr(adapter, "make_optimizer", None)
    if own is not None:
        return own()
    return torch.optim.Adam(adapter.module.parameters(), lr=1e-3)


AdapterBuilder = Callable[[str, int], FlowAdapter]
"""``builder(kind, dim)`` with ``kind`` in :data:`KINDS`; raises ``ValueError`` otherwise."""


def count_parameters(module: torch.nn.Module) -> int:
    """Number of scalars in the trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@dataclass
class TorchFlowAdapter:
    """A :class:`FlowAdapter` made of two callables; convenient for most libraries.

    Args:
        name: Library name.
        module: The module owning the parameters.
        log_prob_fn: ``x -> log p(x)`` (density direction).
        sample_fn: ``n -> samples`` (generative direction).
        optimizer_fn: ``parameters -> optimizer`` with lr 1e-3, the library's own way of
            training (``None``: ``torch.optim.Adam(parameters, lr=1e-3)``, what the peers'
            examples use).
    """

    name: str
    module: torch.nn.Module
    log_prob_fn: Callable[[Tensor], Tensor]
    sample_fn: Callable[[int], Tensor]
    optimizer_fn: Callable[[Any], torch.optim.Optimizer] | None = None

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x`` (shape ``[batch, D]`` -> ``[batch]``)."""
        return self.log_prob_fn(x)

    def sample(self, n: int) -> Tensor:
        """``n`` samples, shape ``[n, D]``."""
        return self.sample_fn(n)

    def num_params(self) -> int:
        """Number of trainable scalars of :attr:`module`."""
        return count_parameters(self.module)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of the training-step figure (Adam, lr 1e-3)."""
        if self.optimizer_fn is not None:
            return self.optimizer_fn(self.module.parameters())
        return torch.optim.Adam(self.module.parameters(), lr=1e-3)
