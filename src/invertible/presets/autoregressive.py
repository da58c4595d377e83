r"""Autoregressive flows of the lecture: Gaussian autoregressive model, MADE MoG, MAF, IAF.

Which direction is parallel:

* :class:`GaussianAR`, :class:`MAF`, :class:`MADEMoG`: density (``log_prob``) is one
  parallel MADE pass per layer; sampling is sequential (incremental: about one network
  pass per layer, in D small steps).
* :class:`IAF`: sampling and ``sample_and_log_prob`` are one parallel pass per layer; the
  density of outside data is sequential (exact).

Connectivity-agnostic MADEs (``num_masks = K > 1``, Germain et al. 2015 §3.3): in training
mode every ``log_prob`` call moves all MADEs of the flow to the next of their K masks (mask
k is used by every layer at once); in evaluation mode ``log_prob`` returns the density of
the ensemble, log (1/K) Σ_k p_k(x), and ``sample`` draws from that mixture.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from invertible.core import Compose, Flow, Transform
from invertible.distributions import StandardNormal
from invertible.nn.made import MADE, Ordering
from invertible.transforms.autoregressive import AffineAutoregressive
from invertible.transforms.elementwise import Affine, Gated, soft_clamp
from invertible.transforms.normalization import ActNorm, BatchNorm

__all__ = ["IAF", "MAF", "GaussianAR", "MADEMoG", "MixtureMADE"]


def _layer_ordering(ordering: Ordering, index: int) -> Ordering:
    """Ordering of layer ``index`` of a stack: ``"alternate"`` = natural, reversed, ..."""
    if isinstance(ordering, str) and ordering in ("alternate", "reversed between layers"):
        return "natural" if index % 2 == 0 else "reversed"
    return ordering


class _MaskAveraging:
    """Flow mixin: connectivity-agnostic ensembles over the MADEs' K masks."""

    num_masks: int

    def _mades(self) -> list[MADE]:
        return [m for m in self.modules() if isinstance(m, MADE) and m.num_masks > 1]  # type: ignore[attr-defined]

    def set_mask(self, index: int, *, persistent: bool = True) -> None:
        """Use mask ``index`` in every connectivity-agnostic MADE of the flow."""
        for made in self._mades():
            made.set_mask(index, persistent=persistent)

    def next_mask(self) -> int:
        """Move every MADE to the next mask (done by ``log_prob`` in training mode)."""
        mades = self._mades()
        index = (mades[0].current_mask + 1) % self.num_masks if mades else 0
        self.set_mask(index)
        return index

    def autoregressive_layers(self) -> list[AffineAutoregressive]:
        """The flow's autoregressive layers in generative order (z side first)."""
        return [m for m in self.modules() if isinstance(m, AffineAutoregressive)]  # type: ignore[attr-defined]

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density; with ``num_masks > 1``: next mask (training) or the K-mask average."""
        log_prob = super().log_prob  # type: ignore[misc]
        if self.num_masks == 1:
            return log_prob(x, context)
        if self.training:  # type: ignore[attr-defined]
            self.next_mask()
            return log_prob(x, context)
        current = self._mades()[0].current_mask
        values = []
        for k in range(self.num_masks):
            self.set_mask(k, persistent=False)
            values.append(log_prob(x, context))
        self.set_mask(current, persistent=False)
        return torch.logsumexp(torch.stack(values), dim=0) - math.log(self.num_masks)

    def rsample(self, n: int, context: Tensor | None = None) -> Tensor:
        """Samples; in eval mode with ``num_masks > 1``, from the K-mask mixture."""
        rsample = super().rsample  # type: ignore[misc]
        if self.num_masks == 1 or self.training:  # type: ignore[attr-defined]
            return rsample(n, context)
        n = self.check_n(n)  # type: ignore[attr-defined]
        context = self.check_context(context, n)  # type: ignore[attr-defined]
        current = self._mades()[0].current_mask
        choice = torch.randint(self.num_masks, (n,))
        out: Tensor | None = None
        for k in range(self.num_masks):
            index = (choice == k).nonzero().flatten()
            if index.numel() == 0:
                continue
            self.set_mask(k, persistent=False)
            ctx = None if context is None else context[index.to(context.device)]
            part = rsample(index.numel(), ctx)
            if out is None:
                out = part.new_zeros(n, *part.shape[1:])
            out = out.index_copy(0, index.to(part.device), part)
        self.set_mask(current, persistent=False)
        if out is None:  # n == 0
            return rsample(0, context)
        return out

    def sample_and_log_prob(self, n: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Samples and their log-density (the ensemble's, in eval mode with K masks)."""
        if self.num_masks == 1 or self.training:  # type: ignore[attr-defined]
            return super().sample_and_log_prob(n, context)  # type: ignore[misc]
        context = self.check_context(context, n)  # type: ignore[attr-defined]
        x = self.rsample(n, context)
        return x, self.log_prob(x, context)


