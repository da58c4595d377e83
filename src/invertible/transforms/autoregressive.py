r"""Autoregressive layers (MAF, IAF): an elementwise map whose parameters come from a MADE.

The layer computes x_i = g(u_i; θ_i) with an elementwise map g (the same
:class:`~invertible.transforms.elementwise.Affine` / ``Gated`` / ``Additive`` maps as the
couplings) whose parameters θ_i depend on the *preceding* coordinates in an ordering:

* MAF mode: θ_i = θ_i(x_<i), a MADE over the data side x. Density (x → u) is one parallel
  pass; sampling (u → x) is sequential.
* IAF mode: θ_i = θ_i(u_<i), a MADE over the noise side u. Sampling (u → x) is one
  parallel pass; the density of an outside x (x → u) is sequential.

The sequential direction is exact (no fixed-point iteration) and, by default, incremental:
each hidden unit of the MADE is computed once, as soon as its inputs are known, so it
costs about one network pass in D small steps instead of D full passes (see
:meth:`invertible.nn.MADE.autoregress`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from invertible.core import Transform
from invertible.nn.made import MADE, Ordering
from invertible.transforms.elementwise import Affine, ElementwiseMap

__all__ = ["AffineAutoregressive"]


class AffineAutoregressive(Transform):
    r"""Affine autoregressive layer, MAF or IAF (Papamakarios et al. 2017; Kingma et al. 2016).

    With the default :class:`~invertible.transforms.elementwise.Affine` map,
    forward (u → x) is x_i = u_i·exp(α_i) + μ_i, log|det ∂x/∂u| = Σ_i α_i; inverse
    (x → u) is u_i = (x_i − μ_i)·exp(−α_i), log|det ∂u/∂x| = −Σ_i α_i, where (μ_i, α_i)
    are MADE outputs over the preceding coordinates (with the default
    ``Affine(shift="latent")`` the network's shift output is b_i and μ_i = b_i·exp(α_i)):

    * ``mode="maf"`` (Papamakarios, Pavlakou & Murray, *Masked Autoregressive Flow for
      Density Estimation*, NeurIPS 2017): μ_i, α_i = f(x_<i).
      ``inverse`` (x → u, density) is **one parallel MADE pass**;
      ``forward`` (u → x, sampling) is **sequential** over the D coordinates.
    * ``mode="iaf"`` (Kingma et al., *Improved Variational Inference with Inverse
      Autoregressive Flow*, NeurIPS 2016): μ_i, α_i = f(u_<i).
      ``forward`` (u → x, sampling) is **one parallel MADE pass**;
      ``inverse`` (x → u, density of outside data) is **sequential**.

    ``elementwise=Gated()`` gives Kingma's numerically stable IAF update
    x = σ ⊙ u + (1 − σ) ⊙ m, σ = sigmoid(s) (IAF paper, eq. 14).

    The sequential direction is exact. ``sequential="incremental"`` (default) evaluates each
    MADE hidden unit once as soon as its inputs are known (about one network pass in D
    small steps); ``"naive"`` runs D full MADE passes, as other libraries do. The attribute
    can be changed at any time. The last MADE layer starts at zero, so a fresh layer is the
    identity (``Affine``), unless ``identity_init=False``.

    Connectivity-agnostic training (``num_masks > 1``, MADE §3.3): see
    :meth:`set_mask` / :meth:`next_mask`; the presets average densities over masks.

    Args:
        features: number of coordinates D.
        hidden_features: hidden widths of the MADE (``(width,)`` with ``num_blocks``).
        mode: ``"maf"`` or ``"iaf"``.
        ordering: ``"natural"``, ``"reversed"``, ``"random"`` or a permutation.
        context_features: width of the conditioning context (0: unconditional).
        elementwise: the elementwise map (default ``Affine()``).
        num_blocks: residual blocks in the MADE (0: plain masked MLP).
        num_masks: connectivity-agnostic masks K.
        activation: hidden nonlinearity of the MADE.
        seed: seed of random orderings/degrees (``None``: from torch's RNG).
        sequential: ``"incremental"`` or ``"naive"``.
        identity_init: start the MADE's last layer at zero (the layer is then the
            identity); ``False`` keeps PyTorch's default initialisation there.

    Example:
        >>> import torch
        >>> layer = AffineAutoregressive(3, hidden_features=(16,), mode="maf")
        >>> _ = torch.nn.init.normal_(layer.made.layers[-1].weight, std=0.1)
        >>> x = torch.randn(4, 3)
        >>> u, ladj = layer.inverse(x)  # one parallel pass
        >>> x_back, ladj_fwd = layer(u)  # sequential
        >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(ladj_fwd, -ladj, atol=1e-5)
        (True, True)
    """

    def __init__(
        self,
        features: int,
        *,
        hidden_features: Sequence[int] = (512, 512),
        mode: str = "maf",
        ordering: Ordering = "natural",
        context_features: int = 0,
        elementwise: ElementwiseMap | None = None,
        num_blocks: int = 0,
        num_masks: int = 1,
        activation: Callable[[], nn.Module] = nn.ReLU,
        seed: int | None = None,
        sequential: str = "incremental",
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        if mode not in ("maf", "iaf"):
            raise ValueError(f"mode: expected 'maf' or 'iaf', got {mode!r}")
        if sequential not in ("incremental", "naive"):
            raise ValueError(f"sequential: expected 'incremental' or 'naive', got {sequential!r}")
        self.mode, self.sequential = mode, sequential
        self.elementwise = elementwise if elementwise is not None else Affine()
        self.made = MADE(
            features,
            hidden_features,
            num_params=self.elementwise.num_params,
            context_features=context_features,
            ordering=ordering,
            num_masks=num_masks,
            num_blocks=num_blocks,
            activation=activation,
            seed=seed,
            zero_init=identity_init,
        )

    @property
    def features(self) -> int:
        """Number of coordinates D."""
        return self.made.features

    def set_mask(self, index: int) -> None:
        """Use connectivity-agnostic mask ``index`` of the MADE."""
        self.made.set_mask(index)

    def next_mask(self) -> int:
        """Cycle the MADE to its next connectivity-agnostic mask."""
        return self.made.next_mask()

    def conditionals(self, values: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Per-dimension shift and log-scale of the layer, given its conditioning input.

        ``values`` is x (the layer's output side) in MAF mode and u (its input side) in IAF
        mode; returns ``(shift, log_scale)``, each ``[batch, D]``, such that the forward map
        is x_i = u_i·exp(log_scale_i) + shift_i. One parallel pass. For ``Gated``,
        shift = (1 − σ)·m and log_scale = log σ; for ``Additive``, log_scale = 0.
        This is what density distillation needs (e.g. ClariNet's per-step Gaussian KL).

        Example:
            >>> import torch
            >>> layer = AffineAutoregressive(2, hidden_features=(8,))
            >>> shift, log_scale = layer.conditionals(torch.randn(3, 2))
            >>> shift.shape, bool((log_scale == 0).all())  # a fresh layer is the identity
            (torch.Size([3, 2]), True)
        """
        params = self.made(values, context)
        # The supported maps are affine in u: x = u·exp(log_scale) + shift, so evaluating
        # the map at u = 0 gives the shift and its log-derivative gives the log-scale.
        shift, log_scale = self.elementwise(torch.zeros_like(values), params)
        return shift, log_scale

    def _sequential(
        self, values: Tensor, context: Tensor | None, *, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        step_map = self.elementwise.inverse if inverse else self.elementwise.forward
        columns = values.t().contiguous().unbind(0)  # coordinate i: a contiguous [batch]

        def step(i: int, params: Tensor) -> tuple[Tensor, Tensor]:
            return step_map(columns[i], params)

        out, ladjs = self.made.autoregress(
            step, values.shape[0], context, like=values, method=self.sequential
        )
        return out, torch.stack(ladjs, dim=1).sum(dim=1)

    def _parallel(
        self, values: Tensor, context: Tensor | None, *, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        params = self.made(values, context)
        step_map = self.elementwise.inverse if inverse else self.elementwise.forward
        out, ladj = step_map(values, params)
        return out, ladj.sum(dim=1)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction u → x: one parallel MADE pass (IAF), sequential (MAF)."""
        if self.mode == "iaf":
            return self._parallel(z, context, inverse=False)
        return self._sequential(z, context, inverse=False)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → u: one parallel MADE pass (MAF), sequential (IAF)."""
        if self.mode == "maf":
            return self._parallel(x, context, inverse=True)
        return self._sequential(x, context, inverse=True)

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"mode={self.mode!r}, sequential={self.sequential!r}"
