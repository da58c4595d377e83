"""Probability density distillation on the shared training loop: :func:`distill`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from invertible.core import Flow, validation
from invertible.distillation.losses import LOSSES, DistillationLoss, check_closed_form, frozen
from invertible.distillation.sequence import (
    SEQUENCE_LOSSES,
    SequenceDistillationLoss,
    check_sequence_pair,
    is_sequence_pair,
)
from invertible.training.config import TrainConfig
from invertible.training.loop import Trainer
from invertible.training.precision import resolve_precision

__all__ = ["HISTORY_KEYS", "DistillResult", "StudentBatches", "distill"]

#: The per-step series of :attr:`DistillResult.history`.
HISTORY_KEYS = (
    "step",
    "kl",
    "cross_entropy",
    "entropy",
    "loss",
    "anchor",
    "power",
    "rms_ratio",
    "teacher_ll_student",
    "teacher_ll_real",
    "lr",
    "grad_norm",
    "time",
)


@dataclass
class DistillResult:
    """What :func:`distill` returns.

    Attributes:
        student: the trained student (the same object that was passed in).
        loss: the loss variant used.
        history: per-step lists: ``step``, ``kl`` (estimate of KL(S‖T)), ``cross_entropy``
            (estimate of H(S,T)), ``entropy`` (estimate of H(S)), ``loss`` (what was
            minimised, KL plus regulariser and data term), ``anchor`` (data term, if any),
            ``lr``, ``grad_norm`` (before clipping), ``time`` (seconds since the start);
            for sequences also ``power`` (power loss), ``rms_ratio`` (student/real RMS),
            ``teacher_ll_student`` and ``teacher_ll_real`` (the teacher's log-likelihood of
            the student's samples and of real crops). Sequence figures are nats per sample;
            a series is NaN on steps it was not computed.
        wall_time: total seconds.
        config: the arguments of the run (JSON-serialisable).
    """

    student: Flow
    loss: str
    history: dict[str, list[float]]
    wall_time: float
    config: dict[str, Any] = field(default_factory=dict)

    def final(self, key: str = "kl", last: int = 50) -> float:
        """Mean of the last ``last`` recorded values of ``key`` (a smoothed final value;
        NaN when nothing was recorded).
        """
        values = self.history[key][-last:]
        return sum(values) / len(values) if values else float("nan")


class StudentBatches:
    """The "data" of a distillation run: each step's batch is ``batch_size`` context rows
    drawn uniformly (conditional flows), or an empty ``[batch_size, 0]`` tensor whose length
    tells the loss how many student samples to draw. There is no validation split.
    """

    def __init__(self, context: Tensor | None, dtype: torch.dtype, device: torch.device) -> None:
        self.context = context
        self.dtype, self.device = dtype, device

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """The context rows (or the empty rows) of one step."""
        if self.context is None:
            return torch.empty(batch_size, 0, dtype=self.dtype, device=self.device)
        index = torch.randint(0, self.context.shape[0], (batch_size,), generator=generator)
        return self.context[index.to(self.context.device)]


def _check(steps: int, batch_size: int, schedule: str, loss: str, sequence: bool) -> None:
    names = SEQUENCE_LOSSES if sequence else LOSSES
    if loss not in names:
        raise ValueError(f"loss: unknown loss {loss!r}; choose one of {', '.join(names)}")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule: unknown schedule {schedule!r}; choose 'cosine' or 'constant'")


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
    max_time: float | None = None,
    length: int | None = None,
    warmup: int | None = None,
    draws: int = 4,
    log_scale_floor: float | None = None,
    power_loss: float = 0.0,
    real: Tensor | None = None,
    monitor_every: int = 10,
    precision: str = "auto",
    lr_warmup_steps: int = 0,
) -> DistillResult:
    r"""Train ``student`` to minimise KL(student ‖ teacher) with the teacher frozen.

    Each step draws ``batch_size`` samples x and log S(x) from one reparameterised student
    pass, evaluates log T(x) with one teacher density pass, and takes an Adam step on the
    chosen estimator (``loss``, see :mod:`invertible.distillation.losses`):

    * ``"mc"``: mean(log S(x) − log T(x));
    * ``"analytic-entropy"``: −mean(log T(x)) − (H(p_Z) + mean log|det ∂x/∂z|);
    * ``"closed-form"``: mean Σ_i KL(N(b_i, a_i²) ‖ N(μ^T_i, σ^T_i²)) (ClariNet).

    The steps run on the shared training loop (:class:`~invertible.training.loop.Trainer`
    with a :class:`~invertible.distillation.losses.DistillationLoss`): the same Adam,
    schedule, gradient clipping, skipping of non-finite steps and progress bar as
    :func:`invertible.fit`. During the run the teacher is in eval mode with
    ``requires_grad=False`` on all its parameters (restored afterwards); its parameters
    never change and accumulate no gradient. The student is left in eval mode at the end.

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
            its sequential inverse: slow, D passes per IAF layer), ``"moments"`` (squared
            gap between the mean and covariance of the student's samples and of the data)
            or ``"teacher-latent"`` (‖T⁻¹(S(u)) − u‖² with u = T⁻¹(data): the student's
            map regressed onto the teacher's, parallel) or ``"contrast"`` (the
            distribution of the samples' log-norms log ‖x − m‖ matched to the data's,
            parallel and nearly free: a power loss for scale mixtures such as image patches,
            :class:`~invertible.distillation.losses.ContrastTarget`); see
            :func:`~invertible.distillation.losses.anchor_term`.
        anchor_batch_size: data rows per step for the data term.
        anchor_every: add the data term on every ``anchor_every``-th step only (its weight
            multiplied by ``anchor_every``, so the average weight stays ``data_anchor``):
            the likelihood term runs the student's slow sequential inverse, so amortising it
            over several cheap KL steps buys most of its benefit at a fraction of its cost.
        regularizer: ClariNet's λ (closed form only).
        log_every: unused; kept for compatibility (the bar shows the loop's figures).
        progress: show a progress bar (tqdm).
        seed: seed of the run's random numbers (the global RNG state is restored after);
            ``None`` uses the global RNG as it is.
        callback: called as ``callback(step, record)`` after each step.
        max_time: stop after this many seconds (the schedule follows whichever of
            ``steps`` and ``max_time`` runs out first).
        length: sequences only: samples per student sequence (default: the student's
            ``length``).
        warmup: sequences only: leading steps left out of every figure (default: the
            teacher's receptive field, at most half of ``length``).
        draws: sequences only: draws of each x_t for ``loss="conditional-mc"``.
        log_scale_floor: sequences only: floor of the log-scales inside the closed-form
            loss (``None``: none; ClariNet used −7 on its scale).
        power_loss: sequences only: weight of the power loss against ``real``.
        real: sequences only: ``[N, T]`` real audio crops for the power loss and the
            real-audio monitors.
        monitor_every: sequences only: steps between the real-audio monitors.
        precision: ``"auto"`` (default: bf16 where its products are fast, see
            :func:`~invertible.training.precision.resolve_precision`), ``"fp32"``,
            ``"bf16"`` or ``"fp16"`` (CUDA): each step's student and
            teacher passes and the loss run under autocast in that dtype, as in
            :func:`invertible.fit` (see :mod:`invertible.training.precision`); the
            likelihood terms stay float32.
        lr_warmup_steps: a linear learning-rate warm-up over the first steps (it multiplies
            the schedule): Adam's first steps move every weight by about ``lr``, which can
            throw a well-initialised student (e.g. :func:`make_wavenet_student`'s moving-
            average start) far from its start before the moments settle.

    Sequence flows (a :class:`~invertible.WaveNetMAF` or
    :class:`~invertible.LinearPredictionAR` teacher, a :class:`~invertible.WaveNetIAF`
    student) use the per-sample estimators of :mod:`invertible.distillation.sequence`,
    which add ``loss="conditional-mc"`` (Parallel WaveNet) and take ``"closed-form"`` for
    Gaussian conditionals; every figure is then in nats per sample.

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
    sequence = is_sequence_pair(teacher, student)
    _check(steps, batch_size, schedule, loss, sequence)
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise ValueError("student: no trainable parameters")
    config = {
        "steps": steps, "batch_size": batch_size, "loss": loss, "lr": lr,
        "grad_clip": grad_clip, "schedule": schedule, "data_anchor": data_anchor,
        "anchor": anchor if data_anchor else None, "anchor_every": anchor_every,
        "regularizer": regularizer, "seed": seed, "max_time": max_time, "precision": precision,
        "lr_warmup_steps": lr_warmup_steps,
    }  # fmt: skip
    if sequence:
        if data_anchor:
            raise ValueError("data_anchor: not supported for sequences; use power_loss")
        check_sequence_pair(teacher, student, loss)
        length = student.length if length is None else length  # type: ignore[attr-defined]
        if warmup is None:
            warmup = min(teacher.transform.receptive_field, length // 2)  # type: ignore[union-attr]
        estimator = {"length": length, "warmup": warmup, "draws": draws,
                     "log_scale_floor": log_scale_floor, "regularizer": regularizer}  # fmt: skip
        objective: Any = SequenceDistillationLoss(
            teacher, loss, **estimator, power_weight=power_loss, real=real,
            monitor_every=monitor_every,
        )  # fmt: skip
        config |= {**estimator, "power_loss": power_loss, "monitor_every": monitor_every}
    else:
        closed = check_closed_form(teacher, student) if loss == "closed-form" else None
        objective = DistillationLoss(
            teacher, loss, regularizer=regularizer, data_anchor=data_anchor, data=data,
            anchor=anchor, anchor_batch_size=anchor_batch_size, anchor_every=anchor_every,
            closed_form_layers=closed,
        )  # fmt: skip
    device = params[0].device
    config["precision"] = precision = resolve_precision(precision, device)
    train_config = TrainConfig(
        steps=steps, batch_size=batch_size, lr=lr, schedule=schedule, grad_clip=grad_clip,
        patience=None, eval_every=max(steps, 1), seed=None, max_bad_steps=10,
        max_time=max_time, precision=precision, warmup_steps=lr_warmup_steps,
    )  # fmt: skip
    history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
    start = time.perf_counter()

    def record(step: int, numbers: dict[str, Any]) -> None:
        row = {**numbers, "step": float(step), "time": time.perf_counter() - start}
        for k in HISTORY_KEYS:
            history[k].append(float(row.get(k, float("nan"))))
        if callback is not None:
            callback(step, {k: history[k][-1] for k in HISTORY_KEYS})

    trainer = Trainer(
        student, StudentBatches(context, params[0].dtype, device), train_config,
        progress=progress, objective=objective, step_callbacks=[record],
        desc=f"distill[{loss}]",
    )  # fmt: skip
    devices = [device] if device.type == "cuda" else []
    fork = torch.random.fork_rng(devices=devices) if seed is not None else contextlib.nullcontext()
    with fork, frozen(teacher), validation(False):
        if seed is not None:
            torch.manual_seed(seed)
        trainer.run()
    student.eval()
    return DistillResult(student, loss, history, time.perf_counter() - start, config)
