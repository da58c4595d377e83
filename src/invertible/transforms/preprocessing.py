r"""Image preprocessing as flow layers, with their Jacobians, and the bits/dim convention.

The pipeline of RealNVP (Dinh, Sohl-Dickstein & Bengio, ICLR 2017, section 4.1) and MAF
(Papamakarios et al., NeurIPS 2017, appendix E.2), seen from the data side:

1. **dequantize** 8-bit pixels p ∈ {0, …, 255}: x = (p + u) / 256, u ~ U[0, 1)^D. This is
   done *on the data* (a random step, not a bijection): :func:`dequantize`.
2. **scale** to the unit interval: done by (1), or, for data kept in pixel units, by the
   :class:`ToUnitInterval` layer (x = v / 256, log-det −D log 256).
3. **logit**: y = logit(λ + (1 − 2λ) x): the :class:`Logit` layer.

Steps 2–3 are transforms, so their log-determinants enter ``log_prob`` and the density a
flow reports is the density of x ∈ [0, 1]^D. Put them as the *last generative* steps of
the flow: ``Flow(Compose([...model..., Logit(lam)]), base)``. Then ``log_prob`` takes
x ∈ (0, 1) and sampling returns images in (0, 1). The bits/dim of the 8-bit pixel data
follow from that density by :func:`bits_per_dim`.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from invertible.core import Transform

__all__ = ["Logit", "ToUnitInterval", "bits_per_dim", "dequantize"]

_T = TypeVar("_T", float, Tensor)


def dequantize(
    pixels: Tensor | np.ndarray,
    levels: int = 256,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Uniform dequantization of integer pixels: x = (p + u) / levels with u ~ U[0, 1).

    The result lies in [0, 1) and its density on [0, 1)^D is a lower bound (in expectation
    over u, Theis et al. 2016) of ``levels^D`` times the probability of the discrete pixels;
    :func:`bits_per_dim` turns it into bits per discrete pixel. Draw fresh noise every epoch.

    Args:
        pixels: integer pixel values in ``0 .. levels - 1`` (tensor or numpy array, any
            shape, e.g. ``uint8 [N, C, H, W]``).
        levels: number of quantisation levels (256 for 8-bit images).
        generator: random generator of the noise (for reproducibility).
        dtype: floating dtype of the result.

    Example:
        >>> import torch
        >>> x = dequantize(torch.tensor([[0, 255]], dtype=torch.uint8))
        >>> bool(((x >= 0) & (x < 1)).all()), bool(x[0, 1] >= 255 / 256)
        (True, True)
    """
    values = torch.tensor(pixels) if isinstance(pixels, np.ndarray) else torch.as_tensor(pixels)
    noise = torch.rand(values.shape, generator=generator, dtype=dtype)
    return (values.to(dtype) + noise.to(values.device)) / levels


def bits_per_dim(log_prob: _T, features: int, levels: int = 256) -> _T:
    r"""Bits per dimension of discrete pixels, from the log-density of x scaled to [0, 1].

    The one convention of this library: ``log_prob`` is the log-density (nats) of the
    dequantized data x = (p + u) / levels ∈ [0, 1]^D, preprocessing Jacobians included
    (as :class:`Logit` in the flow does). The noise has width 1/levels per dimension, so the
    density of the pixels in their own units is p(x) / levels^D and

    .. math:: \text{bits/dim} = \Big(-\frac{\log p(x)}{D} + \log(\text{levels})\Big) / \log 2.

    For 8-bit data, ``levels = 256``: a uniform density on [0, 1]^D (log p = 0) is exactly
    8 bits/dim. This is the number RealNVP, Glow and MAF report for MNIST/CIFAR-10.

    Args:
        log_prob: log p(x) in nats, a float or a tensor (e.g. one value per image).
        features: D, the number of dimensions per image (C·H·W).
        levels: number of quantisation levels of the pixels.

    Returns:
        Bits/dim, of the same type (and shape) as ``log_prob``.

    Example:
        >>> bits_per_dim(0.0, 784)
        8.0
        >>> round(bits_per_dim(-784 * math.log(2), 784), 6)
        9.0
    """
    if features <= 0:
        raise ValueError(f"features: expected a positive number of dimensions, got {features}")
    return (-log_prob / features + math.log(levels)) / math.log(2)


