r"""MADE: masked autoencoder for distribution estimation (Germain et al., ICML 2015).

One feed-forward network whose weight masks make output i depend only on the inputs that
precede i in an ordering. This is the conditioner of every autoregressive layer of the
library (MAF, IAF, Gaussian autoregressive models, MADE MoG).

Design (see :class:`MADE` for the rules):

* **Masks and degrees are buffers**, so random orderings and random connectivity survive
  ``state_dict`` round trips exactly (Pyro #1839 lost them).
* **No mask multiplication per forward** (single mask set): the weights are *stored
  already masked*. A gradient hook zeroes the gradient of every masked weight, so an
  optimizer never moves them; if something else writes into a weight (``load_state_dict``,
  manual edits), the weight's version counter changes and the mask is re-applied once, in
  place, before the next pass. The forward pass is a plain ``addmm`` per layer.
  With ``num_masks > 1`` the weights are shared by several masks, so the current mask is
  multiplied in once per call (an O(weights) elementwise product, negligible next to the
  O(batch x weights) matmuls).
* **Block-sparse products** (single mask set): since hidden units are sorted by degree,
  every mask is block-triangular, so whole rectangles of each stored (masked) weight are
  zero. The parallel pass splits the rows of each layer into ``G`` groups and multiplies
  each group only by the columns its mask reaches (:func:`block_plan`); forward and
  backward skip the zero rectangles (about (G+1)/(2G) of the dense work for a triangular
  mask). The parameters are the same full weights (slices of them are used), so
  checkpoints, the sequential pass and the masks are unaffected. ``G`` is chosen per layer
  from its size (:attr:`MADE.block_groups` overrides it; 1 gives the dense product).
* **Sorted hidden degrees**: hidden units are grouped by degree, so every mask is
  block-triangular. A hidden unit of degree k depends only on the inputs of position <= k;
  :meth:`MADE.autoregress` uses this to run the *sequential* direction of an autoregressive
  model (sampling a MAF, inverting an IAF) at the cost of about **one** network pass spread
  over D small steps, instead of D full passes.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MADE", "block_plan", "made_ordering"]

Ordering = str | Sequence[int] | Tensor
Step = Callable[[int, Tensor], tuple[Tensor, Any]]


def made_ordering(
    features: int, ordering: Ordering = "natural", *, generator: torch.Generator | None = None
) -> Tensor:
    """The ordering as a permutation: ``order[t]`` is the coordinate at position ``t + 1``.

    ``"natural"`` (0, 1, ..., D-1), ``"reversed"``, ``"random"`` (drawn from ``generator``),
    or an explicit permutation of ``range(features)``.

    Example:
        >>> made_ordering(4, "reversed")
        tensor([3, 2, 1, 0])
    """
    if isinstance(ordering, str):
        if ordering == "natural":
            return torch.arange(features)
        if ordering in ("reversed", "reverse"):
            return torch.arange(features - 1, -1, -1)
        if ordering == "random":
            return torch.randperm(features, generator=generator)
        raise ValueError(
            f"ordering: unknown ordering {ordering!r}; choose 'natural', 'reversed', 'random' "
            "or give a permutation"
        )
    order = torch.as_tensor(ordering, dtype=torch.long).flatten()
    if order.numel() != features or not torch.equal(order.sort().values, torch.arange(features)):
        raise ValueError(f"ordering: expected a permutation of range({features}), got {ordering}")
    return order


def _even_degrees(width: int, low: int, features: int) -> Tensor:
    """``width`` sorted degrees spread evenly over [low, D-1] (all 0 when D = 1)."""
    if features == 1:
        return torch.zeros(width, dtype=torch.long)
    return low + torch.arange(width) * (features - low) // width


def _random_degrees(width: int, low: int, features: int, generator: torch.Generator) -> Tensor:
    """``width`` degrees drawn uniformly from [low, D-1] (MADE eq. 11), then sorted."""
    if features == 1:
        return torch.zeros(width, dtype=torch.long)
    return torch.randint(low, features, (width,), generator=generator).sort().values


Block = tuple[int, int, int, int]


def block_plan(mask: Tensor, groups: int) -> list[Block]:
    """Row groups of a masked weight and the column range each one needs.

    Splits the ``out`` rows of ``mask`` (``[out, in]``, bool) into ``groups`` contiguous
    groups of (nearly) equal size and returns ``(row_lo, row_hi, col_lo, col_hi)`` per
    group: the smallest column range holding every ``True`` entry of those rows
    (``col_lo == col_hi`` for rows without any). A weight that is zero outside ``mask``
    satisfies ``x @ W.T == concat_g(x[:, col_lo:col_hi] @ W[rows, col_lo:col_hi].T)``.

    Example:
        >>> block_plan(torch.ones(4, 4, dtype=torch.bool).tril(), 2)
        [(0, 2, 0, 2), (2, 4, 0, 4)]
    """
    rows, _cols = mask.shape
    groups = max(1, min(groups, rows))
    edges = [rows * g // groups for g in range(groups + 1)]
    plan: list[Block] = []
    for lo, hi in itertools.pairwise(edges):
        if hi == lo:
            continue
        used = mask[lo:hi].any(dim=0).nonzero().flatten()
        if used.numel() == 0:
            plan.append((lo, hi, 0, 0))
        else:
            plan.append((lo, hi, int(used[0]), int(used[-1]) + 1))
    return plan


class _Plan:
    """Block plan of one masked layer (see :func:`block_plan`) and a fast way to zero the
    masked-out entries of a weight-shaped tensor with it (:meth:`zero_outside`): the
    rectangles outside the blocks are filled with zeros, and inside each block only the
    column range ``[p0, p1)`` that holds masked-out entries is multiplied by the mask
    (``masked_fill_`` with a boolean mask is an order of magnitude slower than either)."""

    __slots__ = ("blocks", "covered", "device", "dtype", "keep", "partial")

    def __init__(self, mask: Tensor, groups: int, dtype: torch.dtype) -> None:
        self.blocks = block_plan(mask, groups)
        area = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in self.blocks)
        self.covered = area / max(mask.numel(), 1)  # fraction of the dense product computed
        self.device, self.dtype = mask.device, dtype
        self.partial: list[tuple[int, int]] = []
        self.keep: list[Tensor] = []
        for r0, r1, c0, c1 in self.blocks:
            holes = (~mask[r0:r1, c0:c1]).any(dim=0).nonzero().flatten()
            if holes.numel() == 0:
                self.partial.append((c0, c0))
                self.keep.append(mask.new_empty(0, dtype=dtype))
            else:
                p0, p1 = c0 + int(holes[0]), c0 + int(holes[-1]) + 1
                self.partial.append((p0, p1))
                self.keep.append(mask[r0:r1, p0:p1].to(dtype))

    def matches(self, mask: Tensor, dtype: torch.dtype) -> bool:
        return self.device == mask.device and self.dtype == dtype

    def zero_outside(self, values: Tensor) -> Tensor:
        """Zero, in place, the entries of ``values`` (``[out, in]``) outside the mask."""
        for (r0, r1, c0, c1), (p0, p1), keep in zip(
            self.blocks, self.partial, self.keep, strict=True
        ):
            values[r0:r1, :c0].zero_()
            values[r0:r1, c1:].zero_()
            if p1 > p0:
                values[r0:r1, p0:p1].mul_(keep)
        return values


class _BlockLinear(torch.autograd.Function):
    """``x @ W.T + b`` computing only the blocks of a :class:`_Plan` (W is zero elsewhere).

    The weight gradient is computed block by block and masked exactly (zero outside the
    blocks, masked entries inside them zeroed), then announced to the MADE's gradient hook
    (``clean``), which then has nothing left to do.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, plan, clean):  # type: ignore[override]
        out = x.new_empty(x.shape[0], weight.shape[0])
        for r0, r1, c0, c1 in plan.blocks:
            if c1 > c0:
                torch.addmm(bias[r0:r1], x[:, c0:c1], weight[r0:r1, c0:c1].t(), out=out[:, r0:r1])
            else:
                out[:, r0:r1] = bias[r0:r1]
        ctx.save_for_backward(x, weight)
        ctx.plan, ctx.clean = plan, clean
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        plan: _Plan = ctx.plan
        blocks = plan.blocks
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = x.new_empty(x.shape)
            first = max(range(len(blocks)), key=lambda j: blocks[j][3] - blocks[j][2])
            r0, r1, c0, c1 = blocks[first]
            grad_x[:, :c0].zero_()
            grad_x[:, c1:].zero_()
            if c1 > c0:
                torch.mm(grad[:, r0:r1], weight[r0:r1, c0:c1], out=grad_x[:, c0:c1])
            for j, (r0, r1, c0, c1) in enumerate(blocks):
                if j != first and c1 > c0:
                    grad_x[:, c0:c1].addmm_(grad[:, r0:r1], weight[r0:r1, c0:c1])
        if ctx.needs_input_grad[1]:
            grad_w = weight.new_empty(weight.shape)
            gt = grad.t()
            for r0, r1, c0, c1 in blocks:
                if c1 > c0:
                    torch.mm(gt[r0:r1], x[:, c0:c1], out=grad_w[r0:r1, c0:c1])
            plan.zero_outside(grad_w)
            if ctx.clean is not None:
                ctx.clean(grad_w)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=0)
        return grad_x, grad_w, grad_b, None, None


