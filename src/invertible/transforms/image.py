r"""Shape-aware transforms on images ``[batch, C, H, W]``: RealNVP's multi-scale architecture.

Dinh, Sohl-Dickstein & Bengio, *Density estimation using Real NVP*, ICLR 2017, sections
3.4–3.6. The pieces:

* :class:`Squeeze`: 2×2×C blocks ↔ 1×1×4C (a permutation of the elements, log-det 0);
* :class:`CheckerboardCoupling` and :class:`ChannelCoupling`: affine couplings whose kept
  set is a checkerboard pattern of pixels, or half of the channels;
* :class:`FactorOut`: half of the channels go straight to the latent, the rest through a
  further transform (the next, coarser scale);
* :class:`MultiScale`: all of it as ONE transform x ``[C, H, W]`` ↔ z ``[C, H, W]``, so
  that ``StandardNormal(C, H, W)`` is the base;
* :class:`Reshape`: change the event shape (e.g. flatten images for NICE).

Names follow what a layer does to the *data* (the normalizing direction, x → z, run by
``inverse`` and ``log_prob``): ``Squeeze.inverse`` squeezes, ``Squeeze.forward`` (the
generative direction) unsqueezes. Every transform here is one parallel pass in both
directions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from invertible.core import Compose, Inverse, Transform
from invertible.nn.resnet import ResNet
from invertible.transforms.elementwise import Affine, ElementwiseMap
from invertible.transforms.normalization import ActNorm, BatchNorm

__all__ = [
    "ChannelCoupling",
    "CheckerboardCoupling",
    "FactorOut",
    "ImageCoupling",
    "MultiScale",
    "Reshape",
    "Squeeze",
    "channel_mask",
    "checkerboard_mask",
]


def _sum_event(values: Tensor) -> Tensor:
    return values.flatten(1).sum(dim=1)


def squeeze2x2(x: Tensor) -> Tensor:
    """``[B, C, H, W] → [B, 4C, H/2, W/2]``: channel ``4c + 2i + j`` holds pixel (2h+i, 2w+j)."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze: height and width must be even, got {h}x{w}")
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze2x2(z: Tensor) -> Tensor:
    """``[B, 4C, H, W] → [B, C, 2H, 2W]``, the exact inverse of :func:`squeeze2x2`."""
    b, c4, h, w = z.shape
    if c4 % 4:
        raise ValueError(f"unsqueeze: channels must be a multiple of 4, got {c4}")
    z = z.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return z.reshape(b, c4 // 4, 2 * h, 2 * w)


class Squeeze(Transform):
    r"""RealNVP's squeeze: each 2×2×C block of the image becomes a 1×1×4C block.

    Normalizing direction (``inverse``): ``[C, H, W] → [4C, H/2, W/2]`` with
    z[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]. Generative direction (``forward``): the
    exact inverse, ``[4C, H, W] → [C, 2H, 2W]``. A permutation of the elements, so
    log|det| = 0; both directions are one parallel pass (a reshape). Dinh et al., *Density
    estimation using Real NVP*, ICLR 2017, section 3.6 and figure 3.

    Example:
        >>> import torch
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> z, ladj = Squeeze().inverse(x)
        >>> z.shape, z[0, :, 0, 0], ladj
        (torch.Size([1, 4, 2, 2]), tensor([0., 1., 4., 5.]), tensor([0.]))
        >>> torch.equal(Squeeze()(z)[0], x)
        True
    """

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        return unsqueeze2x2(z), z.new_zeros(z.shape[0])

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        return squeeze2x2(x), x.new_zeros(x.shape[0])


class Reshape(Transform):
    r"""Change the event shape: ``forward`` maps ``[*in_shape] → [*out_shape]``.

    ``inverse`` maps back. Element order is kept (row-major), log|det| = 0, both directions
    are one parallel pass. Used to run vector transforms (NICE) on flattened images.

    Args:
        in_shape: event shape of z (the generative input).
        out_shape: event shape of x; same number of elements.

    Example:
        >>> import torch
        >>> flatten = Reshape((4,), (1, 2, 2))  # generative: vector -> image
        >>> flatten.inverse(torch.zeros(3, 1, 2, 2))[0].shape
        torch.Size([3, 4])
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise ValueError(f"Reshape: {self.in_shape} and {self.out_shape} differ in size")

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        return z.reshape(z.shape[0], *self.out_shape), z.new_zeros(z.shape[0])

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        return x.reshape(x.shape[0], *self.in_shape), x.new_zeros(x.shape[0])

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


def checkerboard_mask(
    height: int, width: int, parity: int = 0, *, device: torch.device | None = None
) -> Tensor:
    """Boolean ``[H, W]`` mask, ``True`` on the kept pixels: (h + w) % 2 == parity.

    The two parities are complements: together they transform every pixel exactly once.

    Example:
        >>> checkerboard_mask(2, 3)
        tensor([[ True, False,  True],
                [False,  True, False]])
    """
    rows = torch.arange(height, device=device).view(-1, 1)
    cols = torch.arange(width, device=device).view(1, -1)
    return (rows + cols) % 2 == parity % 2


def channel_mask(channels: int, parity: int = 0) -> Tensor:
    """Boolean ``[C]`` mask, ``True`` on the kept channels of :class:`ChannelCoupling`.

    Parity 0 keeps the first ``C // 2`` channels, parity 1 the other ``C - C // 2``.

    Example:
        >>> channel_mask(4), channel_mask(4, parity=1)
        (tensor([ True,  True, False, False]), tensor([False, False,  True,  True]))
    """
    mask = torch.arange(channels) < channels // 2
    return ~mask if parity % 2 else mask


class ImageCoupling(Transform):
    r"""Base of the image couplings: parameters from a network, an elementwise map g.

    Subclasses choose the kept set. Log-scale options of the affine map: ``"clamp"`` gives
    α = ``soft_clamp(raw, log_scale_bound)`` (the shared :class:`Affine` map);
    ``"tanh"`` gives RealNVP's α = s_c · tanh(raw) with a learned per-channel scale s_c
    (initialised to 1), then the same :class:`Affine` map without a further bound. The
    shift comes after the scale, as in the paper (``Affine(shift="data")``).
    """

    def __init__(
        self,
        changed_channels: int,
        elementwise: ElementwiseMap | None,
        log_scale: str,
        log_scale_bound: float | None,
    ) -> None:
        super().__init__()
        if log_scale not in ("tanh", "clamp"):
            raise ValueError(f"log_scale: choose 'tanh' or 'clamp', got {log_scale!r}")
        self.changed_channels = changed_channels
        if elementwise is None:
            elementwise = Affine(None if log_scale == "tanh" else log_scale_bound, shift="data")
        self.elementwise = elementwise
        self.log_scale_mode = log_scale
        self.scale_factor: nn.Parameter | None = None
        if log_scale == "tanh" and isinstance(elementwise, Affine):
            self.scale_factor = nn.Parameter(torch.ones(changed_channels, 1, 1))

    def _params(self, raw: Tensor, like: Tensor) -> Tensor:
        """``[B, P·C', H, W]`` network output → ``[B, C', H, W, P]`` parameters.

        Cast to the dtype of the data ``like``: under autocast the network runs in low
        precision, the elementwise map and its log-determinant do not.
        """
        raw = raw.to(like.dtype)
        b, _, h, w = raw.shape
        num_params = self.elementwise.num_params
        params = raw.view(b, self.changed_channels, num_params, h, w).movedim(2, -1)
        if self.scale_factor is not None:
            log_scale = self.scale_factor.unsqueeze(-1) * params[..., 1:2].tanh()
            params = torch.cat([params[..., :1], log_scale], dim=-1)
        return params


class CheckerboardCoupling(ImageCoupling):
    r"""Affine coupling with a checkerboard mask b (RealNVP, section 3.4).

    With b = :func:`checkerboard_mask` (1 on kept pixels, all channels), forward (z → x):

    .. math:: x = b ⊙ z + (1 - b) ⊙ \big(z ⊙ \exp(α(b ⊙ z)) + μ(b ⊙ z)\big),
              \qquad \log|\det ∂x/∂z| = \sum (1 - b) ⊙ α(b ⊙ z);

    inverse: z = b ⊙ x + (1 − b) ⊙ (x − μ(b ⊙ x)) ⊙ exp(−α(b ⊙ x)). (μ, α) come from one
    pass of a :class:`~invertible.nn.ResNet` over b ⊙ z and b itself (an extra input map),
    so **both directions are one parallel pass**. The network's last layer starts at zero,
    so a fresh layer is the identity. Alternate ``parity`` between layers: the two
    parities transform every pixel exactly once.

    Args:
        channels: C, channels of the input.
        parity: 0 or 1, which pixels are kept.
        hidden_channels: feature maps of the ResNet.
        num_blocks: residual blocks of the ResNet.
        normalization: ``"batch"``, ``"weight"`` or ``"none"`` inside the ResNet.
        log_scale: ``"tanh"`` (RealNVP's tanh with a learned scale) or ``"clamp"``.
        log_scale_bound: the soft-clamp bound for ``log_scale="clamp"``.
        elementwise: another elementwise map (e.g. ``Additive()``) instead of the affine one.
        net: a custom network ``[B, C+1, H, W] → [B, P·C, H, W]`` (P parameters per element).

    Example:
        >>> import torch
        >>> layer = CheckerboardCoupling(2, hidden_channels=8, num_blocks=1)
        >>> z = torch.randn(3, 2, 4, 4)
        >>> x, ladj = layer(z)
        >>> torch.equal(x, z), ladj  # a fresh layer is the identity
        (True, tensor([0., 0., 0.], grad_fn=<SumBackward1>))
    """

    def __init__(
        self,
        channels: int,
        *,
        parity: int = 0,
        hidden_channels: int = 64,
        num_blocks: int = 2,
        normalization: str = "batch",
        log_scale: str = "tanh",
        log_scale_bound: float | None = 5.0,
        elementwise: ElementwiseMap | None = None,
        net: nn.Module | None = None,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(channels, elementwise, log_scale, log_scale_bound)
        self.parity = parity % 2
        self.net = net or ResNet(
            channels + 1,
            channels * self.elementwise.num_params,
            hidden_channels,
            num_blocks,
            normalization=normalization,
            activation=activation,
        )

    def _run(self, values: Tensor, *, inverse: bool) -> tuple[Tensor, Tensor]:
        b, _, h, w = values.shape
        kept = checkerboard_mask(h, w, self.parity, device=values.device)
        mask = kept.to(values.dtype).expand(b, 1, h, w)
        params = self._params(self.net(torch.cat([values * mask, mask], dim=1)), values)
        step = self.elementwise.inverse if inverse else self.elementwise.forward
        changed, ladj = step(values, params)
        out = torch.where(kept, values, changed)
        return out, _sum_event(torch.where(kept, torch.zeros_like(ladj), ladj))

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        return self._run(z, inverse=False)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        return self._run(x, inverse=True)

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"parity={self.parity}, log_scale={self.log_scale_mode!r}"


class ChannelCoupling(ImageCoupling):
    r"""Affine coupling with a channel-wise mask (RealNVP, section 3.4).

    The channels are split by :func:`channel_mask` into a kept half z_a and a transformed
    half z_b. Forward (z → x): x_a = z_a, x_b = z_b ⊙ exp(α(z_a)) + μ(z_a), with
    log|det ∂x/∂z| = Σ α(z_a); inverse: z_b = (x_b − μ(x_a)) ⊙ exp(−α(x_a)). (μ, α) come
    from one :class:`~invertible.nn.ResNet` pass over the kept half, so **both directions are
    one parallel pass**. Zero-initialised output: a fresh layer is the identity. Alternate
    ``parity``: the two parities transform every channel exactly once.

    Args:
        channels: C ≥ 2, channels of the input.
        parity: 0 keeps the first C // 2 channels, 1 keeps the others.
        hidden_channels, num_blocks, normalization, log_scale, log_scale_bound,
        elementwise, activation: as in :class:`CheckerboardCoupling`.
        net: a custom network ``[B, C_kept, H, W] → [B, P·C_changed, H, W]``.

    Example:
        >>> import torch
        >>> layer = ChannelCoupling(4, parity=1, hidden_channels=8, num_blocks=1)
        >>> z = torch.randn(2, 4, 2, 2)
        >>> torch.allclose(layer.inverse(layer(z)[0])[0], z)
        True
    """

    def __init__(
        self,
        channels: int,
        *,
        parity: int = 0,
        hidden_channels: int = 64,
        num_blocks: int = 2,
        normalization: str = "batch",
        log_scale: str = "tanh",
        log_scale_bound: float | None = 5.0,
        elementwise: ElementwiseMap | None = None,
        net: nn.Module | None = None,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        if channels < 2:
            raise ValueError(f"channels: a channel-wise coupling needs C >= 2, got {channels}")
        mask = channel_mask(channels, parity)
        kept, changed = int(mask.sum()), int((~mask).sum())
        super().__init__(changed, elementwise, log_scale, log_scale_bound)
        self.parity = parity % 2
        self.split = channels // 2
        self.net = net or ResNet(
            kept,
            changed * self.elementwise.num_params,
            hidden_channels,
            num_blocks,
            normalization=normalization,
            activation=activation,
        )

    def _run(self, values: Tensor, *, inverse: bool) -> tuple[Tensor, Tensor]:
        first, second = values[:, : self.split], values[:, self.split :]
        kept, changed = (second, first) if self.parity else (first, second)
        params = self._params(self.net(kept), values)
        step = self.elementwise.inverse if inverse else self.elementwise.forward
        changed, ladj = step(changed, params)
        parts = (changed, kept) if self.parity else (kept, changed)
        return torch.cat(parts, dim=1), _sum_event(ladj)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        return self._run(z, inverse=False)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        return self._run(x, inverse=True)

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"parity={self.parity}, log_scale={self.log_scale_mode!r}"


class FactorOut(Transform):
    r"""Factor out channels: the first ``factored`` channels go straight to the latent.

    Normalizing direction: x = [x_a, x_b] (split along channels, x_a the first
    ``factored``), z = [x_a, T⁻¹(x_b)]; generative: x = [z_a, T(z_b)]. The Jacobian is
    block-diagonal with an identity block, so log|det| is that of T on the remaining
    channels. This is RealNVP's multi-scale step (section 3.6): at each scale half of the
    dimensions are declared Gaussian and only the rest is processed further (T being the
    next, coarser scale). Both directions cost one pass of T (parallel if T is).

    Args:
        transform: T, the transform of the remaining channels.
        factored: number of channels that bypass T.

    Example:
        >>> import torch, invertible
        >>> layer = FactorOut(invertible.ActNorm(2), factored=2)
        >>> z, ladj = layer.inverse(torch.randn(8, 4, 2, 2))
        >>> z.shape, ladj.shape
        (torch.Size([8, 4, 2, 2]), torch.Size([8]))
    """

    def __init__(self, transform: Transform, factored: int) -> None:
        super().__init__()
        self.transform = transform
        self.factored = factored

    def _split(self, values: Tensor) -> tuple[Tensor, Tensor]:
        return values[:, : self.factored], values[:, self.factored :]

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        out, rest = self._split(z)
        rest, ladj = self.transform(rest, context)
        return torch.cat([out, rest], dim=1), ladj

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        out, rest = self._split(x)
        rest, ladj = self.transform.inverse(rest, context)
        return torch.cat([out, rest], dim=1), ladj

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"factored={self.factored}"


class MultiScale(Compose):
    r"""RealNVP's multi-scale architecture as one transform x ``[C, H, W]`` ↔ z ``[C, H, W]``.

    Normalizing direction (x → z) at a scale with input ``[C, H, W]`` (Dinh et al., *Density
    estimation using Real NVP*, ICLR 2017, section 3.6):

    1. ``couplings_per_scale`` checkerboard couplings (alternating parity);
    2. squeeze → ``[4C, H/2, W/2]``;
    3. ``couplings_per_scale`` channel-wise couplings (alternating parity);
    4. factor out 2C channels (they are final latents) and run the next scale on the other
       ``[2C, H/2, W/2]``;
    5. unsqueeze the ``[4C, H/2, W/2]`` result back to ``[C, H, W]``.

    The last scale is ``final_couplings`` checkerboard couplings. Step 5 keeps the latent in
    the data's shape (a fixed permutation of the latent elements, log-det 0), so the base
    is ``StandardNormal(C, H, W)``. After every coupling (in the normalizing direction) a
    flow normalisation layer (:class:`BatchNorm`, as in the paper, or :class:`ActNorm`)
    may follow. Total log|det| = Σ over couplings and normalisations. Both directions are
    one parallel pass through every layer. H and W must be divisible by 2^(num_scales−1).

    Args:
        shape: ``(C, H, W)`` of the data.
        num_scales: number of scales (1: couplings only, no squeeze).
        couplings_per_scale: couplings before and after each squeeze (3 in the paper).
        final_couplings: checkerboard couplings of the last scale (4 in the paper).
        hidden_channels: feature maps of each coupling's ResNet.
        num_blocks: residual blocks of each coupling's ResNet.
        normalization: normalisation inside the ResNets (``"batch"``, ``"weight"``,
            ``"none"``).
        flow_norm: flow layer after each coupling: ``"batch"``, ``"actnorm"`` or ``"none"``.
        log_scale: ``"tanh"`` or ``"clamp"`` (see :class:`CheckerboardCoupling`).
        log_scale_bound: soft-clamp bound for ``log_scale="clamp"``.

    Example:
        >>> import torch
        >>> t = MultiScale((1, 4, 4), num_scales=2, hidden_channels=8, num_blocks=1)
        >>> z, ladj = t.inverse(torch.rand(5, 1, 4, 4))
        >>> z.shape, ladj.shape
        (torch.Size([5, 1, 4, 4]), torch.Size([5]))
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        num_scales: int = 2,
        couplings_per_scale: int = 3,
        final_couplings: int = 4,
        hidden_channels: int = 64,
        num_blocks: int = 2,
        normalization: str = "batch",
        flow_norm: str = "batch",
        log_scale: str = "tanh",
        log_scale_bound: float | None = 5.0,
    ) -> None:
        channels, height, width = (int(s) for s in shape)
        factor = 2 ** (num_scales - 1)
        if num_scales < 1:
            raise ValueError(f"num_scales: expected >= 1, got {num_scales}")
        if height % factor or width % factor:
            raise ValueError(
                f"shape: height and width ({height}x{width}) must be divisible by "
                f"2^(num_scales-1) = {factor}; use fewer scales or pad the images"
            )
        if (height // factor) * (width // factor) < 2:
            raise ValueError(
                f"shape: the last scale would be {height // factor}x{width // factor}; a "
                "checkerboard coupling needs at least 2 pixels: use fewer scales"
            )
        if flow_norm not in ("batch", "actnorm", "none"):
            raise ValueError(f"flow_norm: choose 'batch', 'actnorm' or 'none', got {flow_norm!r}")
        self.shape = (channels, height, width)
        options = {
            "hidden_channels": hidden_channels,
            "num_blocks": num_blocks,
            "normalization": normalization,
            "log_scale": log_scale,
            "log_scale_bound": log_scale_bound,
        }

        def coupled(kind: type[ImageCoupling], c: int, count: int) -> list[Transform]:
            layers: list[Transform] = []  # normalizing order
            for i in range(count):
                layers.append(kind(c, parity=i % 2, **options))  # type: ignore[arg-type]
                if flow_norm == "batch":
                    layers.append(BatchNorm(c))
                elif flow_norm == "actnorm":
                    layers.append(ActNorm(c))
            return layers

        def scale(c: int, level: int) -> list[Transform]:
            """The transforms of one scale and below, in the normalizing order."""
            if level == num_scales - 1:
                return coupled(CheckerboardCoupling, c, final_couplings)
            inner = Compose(reversed(scale(2 * c, level + 1)))
            return [
                *coupled(CheckerboardCoupling, c, couplings_per_scale),
                Squeeze(),
                *coupled(ChannelCoupling, 4 * c, couplings_per_scale),
                FactorOut(inner, factored=2 * c),
                Inverse(Squeeze()),
            ]

        # Compose lists the generative order; the recipe above is in the normalizing order.
        super().__init__(reversed(scale(channels, 0)))