class ToUnitInterval(Transform):
    r"""Rescale data in pixel units [0, levels) to the unit interval [0, 1) and back.

    Normalizing direction (data → latent): z = x / levels, log|det ∂z/∂x| = −D log(levels).
    Generative direction: x = levels · z, log|det| = +D log(levels). Both directions are
    one parallel pass. Put it last in the generative order when the data are dequantized
    pixel values v = p + u rather than (p + u)/levels; the density is then that of v, whose
    bits/dim are ``-log p(v) / (D log 2)`` (equal to :func:`bits_per_dim` of the [0, 1]
    density, since the Jacobian accounts for the difference).

    Args:
        levels: the number of quantisation levels (the scale factor).

    Example:
        >>> import torch
        >>> z, ladj = ToUnitInterval(256).inverse(torch.full((1, 2), 128.0))
        >>> z, ladj
        (tensor([[0.5000, 0.5000]]), tensor([-11.0904]))
    """

    def __init__(self, levels: int = 256) -> None:
        super().__init__()
        self.levels = levels

    def _log_det(self, values: Tensor) -> Tensor:
        features = math.prod(values.shape[1:])
        return values.new_full((values.shape[0],), features * math.log(self.levels))

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        return z * self.levels, self._log_det(z)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        return x / self.levels, -self._log_det(x)

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"levels={self.levels}"


class Logit(Transform):
    r"""The logit preprocessing y = logit(λ + (1 − 2λ) x) as a flow layer.

    Named after what it does to the data (the normalizing direction, x ∈ (0, 1) → y ∈ ℝ):

    .. math::
        y = \operatorname{logit}(s),\quad s = λ + (1-2λ)x,\qquad
        \log\Big|\det\frac{\partial y}{\partial x}\Big| =
        \sum_i \big[\log(1-2λ) - \log s_i - \log(1-s_i)\big].

    The generative direction (ℝ → (0, 1)) is the rescaled sigmoid
    x = (σ(y) − λ)/(1 − 2λ), log|det ∂x/∂y| = Σ_i [log σ(y_i) + log σ(−y_i) − log(1 − 2λ)].
    So it is the **last generative step** of an image flow:
    ``Flow(Compose([...model..., Logit(lam)]), base)`` — ``log_prob`` takes x ∈ (0, 1) and
    includes this Jacobian, so the reported density is that of x ∈ [0, 1]^D and
    :func:`bits_per_dim` applies. λ keeps the logit away from ±∞ at the borders:
    λ = 0.05 for CIFAR-10 (RealNVP), λ = 1e-6 for MNIST (MAF). Both directions are one
    parallel, elementwise pass. Any event shape (vectors or ``[C, H, W]``).

    Args:
        lam: λ ∈ [0, 1/2).

    Example:
        >>> import torch
        >>> layer = Logit(0.05)
        >>> y, ladj = layer.inverse(torch.full((1, 1), 0.5))
        >>> y, ladj  # logit(0.5) = 0;  log(0.9 / 0.25)
        (tensor([[0.]]), tensor([1.2809]))
        >>> x, _ = layer(y)
        >>> x
        tensor([[0.5000]])
    """

    def __init__(self, lam: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= lam < 0.5:
            raise ValueError(f"lam: expected 0 <= lam < 0.5, got {lam}")
        self.lam = float(lam)

    def _sum(self, values: Tensor) -> Tensor:
        return values.flatten(1).sum(dim=1)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        scale = 1.0 - 2.0 * self.lam
        x = (torch.sigmoid(z) - self.lam) / scale
        constant = math.prod(x.shape[1:]) * math.log(scale)
        ladj = self._sum(F.logsigmoid(z) + F.logsigmoid(-z)) - constant
        return x, ladj

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        scale = 1.0 - 2.0 * self.lam
        s = self.lam + scale * x
        y = torch.log(s) - torch.log1p(-s)
        constant = math.prod(x.shape[1:]) * math.log(scale)
        ladj = constant - self._sum(torch.log(s) + torch.log1p(-s))
        return y, ladj

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"lam={self.lam}"
