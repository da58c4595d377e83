r"""Image flows: RealNVP's multi-scale model and NICE on flattened images.

Both take images x ∈ (0, 1)^{C×H×W} (dequantized pixels, see
:func:`~invertible.transforms.preprocessing.dequantize`); their ``log_prob`` includes the
preprocessing Jacobian, so :meth:`bits_per_dim` gives bits per 8-bit pixel under the one
convention of :func:`~invertible.transforms.preprocessing.bits_per_dim`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from invertible.core import Compose, Flow, Transform
from invertible.distributions import StandardNormal, make_base
from invertible.presets.coupling import NICE
from invertible.transforms.image import MultiScale, Reshape
from invertible.transforms.preprocessing import Logit, bits_per_dim

__all__ = ["NICEImage", "RealNVPImage", "save_image_grid", "tile_images"]


class _ImageFlow(Flow, preset=False):
    """Shared by the image presets: temperature sampling and bits/dim."""

    levels: int = 256

    @torch.no_grad()
    def sample(  # type: ignore[override]
        self,
        n: int,
        context: Tensor | None = None,
        *,
        temperature: float = 1.0,
        chunk_size: int | None = None,
    ) -> Tensor:
        """``n`` images in (0, 1); ``temperature`` T scales the base noise, z = T·ε.

        T < 1 trades diversity for sample quality (RealNVP/Glow's reduced-temperature
        samples); T = 1 samples the model itself. ``chunk_size`` bounds peak memory.
        """

        def draw(m: int, rows: Tensor | None) -> Tensor:
            z = self.base.rsample(m, rows) * temperature
            return self.transform(z, rows)[0] if m else z

        return self.in_chunks(draw, n, context, chunk_size)

    def bits_per_dim(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Bits/dim of each dequantized image ``x`` ∈ [0, 1) (shape ``[batch]``)."""
        return bits_per_dim(self.log_prob(x, context), self.features, self.levels)


class RealNVPImage(_ImageFlow):
    r"""RealNVP for images: logit preprocessing, multi-scale couplings, Gaussian base.

    Generative direction: z ~ N(0, I) of shape ``(C, H, W)`` → :class:`MultiScale`
    (checkerboard / channel-wise affine couplings with ResNet networks, squeeze,
    factor-out) → :class:`Logit` (sigmoid, the last generative step) → x ∈ (0, 1).
    log p(x) = log N(z) + log|det ∂z/∂x| includes the logit Jacobian, so it is the density of
    x ∈ [0, 1]^D. Sampling and density are each one parallel pass. Dinh, Sohl-Dickstein &
    Bengio, *Density estimation using Real NVP*, ICLR 2017 (the paper: λ = 0.05, 8 residual
    blocks of 64 feature maps for CIFAR-10; λ = 1e-6 is the MAF paper's MNIST setting).

    Args:
        shape: ``(C, H, W)``.
        num_scales: number of scales (H, W divisible by 2^(num_scales−1)).
        blocks_per_scale: residual blocks in each coupling network.
        channels: feature maps of the coupling networks.
        couplings_per_scale: couplings before and after each squeeze (3 in the paper).
        final_couplings: checkerboard couplings of the last scale (4 in the paper).
        lam: λ of the logit preprocessing.
        normalization: normalisation inside the ResNets (``"batch"``, ``"weight"``, ``"none"``).
        flow_norm: flow layer after each coupling (``"batch"``, ``"actnorm"``, ``"none"``).
        log_scale: ``"tanh"`` (learned scale) or ``"clamp"``.
        log_scale_bound: soft-clamp bound for ``log_scale="clamp"``.
        levels: quantisation levels of the pixels (for :meth:`bits_per_dim`).

    Example:
        >>> import torch
        >>> flow = RealNVPImage((1, 4, 4), blocks_per_scale=1, channels=8).eval()
        >>> x = flow.sample(3, temperature=0.7)
        >>> x.shape, bool(((x > 0) & (x < 1)).all())
        (torch.Size([3, 1, 4, 4]), True)
        >>> flow.bits_per_dim(x).shape
        torch.Size([3])
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        num_scales: int = 2,
        blocks_per_scale: int = 2,
        channels: int = 64,
        couplings_per_scale: int = 3,
        final_couplings: int = 4,
        lam: float = 0.05,
        normalization: str = "batch",
        flow_norm: str = "batch",
        log_scale: str = "tanh",
        log_scale_bound: float | None = 5.0,
        levels: int = 256,
    ) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise ValueError(f"shape: expected (C, H, W), got {shape}")
        model = MultiScale(
            shape,
            num_scales=num_scales,
            couplings_per_scale=couplings_per_scale,
            final_couplings=final_couplings,
            hidden_channels=channels,
            num_blocks=blocks_per_scale,
            normalization=normalization,
            flow_norm=flow_norm,
            log_scale=log_scale,
            log_scale_bound=log_scale_bound,
        )
        super().__init__(Compose([model, Logit(lam)]), StandardNormal(shape))
        self.levels = levels


class NICEImage(_ImageFlow):
    r"""NICE on flattened images with the logistic prior (Dinh, Krueger & Bengio, 2014).

    Generative direction: z ~ Logistic(0, 1) of shape ``(C, H, W)`` → flatten → NICE
    (diagonal rescaling, then additive couplings with alternating halves, see
    :class:`~invertible.NICE`) → unflatten → optionally :class:`Logit` (``lam`` not None)
    → x. The paper models the dequantized pixels rescaled to [0, 1] directly
    (``lam=None``, the default); with ``lam`` set, the logit Jacobian is included so the
    density is still that of x ∈ [0, 1]^D. log p(x) = log p_Z(z) − Σ_i s_i (+ logit term).
    Sampling and density are each one parallel pass.

    Args:
        shape: ``(C, H, W)``.
        num_layers: additive coupling layers (4 in the paper).
        hidden_features: hidden widths of the coupling MLPs (5 × 1000 in the paper).
        base: ``"logistic"`` (the paper's prior) or ``"normal"``.
        lam: λ of an optional logit preprocessing (``None``: none).
        levels: quantisation levels of the pixels (for :meth:`bits_per_dim`).

    Example:
        >>> import torch
        >>> flow = NICEImage((1, 2, 2), num_layers=2, hidden_features=(8,))
        >>> flow.log_prob(torch.rand(3, 1, 2, 2)).shape
        torch.Size([3])
        >>> flow.sample(2, temperature=0.5).shape
        torch.Size([2, 1, 2, 2])
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        num_layers: int = 4,
        hidden_features: Sequence[int] = (1000,) * 5,
        base: str = "logistic",
        lam: float | None = None,
        levels: int = 256,
    ) -> None:
        shape = tuple(int(s) for s in shape)
        features = math.prod(shape)
        nice = NICE(features, num_layers=num_layers, hidden_features=hidden_features, base=base)
        layers: list[Transform] = [
            Reshape(shape, (features,)),
            nice.transform,
            Reshape((features,), shape),
        ]
        if lam is not None:
            layers.append(Logit(lam))
        super().__init__(Compose(layers), make_base(base, shape))
        self.levels = levels


