r"""Probability density distillation for sequences: the Parallel WaveNet losses.

The teacher is a sequence flow in MAF mode (:class:`~invertible.WaveNetMAF`, or the
:class:`~invertible.LinearPredictionAR` baseline): one parallel pass gives every
conditional p_T(x_t | x_{<t}) = loc-scale(μ^T_t, σ^T_t). The student is a
:class:`~invertible.WaveNetIAF`: K affine flows in time order, so given the noise prefix
z_{<t} its conditional is loc-scale too, p_S(x_t | z_{<t}) with shift μ^S_t and scale
s_t = Π_k s^k_t (:meth:`~invertible.WaveNetIAF.conditionals`), and x = μ^S + s·z is one
parallel pass. Per sample, over the scored steps t ≥ ``warmup`` (the first receptive
field of the teacher sees zero history, so ClariNet leaves it out):

.. math::

    \mathrm{KL}(S\|T) = \frac1{T-w}\sum_{t\ge w} \mathbb{E}_S\big[
        \mathrm{KL}(p_S(x_t|z_{<t}) \,\|\, p_T(x_t|x_{<t}))\big]
      = H(S,T) - H(S).

Estimators (``loss=``), each returning the same named parts, in nats per sample:

``"mc"``
    log S(x_t) − log T(x_t) at the one sampled x.
``"analytic-entropy"``
    H(S) exactly given the prefix: H(p_U) + log s_t (Gaussian base: ½log(2πe) + log s;
    logistic: 2 + log s); the cross-entropy −log T(x_t) at the sampled x.
``"conditional-mc"`` (Parallel WaveNet)
    The analytic entropy, and the cross-entropy averaged over ``draws`` values
    x_t^{(j)} = μ^S_t + s_t·ε_j drawn from the student's conditional with the prefix
    fixed, all scored by the one teacher pass (μ^T_t, σ^T_t depend on the prefix only).
    Works for Gaussian and logistic conditionals.
``"closed-form"`` (ClariNet)
    KL(N(μ^S_t, s_t²) ‖ N(μ^T_t, σ^T_t²)) per step, exact given the prefix; Gaussian
    bases only. The loss floors both log-scales at ``log_scale_floor`` and adds
    λ·(log s_t − log σ^T_t)² (``regularizer``; ClariNet used λ = 4); the reported ``kl``
    is the unfloored closed form without the regulariser.

The power loss (:func:`power_loss`) keeps the student's spectrum at the level of real
speech: reverse KL alone lets students "whisper".

Example:
    >>> import torch, invertible
    >>> teacher = invertible.LinearPredictionAR(order=1, length=64)
    >>> student = invertible.WaveNetIAF(num_flows=1, residual_channels=4, skip_channels=4,
    ...                                 dilations=[1], length=64)
    >>> parts = sequence_distillation_losses(teacher, student, 8, "closed-form", length=64)
    >>> round(float(parts["kl"].detach()), 4)  # identical unit-Gaussian models
    0.0
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from invertible.core import Flow
from invertible.distillation.losses import gaussian_kl
from invertible.distributions import StandardNormal
from invertible.presets.wavenet import SequenceFlow, WaveNetIAF
from invertible.transforms.sequence import WaveNetAutoregressive

__all__ = [
    "SEQUENCE_LOSSES",
    "SequenceDistillationLoss",
    "check_sequence_pair",
    "is_sequence_pair",
    "power_loss",
    "sequence_distillation_losses",
    "time_averaged_spectrum",
]

#: The estimators :func:`sequence_distillation_losses` accepts.
SEQUENCE_LOSSES: tuple[str, ...] = ("mc", "analytic-entropy", "conditional-mc", "closed-form")

_INSTEAD = "; use loss='conditional-mc' (Parallel WaveNet) or 'analytic-entropy'"


def _teacher_layer(teacher: Flow) -> WaveNetAutoregressive | None:
    layer = getattr(teacher, "transform", None)
    if isinstance(teacher, SequenceFlow) and isinstance(layer, WaveNetAutoregressive):
        return layer if layer.mode == "maf" else None
    return None


def is_sequence_pair(teacher: Flow, student: Flow) -> bool:
    """Whether (teacher, student) is a sequence pair: either one is a sequence flow."""
    return isinstance(teacher, SequenceFlow) or isinstance(student, SequenceFlow)


def check_sequence_pair(teacher: Flow, student: Flow, loss: str) -> None:
    """Check that ``loss`` applies to a sequence teacher and student.

    The teacher must be one WaveNet layer in MAF mode (``WaveNetMAF``,
    ``LinearPredictionAR``) and the student a ``WaveNetIAF``, both unconditional;
    ``"closed-form"`` also needs Gaussian (``base="normal"``) bases on both sides.

    Raises:
        ValueError: naming the first condition that fails and what to use instead.
    """
    if loss not in SEQUENCE_LOSSES:
        raise ValueError(
            f"loss: unknown loss {loss!r} for sequence flows; choose one of "
            f"{', '.join(SEQUENCE_LOSSES)}"
        )
    if _teacher_layer(teacher) is None:
        raise ValueError(
            f"teacher: sequence distillation needs a WaveNetMAF or LinearPredictionAR teacher "
            f"(one parallel density pass), got {type(teacher).__name__}"
        )
    if not isinstance(student, WaveNetIAF):
        raise ValueError(
            f"student: sequence distillation needs a WaveNetIAF student (one parallel sampling "
            f"pass), got {type(student).__name__}; build one with invertible.make_wavenet_student"
        )
    if teacher.context_features or student.context_features:
        raise ValueError("sequence distillation: mel-conditioned flows are not supported yet")
    if loss == "closed-form":
        for name, flow in (("teacher", teacher), ("student", student)):
            element = flow.base.element  # type: ignore[union-attr]
            if not isinstance(element, StandardNormal):
                raise ValueError(
                    f"closed-form: the {name}'s conditionals are {type(element).__name__[8:]}, "
                    "and the KL between them has no closed form; it needs Gaussian "
                    "conditionals (base='normal') in teacher and student" + _INSTEAD
                )


def _scored(values: Tensor, warmup: int) -> Tensor:
    """Mean over the batch and the steps t ≥ ``warmup``: a figure per sample."""
    return values[:, warmup:].mean()


def _loc_scale_log_prob(flow: Flow, x: Tensor, shift: Tensor, log_scale: Tensor) -> Tensor:
    """The log-density log p(x_t) of the loc-scale conditional of ``flow``'s base, per step."""
    u = (x - shift) * (-log_scale).exp()
    return flow.base.step_log_prob(u) - log_scale  # type: ignore[operator]