class MixtureMADE(nn.Module):
    r"""MADE whose conditionals are mixtures of K Gaussians (Germain et al. 2015; MAF §3.3).

    .. math:: p(x) = \prod_i \sum_{k=1}^K \pi_{ik}(x_{<i})\,
              \mathcal N\big(x_i;\ \mu_{ik}(x_{<i}),\ \sigma_{ik}(x_{<i})^2\big)

    with (logit π, μ, log σ) = 3K MADE outputs per dimension; log σ is soft clamped to
    ``(-log_scale_bound, log_scale_bound)``. A distribution module satisfying the base
    protocol of :class:`~invertible.Flow` (``event_shape``, ``log_prob(z, context)``,
    ``rsample(n, context)``), so it is the base of MAF MoG.

    ``log_prob`` is one parallel MADE pass. Sampling is sequential (incremental, see
    :meth:`invertible.nn.MADE.autoregress`): for each dimension a component is drawn from
    π, then x_i = μ_c + σ_c·ε. ``rsample`` is reparameterised *given the component
    choice*: gradients flow through μ_c and σ_c (and through x_<i into later conditionals),
    but not through the discrete choice, so the mixture weights get no pathwise gradient.

    Initialisation: the last MADE layer is zero except the means' bias, spread over
    [-1, 1] across components (so they are not interchangeable and can separate).

    Args:
        features: dimension D.
        components: number of mixture components K.
        hidden_features, ordering, context_features, num_masks, num_blocks, activation,
        seed: as for :class:`~invertible.nn.MADE`.
        log_scale_bound: soft bound of |log σ|.

    Example:
        >>> import torch
        >>> mog = MixtureMADE(2, components=3, hidden_features=(8,))
        >>> mog.log_prob(torch.zeros(4, 2)).shape
        torch.Size([4])
        >>> mog.rsample(5).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        features: int,
        *,
        components: int = 10,
        hidden_features: Sequence[int] = (512, 512),
        ordering: Ordering = "natural",
        context_features: int = 0,
        num_masks: int = 1,
        num_blocks: int = 0,
        activation: Callable[[], nn.Module] = nn.ReLU,
        log_scale_bound: float | None = 7.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.event_shape = (features,)
        self.components, self.log_scale_bound = components, log_scale_bound
        self.made = MADE(
            features,
            hidden_features,
            num_params=3 * components,
            context_features=context_features,
            ordering=ordering,
            num_masks=num_masks,
            num_blocks=num_blocks,
            activation=activation,
            seed=seed,
        )
        with torch.no_grad():
            bias = self.made.layers[-1].bias.view(features, 3 * components)
            spread = torch.linspace(-1.0, 1.0, components) if components > 1 else torch.zeros(1)
            bias[:, components : 2 * components] = spread

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        K = self.components
        logits, means, log_scales = params[..., :K], params[..., K : 2 * K], params[..., 2 * K :]
        return logits.log_softmax(dim=-1), means, soft_clamp(log_scales, self.log_scale_bound)

    def conditionals(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-dimension mixture parameters ``(log π, μ, log σ)``, each ``[batch, D, K]``."""
        return self._split(self.made(x, context))

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log p(z), one parallel MADE pass; shape ``[batch]``."""
        log_weights, means, log_scales = self.conditionals(z, context)
        standard = (z.unsqueeze(-1) - means) * (-log_scales).exp()
        log_normal = -0.5 * standard.square() - log_scales - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(log_weights + log_normal, dim=-1).sum(dim=1)

    def rsample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``n`` samples, sequential; reparameterised given the component choices."""
        like = self.made.layers[-1].bias

        def step(i: int, params: Tensor) -> tuple[Tensor, None]:
            log_weights, means, log_scales = self._split(params)
            choice = torch.multinomial(log_weights.detach().exp(), 1)
            mean = means.gather(1, choice).squeeze(1)
            scale = log_scales.gather(1, choice).squeeze(1).exp()
            return mean + scale * torch.randn_like(mean), None

        return self.made.autoregress(step, n, context, like=like)[0]

    @torch.no_grad()
    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``n`` samples without gradients."""
        return self.rsample(n, context)

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"event_shape={self.event_shape}, components={self.components}"


class GaussianAR(_MaskAveraging, Flow):
    r"""The Gaussian autoregressive model as a one-layer MAF-type flow.

    p(x_i | x_<i) = N(μ_i(x_<i), exp(α_i(x_<i))²), with (μ, α) from one MADE; as a flow
    from u ~ N(0, I): x_i = exp(α_i)·u_i + μ_i. Density: one parallel pass,
    log p(x) = Σ_i log N(u_i; 0, 1) − Σ_i α_i with u_i = (x_i − μ_i)·exp(−α_i).
    Sampling: sequential. MADE: Germain et al., ICML 2015; as a flow: Papamakarios et al.,
    *MAF*, NeurIPS 2017, §2–3.

    ``num_masks = K > 1`` trains the MADE connectivity-agnostically (a new mask at every
    ``log_prob`` in training mode) and evaluates the K-mask average density in eval mode.

    Args:
        features: dimension D.
        hidden_features: hidden widths of the MADE.
        ordering: ``"natural"``, ``"reversed"``, ``"random"`` or a permutation.
        num_masks: connectivity-agnostic masks K.
        context_features: width of the conditioning context.
        num_blocks: residual blocks in the MADE (0: plain).
        log_scale_bound: soft bound of |α|.
        seed: seed of random orderings and masks.
        affine_shift: ``"latent"`` (x_i = (u_i + b_i)·exp(α_i), so μ_i = b_i·exp(α_i)) or
            ``"data"`` (x_i = u_i·exp(α_i) + μ_i); the same model, trained faster with
            ``"latent"`` (see :class:`~invertible.transforms.elementwise.Affine`).

    Example:
        >>> import torch
        >>> model = GaussianAR(3, hidden_features=(16,))
        >>> model.log_prob(torch.zeros(2, 3))
        tensor([-2.7568, -2.7568], grad_fn=<AddBackward0>)
    """

    def __init__(
        self,
        features: int,
        *,
        hidden_features: Sequence[int] = (512, 512),
        ordering: Ordering = "natural",
        num_masks: int = 1,
        context_features: int = 0,
        num_blocks: int = 0,
        log_scale_bound: float | None = 5.0,
        seed: int = 0,
        affine_shift: str = "latent",
    ) -> None:
        layer = AffineAutoregressive(
            features,
            hidden_features=hidden_features,
            mode="maf",
            ordering=ordering,
            context_features=context_features,
            elementwise=Affine(log_scale_bound, shift=affine_shift),
            num_blocks=num_blocks,
            num_masks=num_masks,
            seed=seed,
        )
        super().__init__(layer, StandardNormal(features), context_features=context_features)
        self.num_masks = num_masks

    def conditionals(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(μ, α) of every conditional p(x_i | x_<i), each ``[batch, D]`` (one pass)."""
        return self.transform.conditionals(x, context)  # type: ignore[operator]