def tile_images(
    images: np.ndarray, *, nrow: int | None = None, padding: int = 1, fill: float = 1.0
) -> np.ndarray:
    """Images ``[N, H, W, C]`` on one canvas, ``nrow`` per row (default ⌈√N⌉).

    ``padding`` pixels of ``fill`` lie between and around the images. The one tiling of
    the library: sample grids, patch grids and PNG grids all use it.

    Example:
        >>> tile_images(np.zeros((5, 2, 3, 1))).shape
        (7, 13, 1)
    """
    n, h, w, c = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / nrow))
    shape = (rows * (h + padding) + padding, nrow * (w + padding) + padding, c)
    canvas = np.full(shape, fill, dtype=np.float64)
    for i, image in enumerate(images):
        top = padding + (i // nrow) * (h + padding)
        left = padding + (i % nrow) * (w + padding)
        canvas[top : top + h, left : left + w] = image
    return canvas


def save_image_grid(
    images: Tensor | np.ndarray,
    path: str | Path,
    *,
    nrow: int | None = None,
    padding: int = 2,
    scale: int = 1,
) -> Path:
    """Save a batch of images ``[N, C, H, W]`` with values in [0, 1] as one PNG grid.

    C must be 1 (grey) or 3 (RGB). Values are clipped to [0, 1] and quantised to 8 bits.

    Args:
        images: the batch (tensor or array), e.g. ``flow.sample(64)``.
        path: where to write the PNG (parent folders are created).
        nrow: images per row (default: ⌈√N⌉).
        padding: pixels of black between images.
        scale: integer upscaling factor (nearest neighbour) for small images.

    Example:
        >>> import tempfile, torch
        >>> out = save_image_grid(torch.rand(6, 1, 4, 4), tempfile.mkdtemp() + "/grid.png")
        >>> out.suffix
        '.png'
    """
    from PIL import Image  # noqa: PLC0415 (heavy; only this writer needs it)

    array = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"images: expected [N, 1 or 3, H, W], got shape {array.shape}")
    c = array.shape[1]
    grid = tile_images(array.transpose(0, 2, 3, 1), nrow=nrow, padding=padding, fill=0.0)
    pixels = (np.clip(np.nan_to_num(grid), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    image = Image.fromarray(pixels[..., 0] if c == 1 else pixels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
