r"""Probability density distillation: train a fast-sampling student from a frozen teacher.

Parallel WaveNet (van den Oord et al. 2017) trains an autoregressive *teacher* T (here a
MAF: one parallel pass for its density, D sequential passes per layer to sample) by maximum
likelihood, freezes it, and trains an IAF *student* S (one parallel pass to sample, and the
density of its own samples comes free with them) to minimise the reverse KL divergence

.. math::

    \mathrm{KL}(S \,\|\, T) = \mathbb{E}_{x\sim S}[\log S(x) - \log T(x)]
                            = H(S, T) - H(S).

Every term is parallel: ``x`` and ``log S(x)`` come from one reparameterised student pass
(:meth:`~invertible.Flow.sample_and_log_prob`, so gradients flow through ``x``), and
``log T(x)`` from one teacher density pass. Three estimators of the same objective are
offered (``loss=``):

``"mc"``
    The plain Monte-Carlo estimate, mean of ``log S(x) − log T(x)``.
``"analytic-entropy"``
    For any flow x = f(z) over a base with known entropy,
    :math:`H(S) = H(p_Z) + \mathbb{E}_z[\log|\det \partial f/\partial z|]`; for an affine
    IAF over N(0, I), :math:`H(S) = \tfrac D2 \log(2\pi e) + \mathbb{E}[\sum_i \alpha_i]`.
    Only the cross-entropy :math:`-\mathbb{E}[\log T(x)]` and the mean log-determinant are
    Monte Carlo; the ``log p_Z(z)`` terms are replaced by their expectation. Note: with a
    parameter-free base the *gradient* of this loss equals that of ``"mc"`` sample by sample
    (∂ log p_Z(z)/∂θ = 0 for z drawn independently of θ); what changes is the variance of the
    *value* of the estimate (the reported KL), not of the update.
``"closed-form"``
    ClariNet (Ping et al. 2018): when the teacher is a one-layer Gaussian autoregressive
    model :math:`T(x_i|x_{<i}) = N(μ^T_i(x_{<i}), σ^T_i(x_{<i})^2)` and the student a stack of
    affine IAF layers in the *same* ordering, the student's conditional given the sampled
    prefix is also Gaussian, :math:`S(x_i|x_{<i}) = N(b_i, a_i^2)` with
    :math:`a_i = \prod_l \exp(α^l_i)` and :math:`b^l = \exp(α^l) b^{l-1} + μ^l` (b⁰ = 0),
    so :math:`\mathrm{KL}(S\|T) = \mathbb{E}_{x\sim S}\big[\sum_i
    \mathrm{KL}(N(b_i, a_i^2) \,\|\, N(μ^T_i, σ^{T\,2}_i))\big]` with the Gaussian KL
    :math:`\log\frac{σ^T}{a} + \frac{a^2 + (b-μ^T)^2}{2σ^{T\,2}} - \frac12` in closed form.
    The inner expectation over :math:`x_i` is exact; only the prefix is sampled. ClariNet's
    optional regulariser :math:`λ\sum_i(\log a_i - \log σ^T_i)^2` is ``regularizer=λ``
    (0 by default).

References:
    A. van den Oord et al. *Parallel WaveNet: Fast High-Fidelity Speech Synthesis.* ICML 2018.
    W. Ping, K. Peng, J. Chen. *ClariNet: Parallel Wave Generation in End-to-End
    Text-to-Speech.* ICLR 2019.

Example:
    >>> import torch, invertible
    >>> teacher = invertible.Flow(invertible.ActNorm(2), invertible.StandardNormal(2))
    >>> student = invertible.Flow(invertible.ActNorm(2), invertible.StandardNormal(2))
    >>> with torch.no_grad():
    ...     _ = teacher.transform.shift.fill_(1.0)
    >>> result = invertible.distill(teacher, student, steps=300, lr=0.05, progress=False)
    >>> result.history["kl"][-1] < 0.05
    True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from invertible.core import Compose, Flow, Transform, validation
from invertible.distributions import StandardNormal
from invertible.transforms.autoregressive import AffineAutoregressive
from invertible.transforms.elementwise import Affine

__all__ = [
    "ANCHORS",
    "LOSSES",
    "ContrastTarget",
    "DistillationLoss",
    "anchor_term",
    "autoregressive_layers",
    "check_closed_form",
    "distillation_losses",
    "frozen",
    "gaussian_kl",
]

LossName = Literal["mc", "analytic-entropy", "closed-form"]
#: The loss variants accepted by :func:`distill`.
LOSSES: tuple[str, ...] = ("mc", "analytic-entropy", "closed-form")
#: The data terms accepted by :func:`distill` (``anchor=``).
ANCHORS: tuple[str, ...] = ("likelihood", "moments", "teacher-latent", "contrast")

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Freeze ``module`` for the duration: eval mode and ``requires_grad=False`` everywhere.

    On exit the training flag of every submodule and the ``requires_grad`` flag of every
    parameter are restored exactly as they were. Gradients still flow *through* the frozen
    module to its inputs (the student's samples), but none accumulate in its parameters.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> with frozen(net):
        ...     net.weight.requires_grad, net.training
        (False, False)
        >>> net.weight.requires_grad, net.training
        (True, True)
    """
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    r"""Elementwise KL(N(μ_p, σ_p²) ‖ N(μ_q, σ_q²)), from means and log standard deviations.

    .. math:: \log\frac{σ_q}{σ_p} + \frac{σ_p^2 + (μ_p - μ_q)^2}{2σ_q^2} - \frac12

    Example:
        >>> import torch
        >>> gaussian_kl(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0), torch.tensor(0.0))
        tensor(0.5000)
    """
    var_ratio = (2 * (log_std_p - log_std_q)).exp()
    return (
        (log_std_q - log_std_p)
        + 0.5 * (var_ratio + (mean_p - mean_q).square() * (-2 * log_std_q).exp())
        - 0.5
    )


