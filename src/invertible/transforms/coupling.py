"""Coupling layers (NICE, RealNVP): one generic layer, any elementwise map.

A coupling layer splits the coordinates into a kept set I1 and a transformed set I2.
Forward (z → x): x_I1 = z_I1, x_I2 = g(z_I2; θ(z_I1)); inverse: z_I2 = g⁻¹(x_I2; θ(x_I1)).
The Jacobian is block-triangular, so log|det| = Σ_{i∈I2} log|g'(z_i)|, and **both
directions are one parallel pass** of the conditioner network θ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from invertible.core import Transform
from invertible.nn.mlp import MLP
from invertible.transforms.elementwise import Additive, Affine, ElementwiseMap

__all__ = ["AdditiveCoupling", "AffineCoupling", "Coupling", "coupling_mask"]


def coupling_mask(
    features: int, kind: str = "alternating", parity: int = 0, *, seed: int | None = None
) -> Tensor:
    """A boolean mask over ``features`` coordinates; ``True`` marks the kept set I1.

    Kinds: ``"alternating"`` (even/odd interleaving, NICE and RealNVP on vectors; ``parity``
    1 swaps the roles), ``"half"`` (first half kept; ``parity`` 1 keeps the second half),
    ``"random"`` (a random half, drawn from ``seed``; ``parity`` 1 gives the complement).

    Example:
        >>> coupling_mask(5)
        tensor([ True, False,  True, False,  True])
        >>> coupling_mask(4, "half", parity=1)
        tensor([False, False,  True,  True])
    """
    if features < 2:
        raise ValueError(f"features: a coupling layer needs at least 2 features, got {features}")
    index = torch.arange(features)
    if kind == "alternating":
        mask = index % 2 == 0
    elif kind == "half":
        mask = index < (features + 1) // 2
    elif kind == "random":
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        chosen = torch.randperm(features, generator=generator)[: (features + 1) // 2]
        mask = torch.zeros(features, dtype=torch.bool)
        mask[chosen] = True
    else:
        raise ValueError(f"kind: unknown mask {kind!r}; choose 'alternating', 'half' or 'random'")
    return ~mask if parity % 2 else mask


def _layout(kept: list[int], features: int) -> tuple[str, bool] | None:
    """``("halves" | "alternating", kept_first)`` for a kept set that is a contiguous
    prefix/suffix or the even/odd coordinates, else ``None``.

    Example:
        >>> _layout([0, 2, 4], 5), _layout([2, 3], 4), _layout([0, 3], 4)
        (('alternating', True), ('halves', False), None)
    """
    first = kept[0] == 0
    if kept == list(range(1 - first, features, 2)):
        return "alternating", first
    if kept == list(range(kept[0], kept[0] + len(kept))) and (first or kept[-1] == features - 1):
        return "halves", first
    return None


def _interleave(even: Tensor, odd: Tensor) -> Tensor:
    """Columns ``even`` at 0, 2, 4, ... and ``odd`` at 1, 3, ... (``even`` has as many or
    one more): one ``stack``, whose backward hands out strided views of the gradient,
    where slice assignments into an empty tensor would zero-fill and copy it twice.

    Example:
        >>> _interleave(torch.tensor([[0, 2, 4]]), torch.tensor([[1, 3]]))
        tensor([[0, 1, 2, 3, 4]])
    """
    n = odd.shape[1]
    pairs = torch.stack([even[:, :n], odd], dim=2).flatten(1)
    return pairs if even.shape[1] == n else torch.cat([pairs, even[:, n:]], dim=1)


def _deinterleave(values: Tensor) -> tuple[Tensor, Tensor]:
    """Columns 0, 2, 4, ... and 1, 3, ... of ``values`` (the inverse of
    :func:`_interleave`), as views of it where the width allows.

    Example:
        >>> _deinterleave(torch.tensor([[0, 1, 2, 3, 4]]))
        (tensor([[0, 2, 4]]), tensor([[1, 3]]))
    """
    if values.stride(1) != 1:
        values = values.contiguous()
    n = values.shape[1] // 2
    if values.shape[1] % 2 == 0:
        even, odd = values.unflatten(1, (n, 2)).unbind(2)
        return even, odd
    head, last = values.split([2 * n, 1], dim=1)
    even, odd = head.unflatten(1, (n, 2)).unbind(2)
    return torch.cat([even, last], dim=1), odd


class Coupling(Transform):
    r"""Generic coupling layer: x_I2 = g(z_I2; θ(z_I1, context)), x_I1 = z_I1.

    Both directions are one parallel pass. The conditioner θ outputs ``num_params``
    parameters per transformed coordinate for the elementwise map ``g``
    (:class:`~invertible.transforms.elementwise.Additive` gives NICE,
    :class:`~invertible.transforms.elementwise.Affine` RealNVP). The mask is a buffer, so a
    random mask survives save/load.

    Args:
        mask: boolean tensor ``[features]``; ``True`` marks the kept (conditioning) set I1.
        elementwise: the elementwise map g.
        hidden_features: hidden widths of the default MLP conditioner.
        context_features: width of the conditioning context (0: unconditional).
        activation: nonlinearity of the default conditioner.
        net: a custom conditioner ``net(z_I1, context) -> [batch, |I2| * num_params]``
            (overrides ``hidden_features``/``activation``).
        identity_init: start the default conditioner's last layer at zero, so that the
            fresh layer is the identity map; ``False`` keeps PyTorch's default
            initialisation there (see :class:`AffineCoupling` for the trade-off).

    Example:
        >>> import torch
        >>> from invertible.transforms.elementwise import Affine
        >>> layer = Coupling(coupling_mask(4), Affine(), hidden_features=(16,))
        >>> x, ladj = layer(torch.randn(3, 4))
        >>> ladj.shape
        torch.Size([3])
    """

    def __init__(
        self,
        mask: Tensor,
        elementwise: ElementwiseMap,
        hidden_features: Sequence[int] = (256, 256),
        *,
        context_features: int = 0,
        activation: Callable[[], nn.Module] = nn.ReLU,
        net: nn.Module | None = None,
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.dim() != 1 or not mask.any() or mask.all():
            raise ValueError("mask: expected a 1-D boolean mask with both True and False entries")
        kept, changed = mask.nonzero().flatten(), (~mask).nonzero().flatten()
        self.register_buffer("mask", mask)
        self.register_buffer("kept", kept)
        self.register_buffer("changed", changed)
        # Position of every coordinate in cat([kept, changed]): undoes the split in one gather.
        self.register_buffer("merge", torch.argsort(torch.cat([kept, changed])))
        self._refresh_layout()
        self.register_load_state_dict_post_hook(self._after_load)
        self.elementwise = elementwise
        self.net = net or MLP(
            len(kept) + context_features,
            len(changed) * elementwise.num_params,
            hidden_features,
            activation=activation,
            zero_init=identity_init,
        )

    def _refresh_layout(self) -> None:
        # Half and alternating masks split with ``split``/``unbind`` and merge with
        # ``cat``/``stack``, whose backward passes hand each part its piece of one gradient
        # (a slice's backward zero-fills a full-width gradient per part, the largest cost of
        # a step at D = 784); other masks take two ``index_select`` and a gather.
        self._layout: tuple[str, bool] | None = None
        if self.kept.device.type != "meta":
            self._layout = _layout(self.kept.tolist(), self.mask.numel())

    def _after_load(self, module: nn.Module, incompatible_keys: object) -> None:
        """Load-state-dict post hook (a method, so the layer pickles)."""
        self._refresh_layout()

    def _params(self, kept: Tensor, context: Tensor | None) -> Tensor:
        # Under autocast the conditioner runs in low precision; the elementwise map and its
        # log-determinant run in the dtype of the data.
        params = self.net(kept, context).to(kept.dtype)
        return params.view(kept.shape[0], self.changed.numel(), self.elementwise.num_params)

    def _run(
        self, values: Tensor, context: Tensor | None, *, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        step = self.elementwise.inverse if inverse else self.elementwise.forward
        if self._layout is None or values.dim() != 2:
            kept = values.index_select(1, self.kept)
            changed = values.index_select(1, self.changed)
            changed, ladj = step(changed, self._params(kept, context))
            out = torch.cat([kept, changed], dim=1).index_select(1, self.merge)
            return out, ladj.sum(dim=1)
        kind, kept_first = self._layout
        if kind == "halves":
            first = len(self.kept if kept_first else self.changed)
            parts = values.split([first, values.shape[1] - first], dim=1)
        else:
            parts = _deinterleave(values)
        kept, changed = parts if kept_first else parts[::-1]
        kept = kept.contiguous()  # once, instead of inside every product that uses it
        changed, ladj = step(changed, self._params(kept, context))
        pieces = (kept, changed) if kept_first else (changed, kept)
        out = torch.cat(pieces, dim=1) if kind == "halves" else _interleave(*pieces)
        return out, ladj.sum(dim=1)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        return self._run(z, context, inverse=False)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        return self._run(x, context, inverse=True)


class AdditiveCoupling(Coupling):
    r"""NICE's additive coupling: x_I2 = z_I2 + m(z_I1), x_I1 = z_I1; log|det| = 0.

    Volume preserving; both directions are one parallel pass. Dinh, Krueger & Bengio,
    *NICE: Non-linear Independent Components Estimation*, 2014, section 3.2.

    Args:
        features: number of coordinates D.
        mask: a mask kind for :func:`coupling_mask` or an explicit boolean mask.
        parity: which half is kept (alternate it between layers).
        hidden_features: hidden widths of the coupling network m.
        context_features: width of the conditioning context.

    Example:
        >>> import torch
        >>> layer = AdditiveCoupling(4, hidden_features=(8,))
        >>> layer(torch.randn(2, 4))[1]
        tensor([0., 0.])
    """

    def __init__(
        self,
        features: int,
        *,
        mask: str | Tensor = "alternating",
        parity: int = 0,
        hidden_features: Sequence[int] = (1000,) * 5,
        context_features: int = 0,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        if isinstance(mask, str):
            mask = coupling_mask(features, mask, parity)
        super().__init__(
            mask,
            Additive(),
            hidden_features,
            context_features=context_features,
            activation=activation,
        )


class AffineCoupling(Coupling):
    r"""RealNVP's affine coupling: x_I2 = (z_I2 + b(z_I1)) ⊙ exp(α(z_I1)), x_I1 = z_I1.

    log|det ∂x/∂z| = Σ_{i∈I2} α_i(z_I1); the inverse is z_I2 = x_I2 ⊙ exp(−α(x_I1)) − b(x_I1).
    Both directions are one parallel pass. α is soft clamped to
    ``(-log_scale_bound, log_scale_bound)``; ``shift="data"`` gives the paper's
    x_I2 = z_I2 ⊙ exp(α) + μ instead (the same family of maps, trained less well on data of
    small scale; see :class:`~invertible.transforms.elementwise.Affine`). Dinh,
    Sohl-Dickstein & Bengio, *Density estimation using Real NVP*, ICLR 2017, section 3.3.

    ``identity_init=True`` (the layer's default) starts the conditioner's last layer at
    zero, so the fresh layer is the identity. The :class:`~invertible.RealNVP` preset uses
    ``False``: with zero last layers no hidden unit of a coupling network gets a gradient
    until the last layer has moved, and on ``patches`` the random start trained to a
    higher likelihood with a narrower spread over seeds (``benchmarks/README.md``,
    "quality").

    Args:
        features: number of coordinates D.
        mask: a mask kind for :func:`coupling_mask` or an explicit boolean mask.
        parity: which half is kept (alternate it between layers).
        hidden_features: hidden widths of the network computing (μ, α).
        context_features: width of the conditioning context.
        log_scale_bound: soft bound of |α|.
        seed: seed of a ``"random"`` mask.
        shift: ``"latent"`` or ``"data"`` (see above).
        identity_init: start as the identity map (see above).

    Example:
        >>> import torch
        >>> layer = AffineCoupling(4, hidden_features=(8,))
        >>> z = torch.randn(2, 4)
        >>> torch.allclose(layer.inverse(layer(z)[0])[0], z)
        True
    """

    def __init__(
        self,
        features: int,
        *,
        mask: str | Tensor = "alternating",
        parity: int = 0,
        hidden_features: Sequence[int] = (256, 256),
        context_features: int = 0,
        activation: Callable[[], nn.Module] = nn.ReLU,
        log_scale_bound: float | None = 5.0,
        seed: int | None = None,
        shift: str = "latent",
        identity_init: bool = True,
    ) -> None:
        if isinstance(mask, str):
            mask = coupling_mask(features, mask, parity, seed=seed)
        super().__init__(
            mask,
            Affine(log_scale_bound, shift=shift),
            hidden_features,
            context_features=context_features,
            activation=activation,
            identity_init=identity_init,
        )
