"""Plain multi-layer perceptrons, the conditioners of coupling layers."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "hidden_widths"]


def hidden_widths(value: Sequence[int], name: str = "hidden_features") -> tuple[int, ...]:
    """Validate a sequence of hidden-layer widths; returns it as a tuple of ints.

    A string is refused (``"64"`` would otherwise read as the widths 6 and 4), and so is a
    single number, a non-integer or a width below 1.

    Example:
        >>> hidden_widths([64, 64])
        (64, 64)
        >>> hidden_widths("64")
        Traceback (most recent call last):
        ...
        TypeError: hidden_features: expected a sequence of ints such as (64, 64), got '64'
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name}: expected a sequence of ints such as (64, 64), got {value!r}")
    widths = []
    for width in value:
        if not isinstance(width, numbers.Integral) or isinstance(width, bool) or width < 1:
            raise ValueError(f"{name}: every width must be a positive int, got {list(value)}")
        widths.append(int(width))
    return tuple(widths)


class MLP(nn.Sequential):
    """A fully connected network ``in_features → hidden_features... → out_features``.

    The last layer starts at zero (``zero_init=True``), so a coupling or autoregressive
    layer built on it starts as the identity map (nflows #50): training begins from the
    base distribution instead of a random, possibly badly scaled, transform.

    Args:
        in_features: input width (conditioning features plus context features).
        out_features: output width.
        hidden_features: widths of the hidden layers.
        activation: hidden nonlinearity (a module class); ReLU as in NICE and MAF.
        zero_init: zero the last layer's weight and bias.

    Example:
        >>> import torch
        >>> net = MLP(3, 4, hidden_features=(8, 8))
        >>> net(torch.randn(2, 3))
        tensor([[0., 0., 0., 0.],
                [0., 0., 0., 0.]], grad_fn=<AddmmBackward0>)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: Sequence[int] = (256, 256),
        *,
        activation: Callable[[], nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_widths(hidden_features):
            layers += [nn.Linear(width, hidden), activation()]
            width = hidden
        last = nn.Linear(width, out_features)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """The network's output for ``x`` (and the context, when given)."""
        if context is not None:
            x = torch.cat([x, context], dim=-1)
        return super().forward(x)