# --------------------------------------------------------------- autoregressive adapters


def _members(transform: Transform) -> list[Transform]:
    """The transforms of a (possibly nested) :class:`Compose`, in generative order."""
    if isinstance(transform, Compose):
        out: list[Transform] = []
        for t in transform.transforms:
            out += _members(t)  # type: ignore[arg-type]
        return out
    return [transform]


def autoregressive_layers(flow: Flow) -> list[AffineAutoregressive]:
    """The affine autoregressive layers of ``flow``, in generative order."""
    return [t for t in _members(flow.transform) if isinstance(t, AffineAutoregressive)]


def ordering(layer: nn.Module) -> Tensor:
    """The MADE ordering of an autoregressive layer (a CPU ``long`` tensor)."""
    return layer.made.ordering.detach().cpu().long()  # type: ignore[union-attr]


def _describe(t: nn.Module) -> str:
    return type(t).__name__


def check_closed_form(teacher: Flow, student: Flow) -> tuple[nn.Module, list[nn.Module]]:
    """Check that the ClariNet closed form applies; return (teacher layer, student layers).

    Conditions: the teacher is a one-layer Gaussian autoregressive model (``GaussianAR``,
    or a ``MAF`` with one ``AffineAutoregressive`` layer, ``mode="maf"``, plain
    :class:`~invertible.Affine` map, no batch norm or permutation) over a standard normal
    base; the student is a stack of ``AffineAutoregressive(mode="iaf")`` layers with the
    plain ``Affine`` map and nothing in between, all in the teacher's ordering, over a
    standard normal base; neither is conditional.

    Raises:
        ValueError: naming the first condition that fails and what to use instead.
    """
    # Long on purpose: one check per condition, each with its own message and remedy.
    instead = "; use loss='analytic-entropy' (any flow with a known base entropy) or loss='mc'"
    ar = AffineAutoregressive
    for name, flow in (("teacher", teacher), ("student", student)):
        if not isinstance(flow.base, StandardNormal):
            raise ValueError(
                f"closed-form: the {name}'s base must be StandardNormal (Gaussian "
                f"conditionals), got {_describe(flow.base)}" + instead
            )
        if flow.context_features:
            raise ValueError(f"closed-form: conditional {name}s are not supported" + instead)
    t_members = _members(teacher.transform)
    if len(t_members) != 1:
        raise ValueError(
            f"closed-form: the teacher must be a single Gaussian autoregressive layer "
            f"(GaussianAR, or MAF(num_layers=1, batch_norm=False, actnorm=False)); got "
            f"{len(t_members)} transforms ({', '.join(_describe(t) for t in t_members)})" + instead
        )
    t_layer = t_members[0]
    if not isinstance(t_layer, ar) or t_layer.mode != "maf":
        raise ValueError(
            f"closed-form: the teacher's layer must be AffineAutoregressive(mode='maf'), got "
            f"{_describe(t_layer)}"
            + (f"(mode={t_layer.mode!r})" if isinstance(t_layer, ar) else "")
            + instead
        )
    if t_layer.made.num_masks != 1:
        raise ValueError(
            "closed-form: the teacher averages several MADE masks (num_masks > 1), so it is "
            "not a single Gaussian autoregressive model" + instead
        )
    if type(t_layer.elementwise) is not Affine:
        raise ValueError(
            f"closed-form: the teacher's elementwise map must be the plain Affine (Gaussian "
            f"conditionals), got {_describe(t_layer.elementwise)}" + instead
        )
    s_members = _members(student.transform)
    t_order = ordering(t_layer)
    for k, layer in enumerate(s_members):
        if not isinstance(layer, ar) or layer.mode != "iaf":
            raise ValueError(
                f"closed-form: student transform {k} must be AffineAutoregressive(mode='iaf') "
                f"with nothing in between (no permutation, reversal or batch norm), got "
                f"{_describe(layer)}"
                + (f"(mode={layer.mode!r})" if isinstance(layer, ar) else "")
                + "; build the student with invertible.make_student(teacher, ...)"
                + instead
            )
        if type(layer.elementwise) is not Affine:
            raise ValueError(
                f"closed-form: student layer {k} uses {_describe(layer.elementwise)}, not the "
                "plain Affine map; Gated/other maps have non-Gaussian compositions" + instead
            )
        if not torch.equal(ordering(layer), t_order):
            raise ValueError(
                f"closed-form: student layer {k} does not share the teacher's ordering "
                f"(student {ordering(layer).tolist()[:8]}..., teacher "
                f"{t_order.tolist()[:8]}...); all student layers must use the teacher's "
                "ordering: build the student with invertible.make_student(teacher, ...)" + instead
            )
    return t_layer, s_members