def sequence_distillation_losses(
    teacher: Flow,
    student: Flow,
    n: int,
    loss: str = "conditional-mc",
    *,
    length: int,
    warmup: int = 0,
    draws: int = 4,
    log_scale_floor: float | None = None,
    regularizer: float = 0.0,
) -> dict[str, Any]:
    r"""One minibatch estimate of KL(S ‖ T) per sample for a WaveNet teacher and student.

    One parallel student pass draws ``n`` sequences of ``length`` samples with their
    conditionals, one parallel teacher pass scores them; see the module doc for the
    estimators. All figures are nats per sample over the steps t ≥ ``warmup``.

    Args:
        teacher: the frozen teacher (:class:`~invertible.WaveNetMAF`,
            :class:`~invertible.LinearPredictionAR`).
        student: the :class:`~invertible.WaveNetIAF` student.
        n: sequences per estimate.
        loss: ``"mc"``, ``"analytic-entropy"``, ``"conditional-mc"`` or ``"closed-form"``.
        length: samples per sequence.
        warmup: leading steps left out of every figure (< ``length``).
        draws: samples of each x_t for ``"conditional-mc"``.
        log_scale_floor: floor of both log-scales inside the closed-form loss (``None``:
            none).
        regularizer: λ of λ·(log s − log σ^T)² (closed form only).

    Returns:
        Scalar tensors ``loss`` (to minimise), ``kl``, ``cross_entropy``, ``entropy``,
        ``teacher_ll`` (mean log T of the sampled x per sample) and the samples ``x``
        ``[n, length]`` (for the power loss).

    Example:
        >>> import torch, invertible
        >>> teacher = invertible.WaveNetMAF(residual_channels=4, skip_channels=4,
        ...                                 dilations=[1], base="logistic")
        >>> student = invertible.WaveNetIAF(num_flows=2, residual_channels=4,
        ...                                 skip_channels=4, dilations=[1], base="logistic")
        >>> parts = sequence_distillation_losses(teacher, student, 2, length=50)
        >>> round(float(parts["kl"].detach()), 6), parts["x"].shape
        (0.0, torch.Size([2, 50]))
    """
    if not 0 <= warmup < length:
        raise ValueError(f"warmup: expected 0 <= warmup < length={length}, got {warmup}")
    if draws < 1:
        raise ValueError(f"draws: expected >= 1, got {draws}")
    z = student.base.rsample(n, length=length)  # type: ignore[call-arg]
    shift, log_s = student.conditionals(z)  # type: ignore[operator]
    x = z * log_s.exp() + shift
    mu_t, log_sigma_t = _teacher_layer(teacher).conditionals(x)  # type: ignore[union-attr]
    log_t = _loc_scale_log_prob(teacher, x, mu_t, log_sigma_t)
    entropy_steps = student.base.entropy_rate() + log_s  # type: ignore[operator]
    entropy = _scored(entropy_steps, warmup)
    parts: dict[str, Any] = {"teacher_ll": _scored(log_t, warmup).detach(), "x": x}
    if loss == "mc":
        log_s_x = student.base.step_log_prob(z) - log_s  # type: ignore[operator]
        kl = _scored(log_s_x - log_t, warmup)
        return {**parts, "loss": kl, "kl": kl, "cross_entropy": -_scored(log_t, warmup),
                "entropy": -_scored(log_s_x, warmup)}  # fmt: skip
    if loss == "analytic-entropy":
        cross = -_scored(log_t, warmup)
        return {**parts, "loss": cross - entropy, "kl": cross - entropy,
                "cross_entropy": cross, "entropy": entropy}  # fmt: skip
    if loss == "conditional-mc":
        eps = student.base.rsample(draws * n, length=length).view(draws, n, length)  # type: ignore[call-arg]
        x_draws = shift + log_s.exp() * eps
        mu_rows, log_sigma_rows = mu_t.repeat(draws, 1), log_sigma_t.repeat(draws, 1)
        log_t_draws = _loc_scale_log_prob(teacher, x_draws.flatten(0, 1), mu_rows, log_sigma_rows)
        cross = -_scored(log_t_draws, warmup)
        return {**parts, "loss": cross - entropy, "kl": cross - entropy,
                "cross_entropy": cross, "entropy": entropy}  # fmt: skip
    if loss == "closed-form":
        return {**parts, **_closed_form(shift, log_s, mu_t, log_sigma_t, warmup,
                                        log_scale_floor, regularizer)}  # fmt: skip
    raise ValueError(f"loss: unknown loss {loss!r}; choose one of {', '.join(SEQUENCE_LOSSES)}")


