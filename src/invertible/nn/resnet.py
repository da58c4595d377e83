"""Convolutional residual networks, the coupling networks of RealNVP on images."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["ResNet", "ResidualBlock"]

_NORMALIZATIONS = ("batch", "weight", "none")


def _conv(in_channels: int, out_channels: int, kernel_size: int, normalization: str) -> nn.Module:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    return weight_norm(conv) if normalization == "weight" else conv


def _norm(channels: int, normalization: str) -> nn.Module:
    return nn.BatchNorm2d(channels) if normalization == "batch" else nn.Identity()


def _check_normalization(normalization: str) -> None:
    if normalization not in _NORMALIZATIONS:
        raise ValueError(
            f"normalization: unknown {normalization!r}; choose one of {', '.join(_NORMALIZATIONS)}"
        )


class ResidualBlock(nn.Module):
    r"""Pre-activation residual block: h + conv(act(norm(conv(act(norm(h)))))).

    He et al., *Identity Mappings in Deep Residual Networks*, ECCV 2016; the building block
    of RealNVP's coupling networks (Dinh et al., ICLR 2017, section 4.1), which normalise
    with batch normalization and weight normalization.

    Args:
        channels: number of feature maps (input = output).
        normalization: ``"batch"`` (BatchNorm2d before each activation), ``"weight"``
            (weight-normalised convolutions, Salimans & Kingma 2016) or ``"none"``.
        activation: the nonlinearity (a module class).

    Example:
        >>> import torch
        >>> ResidualBlock(4)(torch.randn(2, 4, 3, 3)).shape
        torch.Size([2, 4, 3, 3])
    """

    def __init__(
        self,
        channels: int,
        normalization: str = "batch",
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        _check_normalization(normalization)
        self.body = nn.Sequential(
            _norm(channels, normalization),
            activation(),
            _conv(channels, channels, 3, normalization),
            _norm(channels, normalization),
            activation(),
            _conv(channels, channels, 3, normalization),
        )

    def forward(self, h: Tensor) -> Tensor:
        """The network's output for ``x`` (and the context, when given)."""
        return h + self.body(h)


class ResNet(nn.Module):
    r"""Convolutional ResNet ``[B, C_in, H, W] → [B, C_out, H, W]`` (spatial size kept).

    conv3×3 (C_in → hidden) → ``num_blocks`` × :class:`ResidualBlock` → norm → activation →
    conv3×3 (hidden → C_out). As in RealNVP (Dinh, Sohl-Dickstein & Bengio, *Density
    estimation using Real NVP*, ICLR 2017, sections 3.6 and 4.1) it computes the scale and
    shift of an image coupling layer. The last convolution starts at zero
    (``zero_init=True``), so a coupling layer built on it starts as the identity map.

    Args:
        in_channels: input feature maps.
        out_channels: output feature maps.
        hidden_channels: feature maps of the residual blocks.
        num_blocks: number of residual blocks.
        normalization: ``"batch"``, ``"weight"`` or ``"none"`` (see :class:`ResidualBlock`).
        activation: the nonlinearity (a module class).
        zero_init: zero the last convolution's weight and bias.

    Example:
        >>> import torch
        >>> net = ResNet(2, 4, hidden_channels=8, num_blocks=1)
        >>> out = net(torch.randn(3, 2, 4, 4))
        >>> out.shape, bool(out.abs().max() == 0)
        (torch.Size([3, 4, 4, 4]), True)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 64,
        num_blocks: int = 2,
        *,
        normalization: str = "batch",
        activation: Callable[[], nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        _check_normalization(normalization)
        self.stem = _conv(in_channels, hidden_channels, 3, normalization)
        self.blocks = nn.Sequential(
            *(ResidualBlock(hidden_channels, normalization, activation) for _ in range(num_blocks))
        )
        self.head_norm = _norm(hidden_channels, normalization)
        self.head_activation = activation()
        # The output layer is a plain convolution: weight normalisation of a zero weight
        # would divide by zero.
        self.head = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        """The network's output for ``x`` (and the context, when given)."""
        h = self.blocks(self.stem(x))
        return self.head(self.head_activation(self.head_norm(h)))
