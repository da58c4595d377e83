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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from invertible.core import Compose, Flow, Transform, validation
from invertible.distributions import StandardNormal
from invertible.transforms.elementwise import Affine

__all__ = [
    "LOSSES",
    "DistillResult",
    "check_closed_form",
    "distill",
    "distillation_losses",
    "distillation_report",
    "frozen",
    "gaussian_kl",
    "gradient_variance",
    "make_student",
    "mmd_test",
    "sampling_throughput",
]

LossName = Literal["mc", "analytic-entropy", "closed-form"]
#: The loss variants accepted by :func:`distill`.
LOSSES: tuple[str, ...] = ("mc", "analytic-entropy", "closed-form")

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


def _ar_class() -> type | None:
    try:
        from invertible.transforms.autoregressive import AffineAutoregressive
    except ImportError:  # the autoregressive module is optional at import time
        return None
    return AffineAutoregressive


def _members(transform: Transform) -> list[Transform]:
    """The transforms of a (possibly nested) :class:`Compose`, in generative order."""
    if isinstance(transform, Compose):
        out: list[Transform] = []
        for t in transform.transforms:
            out += _members(t)  # type: ignore[arg-type]
        return out
    return [transform]


def _ordering(layer: nn.Module) -> Tensor:
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
    instead = "; use loss='analytic-entropy' (any flow with a known base entropy) or loss='mc'"
    ar = _ar_class()
    if ar is None:
        raise ValueError(
            "closed-form: needs invertible.transforms.autoregressive.AffineAutoregressive, "
            "which is not available in this installation" + instead
        )
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
            f"(GaussianAR, or MAF(num_layers=1, batch_norm=False)); got {len(t_members)} "
            f"transforms ({', '.join(_describe(t) for t in t_members)})" + instead
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
    t_order = _ordering(t_layer)
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
        if not torch.equal(_ordering(layer), t_order):
            raise ValueError(
                f"closed-form: student layer {k} does not share the teacher's ordering "
                f"(student {_ordering(layer).tolist()[:8]}..., teacher "
                f"{t_order.tolist()[:8]}...); all student layers must use the teacher's "
                "ordering: build the student with invertible.make_student(teacher, ...)" + instead
            )
    return t_layer, s_members


# --------------------------------------------------------------------------- the losses


