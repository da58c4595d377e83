"""Elementwise bijections whose parameters come from a conditioner.

Coupling layers and autoregressive layers differ only in *how* they compute the
parameters of an elementwise map (from the unchanged half, or from the preceding
coordinates); the map itself is shared. Each map here takes ``params`` with a trailing
parameter axis (shape ``[*x.shape, num_params]``) and returns the output and the
*elementwise* log-absolute-derivative (shape of ``x``); the caller sums it over the event.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Additive", "Affine", "ElementwiseMap", "Gated", "soft_clamp"]


def soft_clamp(values: Tensor, bound: float | None) -> Tensor:
    """Smoothly squash ``values`` into ``(-bound, bound)``: ``bound * tanh(values / bound)``.

    Near zero it is the identity (slope 1), so small log-scales are not distorted; large
    ones saturate instead of overflowing ``exp``. ``bound=None`` leaves values unchanged.

    Example:
        >>> import torch
        >>> soft_clamp(torch.tensor([0.0, 100.0]), 3.0)
        tensor([0., 3.])
    """
    if bound is None:
        return values
    return bound * (values / bound).tanh()


class ElementwiseMap(nn.Module):
    """Base of the elementwise maps: ``num_params`` parameters per coordinate."""

    num_params: int = 1

    def forward(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """X = g(z; params) and the elementwise log|dx/dz| (shape of ``z``)."""
        raise NotImplementedError

    def inverse(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Z = g⁻¹(x; params) and the elementwise log|dz/dx| (shape of ``x``)."""
        raise NotImplementedError


class Additive(ElementwiseMap):
    """Additive map (NICE): x = z + m, log|dx/dz| = 0. Parameters: ``(m,)``.

    Example:
        >>> import torch
        >>> Additive()(torch.zeros(1, 2), torch.ones(1, 2, 1))
        (tensor([[1., 1.]]), tensor([[0., 0.]]))
    """

    num_params = 1

    def forward(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """X = g(z; params) and the elementwise log|dx/dz| (shape of ``z``)."""
        shift = params[..., 0]
        return z + shift, z.new_zeros(()).expand_as(z)

    def inverse(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Z = g⁻¹(x; params) and the elementwise log|dz/dx| (shape of ``x``)."""
        shift = params[..., 0]
        return x - shift, x.new_zeros(()).expand_as(x)


class Affine(ElementwiseMap):
    r"""Affine map (RealNVP, MAF, IAF): x = z·exp(α) + μ, log|dx/dz| = α.

    Parameters: ``(μ, α_raw)``, with α = ``soft_clamp(α_raw, log_scale_bound)``. The soft
    clamp keeps ``exp`` finite while letting each layer expand *and* contract by up to
    ``exp(bound)`` (a one-sided cap would cap the attainable likelihood).

    Args:
        log_scale_bound: bound of |α| (``None`` for no bound).

    Example:
        >>> import torch
        >>> params = torch.tensor([[[1.0, 0.0]]])  # μ = 1, α = 0
        >>> Affine()(torch.zeros(1, 1), params)
        (tensor([[1.]]), tensor([[0.]]))
    """

    num_params = 2

    def __init__(self, log_scale_bound: float | None = 5.0) -> None:
        super().__init__()
        self.log_scale_bound = log_scale_bound

    # Few elementwise kernels (each is a pass over the batch forward and again backward):
    # one ``unbind`` instead of two selects, ``addcmul`` for the forward map.
    def forward(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """X = g(z; params) and the elementwise log|dx/dz| (shape of ``z``)."""
        shift, raw = params.unbind(-1)
        log_scale = soft_clamp(raw, self.log_scale_bound)
        return torch.addcmul(shift, z, log_scale.exp()), log_scale

    def inverse(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Z = g⁻¹(x; params) and the elementwise log|dz/dx| (shape of ``x``)."""
        shift, raw = params.unbind(-1)
        bound = self.log_scale_bound
        # -soft_clamp(raw, bound), with the sign folded into the scale factor (one pass less)
        neg_log_scale = -raw if bound is None else (raw / bound).tanh() * -bound
        return (x - shift) * neg_log_scale.exp(), neg_log_scale

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"log_scale_bound={self.log_scale_bound}"


class Gated(ElementwiseMap):
    r"""Kingma et al.'s numerically stable IAF update: x = σ·z + (1 − σ)·m, σ = sigmoid(s + b).

    log|dx/dz| = log σ. The gate keeps the scale in (0, 1) and the update a convex
    combination, so stacking many layers cannot blow up (IAF paper, eq. 14). The bias ``b``
    (default 2) makes a fresh layer (``m = s = 0``) close to the identity, x ≈ 0.88·z.
    Parameters: ``(m, s)``.

    Args:
        gate_bias: the constant added to ``s`` before the sigmoid.

    Example:
        >>> import torch
        >>> x, ladj = Gated(gate_bias=0.0)(torch.ones(1, 1), torch.zeros(1, 1, 2))
        >>> x
        tensor([[0.5000]])
    """

    num_params = 2

    def __init__(self, gate_bias: float = 2.0) -> None:
        super().__init__()
        self.gate_bias = gate_bias

    def forward(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """X = g(z; params) and the elementwise log|dx/dz| (shape of ``z``)."""
        mean, gate = params[..., 0], params[..., 1] + self.gate_bias
        sigma = gate.sigmoid()
        return sigma * z + (1 - sigma) * mean, F.logsigmoid(gate)

    def inverse(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Z = g⁻¹(x; params) and the elementwise log|dz/dx| (shape of ``x``)."""
        mean, gate = params[..., 0], params[..., 1] + self.gate_bias
        sigma = gate.sigmoid()
        return (x - (1 - sigma) * mean) / sigma, -F.logsigmoid(gate)

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"gate_bias={self.gate_bias}"
