"""Base distributions p_Z of a flow.

They are ``nn.Module`` s whose constants live in buffers, so ``flow.to(device)`` moves them.
Each gives ``log_prob(z, context=None) -> [batch]`` (summed over the event) and
``rsample(n, context=None) -> [n, *event_shape]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["StandardLogistic", "StandardNormal", "make_base"]


class _Standard(nn.Module):
    """Shared plumbing: event shape, a dtype/device anchor, sampling shape."""

    def __init__(self, *event_shape: int | Sequence[int]) -> None:
        super().__init__()
        if len(event_shape) == 1 and isinstance(event_shape[0], Sequence):
            event_shape = tuple(event_shape[0])
        self.event_shape: tuple[int, ...] = tuple(int(s) for s in event_shape)  # type: ignore[arg-type]
        # A zero-size anchor: `.to(device, dtype)` moves it, and sampling reads both from it.
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    def _sum_event(self, values: Tensor) -> Tensor:
        return values.flatten(1).sum(dim=1)

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}"


class StandardNormal(_Standard):
    r"""Standard normal base, :math:`\log p(z) = -\tfrac12 \lVert z\rVert^2 - \tfrac D2 \log 2\pi`.

    Args:
        event_shape: shape of one event, e.g. ``StandardNormal(3)`` or
            ``StandardNormal(1, 28, 28)``.

    Example:
        >>> import torch
        >>> StandardNormal(2).log_prob(torch.zeros(1, 2))
        tensor([-1.8379])
    """

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of each row of ``z`` (shape ``[batch]``)."""
        D = math.prod(self.event_shape)
        return -0.5 * self._sum_event(z.square()) - 0.5 * D * math.log(2 * math.pi)

    def rsample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``n`` reparameterised draws of shape ``[n, *event_shape]``."""
        anchor = self._anchor
        return torch.randn(n, *self.event_shape, device=anchor.device, dtype=anchor.dtype)

    def entropy(self) -> float:
        """Differential entropy in nats, D/2 log(2πe)."""
        return 0.5 * math.prod(self.event_shape) * math.log(2 * math.pi * math.e)


class StandardLogistic(_Standard):
    r"""Standard logistic base (NICE's prior).

    :math:`\log p(z) = -\sum_i \big(\mathrm{softplus}(z_i) + \mathrm{softplus}(-z_i)\big)`.

    Heavier tails than the normal, so the gradient of the log-density stays bounded
    (NICE, section 3.4). Sampling: z = log u - log(1 - u), u ~ U(0, 1).

    Args:
        event_shape: shape of one event.

    Example:
        >>> import torch
        >>> StandardLogistic(1).log_prob(torch.zeros(1, 1))
        tensor([-1.3863])
    """

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of each row of ``z`` (shape ``[batch]``)."""
        return -self._sum_event(F.softplus(z) + F.softplus(-z))

    def rsample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``n`` reparameterised draws of shape ``[n, *event_shape]``."""
        anchor = self._anchor
        finfo = torch.finfo(anchor.dtype)
        u = torch.rand(n, *self.event_shape, device=anchor.device, dtype=anchor.dtype)
        u = u.clamp(finfo.tiny, 1 - finfo.eps)
        return torch.log(u) - torch.log1p(-u)

    def entropy(self) -> float:
        """Differential entropy in nats, 2 per dimension."""
        return 2.0 * math.prod(self.event_shape)


def make_base(name: str, event_shape: int | Sequence[int]) -> nn.Module:
    """Build a base distribution by name: ``"normal"``/``"gaussian"`` or ``"logistic"``.

    Example:
        >>> make_base("logistic", 4)
        StandardLogistic(event_shape=(4,))
    """
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    key = name.lower()
    if key in ("normal", "gaussian"):
        return StandardNormal(shape)
    if key == "logistic":
        return StandardLogistic(shape)
    raise ValueError(f"base: unknown base distribution {name!r}; choose 'normal' or 'logistic'")


class StandardLaplace(_Standard):
    r"""Standard Laplace base, :math:`\log p(z) = -\sum_i |z_i| - D \log 2`.

    The residual law of a least-absolute-deviations linear predictor (the Laplace AR(p)
    baseline of the audio models). Sampling: z = -sign(v)·log(1 - 2|v|), v ~ U(-½, ½).

    Args:
        event_shape: shape of one event.

    Example:
        >>> import torch
        >>> StandardLaplace(1).log_prob(torch.zeros(1, 1))
        tensor([-0.6931])
    """

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of each row of ``z`` (shape ``[batch]``)."""
        D = math.prod(self.event_shape)
        return -self._sum_event(z.abs()) - D * math.log(2.0)

    def rsample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``n`` reparameterised draws of shape ``[n, *event_shape]``."""
        anchor = self._anchor
        finfo = torch.finfo(anchor.dtype)
        v = torch.rand(n, *self.event_shape, device=anchor.device, dtype=anchor.dtype) - 0.5
        return -v.sign() * torch.log1p(-(2 * v.abs()).clamp(max=1 - finfo.eps))

    def entropy(self) -> float:
        """Differential entropy in nats, 1 + log 2 per dimension."""
        return (1.0 + math.log(2.0)) * math.prod(self.event_shape)


__all__ += ["StandardLaplace"]