# --------------------------------------------------------------------------- the losses


def _student_pass(student: Flow, n: int, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """One reparameterised z → x pass: (x, log p_Z(z), log|det ∂x/∂z|), as in
    :meth:`Flow.sample_and_log_prob` (which returns x and log p_Z(z) − ladj).
    """
    z = student.base.rsample(n, context)
    log_pz = student.base.log_prob(z, context)
    x, ladj = student.transform(z, context)
    return x, log_pz, ladj


def _closed_form_terms(
    t_layer: nn.Module,
    s_layers: Sequence[nn.Module],
    n: int,
    student: Flow,
    regularizer: float,
) -> dict[str, Tensor]:
    z = student.base.rsample(n, None)
    values, b, log_a = z, torch.zeros_like(z), torch.zeros_like(z)
    for layer in s_layers:  # u -> x through the IAF stack, tracking a and b per dimension
        shift, log_scale = layer.conditionals(values, None)
        scale = log_scale.exp()
        values = values * scale + shift
        b = b * scale + shift
        log_a = log_a + log_scale
    x = values
    mu_t, log_sigma_t = t_layer.conditionals(x, None)  # one parallel teacher pass on x
    kl_i = gaussian_kl(b, log_a, mu_t, log_sigma_t)
    entropy_i = _HALF_LOG_2PI + 0.5 + log_a
    kl = kl_i.sum(1).mean()
    entropy = entropy_i.sum(1).mean()
    loss = kl
    if regularizer:
        loss = loss + regularizer * (log_a - log_sigma_t).square().sum(1).mean()
    return {"loss": loss, "kl": kl, "cross_entropy": kl + entropy, "entropy": entropy,
            "samples": x}  # fmt: skip


def distillation_losses(
    teacher: Flow,
    student: Flow,
    n: int,
    loss: str = "mc",
    *,
    context: Tensor | None = None,
    regularizer: float = 0.0,
    closed_form_layers: tuple[nn.Module, list[nn.Module]] | None = None,
) -> dict[str, Tensor]:
    r"""One minibatch estimate of KL(S‖T) and its parts, differentiable w.r.t. the student.

    Returns a dict of scalar tensors: ``loss`` (what to minimise), ``kl`` (the estimate of
    KL(S‖T) = H(S,T) − H(S)), ``cross_entropy`` (estimate of H(S,T) = −E_S[log T]) and
    ``entropy`` (estimate of H(S)), and the student's reparameterised ``samples``
    ``[n, D]`` the estimate used (for a data term on them). The teacher should be frozen
    (:func:`frozen`).

    Args:
        teacher: the frozen teacher flow (its density is one parallel pass).
        student: the student flow (its sampling is one parallel pass).
        n: number of student samples.
        loss: ``"mc"``, ``"analytic-entropy"`` or ``"closed-form"`` (see the module doc).
        context: ``[n, C]`` conditioning rows for conditional flows.
        regularizer: ClariNet's λ of λ·Σ(log σ^S − log σ^T)² (closed form only).
        closed_form_layers: the result of :func:`check_closed_form`, to skip re-checking.

    Example:
        >>> import torch, invertible
        >>> flow = invertible.Flow(invertible.ActNorm(2), invertible.StandardNormal(2)).eval()
        >>> parts = distillation_losses(flow, flow, 64, "mc")
        >>> float(parts["kl"].detach().abs()) < 1e-5
        True
    """
    if loss == "mc":
        x, log_s = student.sample_and_log_prob(n, context)
        log_t = teacher.log_prob(x, context)
        kl = (log_s - log_t).mean()
        return {"loss": kl, "kl": kl, "cross_entropy": -log_t.mean(), "entropy": -log_s.mean(),
                "samples": x}  # fmt: skip
    if loss == "analytic-entropy":
        entropy_fn = getattr(student.base, "entropy", None)
        if entropy_fn is None:
            raise ValueError(
                f"analytic-entropy: the student's base {_describe(student.base)} has no "
                "entropy(); use loss='mc'"
            )
        context = student.check_context(context, n)
        x, _, ladj = _student_pass(student, n, context)
        log_t = teacher.log_prob(x, context)
        entropy = float(entropy_fn()) + ladj.mean()
        cross = -log_t.mean()
        kl = cross - entropy
        return {"loss": kl, "kl": kl, "cross_entropy": cross, "entropy": entropy, "samples": x}
    if loss == "closed-form":
        if context is not None:
            raise ValueError("closed-form: conditional flows are not supported; use loss='mc'")
        t_layer, s_layers = closed_form_layers or check_closed_form(teacher, student)
        return _closed_form_terms(t_layer, s_layers, n, student, regularizer)
    raise ValueError(f"loss: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")


class ContrastTarget:
    r"""The distribution of the data's contrast, log ‖x − m‖ (m: the data's mean row), held
    as its sorted values, and the contrast term that matches a sample to it.

    The term is the squared 1-D Wasserstein distance between the log-norms ``s`` of ``n``
    student samples and this distribution: with ``s`` sorted and :math:`F^{-1}` the
    data's quantile function,

    .. math:: W_2^2 = \frac1n \sum_{k=1}^{n} \big(s_{(k)} - F^{-1}((k - \tfrac12)/n)\big)^2 .

    It is zero when the student's samples spread their contrast as the data do, (ln g)²
    when every sample is g times too strong or too weak, and it is parallel (one sort per
    step). It targets the failure of reverse KL on scale mixtures such as image patches
    (most nearly flat, a few of high contrast: per-patch RMS over two orders of magnitude):
    a mode-seeking student settles on a narrow band of contrasts, which the KL barely
    penalises (a few nats for a dropped component) but which puts its samples far from the
    data. Parallel WaveNet's power loss plays the same part for audio (a student collapsing
    to whispering); this is its analogue for vectors. The quantiles come from all the rows
    once, not from a few per step (whose noise would bias the target).

    Args:
        data: ``[N, ...]`` rows (N ≥ 2) whose contrast the student should match: the
            training rows, or samples of the teacher (then the student matches the
            teacher's spread rather than the data's, and needs no data; see
            docs/distillation.md).

    Example:
        >>> import torch
        >>> data = torch.randn(4000, 8)
        >>> target = ContrastTarget(data)
        >>> float(target.gap(data[:500])) < 0.01, round(float(target.gap(3 * data[:500])), 1)
        (True, 1.2)
    """

    def __init__(self, data: Tensor) -> None:
        rows = data.detach().reshape(data.shape[0], -1).double()
        if rows.shape[0] < 2:
            raise ValueError(f"contrast: needs at least 2 data rows, got {rows.shape[0]}")
        self.center = rows.mean(0)
        self.sorted = self.log_norms(rows).sort().values
        self._quantiles: dict[int, Tensor] = {}

    def log_norms(self, x: Tensor) -> Tensor:
        """The log-norm log ‖x − m‖ of each row of ``x``."""
        gap = x.reshape(x.shape[0], -1) - self.center.to(x.dtype)
        return 0.5 * gap.square().sum(1).clamp(min=1e-30).log()

    def quantiles(self, n: int) -> Tensor:
        """The data's log-norm quantiles at the levels (k − ½)/n, k = 1..n (linear
        interpolation between order statistics; cached per ``n``).
        """
        if n not in self._quantiles:
            position = (torch.arange(n, dtype=torch.float64) + 0.5) / n * (len(self.sorted) - 1)
            low = position.floor().long().clamp(max=len(self.sorted) - 2)
            frac = (position - low).to(self.sorted.device)
            low = low.to(self.sorted.device)
            self._quantiles[n] = self.sorted[low] * (1 - frac) + self.sorted[low + 1] * frac
        return self._quantiles[n]

    def gap(self, x: Tensor) -> Tensor:
        """The contrast term of the samples ``x`` (differentiable through ``x``)."""
        s = self.log_norms(x).sort().values
        return (s - self.quantiles(s.shape[0]).to(s.dtype)).square().mean()


def anchor_term(
    student: Flow,
    data: Tensor,
    kind: str,
    batch: int,
    x: Tensor | None,
    teacher: Flow | None = None,
    contrast: ContrastTarget | None = None,
) -> Tensor:
    r"""The data term: ``"likelihood"`` (−mean log S of ``batch`` random data rows, exact
    and sequential for an IAF), ``"moments"`` (gap in mean and covariance between the
    student's samples ``x`` and the rows), ``"teacher-latent"``, or ``"contrast"`` (the
    distribution of log ‖x − m‖ of the samples ``x`` against the data's:
    :class:`ContrastTarget`, built from ``data`` unless given as ``contrast``).

    ``"teacher-latent"`` regresses the student's generative map onto the teacher's along
    data: each row x is mapped to the teacher's latent u = T⁻¹(x) (one parallel MAF pass,
    no gradient), the student maps u forward, x̂ = S(u) (one parallel IAF pass), and the
    term is mean ‖T⁻¹(x̂) − u‖² (summed over coordinates). It is zero when the student's map
    equals the teacher's (then S = T as densities), it is measured in the teacher's latent
    units (unit scale in every coordinate, whatever the contrast of the patch), and unlike
    the likelihood it never runs the student's sequential inverse. It gives the student the
    pairing that reverse KL lacks: which latents should land on which data, including the
    regions (e.g. flat image patches) that a mode-seeking student never samples.
    """
    if kind == "contrast":
        target = contrast if contrast is not None else ContrastTarget(data)
        return target.gap(x if x is not None else student.rsample(batch))
    index = torch.randint(0, data.shape[0], (batch,), device=data.device)
    rows = data[index]
    if kind == "teacher-latent":
        if teacher is None:
            raise ValueError("anchor: 'teacher-latent' needs the teacher")
        with torch.no_grad():
            u = teacher.transform.inverse(rows)[0]
        x_hat = student.transform(u)[0]
        return (teacher.transform.inverse(x_hat)[0] - u).square().sum(1).mean()
    if kind == "likelihood":
        with validation(False):
            return -student.log_prob(rows).mean()
    if kind == "moments":
        if x is None:
            x = student.rsample(batch)
        x, rows = x.reshape(x.shape[0], -1), rows.reshape(rows.shape[0], -1)
        mean_gap = (x.mean(0) - rows.mean(0)).square().sum()
        cov_gap = (torch.cov(x.T) - torch.cov(rows.T)).square().sum()
        return mean_gap + cov_gap / x.shape[1]
    raise ValueError(f"anchor: unknown data term {kind!r}; choose one of {', '.join(ANCHORS)}")


class DistillationLoss:
    """KL(student ‖ teacher) as an objective of the shared training loop.

    Called by :class:`~invertible.training.loop.Trainer` as ``loss(model, batch, step)``:
    ``model`` is the student, ``batch`` the step's context rows (``[B, 0]`` for
    unconditional flows: only its length, the batch size, is used). Returns the loss to
    minimise and its parts (``kl``, ``cross_entropy``, ``entropy``, ``anchor``). The
    teacher must be frozen (:func:`frozen`) while the loop runs.

    Args:
        teacher: the teacher flow.
        loss: ``"mc"``, ``"analytic-entropy"`` or ``"closed-form"``.
        regularizer: ClariNet's λ (closed form only).
        data_anchor: weight of the data term (``None``/0: off).
        data: ``[N, D]`` real rows for the data term.
        anchor: ``"likelihood"``, ``"moments"``, ``"teacher-latent"`` or ``"contrast"``
            (see :func:`anchor_term`); ``"moments"`` and ``"contrast"`` act on the KL
            estimate's own student samples, no extra pass.
        anchor_batch_size: rows per data term.
        anchor_every: add the data term every this many steps, weighted by it.
        closed_form_layers: the result of :func:`check_closed_form`.
    """

    #: the batches are not data the student models: no batch-norm refresh from them
    refresh_batchnorm = False

    def __init__(
        self,
        teacher: Flow,
        loss: str = "mc",
        *,
        regularizer: float = 0.0,
        data_anchor: float | None = None,
        data: Tensor | None = None,
        anchor: str = "likelihood",
        anchor_batch_size: int = 64,
        anchor_every: int = 1,
        closed_form_layers: tuple[nn.Module, list[nn.Module]] | None = None,
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        if data_anchor and data is None:
            raise ValueError("data_anchor: a data term needs data=[N, D] real data")
        self.teacher = teacher
        self.loss = loss
        self.regularizer = regularizer
        self.data_anchor = data_anchor
        self.data = data
        self.anchor = anchor
        self.anchor_batch_size = anchor_batch_size
        self.anchor_every = anchor_every
        self.closed_form_layers = closed_form_layers
        if data_anchor and anchor not in ANCHORS:
            names = ", ".join(ANCHORS)
            raise ValueError(f"anchor: unknown data term {anchor!r}; choose one of {names}")
        self.contrast: ContrastTarget | None = None
        if data_anchor and anchor == "contrast":
            assert data is not None
            self.contrast = ContrastTarget(data)

    def __call__(self, model: Flow, batch: Tensor, step: int) -> tuple[Tensor, dict]:
        """The loss of one step and its parts."""
        context = batch if batch.shape[-1] > 0 else None
        parts = distillation_losses(
            self.teacher,
            model,
            batch.shape[0],
            self.loss,
            context=context,
            regularizer=self.regularizer,
            closed_form_layers=self.closed_form_layers,
        )
        total = parts["loss"]
        anchor = torch.tensor(float("nan"))
        if self.data_anchor and step % self.anchor_every == 0:
            assert self.data is not None
            anchor = anchor_term(
                model, self.data, self.anchor, self.anchor_batch_size, parts["samples"],
                self.teacher, self.contrast,
            )  # fmt: skip
            total = total + self.data_anchor * self.anchor_every * anchor
        return total, {
            "kl": parts["kl"],
            "cross_entropy": parts["cross_entropy"],
            "entropy": parts["entropy"],
            "anchor": anchor,
        }