class MADEMoG(_MaskAveraging, Flow):
    r"""MADE MoG as a density model: conditionals are mixtures of K Gaussians.

    p(x) = Π_i Σ_k π_ik N(x_i; μ_ik, σ_ik²), all from one MADE over x (see
    :class:`MixtureMADE`). A :class:`~invertible.Flow` with the identity transform, so
    ``log_prob`` / ``sample`` / ``sample_and_log_prob`` / checkpoints work as for any flow,
    and, since a flow satisfies the base protocol itself, a ``MADEMoG`` can also serve as
    the base distribution of another flow. Density: one parallel pass; sampling:
    sequential; ``rsample`` is reparameterised given the component choices (see
    :class:`MixtureMADE`). Germain et al., *MADE*, ICML 2015; Papamakarios et al., *MAF*,
    NeurIPS 2017 (MADE MoG baseline).

    Args:
        features: dimension D.
        components: mixture components K per conditional.
        hidden_features: hidden widths of the MADE.
        ordering: ordering of the MADE.
        num_masks: connectivity-agnostic masks (averaged in eval mode).
        context_features: width of the conditioning context.
        num_blocks: residual blocks in the MADE.
        log_scale_bound: soft bound of |log σ|.
        seed: seed of random orderings and masks.

    Example:
        >>> import torch
        >>> model = MADEMoG(2, components=3, hidden_features=(16,))
        >>> x, log_p = model.sample_and_log_prob(4)
        >>> torch.allclose(model.log_prob(x), log_p)
        True
    """

    def __init__(
        self,
        features: int,
        *,
        components: int = 10,
        hidden_features: Sequence[int] = (512, 512),
        ordering: Ordering = "natural",
        num_masks: int = 1,
        context_features: int = 0,
        num_blocks: int = 0,
        log_scale_bound: float | None = 7.0,
        seed: int = 0,
    ) -> None:
        base = MixtureMADE(
            features,
            components=components,
            hidden_features=hidden_features,
            ordering=ordering,
            context_features=context_features,
            num_masks=num_masks,
            num_blocks=num_blocks,
            log_scale_bound=log_scale_bound,
            seed=seed,
        )
        super().__init__(Compose([]), base, context_features=context_features)
        self.num_masks = num_masks