def _closed_form(
    shift: Tensor,
    log_s: Tensor,
    mu_t: Tensor,
    log_sigma_t: Tensor,
    warmup: int,
    floor: float | None,
    regularizer: float,
) -> dict[str, Tensor]:
    kl = _scored(gaussian_kl(shift, log_s, mu_t, log_sigma_t), warmup)
    entropy = _scored(0.5 * math.log(2 * math.pi * math.e) + log_s, warmup)
    if floor is not None:
        log_s, log_sigma_t = log_s.clamp(min=floor), log_sigma_t.clamp(min=floor)
    loss = _scored(gaussian_kl(shift, log_s, mu_t, log_sigma_t), warmup)
    if regularizer:
        loss = loss + regularizer * _scored((log_s - log_sigma_t).square(), warmup)
    return {"loss": loss, "kl": kl, "cross_entropy": kl + entropy, "entropy": entropy}


def time_averaged_spectrum(x: Tensor, n_fft: int = 1024, hop: int = 256) -> Tensor:
    r"""φ(x) = the mean over the batch and the frames of \|STFT(x)\|², ``[n_fft // 2 + 1]``.

    The long-term power spectrum: a Hann window and ``torch.stft(normalized=True)``, so a
    white noise of standard deviation σ has φ ≈ σ²·3/8 in every bin, whatever ``n_fft``,
    and by Parseval its sum over bins follows the mean square of x (so matching φ matches
    the RMS level). Differentiable.

    Example:
        >>> import torch
        >>> x = torch.randn(4, 8192, generator=torch.Generator().manual_seed(0))
        >>> round(float(time_averaged_spectrum(x).mean()), 2)
        0.38
    """
    if x.shape[-1] < n_fft:
        raise ValueError(f"x: need at least n_fft={n_fft} samples per sequence, got {x.shape[-1]}")
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop_length=hop, window=window,
                      center=False, normalized=True, return_complex=True)  # fmt: skip
    return spec.abs().square().mean(dim=(0, 2))