def _student_pass(student: Flow, n: int, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """One reparameterised z → x pass: (x, log p_Z(z), log|det ∂x/∂z|), as in
    :meth:`Flow.sample_and_log_prob` (which returns x and log p_Z(z) − ladj)."""
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
    return {"loss": loss, "kl": kl, "cross_entropy": kl + entropy, "entropy": entropy}


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
    ``entropy`` (estimate of H(S)). The teacher should be frozen (:func:`frozen`).

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
        return {"loss": kl, "kl": kl, "cross_entropy": -log_t.mean(), "entropy": -log_s.mean()}
    if loss == "analytic-entropy":
        entropy_fn = getattr(student.base, "entropy", None)
        if entropy_fn is None:
            raise ValueError(
                f"analytic-entropy: the student's base {_describe(student.base)} has no "
                "entropy(); use loss='mc'"
            )
        context = student._check_context(context, n)
        x, _, ladj = _student_pass(student, n, context)
        log_t = teacher.log_prob(x, context)
        entropy = float(entropy_fn()) + ladj.mean()
        cross = -log_t.mean()
        kl = cross - entropy
        return {"loss": kl, "kl": kl, "cross_entropy": cross, "entropy": entropy}
    if loss == "closed-form":
        if context is not None:
            raise ValueError("closed-form: conditional flows are not supported; use loss='mc'")
        t_layer, s_layers = closed_form_layers or check_closed_form(teacher, student)
        return _closed_form_terms(t_layer, s_layers, n, student, regularizer)
    raise ValueError(f"loss: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")


# ------------------------------------------------------------------------- distillation


@dataclass
class DistillResult:
    """What :func:`distill` returns.

    Attributes:
        student: the trained student (the same object that was passed in).
        loss: the loss variant used.
        history: per-step lists: ``step``, ``kl`` (estimate of KL(S‖T)), ``cross_entropy``
            (estimate of H(S,T)), ``entropy`` (estimate of H(S)), ``loss`` (what was
            minimised, KL plus regulariser and data term), ``anchor`` (data term, if any),
            ``lr``, ``grad_norm`` (before clipping), ``time`` (seconds since the start).
        wall_time: total seconds.
        config: the arguments of the run (JSON-serialisable).
    """

    student: Flow
    loss: str
    history: dict[str, list[float]]
    wall_time: float
    config: dict[str, Any] = field(default_factory=dict)

    def final(self, key: str = "kl", last: int = 50) -> float:
        """Mean of the last ``last`` recorded values of ``key`` (a smoothed final value)."""
        values = self.history[key][-last:]
        return sum(values) / max(len(values), 1)


def _anchor_term(student: Flow, data: Tensor, kind: str, batch: int, x: Tensor | None) -> Tensor:
    index = torch.randint(0, data.shape[0], (batch,), device=data.device)
    rows = data[index]
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
    raise ValueError(f"anchor: unknown data term {kind!r}; choose 'likelihood' or 'moments'")


def distill(
    teacher: Flow,
    student: Flow,
    *,
    steps: int,
    batch_size: int = 256,
    loss: str = "mc",
    lr: float = 1e-3,
    grad_clip: float | None = 5.0,
    schedule: str = "cosine",
    context: Tensor | None = None,
    data_anchor: float | None = None,
    data: Tensor | None = None,
    anchor: str = "likelihood",
    anchor_batch_size: int = 64,
    anchor_every: int = 1,
    regularizer: float = 0.0,
    log_every: int = 100,
    progress: bool = True,
    seed: int | None = 0,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> DistillResult:
    r"""Train ``student`` to minimise KL(student ‖ teacher) with the teacher frozen.

    Each step draws ``batch_size`` samples x and log S(x) from one reparameterised student
    pass, evaluates log T(x) with one teacher density pass, and takes an Adam step on the
    chosen estimator (``loss``, see the module docstring):

    * ``"mc"``: mean(log S(x) − log T(x));
    * ``"analytic-entropy"``: −mean(log T(x)) − (H(p_Z) + mean log|det ∂x/∂z|);
    * ``"closed-form"``: mean Σ_i KL(N(b_i, a_i²) ‖ N(μ^T_i, σ^T_i²)) (ClariNet).

    During the run the teacher is in eval mode with ``requires_grad=False`` on all its
    parameters (restored afterwards); its parameters never change and accumulate no
    gradient. The student is left in eval mode at the end.

    Args:
        teacher: the frozen teacher (a MAF: parallel density).
        student: the student (an IAF: parallel sampling); trained in place.
        steps: number of optimisation steps.
        batch_size: student samples per step.
        loss: ``"mc"``, ``"analytic-entropy"`` or ``"closed-form"``.
        lr: Adam learning rate.
        grad_clip: clip the global gradient norm to this (``None``: no clipping).
        schedule: ``"cosine"`` (anneal to 0 over ``steps``) or ``"constant"``.
        context: for conditional flows, ``[N, C]`` context rows; each step draws
            ``batch_size`` of them uniformly.
        data_anchor: weight of an optional data term added to the loss (``None``: off).
        data: ``[N, D]`` real data for the data term.
        anchor: ``"likelihood"`` (−mean log S(data), the student's exact log-likelihood via
            its sequential inverse: slow, D passes per IAF layer) or ``"moments"`` (squared
            gap between the mean and covariance of the student's samples and of the data).
        anchor_batch_size: data rows per step for the data term.
        anchor_every: add the data term on every ``anchor_every``-th step only (its weight
            multiplied by ``anchor_every``, so the average weight stays ``data_anchor``):
            the likelihood term runs the student's slow sequential inverse, so amortising it
            over several cheap KL steps buys most of its benefit at a fraction of its cost.
        regularizer: ClariNet's λ (closed form only).
        log_every: print/postfix the running estimates every ``log_every`` steps.
        progress: show a progress bar (tqdm).
        seed: seed of the run's random numbers (the global RNG state is restored after);
            ``None`` uses the global RNG as it is.
        callback: called as ``callback(step, record)`` after each step.

    Returns:
        A :class:`DistillResult` with the per-step history and the wall time.

    Example:
        >>> import torch, invertible
        >>> t = invertible.Flow(invertible.ActNorm(3), invertible.StandardNormal(3))
        >>> s = invertible.Flow(invertible.ActNorm(3), invertible.StandardNormal(3))
        >>> r = invertible.distill(t, s, steps=5, loss="analytic-entropy", progress=False)
        >>> len(r.history["kl"])
        5
    """
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule: unknown schedule {schedule!r}; choose 'cosine' or 'constant'")
    if data_anchor and data is None:
        raise ValueError("data_anchor: a data term needs data=[N, D] real data")
    closed = check_closed_form(teacher, student) if loss == "closed-form" else None
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise ValueError("student: no trainable parameters")
    device = params[0].device
    config = {
        "steps": steps, "batch_size": batch_size, "loss": loss, "lr": lr,
        "grad_clip": grad_clip, "schedule": schedule, "data_anchor": data_anchor,
        "anchor": anchor if data_anchor else None, "anchor_every": anchor_every,
        "regularizer": regularizer, "seed": seed,
    }  # fmt: skip
    keys = ("step", "kl", "cross_entropy", "entropy", "loss", "anchor", "lr", "grad_norm", "time")
    history: dict[str, list[float]] = {k: [] for k in keys}
    from invertible.training import adam

    optimizer = adam(params, lr=lr)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
        if schedule == "cosine"
        else None
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"distill[{loss}]", leave=False)
    devices = [device] if device.type == "cuda" else []
    fork = torch.random.fork_rng(devices=devices) if seed is not None else contextlib.nullcontext()
    start = time.perf_counter()
    with fork, frozen(teacher), validation(False):
        if seed is not None:
            torch.manual_seed(seed)
        student.train()
        for step in range(steps):
            ctx = None
            if context is not None:
                ctx = context[torch.randint(0, context.shape[0], (batch_size,), device=device)]
            parts = distillation_losses(
                teacher, student, batch_size, loss, context=ctx, regularizer=regularizer,
                closed_form_layers=closed,
            )  # fmt: skip
            total = parts["loss"]
            anchor_value = float("nan")
            if data_anchor and step % anchor_every == 0:
                term = _anchor_term(student, data, anchor, anchor_batch_size, None)  # type: ignore[arg-type]
                anchor_value = float(term.detach())
                total = total + data_anchor * anchor_every * term
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            norm = torch.nn.utils.clip_grad_norm_(
                params, grad_clip if grad_clip is not None else float("inf")
            )
            optimizer.step()
            record = {
                "step": float(step),
                "kl": float(parts["kl"].detach()),
                "cross_entropy": float(parts["cross_entropy"].detach()),
                "entropy": float(parts["entropy"].detach()),
                "loss": float(total.detach()),
                "anchor": anchor_value,
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": float(norm),
                "time": time.perf_counter() - start,
            }
            if scheduler is not None:
                scheduler.step()
            for k in keys:
                history[k].append(record[k])
            if callback is not None:
                callback(step, record)
            if bar is not None:
                bar.update(1)
                if log_every and (step + 1) % log_every == 0:
                    window = history["kl"][-log_every:]
                    bar.set_postfix(kl=f"{sum(window) / len(window):.4g}")
    if bar is not None:
        bar.close()
    student.eval()
    return DistillResult(student, loss, history, time.perf_counter() - start, config)


# ------------------------------------------------------------------------------ students


def make_student(
    teacher: Flow,
    num_layers: int = 5,
    hidden_features: Sequence[int] = (512, 512),
    *,
    log_scale_bound: float | None = 5.0,
    seed: int = 0,
) -> Flow:
    """An affine :class:`~invertible.IAF` student for ``teacher`` whose layers all share
    the ordering of the teacher's autoregressive layer next to the data.

    Every IAF layer gets the same ordering and nothing sits between them, so when the
    teacher is a one-layer Gaussian autoregressive model (``GaussianAR``, or
    ``MAF(num_layers=1, batch_norm=False)``) the ClariNet closed-form loss applies
    (:func:`check_closed_form`). For deeper teachers the student is still a valid IAF for
    ``loss="mc"`` or ``"analytic-entropy"`` (where the reversal between layers of the
    default ``IAF`` preset may train better). A teacher without autoregressive layers gives
    the natural ordering. The result is an ``IAF`` preset, so :func:`invertible.save`
    handles it.

    Args:
        teacher: the teacher flow (its dimension and ordering are read).
        num_layers: number of IAF layers.
        hidden_features: hidden widths of each MADE.
        log_scale_bound: soft bound of each layer's |α|.
        seed: seed of the MADE initialisation.

    Example:
        >>> import invertible
        >>> teacher = invertible.GaussianAR(3, hidden_features=(8,), ordering=[2, 0, 1])
        >>> make_student(teacher, 2, (8,)).config["ordering"]
        [2, 0, 1]
    """
    from invertible.presets.autoregressive import IAF

    ar = _ar_class()
    layers = [t for t in _members(teacher.transform) if ar is not None and isinstance(t, ar)]
    ordering: str | list[int] = _ordering(layers[-1]).tolist() if layers else "natural"
    return IAF(
        teacher.features,
        num_layers=num_layers,
        hidden_features=hidden_features,
        ordering=ordering,
        log_scale_bound=log_scale_bound,
        seed=seed,
    )


# -------------------------------------------------------------------------- evaluation


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    return (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def _median_bandwidth(pooled: Tensor, max_points: int = 2000) -> float:
    sub = pooled[:max_points]
    d2 = _sq_dists(sub, sub)
    off = d2[~torch.eye(sub.shape[0], dtype=torch.bool, device=sub.device)]
    return float(off.median().clamp_min(1e-12).sqrt())


def _mmd2_from_kernel(k: Tensor, n: int) -> Tensor:
    """Unbiased MMD² from the pooled kernel matrix (first n rows: sample x)."""
    m = k.shape[0] - n
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2 * kxy.mean()


def mmd_test(
    x: Tensor, y: Tensor, *, permutations: int = 200, bandwidth: float | None = None, seed: int = 0
) -> tuple[float, float]:
    r"""Kernel two-sample permutation test; returns ``(MMD², p-value)``.

    Unbiased squared maximum mean discrepancy with a Gaussian kernel
    k(a, b) = exp(−‖a − b‖² / (2h²)), h = median pairwise distance of the pooled sample
    (as :func:`invertible.evaluation.mmd`; Gretton et al., *A Kernel Two-Sample Test*,
    JMLR 2012):

    .. math:: \mathrm{MMD}^2_u = \frac{\sum_{i\ne j} k(x_i,x_j)}{n(n-1)}
              + \frac{\sum_{i\ne j} k(y_i,y_j)}{m(m-1)} - \frac{2}{nm}\sum_{i,j} k(x_i,y_j)

    The p-value is (1 + #{permuted MMD² ≥ observed}) / (1 + permutations), with the kernel
    (median bandwidth of the pooled sample) fixed across permutations. Deterministic given
    ``seed``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(1)
        >>> a, b = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 0.5
        >>> mmd_test(a, b, permutations=100)[1] < 0.05
        True
    """
    x, y = x.detach().double().flatten(1), y.detach().double().flatten(1)
    n = x.shape[0]
    pooled = torch.cat([x, y])
    h = bandwidth if bandwidth is not None else _median_bandwidth(pooled)
    k = torch.exp(-_sq_dists(pooled, pooled) / (2 * h * h))
    observed = float(_mmd2_from_kernel(k, n))
    generator = torch.Generator().manual_seed(seed)
    total, m = k.shape[0], k.shape[0] - n
    # All permutations at once: row p of `in_x` marks the rows relabelled as sample x.
    perms = torch.stack([torch.randperm(total, generator=generator) for _ in range(permutations)])
    in_x = (perms < n).to(k.dtype).to(k.device)  # [P, N]
    in_y = 1 - in_x
    diag = k.diagonal()
    kx = in_x @ k  # [P, N]
    sxx = ((kx * in_x).sum(1) - in_x @ diag) / (n * (n - 1))
    syy = ((in_y @ k * in_y).sum(1) - in_y @ diag) / (m * (m - 1))
    sxy = (kx * in_y).sum(1) / (n * m)
    exceed = int(((sxx + syy - 2 * sxy) >= observed - 1e-12).sum())
    return observed, (1 + exceed) / (1 + permutations)


def _flat_grad(params: Sequence[Tensor]) -> Tensor:
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
    )


def gradient_variance(
    teacher: Flow,
    student: Flow,
    loss: str,
    *,
    batch_size: int = 256,
    num_batches: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    r"""Variance of the minibatch gradient of a distillation loss at the current student.

    Draws ``num_batches`` independent minibatches at the *same* student state and returns
    ``trace_var`` = mean_k ‖g_k − ḡ‖² (the trace of the gradient covariance, unbiased),
    ``mean_sq_norm`` = ‖ḡ‖², their ratio ``relative`` (noise-to-signal), and the standard
    deviation of the KL *value* estimate across batches (``kl_std``) with its mean
    (``kl_mean``). The student's parameters are not changed (gradients are cleared after).

    Example:
        >>> import invertible
        >>> t = invertible.Flow(invertible.ActNorm(2), invertible.StandardNormal(2))
        >>> s = invertible.Flow(invertible.ActNorm(2), invertible.StandardNormal(2))
        >>> sorted(gradient_variance(t, s, "mc", batch_size=8, num_batches=4))
        ['kl_mean', 'kl_std', 'mean_sq_norm', 'relative', 'trace_var']
    """
    params = [p for p in student.parameters() if p.requires_grad]
    closed = check_closed_form(teacher, student) if loss == "closed-form" else None
    grads, values = [], []
    was_training = student.training
    student.eval()
    with torch.random.fork_rng(devices=[]), frozen(teacher), validation(False):
        torch.manual_seed(seed)
        for _ in range(num_batches):
            for p in params:
                p.grad = None
            parts = distillation_losses(
                teacher, student, batch_size, loss, closed_form_layers=closed
            )
            parts["loss"].backward()
            grads.append(_flat_grad(params).double())
            values.append(float(parts["kl"].detach()))
    for p in params:
        p.grad = None
    student.train(was_training)
    g = torch.stack(grads)
    mean = g.mean(0)
    trace_var = float((g - mean).square().sum(1).sum() / (num_batches - 1))
    mean_sq = float(mean.square().sum())
    kl = torch.tensor(values, dtype=torch.float64)
    return {
        "trace_var": trace_var,
        "mean_sq_norm": mean_sq,
        "relative": trace_var / max(mean_sq, 1e-300),
        "kl_mean": float(kl.mean()),
        "kl_std": float(kl.std()),
    }


def _set_sequential(flow: Flow, method: str | None) -> list[tuple[nn.Module, str]]:
    ar = _ar_class()
    saved = []
    for m in flow.modules():
        if ar is not None and isinstance(m, ar):
            saved.append((m, m.sequential))
            if method is not None:
                m.sequential = method
    return saved


def sampling_throughput(
    flow: Flow, n: int = 1000, *, repeats: int = 3, sequential: str | None = None
) -> float:
    """Samples per second of ``flow.sample(n)`` (best of ``repeats``, after a warm-up).

    Args:
        flow: the flow to sample.
        n: batch size of each call.
        repeats: timed calls; the fastest is reported.
        sequential: for autoregressive layers, force ``"naive"`` (D full MADE passes per
            layer, as the peer libraries sample) or ``"incremental"`` (the library's exact
            fast sampler); ``None`` leaves them as they are. Restored afterwards.

    Example:
        >>> import invertible
        >>> flow = invertible.MAF(3, num_layers=1, hidden_features=(8,))
        >>> sampling_throughput(flow, 100, repeats=1, sequential="naive") > 0
        True
    """
    from invertible.evaluation import sampling_throughput as throughput

    saved = _set_sequential(flow, sequential)
    try:
        with validation(False):
            return throughput(flow, n=n, repeats=repeats)
    finally:
        for module, method in saved:
            module.sequential = method


# ------------------------------------------------------------------------------ report


def _as_tensor(data: Any, like: Flow) -> Tensor:
    dtype = like._dtype() or torch.float32
    device = next(iter(like.parameters())).device
    return torch.as_tensor(data, dtype=dtype, device=device)


def kl_curve_figure(results: Sequence[DistillResult], smooth: int = 25) -> Any:
    """A matplotlib figure of the KL estimate (running mean) and its parts per step."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in results:
        kl = torch.tensor(r.history["kl"], dtype=torch.float64)
        if kl.numel() == 0:
            continue
        w = max(1, min(smooth, kl.numel()))
        running = torch.nn.functional.avg_pool1d(kl[None, None], w, stride=1)[0, 0]
        steps = torch.arange(w - 1, kl.numel())
        axes[0].plot(steps.numpy(), running.numpy(), label=r.loss)
        axes[1].plot(r.history["cross_entropy"], lw=0.6, label=f"H(S,T) {r.loss}")
        axes[1].plot(r.history["entropy"], lw=0.6, ls="--", label=f"H(S) {r.loss}")
    axes[0].set(xlabel="step", ylabel="KL(S‖T) estimate (nats)", yscale="symlog",
                title=f"KL estimate (running mean of {smooth})")  # fmt: skip
    axes[1].set(xlabel="step", ylabel="nats", title="cross-entropy and entropy estimates")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def distillation_report(
    teacher: Flow,
    student: Flow,
    data: Any,
    *,
    results: Sequence[DistillResult] = (),
    n_samples: int = 2000,
    throughput_batch: int = 1000,
    repeats: int = 3,
    test_rows: int | None = None,
    mmd_rows: int = 2000,
    seed: int = 0,
) -> tuple[str, dict[str, Any]]:
    """Markdown section and figures comparing a distilled student with its teacher.

    Measures, on this machine in one run: sampling throughput (same batch) of the student,
    of the teacher sampled the peer way (``sequential="naive"``: D full MADE passes per
    layer) and with the library's exact incremental sampler; the exact test log-likelihood
    of both (the student's through its sequential inverse); the teacher's log-likelihood
    of student samples (and of its own samples, for reference); MMD² of student and of
    teacher samples against test data (Gaussian kernel, median heuristic); KL curves of
    ``results``.

    Args:
        teacher, student: the two flows.
        data: a dataset with ``.test`` (numpy ``[N, D]``), or a test array/tensor.
        results: :class:`DistillResult` s to plot (e.g. one per loss variant).
        n_samples: samples drawn from each model for the log-likelihood and MMD rows.
        throughput_batch: batch size of the throughput measurement.
        repeats: timed repetitions (best kept).
        test_rows: evaluate log-likelihoods on the first ``test_rows`` test rows
            (``None``: all).
        mmd_rows: rows of each sample used for MMD.
        seed: seed of the sampling.

    Returns:
        ``(markdown, figures)``: figures maps a name (``"distill_kl"``) to a matplotlib
        figure; the markdown refers to it as ``distill_kl.png``. Also the numbers in
        ``figures["metrics"]`` (a dict) for programmatic use.
    """
    metrics = evaluate_student(
        teacher, student, data, n_samples=n_samples, throughput_batch=throughput_batch,
        repeats=repeats, test_rows=test_rows, mmd_rows=mmd_rows, seed=seed,
    )  # fmt: skip
    m = metrics
    lines = [
        "## Probability density distillation",
        "",
        f"Teacher: {type(teacher).__name__} ({_count(teacher):,} parameters); student: "
        f"{type(student).__name__} ({_count(student):,} parameters); D = {int(m['features'])}. "
        "Student trained on KL(S‖T) (van den Oord et al. 2017; Ping et al. 2018).",
        "",
        "| model | samples/s (batch "
        f"{throughput_batch}) | student speed-up | test log-lik (nats) | teacher log-lik of "
        "its samples | MMD² vs test |",
        "|---|---:|---:|---:|---:|---:|",
        f"| teacher, peer sampler (D full passes/layer) | {m['teacher_naive_sps']:,.0f} | "
        f"{m['speedup_naive']:.1f}× | {m['teacher_test_ll']:.3f} | "
        f"{m['teacher_ll_teacher_samples']:.3f} | {m['mmd_teacher']:.2e} |",
        f"| teacher, incremental exact sampler | {m['teacher_best_sps']:,.0f} | "
        f"{m['speedup_best']:.1f}× | | | |",
        f"| student (one pass/layer) | {m['student_sps']:,.0f} | 1.0× | "
        f"{m['student_test_ll']:.3f} | {m['teacher_ll_student_samples']:.3f} | "
        f"{m['mmd_student']:.2e} |",
        "",
        f"The student's test log-likelihood is {abs(m['ll_gap_pct']):.2f}% "
        f"{'below' if m['ll_gap_pct'] < 0 else 'above'} the teacher's "
        f"((student − teacher)/|teacher|); MMD permutation p-value of student vs test samples "
        f"{m['mmd_student_p']:.3f} (teacher: {m['mmd_teacher_p']:.3f}).",
    ]
    if results:
        lines += [
            "",
            "| loss | steps | final KL estimate | H(S,T) | H(S) | wall time (s) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in results:
            lines.append(
                f"| {r.loss} | {len(r.history['kl'])} | {r.final('kl'):.4f} | "
                f"{r.final('cross_entropy'):.3f} | {r.final('entropy'):.3f} | "
                f"{r.wall_time:.1f} |"
            )
        lines += ["", "![KL curves](distill_kl.png)"]
    figures: dict[str, Any] = {"metrics": metrics}
    if results:
        figures["distill_kl"] = kl_curve_figure(results)
    return "\n".join(lines) + "\n", figures


def _count(flow: nn.Module) -> int:
    return sum(p.numel() for p in flow.parameters())


def evaluate_student(
    teacher: Flow,
    student: Flow,
    data: Any,
    *,
    n_samples: int = 2000,
    throughput_batch: int = 1000,
    repeats: int = 3,
    test_rows: int | None = None,
    mmd_rows: int = 2000,
    seed: int = 0,
    chunk_size: int = 2048,
) -> dict[str, float]:
    """The numbers of :func:`distillation_report`, as a dict (see there)."""
    test = getattr(data, "test", data)
    test = _as_tensor(test, teacher)
    if test_rows is not None:
        test = test[:test_rows]
    teacher.eval()
    student.eval()
    out: dict[str, float] = {"features": float(teacher.features)}
    out["teacher_naive_sps"] = sampling_throughput(
        teacher, throughput_batch, repeats=repeats, sequential="naive"
    )
    out["teacher_best_sps"] = sampling_throughput(
        teacher, throughput_batch, repeats=repeats, sequential="incremental"
    )
    out["student_sps"] = sampling_throughput(student, throughput_batch, repeats=repeats)
    out["speedup_naive"] = out["student_sps"] / out["teacher_naive_sps"]
    out["speedup_best"] = out["student_sps"] / out["teacher_best_sps"]
    with torch.no_grad(), validation(False), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out["teacher_test_ll"] = float(teacher.log_prob_chunked(test, chunk_size=chunk_size).mean())
        out["student_test_ll"] = float(student.log_prob_chunked(test, chunk_size=chunk_size).mean())
        s_samples = student.sample(n_samples, chunk_size=chunk_size)
        t_samples = teacher.sample(n_samples, chunk_size=chunk_size)
        out["teacher_ll_student_samples"] = float(
            teacher.log_prob_chunked(s_samples, chunk_size=chunk_size).mean()
        )
        out["teacher_ll_teacher_samples"] = float(
            teacher.log_prob_chunked(t_samples, chunk_size=chunk_size).mean()
        )
    ref = test[torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(seed))]
    ref = ref[:mmd_rows]
    out["mmd_student"], out["mmd_student_p"] = mmd_test(s_samples[:mmd_rows], ref, seed=seed)
    out["mmd_teacher"], out["mmd_teacher_p"] = mmd_test(t_samples[:mmd_rows], ref, seed=seed)
    out["ll_gap_pct"] = (
        100 * (out["student_test_ll"] - out["teacher_test_ll"]) / abs(out["teacher_test_ll"])
    )
    return out