_MASK_GROUPS = 8
"""Row groups of the plan that re-applies masks (finer: less of the weight is multiplied)."""


def _auto_groups(rows: int, cols: int, batch: int) -> int:
    """Row groups of a block-sparse product: 1 (dense) for small products, where the
    per-block overhead would outweigh the skipped work, else 4 (measured on CPU: 4 beats
    2 and 8 for MADEs of width 512 from D = 8 to D = 784)."""
    return 1 if rows * cols * batch < 2**21 else 4


_DENSE_ABOVE = 0.85
"""A block plan covering more than this fraction of the weight is not worth its overhead."""


def _mask_hook(module_ref: weakref.ref, index: int) -> Callable[[Tensor], Tensor | None]:
    def hook(grad: Tensor) -> Tensor | None:
        module = module_ref()
        if module is None or module.num_masks != 1:
            return None
        # A gradient produced (and masked) by the block-sparse product alone is passed
        # through; anything else (dense or sequential passes, sums of several) is masked.
        if module._clean.pop(index, None) == (grad.data_ptr(), grad._version, grad.shape):
            return None
        return module._zero_masked(index, grad.clone())

    return hook


class MADE(nn.Module):
    r"""Masked MLP with the autoregressive property (Germain et al., *MADE*, ICML 2015).

    Every input coordinate gets its position p(i) in 1..D in the ordering, every hidden
    unit a degree m in [1, D-1] ([0, D-1] with a context: degree-0 units see only the
    context, so that the first conditional depends on it too). The masks are

    .. math::

        M^{1}_{k,i} = [m^1_k \ge p(i)], \qquad M^{l}_{k,j} = [m^l_k \ge m^{l-1}_j],
        \qquad M^{out}_{i,k} = [p(i) > m^L_k],

    so output i depends only on inputs of position < p(i): the Jacobian of the outputs
    w.r.t. the inputs is strictly triangular in the ordering. Hidden degrees are assigned
    **sorted** (units grouped by degree; evenly spread for the first mask, uniformly random
    in [min degree below, D-1] for further masks), so masks are block-triangular and the
    sequential direction can be evaluated incrementally (:meth:`autoregress`).

    Residual variant (``num_blocks > 0``): an input masked layer to width
    ``hidden_features[0]``, ``num_blocks`` residual blocks
    h ← h + W₂·act(W₁·act(h)) with hidden-to-hidden masks of the same degrees, then the
    masked output layer. Context (``context_features > 0``) feeds every hidden layer (and
    every residual block) through an *unmasked* linear map: every output may depend on it.

    Connectivity-agnostic training (MADE §3.3): ``num_masks = K`` stores K orderings and
    sets of hidden degrees sharing one set of weights; mask 0 uses ``ordering``, masks
    1..K-1 random orderings. :meth:`set_mask` / :meth:`next_mask` choose the current one
    (a buffer, saved with the model); flows average the density over the K masks at
    evaluation (see ``GaussianAR``).

    The last layer starts at zero: a fresh MADE outputs zeros, so a fresh affine
    autoregressive layer is the identity.

    Args:
        features: number of input coordinates D.
        hidden_features: hidden widths (plain) or ``(width,)`` for the residual variant.
        num_params: outputs per coordinate (2 for affine: shift and log-scale).
        context_features: width of an unmasked conditioning input (0: none).
        ordering: ``"natural"``, ``"reversed"``, ``"random"`` or a permutation.
        num_masks: number of connectivity-agnostic masks K.
        num_blocks: residual blocks (0: a plain masked MLP).
        activation: hidden nonlinearity (module class).
        seed: seed of random orderings and degrees (``None``: drawn from torch's RNG).

    Output: ``[batch, D, num_params]`` in the **original** coordinate order.

    Example:
        >>> import torch
        >>> made = MADE(3, hidden_features=(8, 8), num_params=2, ordering="reversed")
        >>> made(torch.randn(5, 3)).shape
        torch.Size([5, 3, 2])
        >>> made.ordering
        tensor([2, 1, 0])
    """

    def __init__(
        self,
        features: int,
        hidden_features: Sequence[int] = (512, 512),
        *,
        num_params: int = 2,
        context_features: int = 0,
        ordering: Ordering = "natural",
        num_masks: int = 1,
        num_blocks: int = 0,
        activation: Callable[[], nn.Module] = nn.ReLU,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        hidden_features = tuple(int(h) for h in hidden_features)
        if features < 1:
            raise ValueError(f"features: expected at least 1, got {features}")
        if not hidden_features:
            raise ValueError("hidden_features: MADE needs at least one hidden layer")
        if num_masks < 1:
            raise ValueError(f"num_masks: expected at least 1, got {num_masks}")
        if num_blocks > 0 and len(set(hidden_features)) != 1:
            raise ValueError("hidden_features: the residual MADE uses one width, e.g. (256,)")
        self.features, self.num_params = features, num_params
        self.context_features, self.num_masks, self.num_blocks = (
            context_features,
            num_masks,
            num_blocks,
        )
        self.activation = activation()
        if seed is None:
            seed = int(torch.randint(2**31 - 1, ()))
        generator = torch.Generator().manual_seed(seed)
        # Lowest hidden degree: 1 (MADE), or 0 with a context, so that units of degree 0,
        # which see only the context, let the first conditional p(x_1 | context) depend on it.
        low = 0 if context_features or features == 1 else 1

        # Layer widths: plain = hidden_features; residual = input layer + 2 per block.
        widths = (
            list(hidden_features)
            if num_blocks == 0
            else [hidden_features[0]] * (1 + 2 * num_blocks)
        )
        self.hidden_widths = widths
        self.layers = nn.ModuleList()
        width_in = features
        for width in widths:
            self.layers.append(nn.Linear(width_in, width))
            width_in = width
        self.layers.append(nn.Linear(width_in, features * num_params))
        # Context enters each plain hidden layer / the input layer and each block's first layer.
        self.context_widths = widths if num_blocks == 0 else [widths[0]] + [widths[0]] * num_blocks
        self.context = (
            nn.Linear(context_features, sum(self.context_widths), bias=False)
            if context_features
            else None
        )

        orders, degree_sets = [], []
        for k in range(num_masks):
            if k == 0:
                order = made_ordering(features, ordering, generator=generator)
                hidden = [_even_degrees(w, low, features) for w in widths]
                if num_blocks > 0:
                    hidden = [hidden[0]] * len(widths)
            else:
                order = torch.randperm(features, generator=generator)
                first = _random_degrees(widths[0], low, features, generator)
                hidden = [first]
                for w in widths[1:]:
                    if num_blocks > 0:
                        hidden.append(first)
                    else:
                        lo = int(hidden[-1].min()) if hidden[-1].numel() else low
                        hidden.append(_random_degrees(w, lo, features, generator))
            orders.append(order)
            degree_sets.append(hidden)
        order = torch.stack(orders)  # [K, D]
        positions = torch.argsort(order, dim=1) + 1  # [K, D]: position of each coordinate
        self.register_buffer("orderings", order)
        self.register_buffer("input_degrees", positions)
        for layer_index in range(len(widths)):
            self.register_buffer(
                f"hidden_degrees_{layer_index}",
                torch.stack([degrees[layer_index] for degrees in degree_sets]),
            )
        self.register_buffer("mask_index", torch.zeros((), dtype=torch.long))

        # Masks [K, out, in] (bool), one per linear layer.
        for index in range(len(self.layers)):
            masks = []
            for k in range(num_masks):
                masks.append(self._build_mask(index, positions[k], degree_sets[k]))
            self.register_buffer(f"mask_{index}", torch.stack(masks))
        self._reset_parameters()
        self._versions: list[tuple[int, int]] = [(-1, -1)] * len(self.layers)
        self._hooked: dict[int, int] = {}
        self.block_groups: int | None = None
        """Row groups of the block-sparse parallel pass (``None``: chosen per layer from its
        size; 1: dense products). Only used with a single mask set."""
        self.step_counter = 0  # number of network passes (see ``autoregress``), for benchmarks
        # Python-side copies of the integer structure (ordering, degree blocks, current mask),
        # so the sequential loop never reads device tensors (works on ``meta`` and avoids GPU
        # synchronisations); refreshed whenever a state dict is loaded.
        self._refresh()
        self.register_load_state_dict_post_hook(lambda module, _: module._refresh())

    # -- construction ----------------------------------------------------------------------
    def _build_mask(self, index: int, positions: Tensor, hidden: list[Tensor]) -> Tensor:
        layers = len(self.layers)
        if index == 0:
            return hidden[0][:, None] >= positions[None, :]
        if index == layers - 1:
            out = positions.repeat_interleave(self.num_params)  # row i*P + p -> coordinate i
            return out[:, None] > hidden[-1][None, :]
        return hidden[index][:, None] >= hidden[index - 1][None, :]

    @torch.no_grad()
    def _reset_parameters(self) -> None:
        """Init by the *effective* fan-in of each unit (masks cut connections), last layer 0."""
        for index, layer in enumerate(self.layers):
            if index == len(self.layers) - 1:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
                continue
            mask = self._masks[index][0]
            fan_in = mask.sum(dim=1, keepdim=True).clamp_min(1).to(layer.weight.dtype)
            bound = fan_in.rsqrt()
            layer.weight.uniform_(-1, 1).mul_(bound)
            layer.bias.uniform_(-1, 1).mul_(bound.squeeze(1))
            if self.num_masks == 1:
                layer.weight.masked_fill_(~mask, 0)

    def _refresh(self) -> None:
        self._plans: dict[tuple[int, int], _Plan] = {}
        self._clean: dict[int, tuple[int, int, torch.Size]] = {}
        if self.orderings.device.type == "meta":
            return
        self._mask = int(self.mask_index)
        self._orders: list[list[int]] = self.orderings.tolist()
        self._bounds: list[list[list[int]]] = []  # [mask][layer]: units of degree d: [d]:[d+1]
        D = self.features
        for k in range(self.num_masks):
            per_layer = []
            for layer_index in range(len(self.hidden_widths)):
                degrees = getattr(self, f"hidden_degrees_{layer_index}")[k].cpu()
                edges = torch.searchsorted(degrees, torch.arange(D + 1)).tolist()
                per_layer.append([*edges, degrees.numel()])
            self._bounds.append(per_layer)

    @property
    def _masks(self) -> list[Tensor]:
        return [getattr(self, f"mask_{i}") for i in range(len(self.layers))]

    def _cached_plan(self, index: int, groups: int) -> _Plan:
        mask, dtype = self._masks[index][0], self.layers[index].weight.dtype
        plan = self._plans.get((index, groups))
        if plan is None or not plan.matches(mask, dtype):
            plan = self._plans[index, groups] = _Plan(mask, groups, dtype)
        return plan

    def _zero_masked(self, index: int, values: Tensor) -> Tensor:
        """Zero, in place, the entries of ``values`` outside layer ``index``'s mask."""
        mask = self._masks[index][0]
        if mask.device.type == "meta":  # no data: no plan can be computed
            return values.masked_fill_(~mask, 0)
        return self._cached_plan(index, _MASK_GROUPS).zero_outside(values)

    def _plan(self, index: int, batch: int) -> _Plan | None:
        """Block plan of layer ``index`` for the parallel pass, or ``None`` for dense."""
        if self.num_masks != 1 or self.orderings.device.type == "meta":
            return None
        weight = self.layers[index].weight
        groups = self.block_groups
        if groups is None:
            groups = _auto_groups(weight.shape[0], weight.shape[1], batch)
        if groups <= 1:
            return None
        plan = self._cached_plan(index, groups)
        return None if plan.covered > _DENSE_ABOVE else plan

    def _linear(self, index: int, h: Tensor, weight: Tensor) -> Tensor:
        plan = self._plan(index, h.shape[0]) if h.dim() == 2 else None
        if plan is None:
            return F.linear(h, weight, self.layers[index].bias)
        clean = None
        if weight.requires_grad and torch.is_grad_enabled():
            self._clean.pop(index, None)
            ref = weakref.ref(self)

            def clean(grad_w: Tensor, ref: weakref.ref = ref, index: int = index) -> None:
                module = ref()
                if module is not None:
                    module._clean[index] = (grad_w.data_ptr(), grad_w._version, grad_w.shape)

        return _BlockLinear.apply(h, weight, self.layers[index].bias, plan, clean)

    # -- masks -----------------------------------------------------------------------------
    @property
    def ordering(self) -> Tensor:
        """The current ordering: ``ordering[t]`` is the coordinate at position ``t + 1``."""
        return self.orderings[self._mask]

    @property
    def current_mask(self) -> int:
        """Index of the connectivity-agnostic mask in use."""
        return self._mask

    def hidden_degrees(self, layer: int) -> Tensor:
        """Degrees of the hidden units of ``layer`` under the current mask (sorted)."""
        return getattr(self, f"hidden_degrees_{layer}")[self._mask]

    def set_mask(self, index: int) -> None:
        """Use connectivity-agnostic mask ``index`` (0..num_masks-1) from now on."""
        if not 0 <= index < self.num_masks:
            raise ValueError(f"index: expected 0..{self.num_masks - 1}, got {index}")
        self.mask_index.fill_(index)
        self._mask = index

    def next_mask(self) -> int:
        """Cycle to the next connectivity-agnostic mask; returns its index."""
        index = (self._mask + 1) % self.num_masks
        self.set_mask(index)
        return index

    def _register_hooks(self) -> None:
        for index, layer in enumerate(self.layers):
            weight = layer.weight
            if self._hooked.get(index) != id(weight) and weight.requires_grad:
                weight.register_hook(_mask_hook(weakref.ref(self), index))
                self._hooked[index] = id(weight)

    def weights(self) -> list[Tensor]:
        """The effective (masked) weight of every linear layer under the current mask.

        With one mask the stored weights *are* the masked weights (re-masked in place only
        when their version counter shows an outside write); with several masks the current
        mask is multiplied in.
        """
        masks = self._masks
        if self.num_masks > 1:
            k = self._mask
            return [layer.weight * mask[k] for layer, mask in zip(self.layers, masks)]
        self._register_hooks()
        weights = []
        for index, (layer, _mask) in enumerate(zip(self.layers, masks)):
            weight = layer.weight
            # An outside write (optimizer step, load_state_dict, .to()) changes the version
            # counter or the storage: re-apply the mask once, in place.
            if (weight._version, weight.data_ptr()) != self._versions[index]:
                with torch.no_grad():
                    self._zero_masked(index, weight)
                self._versions[index] = (weight._version, weight.data_ptr())
            weights.append(weight)
        return weights

    def _context_terms(self, context: Tensor | None, batch: int) -> list[Tensor | None]:
        if self.context is None:
            return [None] * len(self.context_widths)
        if context is None:
            raise ValueError(
                f"context: this MADE is conditional and needs a context of shape "
                f"[batch, {self.context_features}]"
            )
        return list(self.context(context).expand(batch, -1).split(self.context_widths, dim=1))

    # -- parallel pass ---------------------------------------------------------------------
    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """All conditionals' parameters in one pass: ``[batch, D, num_params]``."""
        self.step_counter += 1
        weights = self.weights()
        layers = self.layers
        ctx = self._context_terms(context, x.shape[0])
        act = self.activation
        linear = self._linear
        h = linear(0, x, weights[0])
        if ctx[0] is not None:
            h = h + ctx[0]
        if self.num_blocks == 0:
            for i in range(1, len(layers) - 1):
                h = linear(i, act(h), weights[i])
                if ctx[i] is not None:
                    h = h + ctx[i]
        else:
            for b in range(self.num_blocks):
                i = 1 + 2 * b
                t = linear(i, act(h), weights[i])
                if ctx[1 + b] is not None:
                    t = t + ctx[1 + b]
                h = h + linear(i + 1, act(t), weights[i + 1])
        out = linear(len(layers) - 1, act(h), weights[-1])
        return out.view(x.shape[0], self.features, self.num_params)

    # -- sequential direction --------------------------------------------------------------
    def autoregress(
        self,
        step: Step,
        batch: int,
        context: Tensor | None = None,
        *,
        like: Tensor | None = None,
        method: str = "incremental",
    ) -> tuple[Tensor, list[Any]]:
        r"""Generate the D coordinates one at a time, in the ordering.

        For position t = 1..D with coordinate i = ``ordering[t-1]``, the parameters of
        conditional i (computed from the values already generated) are passed to
        ``step(i, params[batch, num_params]) -> (value_i[batch], extra)``; ``value_i`` is
        fed back as input i. Returns the values ``[batch, D]`` and the D extras in order of
        generation. This is MAF sampling (``step`` = the affine map u → x) and IAF
        inversion (``step`` = x → u).

        ``method="incremental"`` (default) evaluates each hidden unit exactly once, as soon
        as its inputs are known: after coordinate at position t is generated, its
        contribution is added to the first layer's pre-activations (a rank-1 update), and
        the hidden units of degree t (a contiguous block, thanks to sorted degrees) of every
        layer become final and are pushed to the next layer. Total cost: about one network
        pass (each weight is used once) in D small steps. ``method="naive"`` runs D full
        passes (what other libraries do); it is kept for checks and benchmarks.
        Both are differentiable.

        Example:
            >>> import torch
            >>> made = MADE(3, hidden_features=(8,), num_params=1)
            >>> values, _ = made.autoregress(lambda i, p: (p[:, 0] + 1.0, None), batch=2)
            >>> values
            tensor([[1., 1., 1.],
                    [1., 1., 1.]], grad_fn=<...>)
        """
        if like is None:
            like = self.layers[0].weight
        if method == "naive":
            return self._autoregress_naive(step, batch, context, like)
        if method != "incremental":
            raise ValueError(f"method: expected 'incremental' or 'naive', got {method!r}")
        return self._autoregress_incremental(step, batch, context, like)

    def _autoregress_naive(
        self, step: Step, batch: int, context: Tensor | None, like: Tensor
    ) -> tuple[Tensor, list[Any]]:
        values = like.new_zeros(batch, self.features)
        extras: list[Any] = [None] * self.features
        order = self._orders[self._mask]
        for i in order:
            params = self(values, context)[:, i]
            value, extras_i = step(i, params)
            values = values.index_copy(1, torch.tensor([i], device=values.device), value[:, None])
            extras[i] = extras_i
        return values, [extras[i] for i in order]

    def _autoregress_incremental(
        self, step: Step, batch: int, context: Tensor | None, like: Tensor
    ) -> tuple[Tensor, list[Any]]:
        self.step_counter += 1
        D, P = self.features, self.num_params
        weights = self.weights()
        layers, act = self.layers, self.activation
        ctx = self._context_terms(context, batch)
        inplace = not torch.is_grad_enabled()
        num_hidden = len(self.hidden_widths)

        def initial(i: int, extra: Tensor | None) -> Tensor:
            start = layers[i].bias.expand(batch, -1)
            start = start + extra if extra is not None else start
            return start.clone() if inplace else start

        # Pre-activation accumulators of every linear layer (bias and context included).
        if self.num_blocks == 0:
            acc = [initial(i, ctx[i]) for i in range(num_hidden)]
        else:
            acc = [initial(0, ctx[0])]
            for b in range(self.num_blocks):
                acc += [initial(1 + 2 * b, ctx[1 + b]), initial(2 + 2 * b, None)]
        # Without autograd: the last hidden activations go to a buffer and each output is
        # computed lazily from the finished prefix (cheaper than accumulating D*P outputs when
        # D*P > width); with autograd: an output accumulator, updated out of place.
        last = acc[0].new_zeros(batch, self.hidden_widths[-1]) if inplace else None
        acc_out = None if inplace else initial(len(layers) - 1, None)

        # Block of units of each degree, per hidden layer (degrees are sorted).
        bounds = self._bounds[self._mask]

        def add(
            target: Tensor, source: Tensor, weight: Tensor, lo: int, hi: int, start: int
        ) -> Tensor:
            # target += source @ weight[:, lo:hi].T. Units before ``start`` (degree below the
            # source block's) are not connected to it: in place, only the suffix is touched.
            if inplace:
                target[:, start:].addmm_(source, weight[start:, lo:hi].t())
                return target
            return torch.addmm(target, source, weight[:, lo:hi].t())

        def finalize(degree: int) -> None:
            nonlocal acc_out
            if self.num_blocks == 0:
                for layer_index in range(num_hidden):
                    lo, hi = bounds[layer_index][degree], bounds[layer_index][degree + 1]
                    if hi == lo:
                        continue  # no unit of this degree here; layers above may have some
                    h = act(acc[layer_index][:, lo:hi])
                    if layer_index + 1 < num_hidden:
                        start = bounds[layer_index + 1][degree]
                        acc[layer_index + 1] = add(
                            acc[layer_index + 1], h, weights[layer_index + 1], lo, hi, start
                        )
                    elif inplace:
                        last[:, lo:hi] = h
                    else:
                        acc_out = add(acc_out, h, weights[-1], lo, hi, 0)
                return
            lo, hi = bounds[0][degree], bounds[0][degree + 1]
            if hi == lo:
                return
            h = acc[0][:, lo:hi]
            for b in range(self.num_blocks):
                i = 1 + 2 * b
                acc[i] = add(acc[i], act(h), weights[i], lo, hi, lo)
                acc[i + 1] = add(acc[i + 1], act(acc[i][:, lo:hi]), weights[i + 1], lo, hi, lo)
                h = h + acc[i + 1][:, lo:hi]
            if inplace:
                last[:, lo:hi] = act(h)
            else:
                acc_out = add(acc_out, act(h), weights[-1], lo, hi, 0)

        columns: list[Tensor] = []
        extras: list[Any] = []
        order = self._orders[self._mask]
        finalize(0)
        out_weight, out_bias = weights[-1], layers[-1].bias
        for t, i in enumerate(order, start=1):
            if inplace:  # last-layer units of degree < t are final: the prefix [:end]
                end = bounds[-1][t]
                rows = slice(i * P, (i + 1) * P)
                params = torch.addmm(out_bias[rows], last[:, :end], out_weight[rows, :end].t())
            else:
                params = acc_out[:, i * P : (i + 1) * P]
            value, extra = step(i, params)
            columns.append(value)
            extras.append(extra)
            if t == D:
                break
            w = weights[0][:, i]
            if inplace:
                start = bounds[0][t]  # first-layer units of degree >= t see position t
                acc[0][:, start:].addr_(value, w[start:])
            else:
                acc[0] = acc[0] + value[:, None] * w[None, :]
            finalize(t)
        positions = sorted(range(D), key=order.__getitem__)  # argsort: coordinate -> step
        index = torch.tensor(positions, device=columns[0].device)
        values = torch.stack(columns, dim=1).index_select(1, index)
        return values, extras

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, hidden={self.hidden_widths}, "
            f"num_params={self.num_params}, context_features={self.context_features}, "
            f"num_masks={self.num_masks}, num_blocks={self.num_blocks}"
        )