def power_loss(
    x: Tensor, real: Tensor | None = None, *, target: Tensor | None = None,
    n_fft: int = 1024, hop: int = 256,
) -> Tensor:  # fmt: skip
    r"""The power (STFT) loss of Parallel WaveNet, unconditional form, on a log scale.

    .. math:: \frac{1}{F} \sum_f \big(\log φ(x)_f - \log φ(y)_f\big)^2

    with φ the long-term power spectrum (:func:`time_averaged_spectrum`) of the student's
    samples x and of real audio y: zero for identical spectra, (2 ln g)² for a gain g, the
    same weight for every frequency band (a squared gap of powers would see only the
    loudest bins), and independent of the audio's level. Its square root is, up to the
    factor 10/ln 10, the long-term spectrum distance in dB of the quality table.

    Give either ``real`` audio or its spectrum ``target`` = φ(y). For training, φ(y) should
    be the average over a large set of real audio (:class:`SequenceDistillationLoss`
    computes it once over all its crops): against the spectra of a few random crops per
    step the loss is minimised by a student quieter than speech (the log of an average
    is above the average of the logs).

    Example:
        >>> import math, torch
        >>> y = torch.randn(2, 4096, generator=torch.Generator().manual_seed(0))
        >>> gain = float(power_loss(0.1 * y, y))  # (2 ln 0.1)² = 21.2
        >>> float(power_loss(y, y)), abs(gain - (2 * math.log(0.1)) ** 2) < 1e-3
        (0.0, True)
    """
    if (real is None) == (target is None):
        raise ValueError("power_loss: give exactly one of real= and target=")
    if target is None:
        target = time_averaged_spectrum(real, n_fft, hop)  # type: ignore[arg-type]
    target = target.detach().clamp(min=1e-20)
    gap = time_averaged_spectrum(x, n_fft, hop).clamp(min=1e-20).log() - target.log()
    return gap.square().mean()


@torch.no_grad()
def real_spectrum(real: Tensor, chunk: int = 64, n_fft: int = 1024, hop: int = 256) -> Tensor:
    """φ of all of ``real`` (``[N, T]``), ``chunk`` rows at a time: the power loss's target."""
    parts = [time_averaged_spectrum(real[i : i + chunk], n_fft, hop) * len(real[i : i + chunk])
             for i in range(0, real.shape[0], chunk)]  # fmt: skip
    return torch.stack(parts).sum(dim=0) / real.shape[0]