class MAF(_MaskAveraging, Flow):
    r"""Masked autoregressive flow (Papamakarios, Pavlakou & Murray, NeurIPS 2017).

    ``num_layers`` Gaussian autoregressive layers, each with a MADE over its data-side
    input: x_i = u_i·exp(α_i(x_<i)) + μ_i(x_<i). The ordering is reversed between layers
    (``ordering="alternate"``) and, as in the paper, a :class:`~invertible.BatchNorm` flow
    layer sits between consecutive layers; an :class:`~invertible.ActNorm` next to the
    data, started by the first training batch, standardises what the layers see.
    ``log_prob`` (x → u) is one parallel MADE pass per layer: fast maximum-likelihood
    training. ``sample`` (u → x) is sequential per layer (incremental: about one network
    pass in D small steps; set ``layer.sequential = "naive"`` for D full passes).
    ``mog_components=K`` gives MAF MoG: the base is a :class:`MixtureMADE` (a MADE MoG
    over the innermost u).

    Args:
        features: dimension D.
        num_layers: autoregressive layers.
        hidden_features: hidden widths of each MADE.
        batch_norm: batch normalization between layers.
        mog_components: K for a MADE MoG base (``None``: standard normal base).
        ordering: ``"alternate"`` (natural, reversed, ... ; the paper), ``"natural"``,
            ``"random"`` (a different random ordering per layer) or a permutation.
        context_features: width of the conditioning context.
        num_blocks: residual blocks per MADE (0: plain).
        num_masks: connectivity-agnostic masks (mask k used by all layers together).
        log_scale_bound: soft bound of each layer's |α| (α = b·tanh(α_raw/b)). The default
            2 lets each layer scale a coordinate by at most e² and leaves the range to the
            stack; against 5 it trained to higher means with narrower seed spreads on
            ``patches`` and BSDS300 and equal ones on ``gmm8`` (quality benchmark, 5 seeds;
            ``benchmarks/README.md``).
        seed: seed of random orderings and masks (layer i uses ``seed + i``).
        affine_shift: ``"latent"`` (x_i = (u_i + b_i)·exp(α_i), so μ_i = b_i·exp(α_i)) or
            ``"data"`` (x_i = u_i·exp(α_i) + μ_i); the same model, trained faster with
            ``"latent"`` (see :class:`~invertible.transforms.elementwise.Affine`).
        identity_init: start every layer as the identity (zero last MADE layers, the
            default). ``False`` keeps PyTorch's initialisation of the last layers: without
            batch norm on ``patches`` and BSDS300 (5 seeds, equal steps) it trained to a
            higher mean and far less extreme worst test points, but on ``gmm8`` to a lower
            one, and in one run of the main job (with batch norm) its MAF was a harder
            teacher to distil; measured in the session note of 2026-12-07.
        actnorm: an :class:`~invertible.ActNorm` layer next to the data, initialised from
            the first training batch so that it hands the MADEs zero-mean, unit-variance
            inputs (Glow's data-dependent start). Data far from the unit scale (image
            patches: standard deviation 0.1; BSDS300) otherwise spends the first steps
            rescaling; at equal steps without batch norm it raised the test
            log-likelihood on ``patches`` from 207.3 to 212.3 and on BSDS300 from 131.2
            to 138.8 nats (5 seeds, quality benchmark; ``benchmarks/README.md``).
            ``False`` gives the paper's model.

    Example:
        >>> import torch
        >>> flow = MAF(3, num_layers=2, hidden_features=(16,)).eval()
        >>> x, log_p = flow.sample_and_log_prob(4)
        >>> torch.allclose(flow.log_prob(x), log_p, atol=1e-5)
        True
    """

    def __init__(
        self,
        features: int,
        *,
        num_layers: int = 5,
        hidden_features: Sequence[int] = (512, 512),
        batch_norm: bool = True,
        mog_components: int | None = None,
        ordering: Ordering = "alternate",
        context_features: int = 0,
        num_blocks: int = 0,
        num_masks: int = 1,
        log_scale_bound: float | None = 2.0,
        seed: int = 0,
        affine_shift: str = "latent",
        identity_init: bool = True,
        actnorm: bool = True,
    ) -> None:
        layers: list[Transform] = []
        for i in range(num_layers):
            if batch_norm and i > 0:
                layers.append(BatchNorm(features))
            layers.append(
                AffineAutoregressive(
                    features,
                    hidden_features=hidden_features,
                    mode="maf",
                    ordering=_layer_ordering(ordering, i),
                    context_features=context_features,
                    elementwise=Affine(log_scale_bound, shift=affine_shift),
                    num_blocks=num_blocks,
                    num_masks=num_masks,
                    seed=seed + i,
                    identity_init=identity_init,
                )
            )
        if actnorm:
            layers.append(ActNorm(features))
        base: nn.Module
        if mog_components:
            base = MixtureMADE(
                features,
                components=mog_components,
                hidden_features=hidden_features,
                ordering=_layer_ordering(ordering, num_layers),
                context_features=context_features,
                num_masks=num_masks,
                num_blocks=num_blocks,
                seed=seed + num_layers,
            )
        else:
            base = StandardNormal(features)
        super().__init__(Compose(layers), base, context_features=context_features)
        self.num_masks = num_masks


