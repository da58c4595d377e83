r"""MADE: masked autoencoder for distribution estimation (Germain et al., ICML 2015).

One feed-forward network whose weight masks make output i depend only on the inputs that
precede i in an ordering. This is the conditioner of every autoregressive layer of the
library (MAF, IAF, Gaussian autoregressive models, MADE MoG).

Design (see :class:`MADE` for the rules):

* **Masks and degrees are buffers**, so random orderings and random connectivity survive
  ``state_dict`` round trips exactly (Pyro #1839 lost them).
* **The mask is applied on every pass**, inside the product (``weight ⊙ mask``): the
  autoregressive property cannot be broken by what is written into a weight
  (``param.data`` writes, initialisers, EMA, loaded checkpoints), and the network is an
  ordinary differentiable PyTorch module (autocast, double backward, ``torch.func``,
  ``torch.export``, ``jit.trace``).
* **Block-sparse products**: since hidden units are sorted by degree, every mask is
  block-triangular. The parallel pass of a large layer skips the zero rectangles
  (:func:`~invertible.nn.blocksparse.masked_linear`), about (G+1)/(2G) of the dense work.
* **Sorted hidden degrees** also make the *sequential* direction cheap: a hidden unit of
  degree k depends only on the inputs of position <= k, so :meth:`MADE.autoregress` runs
  sampling of a MAF / inversion of an IAF at the cost of about **one** network pass spread
  over D small steps, instead of D full passes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from invertible.nn.blocksparse import (
    DENSE_ABOVE,
    BlockPlan,
    auto_groups,
    autocast_dtype_of,
    masked_linear,
)
from invertible.nn.masks import (
    Ordering,
    connectivity_mask,
    even_degrees,
    made_ordering,
    random_degrees,
)
from invertible.nn.mlp import hidden_widths

__all__ = ["MADE", "Ordering", "made_ordering"]

Step = Callable[[int, Tensor], tuple[Tensor, Any]]


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

    The last layer starts at zero (``zero_init=True``): a fresh MADE outputs zeros, so a
    fresh affine autoregressive layer is the identity. ``zero_init=False`` keeps PyTorch's
    default initialisation of the last layer (what :class:`~invertible.MAF` uses).

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
        zero_init: start the last layer at zero.

    Output: ``[batch, D, num_params]`` in the **original** coordinate order.

    Example:
        >>> import torch
        >>> made = MADE(3, hidden_features=(8, 8), num_params=2, ordering="reversed")
        >>> made(torch.randn(5, 3)).shape
        torch.Size([5, 3, 2])
        >>> made.ordering
        tensor([2, 1, 0])
    """

    def __init__(  # noqa: PLR0915 (validation, layers, masks and degrees of every mask set)
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
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.zero_init = zero_init
        hidden_features = hidden_widths(hidden_features)
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
                hidden = [even_degrees(w, low, features) for w in widths]
                if num_blocks > 0:
                    hidden = [hidden[0]] * len(widths)
            else:
                order = torch.randperm(features, generator=generator)
                first = random_degrees(widths[0], low, features, generator)
                hidden = [first]
                for w in widths[1:]:
                    if num_blocks > 0:
                        hidden.append(first)
                    else:
                        lo = int(hidden[-1].min()) if hidden[-1].numel() else low
                        hidden.append(random_degrees(w, lo, features, generator))
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
        self.block_groups: int | None = None
        """Row groups of the block-sparse parallel pass (``None``: chosen per layer from its
        size; 1: dense products)."""
        # Python-side copies of the integer structure (ordering, degree blocks, current mask),
        # so the sequential loop never reads device tensors (works on ``meta`` and avoids GPU
        # synchronisations); refreshed whenever a state dict is loaded.
        self._refresh()
        self.register_load_state_dict_post_hook(self._after_load)

    # -- construction ----------------------------------------------------------------------
    def _build_mask(self, index: int, positions: Tensor, hidden: list[Tensor]) -> Tensor:
        if index == 0:
            return connectivity_mask(hidden[0], positions, strict=False)
        if index == len(self.layers) - 1:
            out = positions.repeat_interleave(self.num_params)  # row i*P + p -> coordinate i
            return connectivity_mask(out, hidden[-1], strict=True)
        return connectivity_mask(hidden[index], hidden[index - 1], strict=False)

    @torch.no_grad()
    def _reset_parameters(self) -> None:
        """Init hidden layers by the *effective* fan-in of each unit (masks cut connections);
        the last layer at zero, or PyTorch's default with ``zero_init=False``.
        """
        for index, layer in enumerate(self.layers):
            if index == len(self.layers) - 1:
                if self.zero_init:
                    nn.init.zeros_(layer.weight)
                    nn.init.zeros_(layer.bias)
                continue
            mask = self._masks[index][0]
            fan_in = mask.sum(dim=1, keepdim=True).clamp_min(1).to(layer.weight.dtype)
            bound = fan_in.rsqrt()
            layer.weight.uniform_(-1, 1).mul_(bound)
            layer.bias.uniform_(-1, 1).mul_(bound.squeeze(1))

    def _refresh(self) -> None:
        self._plans: dict[tuple[int, int, int], BlockPlan] = {}
        self._mask_arrays = []
        if self.orderings.device.type == "meta":
            return
        self._mask = int(self.mask_index)
        self._mask_arrays = [mask.cpu().numpy() for mask in self._masks]
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

    def _after_load(self, module: nn.Module, incompatible_keys: Any) -> None:
        """Load-state-dict post hook (a method, so the module pickles)."""
        self._refresh()

    def _plan(self, index: int, batch: int, dtype: torch.dtype | None = None) -> BlockPlan | None:
        """Block plan of layer ``index`` under the current mask for products in ``dtype``
        (default: the weight's), or ``None`` for dense.
        """
        if self.orderings.device.type == "meta":
            return None
        weight = self.layers[index].weight
        groups = self.block_groups
        if groups is None:
            groups = auto_groups(weight.shape[0], weight.shape[1], batch, dtype or weight.dtype)
        if groups <= 1:
            return None
        key = (index, self._mask, groups)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = BlockPlan(self._mask_arrays[index][self._mask], groups)
        return None if plan.covered > DENSE_ABOVE else plan

    def _linear(self, index: int, h: Tensor) -> Tensor:
        layer = self.layers[index]
        mask = self._masks[index][self._mask]
        rows = h.shape[0] if h.dim() == 2 else h.numel() // h.shape[-1]
        plan = self._plan(index, rows, autocast_dtype_of(h, layer.weight))
        return masked_linear(h, layer.weight, layer.bias, mask, plan)

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

    def set_mask(self, index: int, *, persistent: bool = True) -> None:
        """Use connectivity-agnostic mask ``index`` (0..num_masks-1) from now on.

        ``persistent=False`` switches without writing the ``mask_index`` buffer (so without
        an in-place write that ``torch.func`` transforms refuse): for a temporary switch,
        such as averaging over the masks, that is undone before returning.
        """
        if not 0 <= index < self.num_masks:
            raise ValueError(f"index: expected 0..{self.num_masks - 1}, got {index}")
        if persistent:
            self.mask_index.fill_(index)
        self._mask = index

    def next_mask(self) -> int:
        """Cycle to the next connectivity-agnostic mask; returns its index."""
        index = (self._mask + 1) % self.num_masks
        self.set_mask(index)
        return index

    def weights(self) -> list[Tensor]:
        """The effective weight ``weight ⊙ mask`` of every linear layer, current mask."""
        k = self._mask
        return [layer.weight * mask[k] for layer, mask in zip(self.layers, self._masks)]

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
        """All conditionals' parameters in one pass: ``[batch, D, num_params]``.

        Under autocast the products run in the autocast precision; the output is returned
        in the dtype of ``x``, so the elementwise maps and log-determinants that use it
        stay in full precision.
        """
        ctx = self._context_terms(context, x.shape[0])
        act, linear, last = self.activation, self._linear, len(self.layers) - 1
        h = linear(0, x)
        if ctx[0] is not None:
            h = h + ctx[0]
        if self.num_blocks == 0:
            for i in range(1, last):
                h = linear(i, act(h))
                if ctx[i] is not None:
                    h = h + ctx[i]
        else:
            for b in range(self.num_blocks):
                i = 1 + 2 * b
                t = linear(i, act(h))
                if ctx[1 + b] is not None:
                    t = t + ctx[1 + b]
                h = h + linear(i + 1, act(t))
        out = linear(last, act(h))
        return out.view(x.shape[0], self.features, self.num_params).to(x.dtype)

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
        pass (each weight is used once) in D small steps. Without autograd (sampling
        under ``torch.no_grad``) the same schedule runs in a transposed layout that needs
        about half the operations per step (1.4× the samples/s of the accumulator form for
        a 5-layer MAF at D = 784). ``method="naive"`` runs D full
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
        if method not in ("incremental", "naive"):
            raise ValueError(f"method: expected 'incremental' or 'naive', got {method!r}")
        run = self._autoregress_naive if method == "naive" else self._autoregress_incremental
        if method == "incremental" and self.num_blocks == 0 and not torch.is_grad_enabled():
            run = self._autoregress_transposed
        device = like.device.type
        if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
            # The sequential pass accumulates in place, in the parameters' precision (its D
            # small products gain nothing from bf16).
            with torch.autocast(device, enabled=False):
                return run(step, batch, context, like)
        return run(step, batch, context, like)

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

    def _autoregress_transposed(
        self, step: Step, batch: int, context: Tensor | None, like: Tensor
    ) -> tuple[Tensor, list[Any]]:
        """The incremental pass without autograd, in the fewest operations per step.

        Activations are held transposed (``[units, batch]``), so the units of one degree
        are a contiguous row block of a preallocated buffer, and every per-degree block of
        weights, biases and buffers is cut once by ``split`` before the loop. A step then
        costs one product per hidden layer (``addmm`` into the block of units the new
        position completes, then the activation in place), one product for the step's
        parameters and the map. Each product reads only the prefix of its input that the
        block is connected to (units and positions are sorted by degree).
        """
        # One function on purpose: the loop is the hot path of sampling; everything it
        # touches is a local prepared above it.
        D, P = self.features, self.num_params
        order = self._orders[self._mask]
        bounds = self._bounds[self._mask]
        weights = self.weights()
        ctx = self._context_terms(context, batch)
        relu = isinstance(self.activation, nn.ReLU)
        inputs = like.new_zeros(D, batch)  # row t - 1: the value at position t
        input_rows = inputs.unbind(0)
        source, weight = inputs, weights[0][:, order]  # input columns by position
        # Per hidden layer, per degree d: (weight rows, bias rows, output rows, input, n):
        # units of degree d see the first n rows of the input (positions <= d, or units of
        # the layer below of degree <= d).
        blocks = []
        seen = list(range(D + 1))  # inputs of position <= d
        for index in range(len(self.hidden_widths)):
            sizes = [hi - lo for lo, hi in itertools.pairwise(bounds[index])]
            bias = self.layers[index].bias[:, None]
            if ctx[index] is not None:
                bias = bias + ctx[index].t()  # type: ignore[union-attr]
            units = like.new_zeros(weight.shape[0], batch)
            parts = zip(weight.split(sizes), bias.split(sizes), units.split(sizes), seen)
            blocks.append([(w, b, u, source, n) for w, b, u, n in parts])
            source, seen = units, bounds[index][1:]
            if index + 1 < len(self.hidden_widths):
                weight = weights[index + 1]
        ready = bounds[-1]  # units of the last hidden layer of degree < t: the first ready[t]
        out_weights = weights[-1].split(P)  # coordinate i: rows i*P .. (i+1)*P
        out_biases = self.layers[-1].bias[:, None].split(P)
        act = self.activation

        def finalize(degree: int) -> None:
            for layer_blocks in blocks:
                w, b, u, x, n = layer_blocks[degree]
                if w.shape[0]:
                    torch.addmm(b, w[:, :n], x[:n], out=u)
                    if relu:
                        u.relu_()
                    else:
                        u.copy_(act(u))

        extras: list[Any] = []
        finalize(0)
        for t, i in enumerate(order, start=1):
            n = ready[t]
            params = torch.addmm(out_biases[i], out_weights[i][:, :n], source[:n]).t()
            value, extra = step(i, params)
            extras.append(extra)
            input_rows[t - 1].copy_(value)
            finalize(t)
        positions = sorted(range(D), key=order.__getitem__)  # argsort: coordinate -> step
        index = torch.tensor(positions, device=inputs.device)
        return inputs.index_select(0, index).t().contiguous(), extras

    def _autoregress_incremental(  # noqa: PLR0915
        self, step: Step, batch: int, context: Tensor | None, like: Tensor
    ) -> tuple[Tensor, list[Any]]:
        # One function on purpose: the D-step loop is the hot path of sampling, and local
        # closures over the accumulators avoid attribute look-ups and calls per step.
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
        # Without autograd (residual MADEs here; plain ones run transposed): the last hidden
        # activations go to a buffer and each output is computed lazily from the finished
        # prefix (cheaper than accumulating D*P outputs when D*P > width); with autograd: an
        # output accumulator, updated out of place.
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
                    else:  # with autograd (without it, plain MADEs run transposed)
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
        """The summary ``repr`` shows for this module."""
        return (
            f"features={self.features}, hidden={self.hidden_widths}, "
            f"num_params={self.num_params}, context_features={self.context_features}, "
            f"num_masks={self.num_masks}, num_blocks={self.num_blocks}"
        )
