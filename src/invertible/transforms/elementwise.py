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

__all__ = [
    "SHIFTS",
    "Additive",
    "Affine",
    "ElementwiseMap",
    "Gated",
    "scalar_operand",
    "soft_clamp",
]


def soft_clamp(values: Tensor, bound: float | Tensor | None) -> Tensor:
    """Smoothly squash ``values`` into ``(-bound, bound)``: ``bound * tanh(values / bound)``.

    Near zero it is the identity (slope 1), so small log-scales are not distorted; large
    ones saturate instead of overflowing ``exp``. ``bound=None`` leaves values unchanged;
    a 0-dim tensor (see :func:`scalar_operand`) works like a float, only cheaper on small
    inputs.

    Example:
        >>> import torch
        >>> soft_clamp(torch.tensor([0.0, 100.0]), 3.0)
        tensor([0., 3.])
    """
    if bound is None:
        return values
    return bound * (values / bound).tanh()


def scalar_operand(value: float | None) -> float | Tensor | None:
    """``value`` as a float32 0-dim CPU tensor where that holds it exactly, else unchanged.

    Arithmetic with a Python float wraps it into a tensor on every call, which costs as
    much as the operation itself on the one-coordinate rows of a sequential pass (about
    2 µs each on a CPU); a 0-dim tensor is used as is, on any device and with any floating
    dtype (it does not take part in type promotion).

    Example:
        >>> scalar_operand(5.0), scalar_operand(0.1), scalar_operand(None)
        (tensor(5.), 0.1, None)
    """
    if value is None:
        return None
    operand = torch.tensor(float(value), dtype=torch.float32)
    return operand if float(operand) == value else value


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


SHIFTS = ("latent", "data")
"""Where :class:`Affine` applies its shift: before the scale (latent units) or after it."""


class Affine(ElementwiseMap):
    r"""Affine map (RealNVP, MAF, IAF) with parameters ``(b, α_raw)`` and α = ``soft_clamp(α_raw)``.

    ``shift="latent"`` (default): x = (z + b)·exp(α); the inverse (normalizing) direction is
    z = x·exp(−α) − b, so the shift is in the units of the latent z. ``shift="data"``:
    x = z·exp(α) + b; the inverse is z = (x − b)·exp(−α), the shift in the units of x.
    Both give log|dx/dz| = α and the same family of maps (b_data = b_latent·exp(α)); they
    differ in how training moves them. With the shift in data units its gradient is scaled
    by exp(−α), which for data of small scale (image patches: std 0.1, conditional scales
    far below) is large and uneven across coordinates; in latent units every layer's shift
    lives on the scale of its standard-normal-like output. On ``patches`` (MAF and RealNVP,
    equal steps) this alone is worth 8–20 nats and narrows the spread over seeds fivefold
    (``benchmarks/README.md``, "quality"). ``"data"`` is what the sequence flows use, whose
    shift is a linear predictor in the units of the audio. The soft clamp keeps ``exp``
    finite while letting each layer expand *and* contract by up to ``exp(bound)`` (a
    one-sided cap would cap the attainable likelihood).

    Args:
        log_scale_bound: bound of |α| (``None`` for no bound).
        shift: ``"latent"`` or ``"data"``.

    Example:
        >>> import torch
        >>> params = torch.tensor([[[1.0, 0.0]]])  # b = 1, α = 0
        >>> Affine()(torch.zeros(1, 1), params)
        (tensor([[1.]]), tensor([[0.]]))
        >>> params = torch.tensor([[[1.0, 0.6931472]]])  # b = 1, α = log 2; z = 1
        >>> Affine(None, shift="latent")(torch.ones(1, 1), params)[0].round(decimals=4)
        tensor([[4.]])
        >>> Affine(None, shift="data")(torch.ones(1, 1), params)[0].round(decimals=4)
        tensor([[3.]])
    """

    num_params = 2

    def __init__(self, log_scale_bound: float | None = 5.0, *, shift: str = "latent") -> None:
        super().__init__()
        if shift not in SHIFTS:
            raise ValueError(f"shift: expected 'latent' or 'data', got {shift!r}")
        self._log_scale_bound = log_scale_bound
        self._bound = scalar_operand(log_scale_bound)
        self.shift = shift

    @property
    def log_scale_bound(self) -> float | None:
        """Bound of |α| (``None``: unbounded); fixed at construction."""
        return self._log_scale_bound

    # Few elementwise kernels (each is a pass over the batch forward and again backward):
    # one ``unbind`` instead of two selects, ``addcmul`` where the shift comes last.
    def forward(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """X = g(z; params) and the elementwise log|dx/dz| (shape of ``z``)."""
        shift, raw = params.unbind(-1)
        log_scale = soft_clamp(raw, self._bound)
        if self.shift == "latent":
            return (z + shift) * log_scale.exp(), log_scale
        return torch.addcmul(shift, z, log_scale.exp()), log_scale

    def inverse(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Z = g⁻¹(x; params) and the elementwise log|dz/dx| (shape of ``x``)."""
        shift, raw = params.unbind(-1)
        bound = self._bound
        # -soft_clamp(raw, bound), with the sign folded into the scale factor (one pass less)
        neg_log_scale = -raw if bound is None else (raw / bound).tanh() * -bound
        if self.shift == "latent":
            return torch.addcmul(-shift, x, neg_log_scale.exp()), neg_log_scale
        return (x - shift) * neg_log_scale.exp(), neg_log_scale

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"log_scale_bound={self.log_scale_bound}, shift={self.shift!r}"


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