class IAF(_MaskAveraging, Flow):
    r"""Inverse autoregressive flow (Kingma et al., NeurIPS 2016) as a named model.

    ``num_layers`` affine autoregressive layers, each with a MADE over its noise-side
    input: x_i = u_i·exp(α_i(u_<i)) + μ_i(u_<i) (or Kingma's gated update
    x = σ ⊙ u + (1 − σ) ⊙ m with ``gated=True``), ordering reversed between layers.
    ``sample`` and ``sample_and_log_prob`` are **one parallel pass per layer**: the density
    of the flow's own samples is log p_U(u) − Σ α from that same pass (what makes density
    distillation cheap). ``log_prob`` of outside data runs the exact sequential inverse
    (incremental, about one network pass per layer in D small steps).

    Args:
        features: dimension D.
        num_layers: autoregressive layers.
        hidden_features: hidden widths of each MADE.
        gated: use the gated update (``Gated``) instead of ``Affine``.
        ordering: ``"alternate"`` (default), ``"natural"``, ``"random"`` or a permutation.
        context_features: width of the conditioning context.
        num_blocks: residual blocks per MADE (0: plain).
        log_scale_bound: soft bound of |α| (affine update only).
        seed: seed of random orderings (layer i uses ``seed + i``).
        affine_shift: ``"latent"`` (x_i = (u_i + b_i)·exp(α_i), so μ_i = b_i·exp(α_i)) or
            ``"data"`` (x_i = u_i·exp(α_i) + μ_i); the same model, trained faster with
            ``"latent"`` (see :class:`~invertible.transforms.elementwise.Affine`).

    Example:
        >>> import torch
        >>> flow = IAF(3, num_layers=2, hidden_features=(16,))
        >>> x, log_p = flow.sample_and_log_prob(4)  # one parallel pass per layer
        >>> torch.allclose(flow.log_prob(x), log_p, atol=1e-5)  # sequential inverse
        True
    """

    def __init__(
        self,
        features: int,
        *,
        num_layers: int = 5,
        hidden_features: Sequence[int] = (512, 512),
        gated: bool = False,
        ordering: Ordering = "alternate",
        context_features: int = 0,
        num_blocks: int = 0,
        log_scale_bound: float | None = 5.0,
        seed: int = 0,
        affine_shift: str = "latent",
    ) -> None:
        layers: list[Transform] = [
            AffineAutoregressive(
                features,
                hidden_features=hidden_features,
                mode="iaf",
                ordering=_layer_ordering(ordering, i),
                context_features=context_features,
                elementwise=Gated() if gated else Affine(log_scale_bound, shift=affine_shift),
                num_blocks=num_blocks,
                seed=seed + i,
            )
            for i in range(num_layers)
        ]
        super().__init__(
            Compose(layers), StandardNormal(features), context_features=context_features
        )
        self.num_masks = 1