class SequenceDistillationLoss:
    """KL(student ‖ teacher) per sample for sequences, as a loss of the shared training loop.

    Each call draws ``batch`` student sequences of ``length`` samples (the step's batch is
    an empty ``[batch, 0]`` tensor: only its length is used), computes the estimator's parts
    (:func:`sequence_distillation_losses`) and adds ``power_weight`` × :func:`power_loss`
    against the time-averaged spectrum of all the real crops (computed once). Every
    ``monitor_every`` steps it also records the RMS ratio of the student's samples to all
    the real audio and the teacher's log-likelihood per sample of a batch of real crops
    (``teacher_ll_real``) beside that of the student's samples (``teacher_ll_student``).

    Args:
        teacher: the frozen teacher.
        loss: the estimator (see :data:`SEQUENCE_LOSSES`).
        length: samples per student sequence.
        warmup: leading steps left out of every figure.
        draws: conditional draws of ``"conditional-mc"``.
        log_scale_floor: closed-form floor of the log-scales.
        regularizer: closed-form λ.
        power_weight: weight of the power loss (0: monitored only).
        real: ``[N, T]`` real audio crops (T ≥ ``length``; needed for the power loss and
            the real-audio monitors).
        monitor_every: steps between the real-audio monitors.
    """

    #: the batches are not data the student models: no batch-norm refresh from them
    refresh_batchnorm = False

    def __init__(
        self,
        teacher: Flow,
        loss: str,
        *,
        length: int,
        warmup: int = 0,
        draws: int = 4,
        log_scale_floor: float | None = None,
        regularizer: float = 0.0,
        power_weight: float = 0.0,
        real: Tensor | None = None,
        monitor_every: int = 10,
    ) -> None:
        if power_weight and real is None:
            raise ValueError("power_loss: the power loss needs real=[N, T] real audio crops")
        if real is not None and (real.dim() != 2 or real.shape[1] < length):
            raise ValueError(
                f"real: expected [N, T] crops with T >= length={length}, got {list(real.shape)}"
            )
        self.teacher, self.loss, self.length = teacher, loss, length
        self.estimator = {"warmup": warmup, "draws": draws, "log_scale_floor": log_scale_floor,
                          "regularizer": regularizer}  # fmt: skip
        self.power_weight, self.real, self.monitor_every = power_weight, real, monitor_every
        if real is not None:  # fixed targets: the whole set's spectrum and level
            self.target = real_spectrum(real)
            self.real_rms = real.square().mean().sqrt()

    def real_batch(self, n: int) -> Tensor:
        """``n`` random crops of ``length`` samples from the real audio."""
        assert self.real is not None
        rows = torch.randint(0, self.real.shape[0], (n,), device=self.real.device)
        start = int(torch.randint(0, self.real.shape[1] - self.length + 1, ()))
        return self.real[rows, start : start + self.length]

    def __call__(self, model: Flow, batch: Tensor, step: int) -> tuple[Tensor, dict]:
        """The loss of one step and its parts (nats per sample)."""
        parts = sequence_distillation_losses(
            self.teacher, model, batch.shape[0], self.loss, length=self.length, **self.estimator
        )
        nan = torch.tensor(float("nan"))
        numbers = {k: parts[k] for k in ("kl", "cross_entropy", "entropy")}
        numbers |= {"teacher_ll_student": parts["teacher_ll"], "anchor": nan, "power": nan,
                    "rms_ratio": nan, "teacher_ll_real": nan}  # fmt: skip
        total = parts["loss"]
        monitor = self.real is not None and step % self.monitor_every == 0
        if self.power_weight or monitor:
            power = power_loss(parts["x"], target=self.target)
            numbers["power"] = power.detach()
            if self.power_weight:
                total = total + self.power_weight * power
            if monitor:
                numbers |= self._monitors(parts["x"].detach(), self.real_batch(batch.shape[0]))
        return total, numbers

    def _monitors(self, x: Tensor, real: Tensor) -> dict[str, Tensor]:
        warmup = self.estimator["warmup"]
        with torch.no_grad():
            mu, log_sigma = _teacher_layer(self.teacher).conditionals(real)  # type: ignore[union-attr]
            ll_real = _scored(_loc_scale_log_prob(self.teacher, real, mu, log_sigma), warmup)
            ratio = x.square().mean().sqrt() / self.real_rms.clamp(min=1e-12)
        return {"teacher_ll_real": ll_real, "rms_ratio": ratio}
