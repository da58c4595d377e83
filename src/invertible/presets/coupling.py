"""Coupling flows of the lecture: NICE and RealNVP (on vectors)."""

from __future__ import annotations

from collections.abc import Sequence

from invertible.core import Compose, Flow, Transform
from invertible.distributions import make_base
from invertible.transforms.coupling import AdditiveCoupling, AffineCoupling
from invertible.transforms.normalization import ActNorm, BatchNorm, Rescaling

__all__ = ["NICE", "RealNVP"]


class NICE(Flow):
    r"""NICE: additive couplings with alternating halves, then a diagonal rescaling.

    Generative direction: z → Rescaling (x = z ⊙ exp(s)) → additive couplings
    x_I2 = z_I2 + m(z_I1). log p(x) = log p_Z(z) − Σ_i s_i (couplings are volume preserving).
    Sampling and density are each one parallel pass. Defaults follow the MNIST setting of
    Dinh, Krueger & Bengio, *NICE: Non-linear Independent Components Estimation*, 2014:
    4 coupling layers, coupling networks of 5 hidden layers of 1000 ReLU units, a standard
    logistic prior.

    Args:
        features: dimension D of the data.
        num_layers: number of additive coupling layers.
        hidden_features: hidden widths of each coupling network.
        base: ``"logistic"`` (the paper's prior for images) or ``"normal"``.
        context_features: width of the conditioning context (0: unconditional).

    Example:
        >>> import torch
        >>> flow = NICE(4, num_layers=2, hidden_features=(16,))
        >>> flow.log_prob(torch.randn(3, 4)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        features: int,
        *,
        num_layers: int = 4,
        hidden_features: Sequence[int] = (1000,) * 5,
        base: str = "logistic",
        context_features: int = 0,
    ) -> None:
        layers: list[Transform] = [Rescaling(features)]
        layers += [
            AdditiveCoupling(
                features,
                parity=i % 2,
                hidden_features=hidden_features,
                context_features=context_features,
            )
            for i in range(num_layers)
        ]
        super().__init__(
            Compose(layers), make_base(base, features), context_features=context_features
        )


class RealNVP(Flow):
    r"""RealNVP on vectors: affine couplings with alternating masks and batch norm between.

    Each coupling: x_I2 = (z_I2 + b(z_I1)) ⊙ exp(α(z_I1)); log|det ∂x/∂z| = Σ α. Sampling and
    density are each one parallel pass. With ``batch_norm=True`` a :class:`BatchNorm` flow
    layer sits between consecutive couplings (as in the RealNVP baselines of the MAF paper);
    an :class:`~invertible.ActNorm` next to the data, started by the first training batch,
    standardises what the couplings see.
    Dinh, Sohl-Dickstein & Bengio, *Density estimation using Real NVP*, ICLR 2017.

    Args:
        features: dimension D of the data.
        num_layers: number of affine coupling layers.
        hidden_features: hidden widths of each coupling network.
        batch_norm: insert batch normalization between couplings.
        mask: ``"alternating"``, ``"half"`` or ``"random"`` (see ``coupling_mask``).
        log_scale_bound: soft bound of each coupling's |α| (α = b·tanh(α_raw/b)). The
            default 2 (against 5, the layer's own default) trained to higher means with
            narrower seed spreads and milder worst test points on ``patches`` and BSDS300,
            and equal ones on ``moons`` and ``gmm8`` (quality benchmark, 5 seeds;
            ``benchmarks/README.md``).
        base: ``"normal"`` or ``"logistic"``.
        context_features: width of the conditioning context.
        seed: seed of random masks.
        affine_shift: ``"latent"`` (x = (z + b)·exp(α)) or ``"data"`` (x = z·exp(α) + μ,
            the paper's form); see :class:`~invertible.transforms.elementwise.Affine`.
        identity_init: start every coupling as the identity map (zero last layers). The
            default ``False`` keeps PyTorch's initialisation of the last layers, which
            trains faster (see :class:`~invertible.AffineCoupling`).
        actnorm: an :class:`~invertible.ActNorm` layer next to the data, initialised from
            the first training batch (zero mean, unit variance per feature; Glow's
            data-dependent start); see :class:`~invertible.MAF` for what it measured.
            ``False`` gives the paper's model.

    Example:
        >>> import torch
        >>> flow = RealNVP(4, num_layers=2, hidden_features=(16,))
        >>> x, log_p = flow.sample_and_log_prob(5)
        >>> torch.allclose(flow.eval().log_prob(x), log_p, atol=1e-5)
        True
    """

    def __init__(
        self,
        features: int,
        *,
        num_layers: int = 5,
        hidden_features: Sequence[int] = (256, 256),
        batch_norm: bool = True,
        mask: str = "alternating",
        log_scale_bound: float | None = 2.0,
        base: str = "normal",
        context_features: int = 0,
        seed: int = 0,
        affine_shift: str = "latent",
        identity_init: bool = False,
        actnorm: bool = True,
    ) -> None:
        layers: list[Transform] = []
        for i in range(num_layers):
            if batch_norm and i > 0:
                layers.append(BatchNorm(features))
            layers.append(
                AffineCoupling(
                    features,
                    mask=mask,
                    parity=i % 2,
                    hidden_features=hidden_features,
                    context_features=context_features,
                    log_scale_bound=log_scale_bound,
                    seed=seed + i // 2,
                    shift=affine_shift,
                    identity_init=identity_init,
                )
            )
        if actnorm:
            layers.append(ActNorm(features))
        super().__init__(
            Compose(layers), make_base(base, features), context_features=context_features
        )
